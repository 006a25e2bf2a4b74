"""Errors of the edge and cloud services and their clients.

    SplitInferError
    └── ServiceError              a service could not start or a stream broke
        ├── StreamRejectedError   the cloud refused the stream (unknown model or cut, bad start message)
        ├── CloudUnavailableError the cloud could not be reached within the retry budget
        ├── CaptureError          a video source could not be opened or read
        └── StartupInterrupted    SIGTERM or SIGINT arrived while the edge was still starting

gRPC status codes are chosen only in the servicers; these are what Python callers catch.
"""

from __future__ import annotations

from splitinfer.errors import SplitInferError


class ServiceError(SplitInferError):
    """A service could not start, or a stream broke in a way the caller must handle."""


class StreamRejectedError(ServiceError):
    """The cloud refused the stream; retrying with the same start message will not help."""


class CloudUnavailableError(ServiceError):
    """The cloud stayed unreachable for longer than the edge was told to keep retrying."""


class CaptureError(ServiceError):
    """A video source (camera index, file, RTSP or HTTP URL) could not be opened or read."""


class StartupInterrupted(ServiceError):
    """A stop signal arrived while the edge was still starting (loading the model): nothing was streamed."""
