"""A fixture for the tests of the compiled runtimes: an ONNX export cache of the test module's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Iterator[Path]:
    """SPLITINFER_CACHE_DIR set to a fresh folder for the module, so that every export its tests use is made by
    them (hermetic) and made once (the module's models share it)."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPLITINFER_CACHE_DIR", str(folder))
        yield folder
