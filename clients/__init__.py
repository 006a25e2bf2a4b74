"""What other services and people run against a cloud: subscribe to results, convert them, check health.

    from splitinfer.clients import ChannelSecurity, ResultSubscriber, subscribe, result_to_dict, coco_results

Every client speaks TLS unless given `security=ChannelSecurity(plaintext=True)`; see ChannelSecurity for
the CA, client certificate (mTLS) and bearer token. `BusReader` reads the results bus (NATS) directly and
checks each result's signature (BusConnection: its TLS and NATS credentials).
"""

from splitinfer.bus_connection import BusConnection
from splitinfer.channel_security import ChannelSecurity
from splitinfer.clients._bus_reader import BusReader
from splitinfer.clients._subscriber import Backoff, ResultSubscriber, SubscribedResult, check_health, subscribe
from splitinfer.results import (
    COCO_CATEGORY_IDS,
    capture_time_iso,
    coco_image_ids,
    coco_results,
    result_from_dict,
    result_to_dict,
    result_to_json,
    to_cloudevent,
)

__all__ = [
    "Backoff",
    "BusConnection",
    "BusReader",
    "COCO_CATEGORY_IDS",
    "ChannelSecurity",
    "ResultSubscriber",
    "SubscribedResult",
    "capture_time_iso",
    "check_health",
    "coco_image_ids",
    "coco_results",
    "result_from_dict",
    "result_to_dict",
    "result_to_json",
    "subscribe",
    "to_cloudevent",
]
