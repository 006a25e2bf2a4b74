"""Pipeline stage names: the fixed, server-defined set that may appear in results and metric labels.

The edge reports its own stage times in `FeatureFrame.edge_stage_seconds`; the cloud keeps only the
names below with a finite, non-negative value and drops (and counts) every other entry, so a client
can neither choose metric label values nor make a result echo data it sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

EDGE_STAGES = ("capture", "preprocess", "head", "encode")
CLOUD_STAGES = ("queue", "decode", "tail", "postprocess")
STAGES = EDGE_STAGES + CLOUD_STAGES
# One stage time above this is not a measurement (an edge clock fault or a forged value).
MAX_STAGE_SECONDS = 3600.0


def known_edge_stages(reported: Mapping[str, float]) -> tuple[dict[str, float], int]:
    """The edge stage times worth keeping (known name, finite value in 0..MAX_STAGE_SECONDS) and how many were not."""
    kept = {}
    for name in EDGE_STAGES:
        value = reported.get(name)
        if value is not None and math.isfinite(value) and 0.0 <= value <= MAX_STAGE_SECONDS:
            kept[name] = value
    return kept, len(reported) - len(kept)
