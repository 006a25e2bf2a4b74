"""Coding a sequence of frames with temporal contexts: the state one stream keeps on each side.

Intra frames (the quantizer's default intra coder) open the sequence and recur every `intra_period`
frames; the frames between them are quantized with hysteresis (and, with `rdo_lambda`, rate-distortion
optimization) against the previous frame's levels and coded with TEMPORAL_CONTEXTS. `TemporalEncoder` (edge)
and `TemporalDecoder` (cloud) hold the same reference: the levels of the last frame, with the quantizer that
made them.

A stream may change a tensor's quantizer on any frame (rate control does): the reference levels are then
mapped to the new quantizer before use, level k becoming `new.quantize(old.reconstruction[k])`. Both sides
compute that table from the two quantizers the wire carries, so a switch costs no intra frame
(docs/BITSTREAM.md, "Quantizer switches").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from splitinfer.codec.entropy import INTER_VERSION, CodecLimits, Coder
from splitinfer.codec.errors import CodecError
from splitinfer.codec.profile import DEFAULT_INTRA_PERIOD
from splitinfer.codec.quantizer import Quantizer, check_rdo_lambda, quantize_with_reference
from splitinfer.codec.tensor import CompressedTensor, decode_levels, default_coder, encode_levels


class MissingReferenceError(CodecError):
    """An inter frame names a reference this decoder does not hold: the encoder must send an intra frame."""


def remap_levels(levels: np.ndarray, old: Quantizer, new: Quantizer) -> np.ndarray:
    """Reference levels of `old` expressed in `new`'s levels (the same array when the quantizers are equal)."""
    if old == new:
        return levels
    table = new.quantize(np.asarray(old.reconstruction, dtype=np.float32))
    return table[levels]


@dataclass(frozen=True)
class Reference:
    """One tensor's levels of the last frame and the quantizer that made them."""

    levels: np.ndarray
    quantizer: Quantizer

    def for_quantizer(self, quantizer: Quantizer) -> np.ndarray:
        return remap_levels(self.levels, self.quantizer, quantizer)


@dataclass(frozen=True)
class CodedFrame:
    """A frame coded but not yet committed as the next reference (rate control may try several)."""

    tensors: dict[str, CompressedTensor]
    references: dict[str, Reference]
    intra: bool

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


class TemporalEncoder:
    """Encodes successive frames (dicts of named tensors) intra or against the previous frame's levels."""

    def __init__(self, *, intra_period: int = DEFAULT_INTRA_PERIOD, hysteresis: float = 0.0, rdo_lambda: float = 0.0,
                 plane_weights: Mapping[str, Sequence[float]] | None = None, intra_coder: Coder | None = None,
                 limits: CodecLimits | None = None) -> None:
        if intra_period < 1:
            raise CodecError(f"intra_period must be at least 1 frame, got {intra_period}.")
        if intra_coder is Coder.TEMPORAL_CONTEXTS:
            raise CodecError("the intra coder cannot be TEMPORAL_CONTEXTS: an intra frame has no reference.")
        self.intra_period = intra_period
        self.hysteresis = hysteresis
        self.rdo_lambda = check_rdo_lambda(rdo_lambda)
        self.plane_weights = dict(plane_weights or {})
        self.intra_coder = intra_coder
        self.limits = limits
        self._reference: dict[str, Reference] | None = None
        self._since_intra = 0

    def restart(self) -> None:
        """Make the next frame intra (stream start, reconnect, or the decoder asked for one)."""
        self._reference = None

    def next_is_intra(self, names: Iterable[str] | None = None) -> bool:
        """Whether the next frame (of tensors `names`) will be intra (rate control plans for it)."""
        reference = self._reference
        if reference is None or self._since_intra >= self.intra_period:
            return True
        return names is not None and set(reference) != set(names)

    def code(self, tensors: Mapping[str, np.ndarray], quantizers: Mapping[str, Quantizer], *,
             hysteresis: float | None = None, rdo_lambda: float | None = None,
             plane_weights: Mapping[str, Sequence[float]] | None = None) -> CodedFrame:
        """Code one frame without changing the encoder's state; `commit` makes it the reference.

        `hysteresis`, `rdo_lambda` and `plane_weights` override the encoder's for this frame (a ladder point's)."""
        intra = self.next_is_intra(tensors.keys())
        margin = self.hysteresis if hysteresis is None else hysteresis
        lam = self.rdo_lambda if rdo_lambda is None else rdo_lambda
        weights = self.plane_weights if plane_weights is None else plane_weights
        reference = self._reference
        coded: dict[str, CompressedTensor] = {}
        references: dict[str, Reference] = {}
        for name, tensor in tensors.items():
            quantizer = quantizers[name]
            if intra or reference is None:
                levels = quantizer.quantize(tensor)
                coder = self.intra_coder or default_coder(quantizer)
                coded[name] = encode_levels(levels, quantizer, coder=coder, name=name, limits=self.limits)
            else:
                previous = reference[name].for_quantizer(quantizer)
                levels = quantize_with_reference(tensor, quantizer, previous, margin, rdo_lambda=lam,
                                                 plane_weights=weights.get(name))
                coded[name] = encode_levels(levels, quantizer, coder=Coder.TEMPORAL_CONTEXTS, name=name,
                                            reference=previous, limits=self.limits, coder_version=INTER_VERSION)
            references[name] = Reference(levels, quantizer)
        return CodedFrame(coded, references, intra)

    def commit(self, frame: CodedFrame) -> None:
        """The frame was sent: its levels are the next frame's reference."""
        self._reference = frame.references
        self._since_intra = 1 if frame.intra else self._since_intra + 1

    def encode_frame(
        self, tensors: Mapping[str, np.ndarray], quantizers: Mapping[str, Quantizer]
    ) -> tuple[dict[str, CompressedTensor], bool]:
        """Code one frame and keep it as the reference; returns the coded tensors and whether it is intra."""
        frame = self.code(tensors, quantizers)
        self.commit(frame)
        return frame.tensors, frame.intra


