"""Shared fixtures: the real data beside the checkout (../shared/data), skipped with a reason where absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitinfer.sample_data import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped if it does not exist."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: tests that need real data read ../shared/data (or $SPLITINFER_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()
