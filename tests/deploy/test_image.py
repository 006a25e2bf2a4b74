"""The built cloud image starts: `splitinfer --help`, the service imports, and a cloud answering health SERVING.

Building takes many minutes and gigabytes (deploy/build-images.sh cloud), so this test only checks an image
that is already built, with the script's own `check`, and skips with the reason where buildah or the image
is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from splitinfer.sample_data import shared_data_dir

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"localhost/splitinfer:{VERSION}"


@pytest.mark.slow
def test_built_cloud_image_starts_and_answers_health() -> None:
    buildah = shutil.which("buildah")
    if buildah is None:
        pytest.skip("buildah is absent: apt-get install buildah, then deploy/build-images.sh base and cloud")
    present = subprocess.run([buildah, "--storage-driver", "vfs", "inspect", "--type", "image", IMAGE],
                             capture_output=True, text=True, timeout=120)
    if present.returncode != 0:
        pytest.skip(f"{IMAGE} is not built: deploy/build-images.sh cloud (see docs/DEPLOYMENT.md)")
    weights = shared_data_dir() / "models" / "yolo-fastest-1.1"
    if not (weights / "yolo-fastest-1.1-xl.weights").is_file():
        pytest.skip(f"no model files in {weights}")
    result = subprocess.run([str(REPO / "deploy" / "build-images.sh"), "check", IMAGE], capture_output=True,
                            text=True, timeout=900, env={**os.environ, "WEIGHTS_DIR": str(weights)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "usage: splitinfer" in result.stdout and "edge --help: ok" in result.stdout
    assert "SERVING after" in result.stdout and "not SERVING" not in result.stdout