class TemporalDecoder:
    """The decoder's twin of TemporalEncoder: decodes intra and inter frames and holds the reference."""

    def __init__(self) -> None:
        self._reference_id: int | None = None
        self._reference: dict[str, Reference] = {}

    @property
    def reference_id(self) -> int | None:
        """The frame id of the levels held as reference (None: the next frame must be intra)."""
        return self._reference_id

    def quantizer(self, name: str) -> Quantizer | None:
        """The quantizer of tensor `name` in the reference frame (None: no reference)."""
        reference = self._reference.get(name)
        return None if reference is None else reference.quantizer

    def restart(self) -> None:
        """Forget the reference (a new connection starts with an intra frame)."""
        self._reference_id = None
        self._reference = {}

    def decode_frame(self, tensors: Mapping[str, CompressedTensor], reference_id: int | None = None, *,
                     limits: CodecLimits | None = None) -> dict[str, Reference]:
        """Each tensor's levels (with its quantizer); `reference_id` is the frame an inter frame is coded against.

        Raises MissingReferenceError when that is not the frame this decoder holds, CodecError for a bad tensor.
        Nothing changes until `commit`."""
        previous: dict[str, Reference] | None = None
        if reference_id is not None:
            if self._reference_id != reference_id:
                have = "none" if self._reference_id is None else f"frame {self._reference_id}"
                raise MissingReferenceError(f"the frame is coded against frame {reference_id}, but this decoder "
                                            f"holds {have}; send an intra frame.")
            previous = self._reference
        decoded: dict[str, Reference] = {}
        for name, tensor in tensors.items():
            ref = previous.get(name) if previous is not None else None
            if tensor.coder is Coder.TEMPORAL_CONTEXTS and ref is None:
                raise MissingReferenceError(f"tensor {name!r} is coded with temporal contexts but the frame has no "
                                            "reference to decode it against; send an intra frame.")
            try:
                levels = decode_levels(tensor, reference=None if ref is None else ref.for_quantizer(tensor.quantizer),
                                       limits=limits)
            except MissingReferenceError:
                raise
            except CodecError as exc:
                raise CodecError(f"tensor {name!r} could not be decoded: {exc}") from exc
            decoded[name] = Reference(levels, tensor.quantizer)
        return decoded

    def commit(self, frame_id: int, decoded: Mapping[str, Reference]) -> None:
        """The frame was used: its levels are the reference of the next inter frame."""
        self._reference_id = frame_id
        self._reference = dict(decoded)
