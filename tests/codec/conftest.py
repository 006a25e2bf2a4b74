"""Fixtures of the codec tests: the slow reference coder (naive.py) and real activation tensors."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import shared_path  # noqa: F401  (re-exported for the codec tests)

ACTIVATIONS = ("activations", "yolo-fastest-1.1-xl.npz")


def _load_naive() -> ModuleType:
    spec = importlib.util.spec_from_file_location("codec_naive", Path(__file__).with_name("naive.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def naive() -> ModuleType:
    return _load_naive()


@pytest.fixture(scope="session")
def activations() -> dict[str, np.ndarray]:
    """The real Yolo-Fastest-1.1-XL tensors (first two samples of each layer, to keep tests quick)."""
    with np.load(shared_path(*ACTIVATIONS)) as data:
        return {key: data[key][:2] for key in ("layer22", "layer34", "layer59", "layer80")}
