"""The pixels partition's video coding: an H.264 encoder on the edge and its decoder twin in the cloud (PyAV).

One coded packet per frame, in order (tune zerolatency: no B-frames, no look-ahead), so that each frame gets
its own result. A key frame (IDR, parameter sets repeated) starts every connection and every intra request
and recurs every `key_interval` frames; an inter frame names the frame sent before it as its reference, and
the decoder refuses one whose reference it did not decode (it then waits for a key frame). PyAV is the
optional extra `pixels`: a missing install fails at first use with the pip command, never at import.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from splitinfer.errors import ConfigError
from splitinfer.settings import DEFAULT_KEY_INTERVAL
from splitinfer.settings import PIXEL_PRESETS as PRESETS

CODEC = "h264"
ENCODER = "libx264"
DEFAULT_PRESET = "veryfast"
DEFAULT_CRF = 28
MAX_SIDE = 8192


class PixelCodingError(Exception):
    """A packet that cannot be decoded: damaged, not H.264, a picture of another size, or a missing reference."""

    def __init__(self, message: str, *, missing_reference: bool = False) -> None:
        super().__init__(message)
        self.missing_reference = missing_reference


def _av() -> Any:
    """PyAV, imported at first use."""
    try:
        import av
    except ImportError as exc:
        raise ConfigError("the pixels partition needs PyAV: pip install 'splitinfer[pixels]' (or pip install av)."
                          ) from exc
    return av


def available() -> bool:
    """Whether PyAV is installed (the cloud refuses pixels streams without it)."""
    try:
        _av()
    except ConfigError:
        return False
    return True


@dataclass(frozen=True)
class PixelSettings:
    """How the edge codes pixels: preset, then either a constant rate factor or a target bitrate; key interval."""

    preset: str = DEFAULT_PRESET
    crf: int | None = DEFAULT_CRF  # None: bitrate mode (target_kbps)
    target_kbps: float | None = None
    key_interval: int = DEFAULT_KEY_INTERVAL
    size: str = "input"  # "input": the model's input size; "native": the source's size

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"--pixel-preset {self.preset!r} is not an x264 preset; use one of {', '.join(PRESETS)}.")
        if self.target_kbps is None and self.crf is None:
            raise ConfigError("the pixels partition needs --pixel-crf or --rate-kbps.")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise ConfigError(f"--pixel-crf must be within 0..51 (lower is better quality), got {self.crf}.")
        if self.target_kbps is not None and not self.target_kbps > 0:
            raise ConfigError(f"--rate-kbps must be positive, got {self.target_kbps:g}.")
        if self.key_interval < 1:
            raise ConfigError("--intra-period (frames between key frames) must be at least 1, got "
                              f"{self.key_interval}.")
        if self.size not in ("input", "native"):
            raise ConfigError(f"--pixel-size must be input or native, got {self.size!r}.")


# The frame rate a bitrate is spent over when the source does not say (a camera without --camera-fps, images).
DEFAULT_FPS = 10.0


def video_file_fps(path: str) -> float:
    """A video file's own frame rate, else DEFAULT_FPS (a camera, a URL, an image folder, a file without one)."""
    import cv2

    if not Path(path).is_file():
        return DEFAULT_FPS
    capture = cv2.VideoCapture(path)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return float(fps) if fps and 0 < fps <= 1000 else DEFAULT_FPS


def pixel_settings_from_flags(*, preset: str | None, crf: int | None, rate_kbps: float | None,
                              key_interval: int | None, size: str | None) -> PixelSettings:
    """PixelSettings from the command-line flags (None: not given): --rate-kbps sets a bitrate instead of a CRF."""
    if rate_kbps is not None and crf is not None:
        raise ConfigError("--pixel-crf and --rate-kbps both set the pixel encoder's rate: pass one of them.")
    return PixelSettings(preset=preset or DEFAULT_PRESET,
                         crf=None if rate_kbps is not None else (DEFAULT_CRF if crf is None else crf),
                         target_kbps=rate_kbps, key_interval=DEFAULT_KEY_INTERVAL if key_interval is None
                         else key_interval, size=size or "input")


def check_pixel_coding(coding: Any) -> str | None:
    """What is wrong with a stream's PixelCoding (the cloud's check before it opens a decoder), or None."""
    if coding.codec != CODEC:
        return f"codec {coding.codec[:32]!r} is not one this cloud decodes; use {CODEC!r}."
    if (coding.width, coding.height) == (0, 0):
        return None  # native: each frame's source size, rounded down to even
    if not (2 <= coding.width <= MAX_SIDE and 2 <= coding.height <= MAX_SIDE) or coding.width % 2 or coding.height % 2:
        return (f"picture size {coding.width}x{coding.height} must be even and within 2..{MAX_SIDE} on each side "
                "(H.264 4:2:0), or 0x0 for the source's own size.")
    return None


def picture_size(coding: Any, source_width: int, source_height: int) -> tuple[int, int]:
    """The (width, height) of a frame's coded picture: the declared size, or for native coding (0x0) the source's
    size rounded down to even."""
    if coding.width and coding.height:
        return coding.width, coding.height
    return even_size(source_width, source_height)


def even_size(width: int, height: int) -> tuple[int, int]:
    """The picture size H.264 4:2:0 can code: each side rounded down to an even number (at least 2)."""
    return max(2, width - width % 2), max(2, height - height % 2)


