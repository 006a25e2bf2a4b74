"""The edge's CPU work per frame: preprocess -> head -> encode, with per-stream temporal coder state.

Quantizers come from a codec profile (--profile), from --levels/--clip-min/--clip-max, from the profile
shipped with the model (when the cut is its cut), or from the built-in fallback below. Temporal coding (profile coder TEMPORAL_CONTEXTS) codes each frame against
the levels of the frame sent before it; intra frames (the measured default coder, no reference) open
the stream, follow every reconnect or intra request, and recur every `intra_period` frames. A profile's
`hysteresis` keeps an inter frame's level at the reference level near cell boundaries (fewer bits for flicker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from splitinfer.codec import (
    CodecError,
    CodecLimits,
    CodecProfile,
    Coder,
    Quantizer,
    TemporalEncoder,
    encode,
    parse_coder,
)
from splitinfer.codec import warm_up as warm_up_codec
from splitinfer.services.edge.capture import CapturedFrame
from splitinfer.services.edge.client import HeadOutput
from splitinfer.errors import ServiceError

from splitinfer.v1 import inference_pb2
from splitinfer.wire import tensor_to_proto

log = logging.getLogger("splitinfer.edge")

DEFAULT_LEVELS = 8
# Fallback clip ranges of the Yolo-Fastest-1.1-XL tensors, used when no codec profile or clip range is
# given, measured on ../shared/data/activations/yolo-fastest-1.1-xl.npz (real activations of 8 COCO
# calibration images). Leaky tensors (layer22, layer59): the 0.1 % and 99.9 % percentiles, since most
# values are small and a wider range costs their resolution; linear shortcut tensors (layer34, layer80):
# the 0.01 % and 99.99 % percentiles, since the detector needs their large values (docs/BENCHMARKS.md).
# Other tensors take the 0.1 % / 99.9 % percentiles of their first frame (logged), which is good enough to
# start with; `splitinfer calibrate` writes a profile for real use.
FALLBACK_CLIP_RANGES: dict[str, tuple[float, float]] = {
    "layer22": (-0.66, 5.38),
    "layer34": (-13.78, 13.34),
    "layer59": (-0.47, 6.35),
    "layer80": (-14.86, 15.9),
}
FALLBACK_PERCENTILES = (0.1, 99.9)


@dataclass(frozen=True)
class QuantizerChoice:
    """How the edge picks each tensor's quantizer: one for all (profile or flags), or the fallback."""

    shared: Quantizer | None = None
    levels: int = DEFAULT_LEVELS
    coder: Coder | None = None
    intra_period: int = 30
    profile_json: str = ""
    # The model and cut the profile was made for (None: any); the edge refuses a mismatch.
    profile_model: str | None = None
    profile_cut: str | None = None
    hysteresis: float = 0.0

    @classmethod
    def from_settings(cls, *, profile: str | None = None, levels: int | None = None, clip_min: float | None = None,
                      clip_max: float | None = None, coder: str | None = None,
                      intra_period: int | None = None) -> QuantizerChoice:
        """--profile FILE wins; else --levels with --clip-min/--clip-max; else the fallback ranges."""
        try:
            chosen_coder = parse_coder(coder)
        except CodecError as exc:
            raise ServiceError(f"invalid --coder: {exc}") from exc
        if profile:
            if not Path(profile).is_file():
                raise ServiceError(f"codec profile {profile!r} does not exist: check --profile.")
            try:
                loaded = CodecProfile.load(profile)
            except CodecError as exc:
                raise ServiceError(f"codec profile {profile!r} is invalid: {exc}") from exc
            return cls(loaded.quantizer, loaded.quantizer.levels, chosen_coder or loaded.coder,
                       intra_period or loaded.intra_period, loaded.to_json(), loaded.model, loaded.cut,
                       loaded.hysteresis)
        levels = DEFAULT_LEVELS if levels is None else levels
        if (clip_min is None) != (clip_max is None):
            raise ServiceError("pass both --clip-min and --clip-max (or neither, to use the fallback ranges).")
        shared = None
        if clip_min is not None and clip_max is not None:
            try:
                shared = Quantizer.uniform(clip_min, clip_max, levels)
            except CodecError as exc:
                raise ServiceError(f"invalid quantizer settings: {exc}") from exc
        elif not 2 <= levels <= 256:
            raise ServiceError(f"--levels must be within 2..256, got {levels}.")
        return cls(shared, levels, chosen_coder, intra_period or 30, "")


def packaged_profile(model_name: str) -> Path | None:
    """The codec profile shipped with a registered model (ModelSpec.default_profile), if there is one."""
    from splitinfer import dnn

    try:
        relative = getattr(dnn.get_spec(model_name), "default_profile", None)
    except dnn.ModelError:
        return None
    if not relative:
        return None
    path = Path(dnn.__file__).resolve().parent / relative
    return path if path.is_file() else None


