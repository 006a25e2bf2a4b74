"""Errors of the edge and cloud services: they live in splitinfer.errors (below services and clients) and are
re-exported here for the old import path."""

from splitinfer.errors import (
    BusError,
    CaptureError,
    CloudUnavailableError,
    ServiceError,
    StartupInterrupted,
    StreamRejectedError,
)

__all__ = ["BusError", "CaptureError", "CloudUnavailableError", "ServiceError", "StartupInterrupted", "StreamRejectedError"]
