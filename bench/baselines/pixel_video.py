"""Pixel video baselines on whole clips with PyAV: x264 or x265 at a target bitrate, one or two passes, then decoded.

What a user who streams video instead of features would run offline (bench/partition.py): every picture is coded
in one call (so two-pass and B-frames look ahead, unlike the live edge's zerolatency stream), and the bytes are
the elementary stream's packets (parameter sets included, container overhead not).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# libx264 / libx265 -> the decoder that reads its packets and the private option that takes encoder parameters.
CODECS = {"libx264": ("h264", "x264-params"), "libx265": ("hevc", "x265-params")}


@dataclass
class CodedClip:
    """A clip coded and decoded: bytes per packet, the decoded pictures in display order, the encoder's CPU time."""

    packet_bytes: list[int]
    pictures: list[np.ndarray]
    encode_cpu_s: float

    @property
    def bytes(self) -> int:
        return sum(self.packet_bytes)


def encode_clip(pictures: list[np.ndarray], *, codec: str, preset: str, kbps: float, fps: float,
                keyint: int | None, passes: int = 1, tune: str | None = None) -> tuple[list[bytes], float]:
    """The packets of `pictures` (BGR, one size) at `kbps`; keyint None keeps the encoder's default key interval.
    Returns the packets and the CPU time of every pass (one thread, so CPU time is the encoder's work)."""
    import av

    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: use one of {', '.join(CODECS)}")
    if passes not in (1, 2):
        raise ValueError(f"passes must be 1 or 2, got {passes}")
    height, width = pictures[0].shape[:2]
    _, params_key = CODECS[codec]
    cpu = 0.0
    with tempfile.TemporaryDirectory() as folder:
        stats = Path(folder) / "stats"
        for number in range(1, passes + 1):
            params = ["log-level=error"] if codec == "libx265" else []
            params += [f"keyint={keyint}"] if keyint is not None else []
            params += [f"pass={number}", f"stats={stats}"] if passes == 2 else []
            params += ["pools=1", "frame-threads=1"] if codec == "libx265" else ["threads=1"]
            context = av.CodecContext.create(codec, "w")
            context.width, context.height, context.pix_fmt = width, height, "yuv420p"
            context.time_base, context.framerate = Fraction(1, 1000), Fraction(fps).limit_denominator(1000)
            context.bit_rate = int(kbps * 1000)
            context.thread_count = 1
            options = {"preset": preset, params_key: ":".join(params)}
            if tune:
                options["tune"] = tune
            context.options = options
            packets = []
            started = time.process_time()
            for index, picture in enumerate(pictures):
                frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
                frame.pts = round(index * 1000 / fps)
                packets += context.encode(frame)
            packets += context.encode(None)
            cpu += time.process_time() - started
    return [bytes(p) for p in packets], cpu


def decode_clip(packets: list[bytes], codec: str) -> list[np.ndarray]:
    """The BGR pictures of `packets` in display order."""
    import av

    decoder = av.CodecContext.create(CODECS[codec][0], "r")
    pictures = []
    for data in packets:
        for frame in decoder.decode(av.Packet(data)):
            pictures.append(frame.to_ndarray(format="bgr24"))
    for frame in decoder.decode(None):
        pictures.append(frame.to_ndarray(format="bgr24"))
    return pictures


def code_clip(pictures: list[np.ndarray], **settings) -> CodedClip:
    """encode_clip then decode_clip; ValueError when the decoder does not give back one picture per input."""
    packets, cpu = encode_clip(pictures, **settings)
    decoded = decode_clip(packets, settings["codec"])
    if len(decoded) != len(pictures):
        raise ValueError(f"{settings['codec']} gave back {len(decoded)} pictures for {len(pictures)}")
    return CodedClip([len(p) for p in packets], decoded, cpu)