class EdgePipeline:
    """Preprocess, head and encode for one stream (one frame at a time, from one executor thread)."""

    def __init__(self, model: Any, cut: str, choice: QuantizerChoice, *, limits: CodecLimits | None = None) -> None:
        self.model = model
        self.split = model.split(cut)
        self.choice = choice
        if choice.profile_model not in (None, model.name):
            raise ServiceError(f"the codec profile was made for model {choice.profile_model!r}, not {model.name!r}: "
                               "pass a profile calibrated for this model (splitinfer calibrate).")
        if choice.profile_cut is not None and model.split(choice.profile_cut).cut != self.split.cut:
            raise ServiceError(f"the codec profile was made for cut {choice.profile_cut}, not {self.split.cut}: "
                               f"drop --cut to use the profile's cut, or calibrate one for cut {self.split.cut}.")
        self.limits = limits
        self._device = next(model.parameters()).device  # where dnn.device.place_model put it (CPU by default)
        self._quantizers: dict[str, Quantizer] = {}
        for spec in self.split.tensors:
            if choice.shared is not None:
                self._quantizers[spec.name] = choice.shared
            elif spec.name in FALLBACK_CLIP_RANGES:
                self._quantizers[spec.name] = Quantizer.uniform(*FALLBACK_CLIP_RANGES[spec.name], choice.levels)
        self._lock = threading.Lock()
        intra_coder = choice.coder if choice.coder is not Coder.TEMPORAL_CONTEXTS else None
        self._encoder = TemporalEncoder(intra_period=choice.intra_period, hysteresis=choice.hysteresis,
                                        intra_coder=intra_coder, limits=limits)
        self._reference_id: int | None = None  # frame id of the levels the encoder holds as reference

    @property
    def temporal(self) -> bool:
        return self.choice.coder is Coder.TEMPORAL_CONTEXTS

    @property
    def cut(self) -> str:
        return self.split.cut

    def quantizer(self, name: str) -> Quantizer | None:
        return self._quantizers.get(name)

    def start_message(self, stream_id: str) -> inference_pb2.StreamStart:
        return inference_pb2.StreamStart(stream_id=stream_id, model=self.model.name, cut=self.split.cut,
                                         codec_profile=self.choice.profile_json)

    def restart_coding(self) -> None:
        """The next frame is intra (after a reconnect, or when the cloud asked for one)."""
        with self._lock:
            self._encoder.restart()

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
            quantizer = Quantizer.uniform(low, high, self.choice.levels)
            self._quantizers[name] = quantizer
            log.warning("no clip range for tensor %s: using [%.3g, %.3g] from the first frame's %s percentiles; "
                        "pass --profile for a calibrated one", name, low, high, FALLBACK_PERCENTILES)
        return quantizer

    def encode(self, head: HeadOutput) -> inference_pb2.FeatureFrame:
        """Code every tensor of a frame (intra or against the previous frame's levels) into a FeatureFrame."""
        started = time.perf_counter()
        frame = head.frame
        with self._lock:
            message = inference_pb2.FeatureFrame(frame_id=frame.sequence)
            message.capture.capture_time.FromNanoseconds(frame.wall_time_ns)
            message.capture.capture_monotonic_ns = frame.monotonic_ns
            message.capture.image_height, message.capture.image_width = frame.image.shape[:2]
            quantizers = {name: self._quantizer_for(name, tensor) for name, tensor in head.tensors.items()}
            if self.temporal:
                coded, intra = self._encoder.encode_frame(head.tensors, quantizers)
                if not intra:
                    if self._reference_id is None:  # pragma: no cover - the encoder codes an intra frame first
                        raise ServiceError("internal error: an inter frame without a reference frame id.")
                    message.reference_frame_id = self._reference_id
                self._reference_id = frame.sequence
            else:
                coded = {name: encode(tensor, quantizers[name], coder=self.choice.coder, name=name, limits=self.limits)
                         for name, tensor in head.tensors.items()}
            message.tensors.extend(tensor_to_proto(compressed) for compressed in coded.values())
        for stage, seconds in head.stage_seconds.items():
            message.edge_stage_seconds[stage] = seconds
        message.edge_stage_seconds["encode"] = time.perf_counter() - started
        return message


def quantizers_summary(pipeline: EdgePipeline) -> Mapping[str, str]:
    """Tensor name -> a short description of its quantizer (for logs and the demo banner)."""
    out = {}
    for spec in pipeline.split.tensors:
        q = pipeline.quantizer(spec.name)
        out[spec.name] = "first-frame percentiles" if q is None else f"{q.levels} levels [{q.clip_min:.3g}, {q.clip_max:.3g}]"
    return out
