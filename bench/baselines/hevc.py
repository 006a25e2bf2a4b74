"""HEVC (x265 through the ffmpeg command line) of channel-tiled tensors: the conventional anchor.

A sequence of (C, H, W) tensors is tiled into monochrome 8- or 10-bit frames over one clip range
and coded at a fixed QP, all-intra (keyint=1) or low-delay inter (P frames only, an IDR every
`keyint` frames). Rates are the real Annex-B bytes ffmpeg writes (x265's informational SEI off);
parameter sets are counted once per sequence, as a live stream would send them.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from baselines.tiling import TileLayout, tile, untile


class HevcUnavailable(RuntimeError):
    """ffmpeg with libx265 is not installed."""


@dataclass(frozen=True)
class HevcResult:
    """Decoded tensors, total coded bytes, and encode/decode seconds for the whole sequence."""

    tensors: list[np.ndarray]
    nbytes: int
    encode_seconds: float
    decode_seconds: float


def _ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise HevcUnavailable("ffmpeg is not on PATH: install it (apt-get install -y ffmpeg) to run the HEVC baseline.")
    return path


def _pix_fmt(bits: int) -> tuple[str, np.dtype]:
    if bits == 8:
        return "gray", np.dtype(np.uint8)
    if bits == 10:
        return "gray10le", np.dtype("<u2")
    raise ValueError(f"bits must be 8 or 10, got {bits}")


def hevc_roundtrip(
    tensors: Sequence[np.ndarray],
    clip_min: float,
    clip_max: float,
    *,
    qp: int,
    bits: int = 10,
    keyint: int = 1,
    preset: str = "medium",
) -> HevcResult:
    """Code (C, H, W) tensors as one HEVC sequence and decode it; keyint=1 is all-intra."""
    if not tensors:
        raise ValueError("hevc_roundtrip needs at least one tensor")
    ffmpeg = _ffmpeg()
    pix_fmt, dtype = _pix_fmt(bits)
    frames = []
    layout: TileLayout | None = None
    for tensor in tensors:
        frame, layout = tile(np.asarray(tensor, dtype=np.float32), clip_min, clip_max, bits)
        frames.append(frame.astype(dtype))
    height, width = frames[0].shape
    params = [f"qp={qp}", f"keyint={keyint}", f"min-keyint={keyint}", "scenecut=0", "bframes=0",
              "info=0", "pools=1", "frame-threads=1", "log-level=error"]
    encode_cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", pix_fmt,
                  "-s", f"{width}x{height}", "-r", "10", "-i", "pipe:0", "-c:v", "libx265", "-preset", preset,
                  "-x265-params", ":".join(params), "-f", "hevc", "pipe:1"]
    raw = b"".join(f.tobytes() for f in frames)
    start = time.perf_counter()
    encoded = subprocess.run(encode_cmd, input=raw, capture_output=True, check=True).stdout
    encode_seconds = time.perf_counter() - start
    decode_cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "hevc", "-i", "pipe:0",
                  "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]
    start = time.perf_counter()
    decoded = subprocess.run(decode_cmd, input=encoded, capture_output=True, check=True).stdout
    decode_seconds = time.perf_counter() - start
    samples = np.frombuffer(decoded, dtype=dtype).reshape(-1, height, width)
    if samples.shape[0] != len(frames):
        raise RuntimeError(f"ffmpeg decoded {samples.shape[0]} frames from {len(frames)}")
    out = [untile(s, layout, clip_min, clip_max, bits) for s in samples]
    return HevcResult(out, len(encoded), encode_seconds, decode_seconds)
