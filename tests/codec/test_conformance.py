"""The conformance vectors of docs/BITSTREAM.md: our decoder reads each exactly and our encoder rewrites its bytes;
the independent Node.js decoder and encoder written from the document alone (clients/examples/node-decoder) agree."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from splitinfer.codec import (
    CODER_VERSION,
    CodecError,
    CodecLimits,
    Coder,
    Quantizer,
    decode,
    decode_levels,
    encode_levels,
)
from splitinfer.codec.entropy import INTER_VERSION
from splitinfer.v1 import tensor_pb2
from splitinfer.wire import tensor_from_proto

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "tests" / "codec" / "conformance"
NODE_CODER = ROOT / "clients" / "examples" / "node-decoder"
VECTORS = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(FOLDER.glob("*.json"))]
VALID = [v for v in VECTORS if v["expect_error"] is None]
REFUSED = [v for v in VECTORS if v["expect_error"] is not None]
COMPACT = [v for v in VALID if not v["tensor"]["quantizer"]["reconstruction"]]


def _message(vector: dict) -> tensor_pb2.CompressedTensor:
    t = vector["tensor"]
    q = t["quantizer"]
    return tensor_pb2.CompressedTensor(
        name=t["name"], shape=t["shape"], clip_min=t["clip_min"], clip_max=t["clip_max"],
        quantizer=tensor_pb2.Quantizer(kind=tensor_pb2.QuantizerKind.Value(f"QUANTIZER_KIND_{q['kind']}"),
                                       levels=q["levels"], reconstruction=q["reconstruction"],
                                       thresholds=q["thresholds"]),
        coder=t["coder_value"], coder_version=t["coder_version"], payload=base64.b64decode(t["payload_base64"]),
        payload_crc32=t["payload_crc32"])


def _reference(vector: dict) -> np.ndarray | None:
    ref = vector["reference_levels"]
    return None if ref is None else np.array(ref, dtype=np.int64).reshape(vector["tensor"]["shape"])


def test_vectors_cover_every_coder_and_stay_small() -> None:
    coders = {v["tensor"]["coder"] for v in VALID}
    assert coders == {c.name for c in Coder}
    assert {v["tensor"]["coder_version"] for v in VALID} == {CODER_VERSION, INTER_VERSION}
    assert {v["tensor"]["coder"] for v in VALID if v["tensor"]["coder_version"] == INTER_VERSION} == {
        Coder.TEMPORAL_CONTEXTS.name}
    assert {v["tensor"]["quantizer"]["levels"] for v in VALID} >= {2, 256}
    assert len(REFUSED) >= 5
    assert sum(p.stat().st_size for p in FOLDER.glob("*.json")) < 360_000


def test_compact_uniform_vectors_cover_small_and_large_quantizers_intra_and_inter() -> None:
    assert {v["tensor"]["quantizer"]["levels"] for v in COMPACT} >= {2, 3, 255, 256}
    assert all(v["tensor"]["quantizer"]["kind"] == "UNIFORM" and not v["tensor"]["quantizer"]["thresholds"]
               for v in COMPACT)
    assert {v["tensor"]["coder_version"] for v in COMPACT} == {CODER_VERSION, INTER_VERSION}
    assert any(v["tensor"]["quantizer"]["kind"] == "ECSQ" and not v["tensor"]["quantizer"]["reconstruction"]
               for v in REFUSED)


@pytest.mark.parametrize("vector", COMPACT, ids=lambda v: v["name"])
def test_compact_vectors_expect_the_derived_uniform_quantizer(vector: dict) -> None:
    t = vector["tensor"]
    derived = Quantizer.uniform(t["clip_min"], t["clip_max"], t["quantizer"]["levels"])
    assert vector["values"] == [derived.reconstruction[k] for k in vector["levels"]]
    if t["quantizer"]["levels"] >= 255:  # every value of the derivation is checked
        assert sorted(set(vector["levels"])) == list(range(t["quantizer"]["levels"]))


@pytest.mark.parametrize("vector", VALID, ids=lambda v: v["name"])
def test_decodes_to_the_expected_levels_and_reencodes_to_the_same_bytes(vector: dict) -> None:
    limits = CodecLimits(**vector["limits"]) if "limits" in vector else None
    tensor = tensor_from_proto(_message(vector), limits)
    reference = _reference(vector)
    levels = decode_levels(tensor, reference=reference, limits=limits)
    assert levels.shape == tuple(vector["tensor"]["shape"])
    assert levels.reshape(-1).tolist() == vector["levels"]
    values = decode(tensor, reference=reference, limits=limits)
    np.testing.assert_array_equal(values.reshape(-1), np.array(vector["values"], dtype=np.float32))
    again = encode_levels(levels, tensor.quantizer, coder=tensor.coder, name=tensor.name, reference=reference,
                          coder_version=tensor.coder_version)
    assert again.payload == tensor.payload
    assert again.payload_crc32 == vector["tensor"]["payload_crc32"] == zlib.crc32(tensor.payload)


def _known_bugs() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("conformance_generate", FOLDER / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.KNOWN_BUGS


KNOWN_BUGS = _known_bugs()


def _refused_case(vector: dict) -> object:
    reason = KNOWN_BUGS.get(vector["name"])
    marks = [pytest.mark.xfail(reason=f"codec bug: {reason}", strict=True)] if reason else []
    return pytest.param(vector, id=vector["name"], marks=marks)


@pytest.mark.parametrize("vector", [_refused_case(v) for v in REFUSED])
def test_refuses_what_the_document_says_a_decoder_must_refuse(vector: dict) -> None:
    limits = CodecLimits(**vector["limits"]) if "limits" in vector else None
    with pytest.raises(CodecError):
        decode_levels(tensor_from_proto(_message(vector), limits), reference=_reference(vector), limits=limits)


def _node(script: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the independent coder (clients/examples/node-decoder) needs Node.js "
                    ">= 18 on PATH")
    return subprocess.run([node, str(script), str(FOLDER)], capture_output=True, text=True, timeout=120, check=False)


def test_independent_node_decoder_agrees_on_every_vector() -> None:
    result = _node(NODE_CODER / "decode.js")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(VALID)} decoded exactly, {len(REFUSED)} refused as expected" in result.stdout


def test_independent_node_encoder_reproduces_every_payload() -> None:
    result = _node(NODE_CODER / "encode.js")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(VALID)} re-encoded byte for byte, 0 differ" in result.stdout
