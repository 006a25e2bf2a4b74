"""The codec hook of evaluations: code every tensor at the cut with a profile, decode it, count the bytes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from splitinfer.codec import CodecProfile, Coder, Quantizer, decode, encode
from splitinfer.dnn.errors import ModelError


def compress_roundtrip(tensors: Mapping[str, np.ndarray], profile: CodecProfile) -> tuple[dict[str, np.ndarray], int]:
    """Encode and decode each tensor (intra, no temporal reference); returns the decoded tensors and the coded bytes."""
    decoded: dict[str, np.ndarray] = {}
    nbytes = 0
    for name, array in tensors.items():
        coded = encode(np.ascontiguousarray(array, dtype=np.float32), profile.quantizer, coder=profile.coder, name=name)
        nbytes += coded.nbytes
        decoded[name] = decode(coded)
    return decoded, nbytes


def profile_from_options(levels: int, clip_min: float | None, clip_max: float | None, coder: str | None = None) -> CodecProfile:
    """A uniform-quantizer profile from command-line values; the clip range must be given."""
    if clip_min is None or clip_max is None:
        raise ModelError(
            "--levels needs --clip-min and --clip-max (or pass a profile file with --codec PROFILE.json; "
            "`splitinfer calibrate` measures a clip range on the calibration set)."
        )
    chosen = None
    if coder is not None:
        try:
            chosen = Coder[coder.upper()]
        except KeyError:
            raise ModelError(f"unknown coder {coder!r}; choose one of {', '.join(c.name for c in Coder)}.") from None
    return CodecProfile(Quantizer.uniform(clip_min, clip_max, levels), coder=chosen)
