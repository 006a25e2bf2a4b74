"""Where the sample data lives: $SPLITINFER_SHARED_DATA, else ../shared/data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA_ENV = "SPLITINFER_SHARED_DATA"


def shared_data_dir() -> Path:
    """The folder of sample weights, images, video and activations used by the demo, benchmarks and tests."""
    checkout = Path(__file__).resolve().parents[1]
    return Path(os.environ.get(SHARED_DATA_ENV, checkout.parent / "shared" / "data"))
