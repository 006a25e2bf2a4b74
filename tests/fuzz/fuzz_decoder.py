"""Atheris harness for the codec's decoder: every input ends in a valid array or a CodecError, quickly.

Input format: the first byte picks the mode. Mode 1 (seeds.RAW_MODE): coder, levels - 1, rank, each
dimension as u16 LE, then the payload, decoded with `decode_indices` (no CRC in the way, so payload
mutations reach the range decoder). Any other first byte: the rest is a `splitinfer.v1.CompressedTensor`
message, through `tensor_from_proto` and `decode` (what the cloud does with a frame's tensor). Any
exception but CodecError (and protobuf's DecodeError for unparsable bytes) is a defect.

    python tests/fuzz/fuzz_decoder.py [libFuzzer flags] [corpus folder]   (see tests/fuzz/README.md)
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

import atheris

# The numba kernels are compiled, not Python: instrumenting their bytecode would break the compilation.
with atheris.instrument_imports(include=["splitinfer"], exclude=["splitinfer.codec._kernels"]):
    import numpy as np
    from google.protobuf.message import DecodeError

    from splitinfer.codec import CodecError, CodecLimits, Coder, decode, decode_indices
    from splitinfer.v1 import tensor_pb2
    from splitinfer.wire import tensor_from_proto

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import RAW_MODE, fuzz_argv  # noqa: E402

# Small enough that one input decodes in milliseconds; the limits themselves are what is exercised.
LIMITS = CodecLimits(max_elements=2**18, max_bins=2**22)


def _raw(data: bytes) -> None:
    if len(data) < 3:
        return
    coder_value, levels, rank = data[0], data[1] + 1, data[2]
    dims_end = 3 + 2 * rank
    if rank > 8 or len(data) < dims_end:
        return
    shape = struct.unpack(f"<{rank}H", data[3:dims_end])
    payload = data[dims_end:]
    reference = None
    # numpy cannot even hold a zero-size shape whose other dimensions overflow: size it as check_shape does.
    if coder_value == Coder.TEMPORAL_CONTEXTS and math.prod(d for d in shape if d) <= LIMITS.max_elements:
        reference = np.zeros(shape, np.uint8)  # the decoder checks the shape; the reference only has to match it
    try:
        levels_out = decode_indices(payload, shape, levels, coder_value, reference=reference, limits=LIMITS)
    except CodecError:
        return
    assert levels_out.shape == tuple(shape) and levels_out.dtype == np.uint8, (levels_out.shape, shape)
    assert levels_out.size == 0 or int(levels_out.max()) < levels


def _wire(data: bytes) -> None:
    try:
        message = tensor_pb2.CompressedTensor.FromString(data)
    except DecodeError:
        return
    try:
        tensor = tensor_from_proto(message, LIMITS)
        reference = None
        if tensor.coder is Coder.TEMPORAL_CONTEXTS:
            reference = np.zeros(tensor.shape, np.uint8)
        values = decode(tensor, reference=reference, limits=LIMITS)
    except CodecError:
        return
    assert values.shape == tensor.shape and values.dtype == np.float32


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] == RAW_MODE:
        _raw(data[1:])
    else:
        _wire(data[1:])


def main(argv: list[str]) -> None:
    atheris.Setup(fuzz_argv("decoder", argv), test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
