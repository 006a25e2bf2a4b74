"""Coding a sequence of frames with temporal contexts: the encoder-side state one stream keeps.

Intra frames (the quantizer's default intra coder) open the sequence and recur every `intra_period`
frames; the frames between them are quantized with hysteresis against the previous frame's levels and
coded with TEMPORAL_CONTEXTS. A decoder mirrors this by keeping the levels it last decoded
(decode_levels) and passing them as `reference`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from splitinfer.codec.entropy import INTER_VERSION, CodecLimits, Coder
from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import Quantizer, quantize_with_reference
from splitinfer.codec.tensor import CompressedTensor, default_coder, encode_levels


class TemporalEncoder:
    """Encodes successive frames (dicts of named tensors) intra or against the previous frame's levels."""

    def __init__(self, *, intra_period: int = 30, hysteresis: float = 0.0, intra_coder: Coder | None = None,
                 limits: CodecLimits | None = None) -> None:
        if intra_period < 1:
            raise CodecError(f"intra_period must be at least 1 frame, got {intra_period}.")
        if intra_coder is Coder.TEMPORAL_CONTEXTS:
            raise CodecError("the intra coder cannot be TEMPORAL_CONTEXTS: an intra frame has no reference.")
        self.intra_period = intra_period
        self.hysteresis = hysteresis
        self.intra_coder = intra_coder
        self.limits = limits
        self._reference: dict[str, np.ndarray] | None = None
        self._since_intra = 0

    def restart(self) -> None:
        """Make the next frame intra (stream start, reconnect, or the decoder asked for one)."""
        self._reference = None

    def encode_frame(
        self, tensors: Mapping[str, np.ndarray], quantizers: Mapping[str, Quantizer]
    ) -> tuple[dict[str, CompressedTensor], bool]:
        """Code one frame; returns the coded tensors and whether the frame is intra."""
        reference = self._reference
        intra = reference is None or self._since_intra >= self.intra_period or reference.keys() != tensors.keys()
        coded: dict[str, CompressedTensor] = {}
        levels: dict[str, np.ndarray] = {}
        for name, tensor in tensors.items():
            quantizer = quantizers[name]
            if intra or reference is None:
                levels[name] = quantizer.quantize(tensor)
                coder = self.intra_coder or default_coder(quantizer)
                coded[name] = encode_levels(levels[name], quantizer, coder=coder, name=name, limits=self.limits)
            else:
                levels[name] = quantize_with_reference(tensor, quantizer, reference[name], self.hysteresis)
                coded[name] = encode_levels(levels[name], quantizer, coder=Coder.TEMPORAL_CONTEXTS, name=name,
                                            reference=reference[name], limits=self.limits,
                                            coder_version=INTER_VERSION)
        self._reference = levels
        self._since_intra = 1 if intra else self._since_intra + 1
        return coded, intra
