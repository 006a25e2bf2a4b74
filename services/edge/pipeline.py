"""The edge's CPU work per frame: preprocess -> head -> encode, with per-stream temporal coder state.

The codec profile (resolved once by splitinfer.services.profiles) gives each tensor's quantizer; a tensor
it leaves open is quantized over its first frame's 0.1 / 99.9 percentiles. Temporal coding (profile coder
TEMPORAL_CONTEXTS) codes each frame against the levels of the frame sent before it; intra frames (the
measured default coder, no reference) open the stream, follow every reconnect or intra request, and recur
every `intra_period` frames. A profile's `hysteresis` keeps an inter frame's level at the reference level
near cell boundaries (fewer bits for flicker); its `rdo_lambda` (with `rdo_weights`) also keeps levels, or
skips whole channels, where the error that adds is worth fewer bits than it saves.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from splitinfer.codec import CodecLimits, CodecProfile, CodedFrame, Coder, Quantizer, TemporalEncoder
from splitinfer.codec import warm_up as warm_up_codec
from splitinfer.services.edge.capture import CapturedFrame
from splitinfer.services.edge.client import HeadOutput
from splitinfer.services.edge.rate_control import RateController
from splitinfer.errors import ServiceError
from splitinfer.services.profiles import DEFAULT_LEVELS

from splitinfer.v1 import inference_pb2, tensor_pb2
from splitinfer.wire import coded_bytes, tensor_to_proto

log = logging.getLogger("splitinfer.edge")

FALLBACK_PERCENTILES = (0.1, 99.9)


class EdgePipeline:
    """Preprocess, head and encode for one stream (one frame at a time, from one executor thread)."""

    partition = inference_pb2.PARTITION_FEATURES

    def __init__(self, model: Any, profile: CodecProfile, *, percentile_levels: int = DEFAULT_LEVELS,
                 limits: CodecLimits | None = None, rate: RateController | None = None) -> None:
        if profile.cut is None or profile.model not in (None, model.name):
            raise ServiceError("internal error: EdgePipeline needs a profile resolved for its model "
                               "(splitinfer.services.profiles.resolve_profile).")
        self.model = model
        self.split = model.split(profile.cut)
        self.profile = profile
        self.percentile_levels = percentile_levels
        self.limits = limits
        self._device = next(model.parameters()).device  # where dnn.device.place_model put it (CPU by default)
        self._quantizers: dict[str, Quantizer] = {}
        for spec in self.split.tensors:
            quantizer = profile.quantizer_for(spec.name)
            if quantizer is not None:
                self._quantizers[spec.name] = quantizer
        self.rate = rate
        self._point_quantizers: list[dict[str, Quantizer]] = []
        if rate is not None:
            self._point_quantizers = [self._quantizers_of(point) for point in rate.ladder.points]
        self._lock = threading.Lock()
        # Without temporal contexts every frame is intra (period 1) and coded with the profile's coder.
        temporal = profile.coder is Coder.TEMPORAL_CONTEXTS
        self._encoder = TemporalEncoder(intra_period=profile.intra_period if temporal else 1,
                                        hysteresis=profile.hysteresis, rdo_lambda=profile.rdo_lambda,
                                        plane_weights=profile.rdo_weights,
                                        intra_coder=None if temporal else profile.coder,
                                        limits=limits)
        # Uniform quantizers as levels and clip range only, as a current cloud takes them; `accepted` turns this off
        # for a cloud older than StreamAccepted.derives_uniform_quantizers.
        self.compact_quantizers = True
        self._reference_id: int | None = None  # frame id of the levels the encoder holds as reference
        self._ladder_point: int | None = None  # with rate control: the point the last frame was coded at
        # Sent in StreamStart so that the cloud can refuse a profile made for another model or cut.
        self._profile_json = json.dumps(profile.replace(figures={}).to_dict(), separators=(",", ":"))

    def _quantizers_of(self, point: CodecProfile) -> dict[str, Quantizer]:
        quantizers = {spec.name: point.quantizer_for(spec.name) for spec in self.split.tensors}
        missing = sorted(name for name, q in quantizers.items() if q is None)
        if missing:
            raise ServiceError(f"the codec ladder has no quantizer for tensors {missing} of cut {self.split.cut}: "
                               "make the ladder for this cut (splitinfer calibrate --ladder).")
        return quantizers  # type: ignore[return-value]

    @property
    def temporal(self) -> bool:
        return self.profile.coder is Coder.TEMPORAL_CONTEXTS

    @property
    def cut(self) -> str:
        return self.split.cut

    def quantizer(self, name: str) -> Quantizer | None:
        return self._quantizers.get(name)

    def start_message(self, stream_id: str) -> inference_pb2.StreamStart:
        return inference_pb2.StreamStart(stream_id=stream_id, model=self.model.name, cut=self.split.cut,
                                         codec_profile=self._profile_json)

    def restart_coding(self) -> None:
        """The next frame is intra (after a reconnect, or when the cloud asked for one)."""
        with self._lock:
            self._encoder.restart()

    def accepted(self, accepted: inference_pb2.StreamAccepted) -> None:
        """The cloud accepted the stream: send uniform quantizers compact when it derives them (splitinfer.wire)."""
        self.compact_quantizers = accepted.derives_uniform_quantizers

    def warm_up(self) -> None:
        """Load the codec's kernels and run preprocess and head once on a blank frame, so that the first real
        frame pays for neither. Nothing is coded: the encoder's state and any quantizer still to be taken from
        the first frame's percentiles are left to the first real frame."""
        warm_up_codec()
        self.run_head(CapturedFrame(0, np.zeros((432, 768, 3), np.uint8), time.time_ns(), time.monotonic_ns()))

    def run_head(self, frame: CapturedFrame) -> HeadOutput:
        """Preprocess and head: the tensors at the cut as float32 numpy arrays (1, C, H, W)."""
        started = time.perf_counter()
        x, _ = self.model.preprocess(frame.image)
        x = x.to(self._device, non_blocking=True)
        preprocessed = time.perf_counter()
        outputs = self.split.head(x)
        tensors = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
        done = time.perf_counter()
        return HeadOutput(frame, tensors, {"capture": frame.read_seconds, "preprocess": preprocessed - started,
                                           "head": done - preprocessed})

    def _quantizer_for(self, name: str, tensor: np.ndarray) -> Quantizer:
        quantizer = self._quantizers.get(name)
        if quantizer is None:
            low, high = (float(v) for v in np.percentile(tensor, FALLBACK_PERCENTILES))
            if not high > low:
                high = low + 1.0
            quantizer = Quantizer.uniform(low, high, self.percentile_levels)
            self._quantizers[name] = quantizer
            log.warning("no clip range for tensor %s: using [%.3g, %.3g] from the first frame's %s percentiles; "
                        "pass --profile for a calibrated one", name, low, high, FALLBACK_PERCENTILES)
        return quantizer

    def encode(self, head: HeadOutput) -> inference_pb2.FeatureFrame | None:
        """Code every tensor of a frame (intra or against the previous frame's levels) into a FeatureFrame.

        With rate control, None when the frame is dropped to hold the budget (live sources only)."""
        started = time.perf_counter()
        frame = head.frame
        with self._lock:
            sized = self._wire(self._code(head)) if self.rate is None else self._code_within_budget(head)
            if sized is None:
                return None
            coded = sized.frame
            self._encoder.commit(coded)
            message = inference_pb2.FeatureFrame(frame_id=frame.sequence)
            message.capture.capture_time.FromNanoseconds(frame.wall_time_ns)
            message.capture.capture_monotonic_ns = frame.monotonic_ns
            message.capture.image_height, message.capture.image_width = frame.image.shape[:2]
            if not coded.intra:
                if self._reference_id is None:  # pragma: no cover - the encoder codes an intra frame first
                    raise ServiceError("internal error: an inter frame without a reference frame id.")
                message.reference_frame_id = self._reference_id
            self._reference_id = frame.sequence
            message.tensors.extend(sized.messages)
            if self._ladder_point is not None:
                message.ladder_point = self._ladder_point
        for stage, seconds in head.stage_seconds.items():
            message.edge_stage_seconds[stage] = seconds
        message.edge_stage_seconds["encode"] = time.perf_counter() - started
        return message

    def _code(self, head: HeadOutput) -> CodedFrame:
        quantizers = {name: self._quantizer_for(name, tensor) for name, tensor in head.tensors.items()}
        return self._encoder.code(head.tensors, quantizers)

    def _code_within_budget(self, head: HeadOutput) -> _OnTheWire | None:
        """Code at the ladder point the rate controller chooses (its trial loop); None for a dropped frame."""
        rate = self.rate
        assert rate is not None

        def code(point: int) -> _OnTheWire:
            ladder_point = rate.ladder.points[point]
            coded = self._encoder.code(head.tensors, self._point_quantizers[point], hysteresis=ladder_point.hysteresis,
                                       rdo_lambda=ladder_point.rdo_lambda, plane_weights=ladder_point.rdo_weights)
            return self._wire(coded)

        chosen = rate.code_frame(head.frame.source_time_s, self._encoder.next_is_intra(head.tensors.keys()), code)
        if chosen is None:
            return None
        self._ladder_point, sized = chosen
        return sized

    def _wire(self, coded: CodedFrame) -> _OnTheWire:
        return _OnTheWire(coded, [tensor_to_proto(compressed, compact=self.compact_quantizers)
                                  for compressed in coded.tensors.values()])


@dataclass(frozen=True)
class _OnTheWire:
    """A coded frame and its tensors' wire messages, built once: rate control holds their bytes, the frame sends
    them."""

    frame: CodedFrame
    messages: list[tensor_pb2.CompressedTensor]

    @functools.cached_property
    def nbytes(self) -> int:
        return coded_bytes(self.messages)


def quantizers_summary(pipeline: EdgePipeline) -> Mapping[str, str]:
    """Tensor name -> a short description of its quantizer (for logs and the demo banner)."""
    out = {}
    for spec in pipeline.split.tensors:
        q = pipeline.quantizer(spec.name)
        out[spec.name] = "first-frame percentiles" if q is None else f"{q.levels} levels [{q.clip_min:.3g}, {q.clip_max:.3g}]"
    return out
