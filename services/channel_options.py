"""The old import path of splitinfer.channel_options (shared by services and clients, so it lives below both)."""

from splitinfer.channel_options import (
    DEFAULT_MAX_MESSAGE_BYTES,
    KEEPALIVE_TIME_MS,
    KEEPALIVE_TIMEOUT_MS,
    MIN_PING_INTERVAL_MS,
    channel_options,
    server_options,
)

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "KEEPALIVE_TIMEOUT_MS", "KEEPALIVE_TIME_MS", "MIN_PING_INTERVAL_MS",
           "channel_options", "server_options"]
