"""The public names other packages code against stay put, and the codec never pulls in torch, grpc or protobuf."""

from __future__ import annotations

import subprocess
import sys

import splitinfer.codec as codec

PUBLIC = {
    "CODER_VERSION", "PROFILE_ID", "CodecError", "CodecLimits", "CodecProfile", "Coder", "CompressedTensor",
    "Quantizer", "QuantizerKind", "TemporalEncoder", "decode", "decode_indices", "decode_levels", "default_coder", "encode",
    "encode_indices", "encode_levels", "ideal_cost_bits", "parse_coder", "quantize_with_reference", "warm_up",
    # Temporal coding on both sides (codec.sequence) and the profile defaults.
    "DEFAULT_INTRA_PERIOD", "CodedFrame", "MissingReferenceError", "Reference", "TemporalDecoder", "remap_levels",
}


def test_exported_names_do_not_drift() -> None:
    assert set(codec.__all__) == PUBLIC
    assert all(hasattr(codec, name) for name in codec.__all__)


def test_coder_values_match_the_wire_enum() -> None:
    from splitinfer.v1 import tensor_pb2

    for coder in codec.Coder:
        assert tensor_pb2.EntropyCoder.Value(f"ENTROPY_CODER_{coder.name}") == coder.value
    for kind in codec.QuantizerKind:
        assert tensor_pb2.QuantizerKind.Value(f"QUANTIZER_KIND_{kind.name}") == kind.value


def test_codec_imports_neither_torch_nor_grpc_nor_protobuf() -> None:
    probe = (
        "import sys, numpy as np; import splitinfer.codec as c; "
        "q = c.Quantizer.uniform(0, 1, 4); c.decode(c.encode(np.zeros((2, 3), np.float32), q)); "
        "print(sorted(m for m in ('torch', 'grpc', 'google.protobuf') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_coders_parse_from_every_spelling_users_type() -> None:
    assert codec.parse_coder("NEIGHBOUR_CONTEXTS") is codec.Coder.NEIGHBOUR_CONTEXTS
    assert codec.parse_coder(" neighbour-contexts ") is codec.Coder.NEIGHBOUR_CONTEXTS
    assert codec.parse_coder("Temporal_Contexts") is codec.Coder.TEMPORAL_CONTEXTS
    for automatic in (None, "", "auto", "AUTO"):
        assert codec.parse_coder(automatic) is None


def test_an_unknown_coder_lists_the_valid_names() -> None:
    import pytest

    with pytest.raises(codec.CodecError, match="unknown coder 'zip'.*signed-neighbour-contexts"):
        codec.parse_coder("zip")


def test_after_warm_up_real_frames_compile_nothing_new() -> None:
    code = (
        "import numpy as np, splitinfer.codec as c\n"
        "from splitinfer.codec import _kernels as k\n"
        "def signatures():\n"
        "    return sum(len(getattr(k, n).signatures) for n in dir(k) if hasattr(getattr(k, n), 'signatures'))\n"
        "c.warm_up()\n"
        "after_warm_up = signatures()\n"
        "q = c.Quantizer.uniform(-4.0, 4.0, 9)\n"
        "x = np.random.default_rng(0).normal(size=(1, 48, 20, 20)).astype(np.float32)\n"
        "ref = q.quantize(x[:, ::-1].copy())\n"
        "for coder in c.Coder:\n"
        "    r = ref if coder is c.Coder.TEMPORAL_CONTEXTS else None\n"
        "    c.decode(c.encode(x, q, coder=coder, reference=r), reference=r)\n"
        "c.quantize_with_reference(x, q, ref, 0.1)\n"
        "print(after_warm_up, signatures())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after_warm_up, after_frames = map(int, result.stdout.split())
    assert after_warm_up > 0 and after_frames == after_warm_up
