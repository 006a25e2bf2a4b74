"""The cloud's CPU work for one frame: decode the tensors, run the tail, decode boxes + NMS.

`TailEngine` holds the one loaded model, shared by every stream (torch inference in no_grad mode is
safe from several executor threads). Everything a client can get wrong in a frame is caught here and
becomes an in-band `FrameError`; the stream goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import numpy as np

from splitinfer.codec import CodecError, CodecLimits, decode_levels
from splitinfer.dnn import ModelError, load_model
from splitinfer.services.cloud.streams import StreamState
from splitinfer.services.stages import known_edge_stages
from splitinfer.v1 import inference_pb2
from splitinfer.wire import tensor_from_proto

log = logging.getLogger("splitinfer.cloud")

# google.rpc.Code values used in FrameError.code
INVALID_ARGUMENT = 3
FAILED_PRECONDITION = 9
INTERNAL = 13

MAX_IMAGE_SIDE = 8192
_INFO_CACHE_SIZE = 32
# Client-chosen text (tensor names) quoted in an in-band error is cut to this many characters.
_QUOTE_CHARS = 64


class FrameRejected(Exception):
    """A frame the cloud cannot answer with detections; becomes FrameError(code, message)."""

    def __init__(self, code: int, message: str, intra_frame_requested: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.intra_frame_requested = intra_frame_requested


class TailEngine:
    """One loaded model: checks a stream's model and cut, and turns a FeatureFrame into an InferenceResult."""

    def __init__(self, model: Any, *, limits: CodecLimits | None = None) -> None:
        self.model = model
        self.model_name: str = model.name
        self.limits = limits or CodecLimits()
        self._splits: dict[str, Any] = {}
        self._infos: collections.OrderedDict[tuple[int, int], Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str, *, weights: str | None = None, limits: CodecLimits | None = None) -> TailEngine:
        """Load a model by registry name (weights: a file or folder; None: the cache or SPLITINFER_WEIGHTS_DIR)."""
        return cls(load_model(name, weights=weights), limits=limits)

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

    def process(self, state: StreamState, split: Any, frame: inference_pb2.FeatureFrame,
                previous_frame_id: int) -> inference_pb2.InferenceResult:
        """Answer one frame: detections, or a FrameError when the frame is bad (never raises for bad input)."""
        result = inference_pb2.InferenceResult(stream_id=state.stream_id, frame_id=frame.frame_id,
                                               model=self.model_name)
        _copy_capture(frame.capture, result.capture)
        result.stage_seconds.update(known_edge_stages(frame.edge_stage_seconds)[0])
        if len(frame.tensors) == len(split.tensors):  # a forged frame can hold millions of (empty) tensors
            result.payload_bytes = sum(len(t.payload) for t in frame.tensors)
        try:
            if frame.frame_id <= previous_frame_id:
                raise FrameRejected(INVALID_ARGUMENT, f"frame id {frame.frame_id} does not increase (the previous "
                                                      f"frame of this call was {previous_frame_id}).")
            info = self._preprocess_info(frame.capture.image_width, frame.capture.image_height)
            started = time.perf_counter()
            tensors, levels, elements = self._decode(state, split, frame)
            result.elements = elements
            decoded = time.perf_counter()
            outputs = split.tail(tensors)
            tailed = time.perf_counter()
            found = self.model.postprocess(outputs, info)
            done = time.perf_counter()
        except FrameRejected as exc:
            result.error.code = exc.code
            result.error.message = exc.message
            result.error.intra_frame_requested = exc.intra_frame_requested
            return result
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the stream
            log.exception("frame %d of stream %s failed", frame.frame_id, state.stream_id)
            result.error.code = INTERNAL
            result.error.message = f"the cloud failed on this frame ({type(exc).__name__}: {exc}); the stream goes on."
            return result
        state.reference = (frame.frame_id, levels)
        result.stage_seconds["decode"] = decoded - started
        result.stage_seconds["tail"] = tailed - decoded
        result.stage_seconds["postprocess"] = done - tailed
        for item in found:
            if hasattr(item, "x1"):
                result.detections.add(x1=item.x1, y1=item.y1, x2=item.x2, y2=item.y2, class_id=item.class_id,
                                      label=item.label, score=item.score)
            else:
                result.classes.add(class_id=item.class_id, label=item.label, score=item.score)
        return result

    def _preprocess_info(self, width: int, height: int) -> Any:
        """How boxes map back to a width x height source image (cached per size)."""
        if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
            raise FrameRejected(INVALID_ARGUMENT, f"capture.image_width/height {width}x{height} must be within "
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
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
        expected = {spec.name: spec for spec in split.tensors}
        if len(frame.tensors) != len(expected):
            raise FrameRejected(INVALID_ARGUMENT, f"cut {split.cut} needs tensors {sorted(expected)}, the frame "
                                                  f"has {len(frame.tensors)} tensor(s).")
        names = [t.name for t in frame.tensors]
        if sorted(names) != sorted(expected):
            raise FrameRejected(INVALID_ARGUMENT, f"cut {split.cut} needs tensors {sorted(expected)}, the frame "
                                                  f"has {[_quote(name) for name in sorted(names)]}.")
        reference: dict[str, np.ndarray] | None = None
        if frame.HasField("reference_frame_id"):
            if state.reference is None or state.reference[0] != frame.reference_frame_id:
                have = "none" if state.reference is None else f"frame {state.reference[0]}"
                raise FrameRejected(FAILED_PRECONDITION, f"frame {frame.frame_id} is coded against frame "
                                    f"{frame.reference_frame_id}, but this cloud holds {have}; send an intra frame.",
                                    intra_frame_requested=True)
            reference = state.reference[1]
        tensors: dict[str, np.ndarray] = {}
        levels: dict[str, np.ndarray] = {}
        elements = 0
        for message in frame.tensors:
            spec = expected[message.name]
            rank = len(message.shape)  # checked before the list is copied: a forged one can hold millions
            shape = tuple(message.shape) if rank <= len(spec.shape) + 1 else ()
            if shape not in (tuple(spec.shape), (1, *spec.shape)):
                shown = list(shape) if shape else f"{rank} dimensions"
                raise FrameRejected(INVALID_ARGUMENT, f"tensor {message.name!r} has shape {shown}; cut "
                                                      f"{split.cut} needs [1, {', '.join(map(str, spec.shape))}].")
            try:
                compressed = tensor_from_proto(message)
                ref = None if reference is None else reference.get(message.name)
                tensor_levels = decode_levels(compressed, reference=ref, limits=self.limits)
                values = compressed.quantizer.dequantize(tensor_levels)
            except CodecError as exc:
                raise FrameRejected(INVALID_ARGUMENT, f"tensor {message.name!r} could not be decoded: "
                                                      f"{_quote(str(exc), 4 * _QUOTE_CHARS)}") from exc
            levels[message.name] = tensor_levels
            tensors[message.name] = values.reshape((1, *spec.shape))
            elements += values.size
        return tensors, levels, elements


def _copy_capture(source: inference_pb2.CaptureInfo, target: inference_pb2.CaptureInfo) -> None:
    """Copy the capture fields the result echoes, field by field: unknown fields a client added are not echoed."""
    target.capture_time.seconds = source.capture_time.seconds
    target.capture_time.nanos = source.capture_time.nanos
    target.capture_monotonic_ns = source.capture_monotonic_ns
    target.image_width = source.image_width
    target.image_height = source.image_height


def _quote(text: str, limit: int = _QUOTE_CHARS) -> str:
    """Client-chosen text, cut to `limit` characters, for an error message."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
