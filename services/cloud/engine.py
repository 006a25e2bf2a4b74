"""The cloud's work for a batch of frames: decode the tensors (CPU), run the tail, decode boxes + NMS (device).

The partition of a stream decides what "decode" and "tail" mean: features decode coded tensors and run the
tail at the stream's cut; pixels decode a video packet (the stream's own decoder) and run the whole model
(the cut "input", services.whole_model); detections are checked (services.cloud.edge_detections) and become
the result as they are, with no model call.

`TailEngine` holds the one loaded model, shared by every stream (torch inference in no_grad mode is
safe from several executor threads), on the device and in the precision it was given (dnn.device).
Everything a client can get wrong in a frame is caught here and becomes an in-band `FrameError` for
that frame alone; the stream and the other frames of its batch go on. Which frames form a batch is decided
in services.cloud.batcher, the one batching module; `process` answers one frame alone (prepare + finish).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from google.rpc import code_pb2  # FrameError.code is a google.rpc.Code

from splitinfer.codec import CodecError, CodecLimits, CompressedTensor, MissingReferenceError, Reference
from splitinfer.dnn import ModelError, load_model
from splitinfer.dnn.device import (pinned_empty, place_model, resolve_device, resolve_precision, synchronize,
                                  to_device)
from splitinfer.dnn.runtime import resolve_runtime
from splitinfer.dnn.threads import apply_torch_threads
from splitinfer.dnn.split import Split
from splitinfer.services.cloud.edge_detections import BadDetectionsError, checked_detections
from splitinfer.services.cloud.streams import StreamState
from splitinfer.services.pixels import PixelCodingError, picture_size
from splitinfer.services.stages import known_edge_stages
from splitinfer.services.whole_model import INPUT_TENSOR, OUTPUT_CUT, input_split, network_input
from splitinfer.v1 import inference_pb2
from splitinfer.wire import coded_bytes, tensor_from_proto

log = logging.getLogger("splitinfer.cloud")

MAX_IMAGE_SIDE = 8192
_INFO_CACHE_SIZE = 32
# Client-chosen text (tensor names) quoted in an in-band error is cut to this many characters.
_QUOTE_CHARS = 64
# The detections partition's cut: the model's output, nothing left to run in the cloud.
_OUTPUT_SPLIT = Split(OUTPUT_CUT, [], head=lambda x: {}, tail=lambda tensors: None)


def bucket_size(n: int) -> int:
    """The padded batch size on a GPU: the next power of two."""
    return 1 << (n - 1).bit_length()


class FrameRejected(Exception):
    """A frame the cloud cannot answer with detections; becomes FrameError(code, message, reason)."""

    def __init__(self, code: int, reason: int, message: str, intra_frame_requested: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # an inference_pb2.FrameErrorReason value
        self.message = message
        self.intra_frame_requested = intra_frame_requested




@dataclass
class Decoded:
    """A frame checked and decoded on the CPU (TailEngine.prepare), waiting for the tail (TailEngine.finish)."""

    state: StreamState
    split: Any
    frame: inference_pb2.FeatureFrame
    info: Any
    tensors: dict[str, np.ndarray]
    levels: dict[str, Reference]
    result: inference_pb2.InferenceResult


class TailEngine:
    """One loaded model: checks a stream's model and cut, and turns FeatureFrames into InferenceResults."""

    def __init__(self, model: Any, *, limits: CodecLimits | None = None, device: torch.device | str = "cpu",
                 precision: str = "fp32", pad_batches: bool | None = None) -> None:
        self.model = model
        self.model_name: str = model.name
        self.limits = limits or CodecLimits()
        runtime = getattr(model, "runtime", None)
        if runtime is not None and runtime.compiled:  # ONNX Runtime / OpenVINO: CPU, in the runtime's precision
            self.device, self.precision, self.dtype = torch.device("cpu"), runtime.precision, torch.float32
        else:
            self.device = resolve_device(device) if isinstance(device, str) else device
            self.precision = precision
            self.dtype = resolve_precision(precision, self.device)
        if self.device.type != "cpu" or self.dtype is not torch.float32:
            place_model(model, self.device, self.dtype)
        # Batches padded to powers of two (see _stack): on a GPU by default; the CPU gains nothing from it.
        self.pad_batches = self.device.type == "cuda" if pad_batches is None else pad_batches
        self._splits: dict[str, Any] = {}
        self._input_split: Split | None = None  # the pixels partition's (open_partition)
        self._infos: collections.OrderedDict[tuple[int, int], Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str, *, weights: str | None = None, limits: CodecLimits | None = None, device: str = "auto",
             precision: str = "fp32", pretrained: bool = True, runtime: str = "torch", threads: int = 0,
             concurrent_calls: int = 1) -> TailEngine:
        """Load a model by registry name (weights: a file or folder; None: the cache or SPLITINFER_WEIGHTS_DIR),
        running in `runtime` with `threads` per tail call (0: the default for `concurrent_calls` at once).

        The runtime, device and precision are checked first: a missing GPU or runtime package is an error
        before any weights load."""
        config = resolve_runtime(runtime, threads, concurrent_calls=concurrent_calls, precision=precision,
                                 device=device)
        apply_torch_threads(config.threads)  # torch decodes boxes and runs NMS, and the tail with --runtime torch
        where = resolve_device(device if not config.compiled else "cpu")
        if not config.compiled:
            resolve_precision(precision, where)
        model = load_model(name, weights=weights, pretrained=pretrained, runtime=config)
        return cls(model, limits=limits, device=where, precision=precision)

    def open_stream(self, model: str, cut: str) -> Any:
        """The Split for a stream's start message (empty cut: the model's default); LookupError if unknown."""
        if model != self.model_name:
            raise LookupError(f"this cloud serves model {self.model_name!r}, not {_quote(model)!r}: start the stream "
                              f"with --model {self.model_name} or connect to a cloud that serves that model.")
        cut = cut or self.model.default_cut
        if len(cut) > _QUOTE_CHARS:  # no cut name is that long; parsing one (a million digits) is work for nothing
            raise LookupError(f"unknown cut {_quote(cut)!r} for {self.model_name}: cut names are short; list them "
                              "with `splitinfer eval --list-models` or model.cuts().")
        with self._lock:
            split = self._splits.get(cut)
            if split is None:
                try:
                    split = self.model.split(cut)
                except ModelError as exc:
                    raise LookupError(f"unknown cut {_quote(cut)!r} for {self.model_name}: "
                                      f"{_quote(str(exc), 4 * _QUOTE_CHARS)}") from exc
                # Cached under its canonical name only: spellings a client chooses ("0080", "layer80") would
                # otherwise grow the cache without bound.
                split = self._splits.setdefault(split.cut, split)
        return split

    def open_partition(self, model: str, partition: int) -> Any:
        """The Split of a pixels stream (the cut at the input: the whole model) or of a detections stream (the cut
        at the output: nothing to run); LookupError for another model, ValueError for a partition it cannot serve."""
        if model != self.model_name:
            self.open_stream(model, "")  # raises the LookupError that names the model served
        if partition == inference_pb2.PARTITION_DETECTIONS:
            if self.model.task != "detection":
                raise ValueError(f"model {self.model_name} is a {self.model.task} model: the detections partition "
                                 "carries boxes; use the pixels or features partition.")
            return _OUTPUT_SPLIT
        with self._lock:
            if self._input_split is None:
                self._input_split = input_split(self.model)
            return self._input_split

    def warm_up(self, max_batch: int = 1) -> None:
        """Run the default cut's tail and postprocess at every batch size used up to `max_batch` on the device
        (kernels, cuDNN plans, allocator) so real frames do not pay for it; called before health says SERVING,
        on the thread that will run the tails (torch's cuDNN plan cache may be per thread)."""
        split = self.open_stream(self.model_name, "")
        info = self._preprocess_info(*reversed(self.model.input_size))
        sizes = {1, max(1, max_batch)} if not self.pad_batches else \
            {bucket_size(n) for n in range(1, max(1, max_batch) + 1)}
        for n in sorted(sizes):
            inputs = {spec.name: to_device(torch.zeros((n, *spec.shape)), self.device, self.dtype)
                      for spec in split.tensors}
            with torch.no_grad():
                self.model.postprocess_batch(split.tail(inputs), [info] * n)
        synchronize(self.device)

    def process(self, state: StreamState, split: Any, frame: inference_pb2.FeatureFrame,
                previous_frame_id: int) -> inference_pb2.InferenceResult:
        """Answer one frame alone: detections, or a FrameError when the frame is bad (never raises for bad input)."""
        prepared = self.prepare(state, split, frame, previous_frame_id)
        return self.finish([prepared])[0] if isinstance(prepared, Decoded) else prepared

    def prepare(self, state: StreamState, split: Any, frame: inference_pb2.FeatureFrame,
                previous_frame_id: int) -> Decoded | inference_pb2.InferenceResult:
        """Check and decode one frame (CPU): a Decoded for `finish`, or the frame's FrameError result."""
        result = self._empty_result(state, split, frame)
        try:
            if frame.frame_id <= previous_frame_id:
                raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_FRAME_ID_NOT_INCREASING,
                                    f"frame id {frame.frame_id} does not increase (the "
                                    f"previous frame of this call was {previous_frame_id}).")
            if not _valid_timestamp(frame.capture.capture_time):
                raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_BAD_CAPTURE_TIME,
                                    "capture.capture_time is not a valid timestamp (years 1-9999, nanos below 1e9): "
                                    "set it to the frame's capture time.")
            info = self._preprocess_info(frame.capture.image_width, frame.capture.image_height)
            started = time.perf_counter()
            if state.partition == inference_pb2.PARTITION_DETECTIONS:
                self._take_detections(frame, result)
                return result
            if state.partition == inference_pb2.PARTITION_PIXELS:
                tensors, info = self._decode_pixels(state, frame)
                levels: dict[str, Reference] = {}
            else:
                tensors, levels, result.elements = self._decode(state, split, frame)
            result.stage_seconds["decode"] = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the stream
            self._fail(result, state, frame, exc)
            return result
        return Decoded(state, split, frame, info, tensors, levels, result)

    def finish(self, decoded: Sequence[Decoded]) -> list[inference_pb2.InferenceResult]:
        """Tail + postprocess of prepared frames (of different streams), one tail call per cut; their results.

        A frame's stream reference moves to it only here, once it has detections."""
        by_cut: dict[str, list[Decoded]] = {}
        for item in decoded:
            by_cut.setdefault(item.split.cut, []).append(item)
        for group in by_cut.values():
            try:
                self._finish(group)
            except Exception as exc:  # noqa: BLE001 - unexpected: answer frame by frame so only the culprit fails
                if len(group) == 1:
                    self._fail(group[0].result, group[0].state, group[0].frame, exc)
                    continue
                for item in group:
                    try:
                        self._finish([item])
                    except Exception as exc:  # noqa: BLE001
                        self._fail(item.result, item.state, item.frame, exc)
        return [item.result for item in decoded]

    def _finish(self, group: list[Decoded]) -> None:
        """Tail + postprocess for frames of one cut; fills their results and moves their stream references."""
        split = group[0].split
        started = time.perf_counter()
        inputs = self._stack(split, group)
        with torch.no_grad():
            outputs = split.tail(inputs)
            if len(group) < next(iter(inputs.values())).shape[0]:  # padded to a bucket size (see _stack)
                outputs = [o[:len(group)] for o in outputs] if isinstance(outputs, list) else outputs[:len(group)]
            synchronize(self.device)
            tailed = time.perf_counter()
            found = self.model.postprocess_batch(outputs, [item.info for item in group])
        done = time.perf_counter()
        for item, items in zip(group, found):
            result = item.result
            if item.levels:  # features: the reference of the stream's next inter frame
                item.state.decoder.commit(item.frame.frame_id, item.levels)
            result.stage_seconds["tail"] = tailed - started
            result.stage_seconds["postprocess"] = done - tailed
            for found_item in items:
                if hasattr(found_item, "x1"):
                    result.detections.add(x1=found_item.x1, y1=found_item.y1, x2=found_item.x2, y2=found_item.y2,
                                          class_id=found_item.class_id, label=found_item.label, score=found_item.score)
                else:
                    result.classes.add(class_id=found_item.class_id, label=found_item.label, score=found_item.score)

    def _stack(self, split: Any, group: list[Decoded]) -> dict[str, torch.Tensor]:
        """The decoded tensors of a group as one batch on the device (through a pinned buffer on a GPU).

        On a GPU the batch is padded with zeros to a power of two: a handful of shapes, each planned by cuDNN
        once (in warm_up), instead of a new plan for every batch size that happens to arrive."""
        if len(group) == 1 and self.device.type == "cpu":
            return {name: to_device(torch.from_numpy(value), self.device, self.dtype)
                    for name, value in group[0].tensors.items()}
        rows = bucket_size(len(group)) if self.pad_batches else len(group)
        batch: dict[str, torch.Tensor] = {}
        for spec in split.tensors:
            host = pinned_empty((rows, *spec.shape), self.device)
            for row, item in enumerate(group):
                host[row].copy_(torch.from_numpy(item.tensors[spec.name][0]))
            if rows > len(group):
                host[len(group):].zero_()
            batch[spec.name] = to_device(host, self.device, self.dtype)
        return batch

    def _empty_result(self, state: StreamState, split: Any,
                      frame: inference_pb2.FeatureFrame) -> inference_pb2.InferenceResult:
        """The frame's result before any work: ids, the capture fields and the known edge stage times only."""
        result = inference_pb2.InferenceResult(stream_id=state.stream_id, frame_id=frame.frame_id,
                                               model=self.model_name)
        _copy_capture(frame.capture, result.capture)
        result.stage_seconds.update(known_edge_stages(frame.edge_stage_seconds)[0])
        origin = result.origin
        origin.partition = state.partition
        origin.cut = split.cut
        if state.partition == inference_pb2.PARTITION_PIXELS:
            result.payload_bytes = len(frame.pixels.data)
            if state.pixel_coding is not None:
                origin.pixel_coding.CopyFrom(state.pixel_coding)
        elif state.partition == inference_pb2.PARTITION_DETECTIONS:
            result.payload_bytes = frame.detections.ByteSize()
        else:
            if len(frame.tensors) == len(split.tensors):  # a forged frame can hold millions of (empty) tensors
                result.payload_bytes = coded_bytes(frame.tensors)
            if frame.HasField("ladder_point"):
                origin.ladder_point = frame.ladder_point
        return result

    def _take_detections(self, frame: inference_pb2.FeatureFrame, result: inference_pb2.InferenceResult) -> None:
        """Partition detections: the edge's detections, checked, become the result (FrameRejected if malformed)."""
        try:
            checked = checked_detections(frame.detections.detections, width=frame.capture.image_width,
                                         height=frame.capture.image_height, class_names=self.model.class_names)
        except BadDetectionsError as exc:
            raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_BAD_DETECTIONS,
                                f"{exc} The frame's detections were refused; the stream goes on.") from exc
        result.detections.extend(checked)

    def _decode_pixels(self, state: StreamState, frame: inference_pb2.FeatureFrame
                       ) -> tuple[dict[str, np.ndarray], Any]:
        """Partition pixels: decode the packet with the stream's decoder; the network input and its box mapping."""
        if state.pixels is None:  # pragma: no cover - the servicer attaches pixels streams with their coding
            raise FrameRejected(code_pb2.INTERNAL, inference_pb2.FRAME_ERROR_REASON_INTERNAL,
                                "internal error: a pixels stream without a decoder.")
        packet = frame.pixels
        reference_id = frame.reference_frame_id if frame.HasField("reference_frame_id") else None
        try:
            if not packet.data:
                state.pixels.restart()
                raise PixelCodingError(f"frame {frame.frame_id} carries no video packet (FeatureFrame.pixels).")
            size = picture_size(state.pixel_coding, frame.capture.image_width, frame.capture.image_height)
            image = state.pixels.decode(frame.frame_id, packet.data, packet.data_crc32, packet.key_frame,
                                        reference_id, size)
        except PixelCodingError as exc:
            if exc.missing_reference:
                raise FrameRejected(code_pb2.FAILED_PRECONDITION, inference_pb2.FRAME_ERROR_REASON_MISSING_REFERENCE,
                                    str(exc), intra_frame_requested=True) from exc
            raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_UNDECODABLE_PIXELS,
                                f"{exc} The next key frame restarts the decoder.", intra_frame_requested=True
                                ) from exc
        x, info = network_input(self.model, image, frame.capture.image_width, frame.capture.image_height)
        return {INPUT_TENSOR: x}, info

    @staticmethod
    def _fail(result: inference_pb2.InferenceResult, state: StreamState, frame: inference_pb2.FeatureFrame,
              exc: BaseException) -> None:
        """Turn an exception into the frame's in-band FrameError."""
        for stage in ("decode", "tail", "postprocess"):
            if stage in result.stage_seconds:
                del result.stage_seconds[stage]
        result.ClearField("detections")
        result.ClearField("classes")
        if isinstance(exc, FrameRejected):
            result.error.code = exc.code
            result.error.reason = exc.reason  # type: ignore[assignment]
            result.error.message = exc.message
            result.error.intra_frame_requested = exc.intra_frame_requested
            return
        log.error("frame %d of stream %s failed", frame.frame_id, state.stream_id, exc_info=exc)
        result.error.code = code_pb2.INTERNAL
        result.error.reason = inference_pb2.FRAME_ERROR_REASON_INTERNAL
        result.error.message = f"the cloud failed on this frame ({type(exc).__name__}: {exc}); the stream goes on."

    def _preprocess_info(self, width: int, height: int) -> Any:
        """How boxes map back to a width x height source image (cached per size)."""
        if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
            raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_BAD_IMAGE_SIZE,
                                f"capture.image_width/height {width}x{height} must be within "
                                                  f"1..{MAX_IMAGE_SIDE}: set them to the source image size.")
        key = (width, height)
        with self._lock:
            info = self._infos.get(key)
            if info is not None:
                self._infos.move_to_end(key)
                return info
        # The model's own preprocessing knows how it maps sizes; a blank image of the size tells it.
        _, info = self.model.preprocess(np.zeros((height, width, 3), np.uint8))
        with self._lock:
            self._infos[key] = info
            while len(self._infos) > _INFO_CACHE_SIZE:
                self._infos.popitem(last=False)
        return info

    def _decode(self, state: StreamState, split: Any, frame: inference_pb2.FeatureFrame
                ) -> tuple[dict[str, np.ndarray], dict[str, Reference], int]:
        expected = {spec.name: spec for spec in split.tensors}
        if len(frame.tensors) != len(expected):
            raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_WRONG_TENSORS,
                                f"cut {split.cut} needs tensors {sorted(expected)}, the frame "
                                                  f"has {len(frame.tensors)} tensor(s).")
        names = [t.name for t in frame.tensors]
        if sorted(names) != sorted(expected):
            raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_WRONG_TENSORS,
                                f"cut {split.cut} needs tensors {sorted(expected)}, the frame "
                                                  f"has {[_quote(name) for name in sorted(names)]}.")
        compressed: dict[str, CompressedTensor] = {}
        for message in frame.tensors:
            spec = expected[message.name]
            rank = len(message.shape)  # checked before the list is copied: a forged one can hold millions
            shape = tuple(message.shape) if rank <= len(spec.shape) + 1 else ()
            if shape not in (tuple(spec.shape), (1, *spec.shape)):
                shown = list(shape) if shape else f"{rank} dimensions"
                raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_WRONG_SHAPE,
                                    f"tensor {message.name!r} has shape {shown}; cut "
                                                      f"{split.cut} needs [1, {', '.join(map(str, spec.shape))}].")
            try:
                compressed[message.name] = tensor_from_proto(message, known=state.decoder.quantizer(message.name))
            except CodecError as exc:
                raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_UNDECODABLE_TENSOR,
                                    f"tensor {message.name!r} could not be decoded: "
                                    f"{_quote(str(exc), 4 * _QUOTE_CHARS)}") from exc
        reference_id = frame.reference_frame_id if frame.HasField("reference_frame_id") else None
        try:
            levels = state.decoder.decode_frame(compressed, reference_id, limits=self.limits)
        except MissingReferenceError as exc:
            raise FrameRejected(code_pb2.FAILED_PRECONDITION, inference_pb2.FRAME_ERROR_REASON_MISSING_REFERENCE,
                                f"frame {frame.frame_id}: {exc}", intra_frame_requested=True) from exc
        except CodecError as exc:
            raise FrameRejected(code_pb2.INVALID_ARGUMENT, inference_pb2.FRAME_ERROR_REASON_UNDECODABLE_TENSOR,
                                _quote(str(exc), 5 * _QUOTE_CHARS)) from exc
        tensors: dict[str, np.ndarray] = {}
        elements = 0
        for name, decoded in levels.items():
            values = decoded.quantizer.dequantize(decoded.levels)
            tensors[name] = values.reshape((1, *expected[name].shape))
            elements += values.size
        return tensors, levels, elements


