"""The edge's work per frame for the partitions that do not cut the model: pixels and detections.

Both follow the streamer's FramePipeline protocol (splitinfer.services.edge.client) as EdgePipeline does for
features, so reconnects, resends and intra requests work the same way:
- `PixelPipeline`: resize (to the model's input size, or keep the source size), then H.264 (services.pixels).
  `restart_coding` makes the next frame a key frame: a resend after a reconnect starts from one, re-encoded
  from the pictures kept for the frames still without a result.
- `DetectionsPipeline`: the whole model on the edge (services.whole_model); the frame carries its detections.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any

import cv2
import numpy as np
import torch

from splitinfer.codec import TemporalDecoder
from splitinfer.codec.ladder import CodecLadder
from splitinfer.errors import ConfigError
from splitinfer.services.edge.capture import CapturedFrame
from splitinfer.services.edge.client import HeadOutput
from splitinfer.services.edge.pipeline import EdgePipeline
from splitinfer.services.edge.rate_control import RateController
from splitinfer.services.pixels import (CODEC, DEFAULT_FPS, PixelDecoder, PixelEncoder, PixelSettings, even_size,
                                        picture_size)
from splitinfer.services.whole_model import INPUT_CUT, OUTPUT_CUT, detect, network_input, run_whole
from splitinfer.v1 import inference_pb2
from splitinfer.wire import coded_bytes, tensor_from_proto

_PICTURE = "picture"
_FOUND = "detections"


def _frame_message(head: HeadOutput) -> inference_pb2.FeatureFrame:
    """A frame's id, capture fields and edge stage times, as every partition sends them."""
    frame = head.frame
    message = inference_pb2.FeatureFrame(frame_id=frame.sequence)
    message.capture.capture_time.FromNanoseconds(frame.wall_time_ns)
    message.capture.capture_monotonic_ns = frame.monotonic_ns
    message.capture.image_height, message.capture.image_width = frame.image.shape[:2]
    for stage, seconds in head.stage_seconds.items():
        message.edge_stage_seconds[stage] = seconds
    return message


class PixelPipeline:
    """Resize and H.264-code each frame; one packet per frame, key frames where the cloud needs them."""

    rate = None  # the pixel encoder holds its own bitrate (PixelSettings.target_kbps)
    partition = inference_pb2.PARTITION_PIXELS

    def __init__(self, model: Any, settings: PixelSettings, *, fps: float = DEFAULT_FPS) -> None:
        self.model = model
        self.settings = settings
        self.fps = fps
        height, width = model.input_size
        self._input_size = even_size(width, height)
        self._encoder: PixelEncoder | None = None
        self._reference_id: int | None = None
        self._lock = threading.Lock()

    @property
    def cut(self) -> str:
        return INPUT_CUT

    def coding(self) -> inference_pb2.PixelCoding:
        """What StreamStart declares (and results echo): 0x0 for the source's own size."""
        width, height = self._input_size if self.settings.size == "input" else (0, 0)
        return inference_pb2.PixelCoding(codec=CODEC, width=width, height=height, preset=self.settings.preset,
                                         crf=self.settings.crf if self.settings.target_kbps is None else 0,
                                         target_kbps=self.settings.target_kbps or 0.0,
                                         key_interval=self.settings.key_interval)

    def start_message(self, stream_id: str) -> inference_pb2.StreamStart:
        return inference_pb2.StreamStart(stream_id=stream_id, model=self.model.name,
                                         partition=inference_pb2.PARTITION_PIXELS, pixel_coding=self.coding())

    def accepted(self, accepted: inference_pb2.StreamAccepted) -> None:
        """Nothing the cloud says changes how pixels are coded."""

    def restart_coding(self) -> None:
        """The next frame is a key frame (after a reconnect, or when the cloud asked for one)."""
        with self._lock:
            if self._encoder is not None:
                self._encoder.restart()
            self._reference_id = None

    def warm_up(self) -> None:
        """Open the encoder once on a blank picture, so that the first real frame does not pay for it."""
        width, height = self._input_size
        PixelEncoder(width, height, self.settings, self.fps).encode(np.zeros((height, width, 3), np.uint8))

    def run_head(self, frame: CapturedFrame) -> HeadOutput:
        """The picture to code: the frame resized to the model's input size (as its preprocessing resizes), or
        the frame itself cut to even sides."""
        started = time.perf_counter()
        image = frame.image
        height, width = image.shape[:2]
        target = self._input_size if self.settings.size == "input" else even_size(width, height)
        if target != (width, height):
            image = (cv2.resize(image, target, interpolation=cv2.INTER_LINEAR) if self.settings.size == "input"
                     else image[:target[1], :target[0]])
        return HeadOutput(frame, {_PICTURE: image}, {"capture": frame.read_seconds,
                                                     "preprocess": time.perf_counter() - started})

    def encode(self, head: HeadOutput) -> inference_pb2.FeatureFrame:
        """Code the picture: a key frame first, and after every restart; else an inter frame on the frame before."""
        started = time.perf_counter()
        picture = head.tensors[_PICTURE]
        height, width = picture.shape[:2]
        with self._lock:
            if self._encoder is None or (self._encoder.width, self._encoder.height) != (width, height):
                self._encoder = PixelEncoder(width, height, self.settings, self.fps)
                self._reference_id = None
            packet = self._encoder.encode(picture)
            if not packet.key_frame and self._reference_id is None:  # pragma: no cover - a fresh encoder keys
                raise ConfigError("internal error: the video encoder began without a key frame.")
            message = _frame_message(head)
            if not packet.key_frame:
                message.reference_frame_id = self._reference_id  # type: ignore[assignment]
            self._reference_id = head.frame_id
        message.pixels.data = packet.data
        message.pixels.data_crc32 = packet.crc32
        message.pixels.key_frame = packet.key_frame
        message.edge_stage_seconds["encode"] = time.perf_counter() - started
        return message


