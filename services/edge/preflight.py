"""Checks `splitinfer edge` runs before the model loads, so a mistake costs a second, not a minute.

Cheap checks first (source, file paths, profile fields, model name, weights path, cut from the model's cfg),
then the cloud; none of them imports torch or loads weights. Each failure is a ConfigError or
CloudUnavailableError whose message says what to change.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from splitinfer.channel_security import ChannelSecurity, connection_hint
from splitinfer.errors import CaptureError, CloudUnavailableError, ConfigError, ServiceError
from splitinfer.runtimes import check_runtime_flags
from splitinfer.services.edge.capture import check_source
from splitinfer.services.preflight import check_model, check_weights_path

if TYPE_CHECKING:
    from splitinfer.services.edge.resolve import ResolvedEdge

log = logging.getLogger("splitinfer.edge")


def check_cloud(address: str, timeout_s: float, security: ChannelSecurity = ChannelSecurity()) -> None:
    """Connect to the cloud's gRPC port (TCP, HTTP/2 and, unless plaintext, the TLS handshake) within `timeout_s`.

    Raises CloudUnavailableError naming the address (ConfigError for an unreadable certificate or token file).
    """
    import grpc

    if not address or ":" not in address.rsplit("]", 1)[-1]:
        raise ConfigError(f"--cloud {address!r} is not HOST:PORT, e.g. localhost:50051.")
    _check_listening(address, timeout_s)
    channel = security.channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        reason = _last_connection_error(channel)
        raise CloudUnavailableError(
            f"could not connect to the cloud at {address} within {timeout_s:g} s (--connect-timeout"
            f"{'; ' + reason if reason else ''}): {connection_hint(reason, security)}; check also that no firewall "
            "blocks it. --connect-timeout 0 skips this check (the edge then keeps retrying for --reconnect-timeout)."
        ) from None
    finally:
        channel.close()


def _check_listening(address: str, timeout_s: float) -> None:
    """A refused TCP connection ends the check at once (gRPC would retry it until the timeout). Anything else
    (a timeout, a proxy in the environment, a unix: address) is left to gRPC's own attempt."""
    if any(os.environ.get(name) for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY")):
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not host or host.startswith(("unix", "dns", "ipv4", "ipv6")):
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except ConnectionRefusedError:
        raise CloudUnavailableError(
            f"nothing listens at {address} (connection refused): start `splitinfer cloud` there, or fix --cloud "
            "(HOST:PORT of the cloud's gRPC port, 50051 unless its --port says otherwise)."
        ) from None
    except OSError:
        return


def _last_connection_error(channel: Any) -> str:
    """gRPC's reason for the failed connection (refused, TLS handshake, ...), from one quick health call."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2.0)
    except grpc.RpcError as exc:
        return str(exc.details() or exc.code().name)
    return ""


def check_rate(settings: Any) -> None:
    """--rate-kbps is a positive budget, and --ladder comes with it (the ladder file itself: `resolve`)."""
    if settings.rate_kbps is None:
        if settings.ladder:
            raise ConfigError("--ladder is read only with --rate-kbps: add --rate-kbps, or drop --ladder.")
        return
    from splitinfer.services.edge.rate_control import MIN_RATE_KBPS

    if not settings.rate_kbps >= MIN_RATE_KBPS:
        raise ConfigError(f"--rate-kbps must be at least {MIN_RATE_KBPS:g} kbit/s, got {settings.rate_kbps:g}.")


def feature_codec_flags() -> dict[str, str]:
    """The flags that fix the features partition's codec, by EdgeSettings field: CodecSettings' fields (but the
    intra period, which pixels read too), the cut and the ladder."""
    from dataclasses import fields

    from splitinfer.services.profiles import CodecSettings

    names = [f.name for f in fields(CodecSettings) if f.name != "intra_period"] + ["cut", "ladder"]
    return {name: "--" + name.replace("_", "-") for name in names}


_PIXEL_FLAGS = {"pixel_preset": "--pixel-preset", "pixel_crf": "--pixel-crf", "pixel_size": "--pixel-size"}
_AUTO_FLAGS = {"partitions": "--partitions", "edge_budget_ms": "--edge-budget-ms",
               "partition_curves": "--partition-curves", "probe_frames": "--probe-frames"}


def given_flags(settings: Any, flags: dict[str, str]) -> list[str]:
    """The flags of `flags` (field -> flag) that `settings` sets (not None or empty), sorted."""
    return sorted(flag for name, flag in flags.items() if getattr(settings, name) not in (None, ""))


def check_partition_flags(partition: str, *, codec_flags: list[str], pixel_flags: list[str], auto_flags: list[str],
                          rate_kbps: float | None, intra_period: int | None, pixel_crf: int | None) -> None:
    """Each flag goes with the partitions that read it; one given to another partition is refused, not silently
    ignored. The rules `splitinfer edge` and `splitinfer eval` share (the flags given, as each command spells them)."""
    if partition not in ("features", "pixels", "detections", "auto"):
        raise ConfigError(f"--partition {partition!r} is not one of features, pixels, detections, auto.")
    if partition != "auto" and auto_flags:
        raise ConfigError(f"{', '.join(auto_flags)} set(s) how --partition auto plans: add --partition auto, or drop "
                          "it.")
    if partition == "auto":
        if codec_flags:
            raise ConfigError(f"{', '.join(codec_flags)} fix(es) the feature codec, but --partition auto plans the "
                              "features partition with the partition curves' cut and the model's ladder: drop it, or "
                              "use --partition features.")
        if pixel_crf is not None:
            raise ConfigError("--pixel-crf fixes the pixel encoder's quality, but --partition auto spends --rate-kbps: "
                              "drop --pixel-crf.")
        return
    if partition != "features" and codec_flags:
        raise ConfigError(f"{', '.join(codec_flags)} set(s) the feature codec, which --partition {partition} does "
                          "not use: drop it, or use --partition features.")
    if partition != "pixels" and pixel_flags:
        raise ConfigError(f"{', '.join(pixel_flags)} set(s) the pixel encoder, which --partition {partition} "
                          "does not use: drop it, or use --partition pixels.")
    if partition == "detections":
        extra = [flag for flag, value in (("--rate-kbps", rate_kbps), ("--intra-period", intra_period))
                 if value is not None]
        if extra:
            raise ConfigError(f"--partition detections sends the whole model's detections, with no rate or intra "
                              f"period to set: drop {' and '.join(extra)}.")


def check_pyav(partitions: tuple[str, ...] | list[str], partition: str) -> None:
    """Pixels (or auto that may choose them) needs PyAV: checked without importing it."""
    import importlib.util

    if "pixels" not in partitions or importlib.util.find_spec("av") is not None:
        return
    if partition == "auto":
        raise ConfigError("--partition auto may choose pixels, which needs PyAV: pip install 'splitinfer[pixels]', "
                          "or restrict auto with --partitions features,detections.")
    raise ConfigError("--partition pixels needs PyAV: pip install 'splitinfer[pixels]' (or pip install av).")


def check_partition(settings: Any) -> None:
    """The edge's partition flags go together (check_partition_flags); pixels' settings are valid and auto's
    budgets and partitions are; PyAV is there when pixels may run."""
    check_partition_flags(settings.partition, codec_flags=given_flags(settings, feature_codec_flags()),
                          pixel_flags=given_flags(settings, _PIXEL_FLAGS),
                          auto_flags=given_flags(settings, _AUTO_FLAGS), rate_kbps=settings.rate_kbps,
                          intra_period=settings.intra_period, pixel_crf=settings.pixel_crf)
    if settings.partition == "auto":
        check_pyav(settings.auto_request().check(), "auto")  # the curves file: `resolve`
    elif settings.partition == "pixels":
        settings.pixel_settings()  # raises ConfigError for a bad preset, crf, key interval or size
        check_pyav(["pixels"], "pixels")


def check_edge(settings: Any, *, connect_timeout_s: float) -> ResolvedEdge:
    """Every check of an EdgeSettings that can run before torch loads; raises on the first problem. Returns the
    settings resolved (services/edge/resolve.py), for build_pipeline to consume.

    connect_timeout_s: how long to wait for the cloud (0: no cloud check, as in `splitinfer demo`, which starts its
    own)."""
    try:
        check_source(settings.source)
    except CaptureError as exc:
        raise ConfigError(f"--source: {exc}") from exc
    if settings.frames is not None and settings.frames < 0:
        raise ConfigError(f"--frames must be 0 (the whole source) or a positive count, got {settings.frames}.")
    check_weights_path(settings.weights)
    check_runtime_flags(settings.runtime, settings.threads, settings.device)
    check_partition(settings)
    check_model(settings.model, settings.weights, settings.cut)
    if settings.partition == "detections":
        check_detection_model(settings.model)
    if settings.partition == "features":
        check_rate(settings)
    from splitinfer.services.edge.resolve import resolve

    try:
        resolved = resolve(settings)
    except ServiceError as exc:
        raise ConfigError(str(exc)) from exc
    if connect_timeout_s > 0:
        check_cloud(settings.cloud, connect_timeout_s, settings.security)
    return resolved


def check_detection_model(model: str) -> None:
    """--partition detections needs a detection model (its results are boxes)."""
    from splitinfer.dnn.specs import get_spec

    task = get_spec(model).task
    if task != "detection":
        raise ConfigError(f"--partition detections sends boxes, but {model} is a {task} model: use --partition "
                          "features or pixels.")
