"""Golden bitstreams pin the format: a change that alters any payload byte fails here (then bump CODER_VERSION
and regenerate with tests/codec/golden/generate.py)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from splitinfer.codec import CODER_VERSION, Coder, Quantizer, decode, decode_indices, encode, encode_indices

GOLDEN = json.loads(Path(__file__).with_name("golden").joinpath("bitstreams.json").read_text(encoding="utf-8"))


def test_golden_file_is_for_this_coder_version() -> None:
    assert GOLDEN["coder_version"] == CODER_VERSION


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['label']}-{c['coder']}")
def test_payload_bytes_are_pinned(case: dict) -> None:
    shape = tuple(case["shape"])
    indices = np.array(case["indices"], dtype=np.uint8).reshape(shape)
    reference = None if case["reference"] is None else np.array(case["reference"], np.uint8).reshape(shape)
    coder = Coder[case["coder"]]
    payload = bytes.fromhex(case["payload_hex"])
    assert encode_indices(indices, case["levels"], coder, reference=reference).hex() == case["payload_hex"]
    decoded = decode_indices(payload, shape, case["levels"], coder, reference=reference)
    np.testing.assert_array_equal(decoded, indices)


def test_whole_tensor_is_pinned() -> None:
    case = GOLDEN["tensor"]
    x = np.array(case["values"], dtype=np.float32).reshape(case["shape"])
    quantizer = Quantizer.uniform(case["clip_min"], case["clip_max"], case["levels"])
    tensor = encode(x, quantizer, name="golden")
    assert tensor.coder.name == case["coder"]
    assert tensor.payload.hex() == case["payload_hex"]
    assert tensor.payload_crc32 == case["payload_crc32"] == zlib.crc32(bytes.fromhex(case["payload_hex"]))
    np.testing.assert_array_equal(decode(tensor), quantizer.dequantize(quantizer.quantize(x)))
