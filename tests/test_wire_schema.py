"""The committed wire code is what protoc makes of protos/, and the schema passes `buf lint`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run(["bash", str(REPO / "protos" / "generate.sh"), str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(REPO) for p in (REPO / "splitinfer" / "v1").iterdir()
        if p.is_file() and p.name != "__init__.py"
    )
    assert generated == committed, "run protos/generate.sh and commit splitinfer/v1/"
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (REPO / rel).read_bytes(), (
            f"{rel} is stale: run protos/generate.sh and commit the result"
        )


def test_buf_lint_passes() -> None:
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    if not Path(buf).exists():
        pytest.fail("buf is not installed: pip install -e '.[dev]' brings it (PyPI buf-bin)")
    result = subprocess.run([buf, "lint"], cwd=REPO / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_modules_import() -> None:
    from splitinfer.v1 import inference_pb2, inference_pb2_grpc, tensor_pb2

    assert "Infer" in inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].methods_by_name
    assert hasattr(inference_pb2_grpc, "InferenceServiceServicer")
    assert tensor_pb2.EntropyCoder.Value("ENTROPY_CODER_UNSPECIFIED") == 0
