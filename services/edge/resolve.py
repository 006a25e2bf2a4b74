"""The edge's resolved configuration: what `splitinfer edge` was told, with every file it names read and checked once.

`resolve(settings)` runs without torch (preflight calls it, so a bad file costs a second) and returns one
`ResolvedEdge`; `build_pipeline` consumes it with the loaded model and reads or checks none of those files again.
Like numcodecs' `get_codec(config)`: one request in (EdgeSettings), one resolved object out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from splitinfer.services.edge.partition_plan import PartitionCurves
from splitinfer.services.profiles import CodecSettings, ResolvedCodec, resolve_codec

if TYPE_CHECKING:
    from splitinfer.services.edge.app import EdgeSettings


@dataclass(frozen=True)
class ResolvedEdge:
    """EdgeSettings with the files they name read and checked: the feature codec's profile or ladder (features, and
    auto when it may choose features) and auto's partition curves."""

    settings: EdgeSettings
    codec: ResolvedCodec | None = None  # features, auto
    curves: PartitionCurves | None = None  # auto


def resolve(settings: EdgeSettings) -> ResolvedEdge:
    """Read and check what the settings name, before the model loads. Raises ServiceError (a codec file) or
    ConfigError (the curves) saying what to change."""
    from splitinfer.services.edge.auto_partition import load_curves

    if settings.partition == "features":
        codec = resolve_codec(settings.model, settings.cut, CodecSettings.of(settings),
                              rated=settings.rate_kbps is not None, ladder=settings.ladder)
        return ResolvedEdge(settings, codec=codec)
    if settings.partition == "auto":
        curves = load_curves(settings.model, settings.partition_curves)
        # auto's features run the shipped ladder with the intra period asked for (app.resolved_settings).
        features = resolve_codec(settings.model, None, CodecSettings(intra_period=settings.intra_period),
                                 rated=True) if "features" in curves.partitions else None
        return ResolvedEdge(settings, codec=features, curves=curves)
    return ResolvedEdge(settings)
