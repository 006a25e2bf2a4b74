"""A profile ladder: calibrated operating points of one model and cut, ordered by rate, for rate control.

    {"id": "splitinfer.codec-ladder/1", "model": "yolo-fastest-1.1-xl", "cut": "60",
     "points": [<codec profile>, ...],          # cheapest first
     "figures": {...}}

Every point is a full codec profile (splitinfer.codec-profile/2) of the ladder's model and cut, with the
same coder and intra period (a stream switches points on any frame, not coders); its figures hold what
calibration measured: `bits_per_element` of an intra frame and `changes_per_image` (fidelity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitinfer.codec.errors import CodecError
from splitinfer.codec.profile import CodecProfile, parse_json, read_text

LADDER_ID = "splitinfer.codec-ladder/1"
_FIELDS = {"id", "model", "cut", "points", "figures"}
MAX_POINTS = 32


@dataclass(frozen=True)
class CodecLadder:
    """Operating points of one model and cut, cheapest first; see the module docstring."""

    points: tuple[CodecProfile, ...]
    figures: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        points = tuple(self.points)
        object.__setattr__(self, "points", points)
        if not 1 <= len(points) <= MAX_POINTS:
            raise CodecError(f"a codec ladder needs 1..{MAX_POINTS} points, got {len(points)}.")
        first = points[0]
        for index, point in enumerate(points):
            if not isinstance(point, CodecProfile):
                raise CodecError(f"ladder point {index} must be a CodecProfile, got {type(point).__name__}.")
            for name in ("model", "cut", "coder", "intra_period"):
                if getattr(point, name) != getattr(first, name):
                    raise CodecError(f"ladder point {index} has {name} {getattr(point, name)!r} but point 0 has "
                                     f"{getattr(first, name)!r}: every point of a ladder shares model, cut, coder and "
                                     "intra period.")
            rate = point.figures.get("bits_per_element")
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
                raise CodecError(f"ladder point {index} has no measured figures.bits_per_element (a positive number); "
                                 "make ladders with `splitinfer calibrate --ladder`.")
        rates = [p.figures["bits_per_element"] for p in points]
        if rates != sorted(rates):
            raise CodecError(f"ladder points must be ordered by rate, cheapest first; their bits_per_element are {rates}.")
        if not isinstance(self.figures, dict):
            raise CodecError(f"ladder field 'figures' must be an object, got {type(self.figures).__name__}.")

    @property
    def model(self) -> str | None:
        return self.points[0].model

    @property
    def cut(self) -> str | None:
        return self.points[0].cut

    def bits_per_element(self, index: int) -> float:
        """The intra rate calibration measured for point `index`."""
        return float(self.points[index].figures["bits_per_element"])

    def to_dict(self) -> dict[str, Any]:
        return {"id": LADDER_ID, "model": self.model, "cut": self.cut,
                "points": [p.to_dict() for p in self.points], "figures": self.figures}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: object) -> CodecLadder:
        if not isinstance(data, dict):
            raise CodecError(f"a codec ladder must be a JSON object, got {type(data).__name__}.")
        if data.get("id") != LADDER_ID:
            raise CodecError(f"not a codec ladder: id {data.get('id')!r}, expected {LADDER_ID!r} (a single profile "
                             "goes to --profile, a ladder to --ladder).")
        unknown = data.keys() - _FIELDS
        if unknown:
            raise CodecError(f"unknown codec ladder fields {sorted(unknown)}; known: {sorted(_FIELDS)}.")
        points = data.get("points")
        if not isinstance(points, list):
            raise CodecError("ladder field 'points' must be a list of codec profiles.")
        ladder = cls(tuple(CodecProfile.from_dict(p) for p in points[:MAX_POINTS + 1]), data.get("figures", {}))
        for name in ("model", "cut"):
            if data.get(name) != getattr(ladder, name):
                raise CodecError(f"ladder field {name!r} is {data.get(name)!r} but its points say "
                                 f"{getattr(ladder, name)!r}.")
        return ladder

    @classmethod
    def from_json(cls, text: str | bytes) -> CodecLadder:
        return cls.from_dict(parse_json(text, "the codec ladder"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CodecLadder:
        return cls.from_json(read_text(path, "the codec ladder"))