class PixelRoundtrip:
    """The pixels partition in one process, the edge's and the cloud's code as they run (for `splitinfer eval` and
    bench/partition.py): each image in turn -> the whole model's outputs on the decoded picture, the info that maps
    them to the image, and the packet's bytes."""

    def __init__(self, model: Any, settings: PixelSettings, *, fps: float = DEFAULT_FPS) -> None:
        self.model = model
        self.fps = fps
        self.pipeline = PixelPipeline(model, settings, fps=fps)
        self.decoder = PixelDecoder()
        self.cut = INPUT_CUT
        self._coding = self.pipeline.coding()
        self._sequence = 0
        self.encode_cpu_s = 0.0  # the edge's resize and encode, CPU time

    def __call__(self, image_bgr: np.ndarray) -> tuple[Any, Any, int]:
        frame = CapturedFrame(self._sequence, image_bgr, time.time_ns(), time.monotonic_ns(), 0.0,
                              self._sequence / self.fps)
        self._sequence += 1
        started = time.process_time()
        message = self.pipeline.encode(self.pipeline.run_head(frame))
        self.encode_cpu_s += time.process_time() - started
        height, width = image_bgr.shape[:2]
        packet = message.pixels
        reference = message.reference_frame_id if message.HasField("reference_frame_id") else None
        picture = self.decoder.decode(message.frame_id, packet.data, packet.data_crc32, packet.key_frame, reference,
                                      picture_size(self._coding, width, height))
        x, info = network_input(self.model, picture, width, height)
        return run_whole(self.model, torch.from_numpy(x)), info, len(packet.data)


class FeatureRoundtrip:
    """The features partition under rate control in one process (for `splitinfer eval` and the partition
    calibration): the edge's EdgePipeline with its RateController over `ladder` at `rate_kbps`, the cloud's
    TemporalDecoder and the tail. Same call as PixelRoundtrip; every frame is coded (file mode: none dropped)."""

    def __init__(self, model: Any, ladder: CodecLadder, rate_kbps: float, *, fps: float = DEFAULT_FPS) -> None:
        self.model = model
        self.fps = fps
        split = model.split(str(ladder.cut))
        elements = sum(math.prod(spec.shape) for spec in split.tensors)
        self.pipeline = EdgePipeline(model, ladder.points[-1], rate=RateController(ladder, elements, rate_kbps * 1000))
        self.split = self.pipeline.split
        self.cut = self.split.cut
        self.decoder = TemporalDecoder()
        self._sequence = 0
        self.pipeline.warm_up()  # the codec's kernels compile now, not inside the first frame's CPU time
        self.encode_cpu_s = 0.0  # the edge's preprocess, head and coding (rate-control trials included), CPU time

    def __call__(self, image_bgr: np.ndarray) -> tuple[Any, Any, int]:
        frame = CapturedFrame(self._sequence, image_bgr, time.time_ns(), time.monotonic_ns(), 0.0,
                              self._sequence / self.fps)
        self._sequence += 1
        started = time.process_time()
        x, info = self.model.preprocess(image_bgr)
        tensors = {name: value.detach().cpu().numpy() for name, value in self.split.head(x).items()}
        message = self.pipeline.encode(HeadOutput(frame, tensors, {}))
        self.encode_cpu_s += time.process_time() - started
        if message is None:  # pragma: no cover - allow_drop is off: a file's frames are all coded
            raise ConfigError("internal error: rate control dropped a frame of a file.")
        coded = {t.name: tensor_from_proto(t) for t in message.tensors}
        reference = message.reference_frame_id if message.HasField("reference_frame_id") else None
        levels = self.decoder.decode_frame(coded, reference)
        self.decoder.commit(message.frame_id, levels)
        decoded = {name: torch.from_numpy(ref.quantizer.dequantize(ref.levels).reshape(tensors[name].shape))
                   for name, ref in levels.items()}
        return self.split.tail(decoded), info, coded_bytes(message.tensors)


