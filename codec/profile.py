"""Codec profiles: the quantizers and coder a stream uses, as data (JSON with an "id").

    {"id": "splitinfer.codec-profile/2",
     "quantizer": {"kind": "UNIFORM", "clip_min": 0.0, "clip_max": 4.0,
                   "thresholds": [...], "reconstruction": [...]} | null,
     "tensors": {"layer22": {<quantizer>}, ...},
     "coder": "NEIGHBOUR_CONTEXTS" | null, "model": "yolo-fastest-1.1-xl" | null, "cut": "80" | null,
     "intra_period": 30, "hysteresis": 0.0, "rdo_lambda": 0.0, "rdo_weights": {"layer60": [...]}, "figures": {...}}

`quantizer` serves every tensor that `tensors` does not name (a cut that sends several tensors names each);
a tensor with neither is quantized over its first frame's percentiles by the edge. `coder` null means the
measured default for the quantizer's tensor kind; `figures` records what the profile was chosen on
(calibration writes it); `hysteresis` is the edge's temporal hysteresis margin in steps
(codec.quantize_with_reference; 0 = off) and `rdo_lambda` its rate-distortion weight (squared steps of error
per inter bit saved; 0 = off; files without it have it off; version 2 only); `rdo_weights` optionally weights that
error per channel of a tensor (the tail's sensitivity at calibration; a tensor it does not name is unweighted).
Files of version 1 (one quantizer, no `tensors`) still load.
Unknown ids, unknown or missing fields raise CodecError.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitinfer.codec.entropy import Coder, as_coder
from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import MAX_HYSTERESIS, MAX_RDO_LAMBDA, Quantizer, QuantizerKind
from splitinfer.settings import DEFAULT_INTRA_PERIOD

PROFILE_ID = "splitinfer.codec-profile/2"
PROFILE_ID_V1 = "splitinfer.codec-profile/1"
_FIELDS_V1 = {"id", "quantizer", "coder", "model", "cut", "intra_period", "hysteresis", "figures"}
_FIELDS = _FIELDS_V1 | {"tensors", "rdo_lambda", "rdo_weights"}
_QUANTIZER_FIELDS = {"kind", "clip_min", "clip_max", "thresholds", "reconstruction"}


def quantizer_to_dict(quantizer: Quantizer) -> dict[str, Any]:
    """A Quantizer as plain JSON-able data."""
    return {
        "kind": quantizer.kind.name,
        "clip_min": quantizer.clip_min,
        "clip_max": quantizer.clip_max,
        "thresholds": list(quantizer.thresholds),
        "reconstruction": list(quantizer.reconstruction),
    }


def quantizer_from_dict(data: object, where: str = "quantizer") -> Quantizer:
    """Rebuild a Quantizer from quantizer_to_dict's output; CodecError naming a bad field.

    A uniform quantizer whose values are `Quantizer.uniform`'s up to float32 rounding loads as exactly that one,
    so that the wire can send it as levels and clip range alone (splitinfer.wire, compact)."""
    if not isinstance(data, dict):
        raise CodecError(f"profile field {where!r} must be an object, got {type(data).__name__}.")
    missing = _QUANTIZER_FIELDS - data.keys()
    unknown = data.keys() - _QUANTIZER_FIELDS
    if missing or unknown:
        raise CodecError(f"profile field {where!r} has missing fields {sorted(missing)} "
                         f"and unknown fields {sorted(unknown)}; expected {sorted(_QUANTIZER_FIELDS)}.")
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in QuantizerKind.__members__:
        raise CodecError(f"profile field '{where}.kind' is {kind!r}; use one of {list(QuantizerKind.__members__)}.")
    for name in ("thresholds", "reconstruction"):
        if not isinstance(data[name], list):
            raise CodecError(f"profile field '{where}.{name}' must be a list of numbers.")
    quantizer = Quantizer(QuantizerKind[kind], data["clip_min"], data["clip_max"],
                          tuple(data["thresholds"]), tuple(data["reconstruction"]))
    return _canonical_uniform(quantizer)


def _canonical_uniform(quantizer: Quantizer) -> Quantizer:
    if quantizer.kind is not QuantizerKind.UNIFORM:
        return quantizer
    uniform = Quantizer.uniform(quantizer.clip_min, quantizer.clip_max, quantizer.levels)
    tolerance = 1e-6 * (quantizer.clip_max - quantizer.clip_min)
    pairs = zip((*quantizer.thresholds, *quantizer.reconstruction), (*uniform.thresholds, *uniform.reconstruction))
    return uniform if all(abs(a - b) <= tolerance for a, b in pairs) else quantizer


@dataclass(frozen=True)
class CodecProfile:
    """How a stream codes its tensors: quantizers, coder (None: the measured default), intra period, hysteresis and
    the rate-distortion weight of inter frames."""

    quantizer: Quantizer | None = None
    coder: Coder | None = None
    model: str | None = None
    cut: str | None = None
    intra_period: int = DEFAULT_INTRA_PERIOD
    figures: dict = field(default_factory=dict)
    hysteresis: float = 0.0
    tensors: dict[str, Quantizer] = field(default_factory=dict)
    rdo_lambda: float = 0.0
    rdo_weights: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quantizer is not None and not isinstance(self.quantizer, Quantizer):
            raise CodecError(f"profile field 'quantizer' must be a Quantizer, got {type(self.quantizer).__name__}.")
        if not isinstance(self.tensors, dict) or not all(
                isinstance(k, str) and k and isinstance(v, Quantizer) for k, v in self.tensors.items()):
            raise CodecError("profile field 'tensors' must map tensor names to quantizers.")
        if self.coder is not None:
            object.__setattr__(self, "coder", as_coder(self.coder))
        for name in ("model", "cut"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise CodecError(f"profile field {name!r} must be a string or null, got {value!r}.")
        period = self.intra_period
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise CodecError(f"profile field 'intra_period' must be a positive integer (frames between intra "
                             f"frames; 1 = every frame intra), got {period!r}.")
        margin = self.hysteresis
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin <= MAX_HYSTERESIS:
            raise CodecError(f"profile field 'hysteresis' must be a number of steps in [0, {MAX_HYSTERESIS}] "
                             f"(0 = off), got {margin!r}.")
        object.__setattr__(self, "hysteresis", float(margin))
        lam = self.rdo_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= MAX_RDO_LAMBDA:
            raise CodecError(f"profile field 'rdo_lambda' must be a number in [0, {MAX_RDO_LAMBDA}] (squared steps of "
                             f"error per inter bit saved; 0 = off), got {lam!r}.")
        object.__setattr__(self, "rdo_lambda", float(lam))
        object.__setattr__(self, "rdo_weights", _checked_weights(self.rdo_weights))
        if not isinstance(self.figures, dict):
            raise CodecError(f"profile field 'figures' must be an object, got {type(self.figures).__name__}.")
        try:
            json.dumps(self.figures, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"profile field 'figures' must be plain JSON data (finite numbers): {exc}") from exc

    def quantizer_for(self, name: str) -> Quantizer | None:
        """The quantizer of tensor `name`: its own, else the shared one, else None (first-frame percentiles)."""
        return self.tensors.get(name, self.quantizer)

    def mismatch(self, model: str | None, cut: str | int | None) -> str | None:
        """"model" or "cut" when this profile was made for another than the one given, else None. A field the
        profile does not record, or that is not given (None), matches; "layer80" and "80" are the same cut."""
        if model is not None and self.model is not None and self.model != model:
            return "model"
        if cut is not None and self.cut is not None \
                and str(self.cut).removeprefix("layer") != str(cut).removeprefix("layer"):
            return "cut"
        return None

    def replace(self, **changes: Any) -> CodecProfile:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": PROFILE_ID,
            "quantizer": None if self.quantizer is None else quantizer_to_dict(self.quantizer),
            "tensors": {name: quantizer_to_dict(q) for name, q in self.tensors.items()},
            "coder": None if self.coder is None else self.coder.name,
            "model": self.model,
            "cut": self.cut,
            "intra_period": self.intra_period,
            "hysteresis": self.hysteresis,
            "rdo_lambda": self.rdo_lambda,
            "rdo_weights": {name: list(w) for name, w in self.rdo_weights.items()},
            "figures": self.figures,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: object) -> CodecProfile:
        if not isinstance(data, dict):
            raise CodecError(f"a codec profile must be a JSON object, got {type(data).__name__}.")
        if "id" not in data:
            raise CodecError(f"the codec profile has no 'id'; expected {PROFILE_ID!r}.")
        if data["id"] not in (PROFILE_ID, PROFILE_ID_V1):
            raise CodecError(f"unknown codec profile id {data['id']!r}; this version reads {PROFILE_ID!r} "
                             f"and {PROFILE_ID_V1!r}.")
        known = _FIELDS if data["id"] == PROFILE_ID else _FIELDS_V1
        unknown = data.keys() - known
        if unknown:
            raise CodecError(f"unknown codec profile fields {sorted(unknown)}; known: {sorted(known)}.")
        if "quantizer" not in data:
            raise CodecError("the codec profile has no 'quantizer' (null when every tensor is named in 'tensors').")
        if data["id"] == PROFILE_ID_V1 and data["quantizer"] is None:
            raise CodecError(f"a {PROFILE_ID_V1!r} profile needs its 'quantizer'.")
        coder = data.get("coder")
        if coder is not None and not isinstance(coder, str):
            raise CodecError(f"profile field 'coder' must be a coder name or null, got {coder!r}.")
        tensors = data.get("tensors", {})
        if not isinstance(tensors, dict):
            raise CodecError(f"profile field 'tensors' must be an object of tensor name -> quantizer, got "
                             f"{type(tensors).__name__}.")
        return cls(
            quantizer=None if data["quantizer"] is None else quantizer_from_dict(data["quantizer"]),
            tensors={str(name): quantizer_from_dict(q, f"tensors.{name}") for name, q in tensors.items()},
            coder=None if coder is None else as_coder(coder),
            model=data.get("model"),
            cut=data.get("cut"),
            intra_period=data.get("intra_period", DEFAULT_INTRA_PERIOD),
            hysteresis=data.get("hysteresis", 0.0),
            rdo_lambda=data.get("rdo_lambda", 0.0),
            rdo_weights=data.get("rdo_weights", {}),
            figures=data.get("figures", {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CodecProfile:
        return cls.from_dict(parse_json(text, "the codec profile"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CodecProfile:
        return cls.from_json(read_text(path, "the codec profile"))


def _checked_weights(weights: object) -> dict[str, tuple[float, ...]]:
    """rdo_weights as tensor name -> tuple of floats; CodecError unless each is a list of finite numbers >= 0."""
    message = ("profile field 'rdo_weights' must map tensor names to lists of finite non-negative numbers (one per "
               "channel)")
    if not isinstance(weights, dict):
        raise CodecError(f"{message}, got {type(weights).__name__}.")
    out = {}
    for name, values in weights.items():
        if not isinstance(name, str) or not name or not isinstance(values, (list, tuple)) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in values):
            raise CodecError(f"{message}; {str(name)[:60]!r} is not.")
        out[name] = tuple(float(v) for v in values)
    return out


def parse_json(text: str | bytes, what: str) -> Any:
    """JSON data of a profile or ladder file; CodecError for bad JSON, NaN or Infinity included."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (TypeError, ValueError, RecursionError) as exc:
        raise CodecError(f"{what} is not valid JSON: {exc}") from exc


def read_text(path: str | Path, what: str) -> str:
    """The text of a profile or ladder file; CodecError when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CodecError(f"cannot read {what} {str(path)!r}: {exc}") from exc


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")

