"""Parse a Darknet .cfg file into sections, keeping file and line so errors can point at them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from splitinfer.dnn.errors import CfgError, ModelError

REQUIRED = object()  # default meaning "the option must be present"

LAYER_TYPES = frozenset(
    {"convolutional", "shortcut", "route", "upsample", "maxpool", "dropout", "yolo"}
)


@dataclass
class CfgSection:
    """One `[type]` block: its options as raw strings, and where it starts in the file."""

    type: str
    line: int
    options: dict[str, str] = field(default_factory=dict)
    source: str = "<cfg>"

    def where(self) -> str:
        return f"{self.source}, line {self.line} ([{self.type}])"

    def _raw(self, key: str, default: object) -> str | None:
        if key in self.options:
            return self.options[key]
        if default is REQUIRED:
            raise CfgError(f"{self.where()}: the option '{key}' is required; add '{key}=...' to the section.")
        return None

    def get_int(self, key: str, default: object = None) -> int:
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        try:
            return int(raw)
        except ValueError as exc:
            raise CfgError(f"{self.where()}: '{key}={raw}' is not an integer.") from exc

    def get_float(self, key: str, default: object = None) -> float:
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        try:
            return float(raw)
        except ValueError as exc:
            raise CfgError(f"{self.where()}: '{key}={raw}' is not a number.") from exc

    def get_str(self, key: str, default: object = None) -> str:
        raw = self._raw(key, default)
        return default if raw is None else raw.strip()  # type: ignore[return-value]

    def get_ints(self, key: str, default: object = None) -> list[int]:
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        try:
            return [int(part) for part in raw.split(",") if part.strip()]
        except ValueError as exc:
            raise CfgError(f"{self.where()}: '{key}={raw}' must be a comma-separated list of integers.") from exc


@dataclass
class DarknetCfg:
    """The `[net]` section and the layer sections in file order (layer k = layers[k])."""

    net: CfgSection
    layers: list[CfgSection]
    source: str


def parse_cfg_text(text: str, source: str = "<cfg>") -> DarknetCfg:
    """Parse cfg text; unknown layer types and malformed lines raise CfgError naming the line."""
    sections: list[CfgSection] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"{source}, line {number}: '{raw_line.strip()}' is not a section header like [convolutional].")
            sections.append(CfgSection(line[1:-1].strip().lower(), number, source=source))
            continue
        if "=" not in line:
            raise CfgError(f"{source}, line {number}: '{raw_line.strip()}' is not 'key=value'.")
        if not sections:
            raise CfgError(f"{source}, line {number}: option '{line}' appears before any [section].")
        key, value = (part.strip() for part in line.split("=", 1))
        sections[-1].options[key] = value
    if not sections or sections[0].type not in ("net", "network"):
        raise CfgError(f"{source}: the first section must be [net] (found {'nothing' if not sections else '[' + sections[0].type + ']'}).")
    net, layers = sections[0], sections[1:]
    if not layers:
        raise CfgError(f"{source}: the cfg has a [net] section but no layers.")
    for section in layers:
        if section.type not in LAYER_TYPES:
            raise CfgError(
                f"{section.where()}: unknown layer type [{section.type}]; supported: "
                f"{', '.join(sorted(LAYER_TYPES))}."
            )
    return DarknetCfg(net, layers, source)


def parse_cfg(path: str | os.PathLike) -> DarknetCfg:
    """Read and parse a cfg file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CfgError(f"cannot read the cfg file {path}: {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        raise CfgError(f"the cfg file {path} is not UTF-8 text; pass a Darknet .cfg file.") from exc
    return parse_cfg_text(text, source=str(path))


def cut_index(cut: str, num_layers: int) -> int:
    """The layer index of a Darknet cut ("60" or "layer60"); ModelError naming the valid range otherwise."""
    text = str(cut).removeprefix("layer")
    if not text.isdigit() or not 0 <= int(text) < num_layers:
        raise ModelError(
            f"unknown cut {cut!r}: Darknet cuts are layer indices 0..{num_layers - 1}; list them with model.cuts()."
        )
    return int(text)
