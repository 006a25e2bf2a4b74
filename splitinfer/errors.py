"""The exception tree of splitinfer; every error a user can act on derives from SplitInferError.

    SplitInferError
    ├── ConfigError            a flag or SPLITINFER_* variable has a bad value
    ├── splitinfer.codec.CodecError       bad tensor, quantizer, profile or bitstream
    ├── splitinfer.dnn.ModelError         bad cfg, weights, model name or cut
    └── splitinfer.services.ServiceError  a service could not start or a stream broke

Messages are sentences that say what was wrong and what to do about it.
"""

from __future__ import annotations


class SplitInferError(Exception):
    """Base class of every error splitinfer raises on purpose."""


class ConfigError(SplitInferError, ValueError):
    """A configuration value (flag or SPLITINFER_* environment variable) is invalid."""
