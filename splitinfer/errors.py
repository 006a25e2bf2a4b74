"""The exception tree of splitinfer; every error a user can act on derives from SplitInferError.

    SplitInferError
    ├── ConfigError            a flag or SPLITINFER_* variable has a bad value
    ├── splitinfer.codec.CodecError       bad tensor, quantizer, profile or bitstream
    ├── splitinfer.dnn.ModelError         bad cfg, weights, model name or cut
    └── ServiceError           a service could not start, a stream broke, a subscription failed
        ├── StreamRejectedError   the cloud refused the stream (unknown model or cut, bad start message)
        ├── CloudUnavailableError the cloud could not be reached within the retry budget
        ├── CaptureError          a video source could not be opened or read
        ├── StartupInterrupted    SIGTERM or SIGINT arrived while the edge was still starting
        └── BusError              the results bus (NATS JetStream) could not be reached or refused
            └── BusAuthError      the bus refused this client's credentials, TLS or permissions

Messages are sentences that say what was wrong and what to do about it.
"""

from __future__ import annotations


class SplitInferError(Exception):
    """Base class of every error splitinfer raises on purpose."""


class ConfigError(SplitInferError, ValueError):
    """A configuration value (flag or SPLITINFER_* environment variable) is invalid."""


class ServiceError(SplitInferError):
    """A service could not start, or a stream broke in a way the caller must handle."""


class StreamRejectedError(ServiceError):
    """The cloud refused the stream; retrying with the same start message will not help."""


class CloudUnavailableError(ServiceError):
    """The cloud stayed unreachable for longer than the edge was told to keep retrying."""


class CaptureError(ServiceError):
    """A video source (camera index, file, RTSP or HTTP URL) could not be opened or read."""


class StartupInterrupted(ServiceError):
    """The edge was told to stop (SIGTERM, SIGINT) before it streamed anything: a clean stop, not a failure."""


class BusError(ServiceError):
    """The results bus (NATS JetStream) could not be reached, or refused a publication or a subscription."""


class BusAuthError(BusError):
    """The results bus refused this client: wrong or missing credentials, a failed TLS handshake, or a NATS user
    without the permissions the cloud needs. Retrying does not help; the message names the flag to fix."""
