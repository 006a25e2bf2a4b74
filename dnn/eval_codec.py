"""The codec hook of evaluations: code every tensor at the cut with a profile, decode it, count the bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from splitinfer.codec import (
    CodecError,
    CodecProfile,
    Coder,
    Quantizer,
    TemporalDecoder,
    TemporalEncoder,
    decode,
    encode,
    parse_coder,
)
from splitinfer.dnn.errors import ModelError


def compress_roundtrip(tensors: Mapping[str, np.ndarray], profile: CodecProfile) -> tuple[dict[str, np.ndarray], int]:
    """Encode and decode each tensor (intra, no temporal reference); returns the decoded tensors and the coded bytes.

    A TEMPORAL_CONTEXTS profile is coded here as its intra frames are; use SequenceRoundtrip for a video.
    """
    if profile.coder is Coder.TEMPORAL_CONTEXTS:
        profile = dataclasses.replace(profile, coder=None)
    decoded: dict[str, np.ndarray] = {}
    nbytes = 0
    for name, array in tensors.items():
        coded = encode(np.ascontiguousarray(array, dtype=np.float32), quantizer_for(profile, name),
                       coder=profile.coder, name=name)
        nbytes += coded.nbytes
        decoded[name] = decode(coded)
    return decoded, nbytes


def quantizer_for(profile: CodecProfile, name: str) -> Quantizer:
    """The profile's quantizer for tensor `name`; ModelError when the profile has none for it."""
    quantizer = profile.quantizer_for(name)
    if quantizer is None:
        raise ModelError(f"the codec profile has no quantizer for tensor {name!r}: calibrate a profile for this cut "
                         "(splitinfer calibrate) or give --levels with --clip-min/--clip-max.")
    return quantizer


def profile_from_options(levels: int, clip_min: float | None, clip_max: float | None, coder: str | None = None) -> CodecProfile:
    """A uniform-quantizer profile from command-line values; the clip range must be given."""
    if clip_min is None or clip_max is None:
        raise ModelError(
            "--levels needs --clip-min and --clip-max (or pass a profile file with --codec PROFILE.json; "
            "`splitinfer calibrate` measures a clip range on the calibration set)."
        )
    try:
        chosen = parse_coder(coder)
    except CodecError as exc:
        raise ModelError(f"invalid --coder: {exc}") from exc
    return CodecProfile(Quantizer.uniform(clip_min, clip_max, levels), coder=chosen)


class SequenceRoundtrip:
    """The codec round trip of consecutive frames, as a stream codes them: temporal profiles code inter frames."""

    def __init__(self, profile: CodecProfile) -> None:
        self.profile = profile
        self._encoder = (TemporalEncoder(intra_period=profile.intra_period, hysteresis=profile.hysteresis,
                                         rdo_lambda=profile.rdo_lambda, plane_weights=profile.rdo_weights)
                         if profile.coder is Coder.TEMPORAL_CONTEXTS else None)
        self._decoder = TemporalDecoder()
        self._frame = 0

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Encode and decode one frame; returns the decoded tensors and the coded bytes."""
        if self._encoder is None:
            return compress_roundtrip(tensors, self.profile)
        arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in tensors.items()}
        coded, intra = self._encoder.encode_frame(arrays, {name: quantizer_for(self.profile, name) for name in arrays})
        levels = self._decoder.decode_frame(coded, None if intra else self._frame - 1)
        self._decoder.commit(self._frame, levels)
        self._frame += 1
        decoded = {name: ref.quantizer.dequantize(ref.levels) for name, ref in levels.items()}
        return decoded, sum(t.nbytes for t in coded.values())