@dataclass(frozen=True)
class Packet:
    """One coded frame."""

    data: bytes
    key_frame: bool

    @property
    def crc32(self) -> int:
        return zlib.crc32(self.data)


class PixelEncoder:
    """H.264 at a fixed picture size; `restart()` makes the next frame a key frame (a fresh encoder)."""

    def __init__(self, width: int, height: int, settings: PixelSettings, fps: float = DEFAULT_FPS) -> None:
        self.width, self.height = width, height
        self.settings = settings
        self.fps = fps
        self._context: Any = None
        self._pts = 0

    def restart(self) -> None:
        self._context = None

    def _open(self) -> Any:
        av = _av()
        context = av.CodecContext.create(ENCODER, "w")
        context.width, context.height = self.width, self.height
        context.pix_fmt = "yuv420p"
        rate = Fraction(self.fps).limit_denominator(1001)
        context.framerate = rate
        context.time_base = 1 / rate
        context.gop_size = self.settings.key_interval
        options = {"preset": self.settings.preset, "tune": "zerolatency",
                   # Every key frame an IDR with its parameter sets: a decoder can start at any key frame.
                   "x264-params": f"keyint={self.settings.key_interval}:min-keyint={self.settings.key_interval}"
                                  ":scenecut=0:repeat-headers=1"}
        if self.settings.target_kbps is not None:
            kbps = self.settings.target_kbps
            context.bit_rate = int(kbps * 1000)
            options["x264-params"] += f":vbv-maxrate={kbps:g}:vbv-bufsize={kbps:g}"
        else:
            options["crf"] = str(self.settings.crf)
        context.options = options
        context.thread_count = 1  # frame threads would hold packets back; the edge runs one frame at a time
        context.open()
        self._pts = 0
        return context

    def encode(self, image_bgr: np.ndarray) -> Packet:
        """Code one (height, width, 3) BGR picture; exactly one packet comes back."""
        av = _av()
        if self._context is None:
            self._context = self._open()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr), format="bgr24").reformat(format="yuv420p")
        frame.pts = self._pts
        self._pts += 1
        packets = self._context.encode(frame)
        if len(packets) != 1:  # pragma: no cover - zerolatency codes each frame at once
            raise PixelCodingError(f"internal error: the encoder gave {len(packets)} packets for one frame.")
        return Packet(bytes(packets[0]), bool(packets[0].is_keyframe))


class PixelDecoder:
    """The cloud's decoder of one stream: decodes packets in order, from a key frame on; refuses the rest."""

    def __init__(self) -> None:
        self._context: Any = None
        self._size: tuple[int, int] | None = None  # the picture size of the current run of frames
        self.last_frame_id: int | None = None  # the frame decoded last, the reference of the next inter frame

    def restart(self) -> None:
        """Forget the reference: the next frame must be a key frame (a new connection, or after an error)."""
        self._context = None
        self._size = None
        self.last_frame_id = None

    def decode(self, frame_id: int, data: bytes, crc32: int, key_frame: bool, reference_frame_id: int | None,
               size: tuple[int, int]) -> np.ndarray:
        """The (height, width, 3) BGR picture of one packet, which must be `size` (width, height) pixels;
        PixelCodingError (and a restart: the next frame must be a key frame) when it cannot be."""
        if zlib.crc32(data) != crc32:
            self.restart()
            raise PixelCodingError(f"the video packet of frame {frame_id} is damaged (CRC-32 mismatch).")
        if key_frame:
            self.restart()
            self._context, self._size = self._open(*size), size
        elif self._context is None or reference_frame_id is None or reference_frame_id != self.last_frame_id:
            held = "none" if self.last_frame_id is None else str(self.last_frame_id)
            self.restart()
            raise PixelCodingError(f"frame {frame_id} is coded against frame {reference_frame_id}, but the decoder "
                                   f"holds {held}: send a key frame.", missing_reference=True)
        if size != self._size:
            keyed = "x".join(map(str, self._size or ()))
            self.restart()
            raise PixelCodingError(f"frame {frame_id} must be {size[0]}x{size[1]} pixels, but its key frame was "
                                   f"{keyed}: start a new size with a key frame.")
        try:
            pictures = self._context.decode(_av().Packet(data))
        except Exception as exc:  # noqa: BLE001 - FFmpeg raises many kinds for bad data
            self.restart()
            raise PixelCodingError(f"the video packet of frame {frame_id} does not decode ({type(exc).__name__}: "
                                   f"{str(exc)[:120]}).") from exc
        if len(pictures) != 1:
            self.restart()
            raise PixelCodingError(f"the video packet of frame {frame_id} gave {len(pictures)} pictures, not one.")
        picture = pictures[0]
        if (picture.width, picture.height) != size:
            self.restart()
            raise PixelCodingError(f"frame {frame_id} decodes to {picture.width}x{picture.height}, not the "
                                   f"{size[0]}x{size[1]} the stream declared.")
        self.last_frame_id = frame_id
        return picture.to_ndarray(format="bgr24")

    @staticmethod
    def _open(width: int, height: int) -> Any:
        av = _av()
        context = av.CodecContext.create(CODEC, "r")
        # A forged parameter set cannot make the decoder allocate pictures larger than the stream declared.
        context.options = {"max_pixels": str(width * height)}
        context.thread_count = 1  # no frame threading: each packet's picture comes out at once
        context.open()
        return context
