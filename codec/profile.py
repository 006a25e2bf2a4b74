"""Codec profiles: the quantizer and coder a stream uses, as data (JSON with an "id").

    {"id": "splitinfer.codec-profile/1",
     "quantizer": {"kind": "UNIFORM", "clip_min": 0.0, "clip_max": 4.0,
                   "thresholds": [...], "reconstruction": [...]},
     "coder": "NEIGHBOUR_CONTEXTS" | null, "model": "yolo-fastest-1.1-xl" | null, "cut": "80" | null,
     "intra_period": 30, "hysteresis": 0.0, "figures": {...}}

`coder` null means the measured default for the quantizer's tensor kind; `figures` records what the
profile was chosen on (calibration writes it); `hysteresis` is the edge's temporal hysteresis margin in steps
(codec.quantize_with_reference; 0 = off, the default for files without the field). Unknown ids, unknown or missing fields raise CodecError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitinfer.codec.entropy import Coder, as_coder
from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import MAX_HYSTERESIS, Quantizer, QuantizerKind

PROFILE_ID = "splitinfer.codec-profile/1"
_FIELDS = {"id", "quantizer", "coder", "model", "cut", "intra_period", "hysteresis", "figures"}
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


def quantizer_from_dict(data: object) -> Quantizer:
    """Rebuild a Quantizer from quantizer_to_dict's output; CodecError naming a bad field."""
    if not isinstance(data, dict):
        raise CodecError(f"profile field 'quantizer' must be an object, got {type(data).__name__}.")
    missing = _QUANTIZER_FIELDS - data.keys()
    unknown = data.keys() - _QUANTIZER_FIELDS
    if missing or unknown:
        raise CodecError(f"profile field 'quantizer' has missing fields {sorted(missing)} "
                         f"and unknown fields {sorted(unknown)}; expected {sorted(_QUANTIZER_FIELDS)}.")
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in QuantizerKind.__members__:
        raise CodecError(f"profile field 'quantizer.kind' is {kind!r}; use one of {list(QuantizerKind.__members__)}.")
    for name in ("thresholds", "reconstruction"):
        if not isinstance(data[name], list):
            raise CodecError(f"profile field 'quantizer.{name}' must be a list of numbers.")
    return Quantizer(QuantizerKind[kind], data["clip_min"], data["clip_max"],
                     tuple(data["thresholds"]), tuple(data["reconstruction"]))


@dataclass(frozen=True)
class CodecProfile:
    """How a stream codes its tensors: quantizer, coder (None: the measured default), intra period, hysteresis."""

    quantizer: Quantizer
    coder: Coder | None = None
    model: str | None = None
    cut: str | None = None
    intra_period: int = 30
    figures: dict = field(default_factory=dict)
    hysteresis: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.quantizer, Quantizer):
            raise CodecError(f"profile field 'quantizer' must be a Quantizer, got {type(self.quantizer).__name__}.")
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
        if not isinstance(self.figures, dict):
            raise CodecError(f"profile field 'figures' must be an object, got {type(self.figures).__name__}.")
        try:
            json.dumps(self.figures, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"profile field 'figures' must be plain JSON data (finite numbers): {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": PROFILE_ID,
            "quantizer": quantizer_to_dict(self.quantizer),
            "coder": None if self.coder is None else self.coder.name,
            "model": self.model,
            "cut": self.cut,
            "intra_period": self.intra_period,
            "hysteresis": self.hysteresis,
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
        if data["id"] != PROFILE_ID:
            raise CodecError(f"unknown codec profile id {data['id']!r}; this version reads {PROFILE_ID!r}.")
        unknown = data.keys() - _FIELDS
        if unknown:
            raise CodecError(f"unknown codec profile fields {sorted(unknown)}; known: {sorted(_FIELDS)}.")
        if "quantizer" not in data:
            raise CodecError("the codec profile has no 'quantizer'.")
        coder = data.get("coder")
        if coder is not None and not isinstance(coder, str):
            raise CodecError(f"profile field 'coder' must be a coder name or null, got {coder!r}.")
        return cls(
            quantizer=quantizer_from_dict(data["quantizer"]),
            coder=None if coder is None else as_coder(coder),
            model=data.get("model"),
            cut=data.get("cut"),
            intra_period=data.get("intra_period", 30),
            hysteresis=data.get("hysteresis", 0.0),
            figures=data.get("figures", {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CodecProfile:
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (TypeError, ValueError, RecursionError) as exc:
            raise CodecError(f"the codec profile is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CodecProfile:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CodecError(f"cannot read the codec profile {str(path)!r}: {exc}") from exc
        return cls.from_json(text)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")

