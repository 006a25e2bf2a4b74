"""Errors of the codec: every bad tensor, quantizer, profile or bitstream raises a CodecError."""

from __future__ import annotations

from splitinfer.errors import SplitInferError


class CodecError(SplitInferError, ValueError):
    """The input to the codec is invalid: the message says what was wrong and what to do."""
