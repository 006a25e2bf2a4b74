"""What a model returns to people and services: detections in source-image pixels, or class scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Detection:
    """One box (x1, y1, x2, y2) in source-image pixels, with its class and score."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    label: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClassScore:
    """One class of a classification result with its softmax probability."""

    class_id: int
    label: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)