class DetectionsRoundtrip:
    """The detections partition in one process: the whole model on the image (the edge), the bytes its
    detections take on the wire (the serialized EdgeDetections). No change against the unsplit model by
    construction; the outputs are returned for the caller's postprocess like the other round trips'."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cut = OUTPUT_CUT
        self.encode_cpu_s = 0.0  # the edge's preprocess, whole model and postprocess, CPU time

    def __call__(self, image_bgr: np.ndarray) -> tuple[Any, Any, int]:
        started = time.process_time()
        x, info = self.model.preprocess(image_bgr)
        outputs = run_whole(self.model, x)
        found = self.model.postprocess(outputs, info)
        message = inference_pb2.EdgeDetections(detections=[
            inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label,
                                    score=d.score) for d in found])
        self.encode_cpu_s += time.process_time() - started
        return outputs, info, message.ByteSize()


def round_trip(model: Any, partition: str, rate_kbps: float | None, *, pixel_settings: PixelSettings | None,
               ladder: CodecLadder | None, fps: float) -> tuple[Any, str]:
    """The round trip of one partition (`splitinfer eval --partition P --rate-kbps R`, auto's scene probe) and its
    name for a report: pixels at `rate_kbps` (else `pixel_settings`' own crf), features under rate control over
    `ladder` at `rate_kbps`, detections."""
    if partition == "detections":
        return DetectionsRoundtrip(model), "detections: the whole model on the edge"
    if partition == "features":
        if rate_kbps is None or ladder is None:
            raise ConfigError("internal error: the features round trip needs a rate and a ladder.")
        name = (f"features: cut {ladder.cut}, rate control at {rate_kbps:g} kbit/s over {len(ladder.points)} ladder "
                f"points, {fps:g} frames/s")
        return FeatureRoundtrip(model, ladder, rate_kbps, fps=fps), name
    if pixel_settings is None:
        raise ConfigError("internal error: the pixels round trip needs its encoder settings.")
    settings = dataclasses.replace(pixel_settings, crf=None, target_kbps=rate_kbps) if rate_kbps else pixel_settings
    rate = f"{settings.target_kbps:g} kbit/s" if settings.target_kbps is not None else f"crf {settings.crf}"
    name = (f"pixels: h264 {settings.preset} {rate}, key frame every {settings.key_interval}, "
            f"{settings.size} size, {fps:g} frames/s")
    return PixelRoundtrip(model, settings, fps=fps), name


class DetectionsPipeline:
    """Run the whole model on the edge; each frame carries its detections."""

    rate = None
    partition = inference_pb2.PARTITION_DETECTIONS

    def __init__(self, model: Any) -> None:
        if model.task != "detection":
            raise ConfigError(f"--partition detections sends boxes, but {model.name} is a {model.task} model: use "
                              "--partition features or pixels.")
        self.model = model

    @property
    def cut(self) -> str:
        return OUTPUT_CUT

    def start_message(self, stream_id: str) -> inference_pb2.StreamStart:
        return inference_pb2.StreamStart(stream_id=stream_id, model=self.model.name,
                                         partition=inference_pb2.PARTITION_DETECTIONS)

    def accepted(self, accepted: inference_pb2.StreamAccepted) -> None:
        """Nothing the cloud says changes what detections send."""

    def restart_coding(self) -> None:
        """Nothing to restart: every frame stands alone."""

    def warm_up(self) -> None:
        """Run the whole model once on a blank frame, so that the first real frame does not pay for it."""
        detect(self.model, np.zeros((432, 768, 3), np.uint8))

    def run_head(self, frame: CapturedFrame) -> HeadOutput:
        found, stages = detect(self.model, frame.image)
        return HeadOutput(frame, {_FOUND: found}, {"capture": frame.read_seconds, **stages})

    def encode(self, head: HeadOutput) -> inference_pb2.FeatureFrame:
        started = time.perf_counter()
        message = _frame_message(head)
        message.detections.detections.extend(
            inference_pb2.Detection(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2, class_id=d.class_id, label=d.label,
                                    score=d.score) for d in head.tensors[_FOUND])
        message.edge_stage_seconds["encode"] = time.perf_counter() - started
        return message