# The range of a valid google.protobuf.Timestamp (0001-01-01 to 9999-12-31): outside it, protobuf's own
# conversions (ToNanoseconds, the JSON mapping) raise.
_MIN_TIMESTAMP_SECONDS, _MAX_TIMESTAMP_SECONDS = -62_135_596_800, 253_402_300_799


def _valid_timestamp(timestamp: Any) -> bool:
    return (_MIN_TIMESTAMP_SECONDS <= timestamp.seconds <= _MAX_TIMESTAMP_SECONDS
            and 0 <= timestamp.nanos <= 999_999_999)


def _copy_capture(source: inference_pb2.CaptureInfo, target: inference_pb2.CaptureInfo) -> None:
    """Copy the capture fields the result echoes, field by field: unknown fields a client added are not echoed.

    An invalid capture time is not copied (prepare() refuses the frame for it)."""
    if _valid_timestamp(source.capture_time):
        target.capture_time.seconds = source.capture_time.seconds
        target.capture_time.nanos = source.capture_time.nanos
    target.capture_monotonic_ns = source.capture_monotonic_ns
    target.image_width = source.image_width
    target.image_height = source.image_height


def _quote(text: str, limit: int = _QUOTE_CHARS) -> str:
    """Client-chosen text, cut to `limit` characters, for an error message."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
