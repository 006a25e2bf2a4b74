"""The edge and cloud gRPC services (splitinfer.services.edge, splitinfer.services.cloud)."""

from splitinfer.errors import CaptureError, CloudUnavailableError, ServiceError, StreamRejectedError

__all__ = ["CaptureError", "CloudUnavailableError", "ServiceError", "StreamRejectedError"]
