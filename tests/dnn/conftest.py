"""Fixtures for the split-model tests: few torch threads (the suite shares 2 cores), real models from ../shared/data."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import shared_path


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def fastest_dir():
    return shared_path("models", "yolo-fastest-1.1")


@pytest.fixture(scope="session")
def fastest_xl(fastest_dir):
    from splitinfer.dnn import load_model

    return load_model("yolo-fastest-1.1-xl", weights=fastest_dir / "yolo-fastest-1.1-xl.weights")


@pytest.fixture(scope="session")
def fastest(fastest_dir):
    from splitinfer.dnn import load_model

    return load_model("yolo-fastest-1.1", weights=fastest_dir / "yolo-fastest-1.1.weights")
