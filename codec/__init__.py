"""The lightweight feature codec: clip, quantize, binarize, context-adaptive binary arithmetic coding.

numpy + numba only: no torch, no grpc, no protobuf. Services convert at the edge of the codec
(splitinfer.wire). In one picture:

    encode(x, quantizer) -> CompressedTensor(shape, quantizer, coder, coder_version, payload, crc32)
    decode(tensor) -> float32 reconstruction; decode_levels(tensor) -> uint8 levels (next reference)

Coders (splitinfer.codec.entropy, kernels in _kernels): truncated unary with one context per bin
(the paper), with left/above neighbour contexts, a signed binarization (distance from the most
probable level + sign) and temporal contexts on the previous frame's co-located level (version 2 of that coder:
a skip bin per plane, then the change from the reference level); the default
(`default_coder`) is the one measured smallest for the tensor kind (docs/BENCHMARKS.md). NaN input is
refused, +-Inf clips to the end levels. Decoders check CodecLimits (elements before allocating, bins
while decoding), the CRC-32, and that the payload is consumed exactly.
"""

from splitinfer.codec.entropy import (
    CODER_VERSION,
    CodecLimits,
    Coder,
    decode_indices,
    encode_indices,
    ideal_cost_bits,
    parse_coder,
)
from splitinfer.codec.errors import CodecError
from splitinfer.codec.profile import DEFAULT_INTRA_PERIOD, PROFILE_ID, CodecProfile
from splitinfer.codec.quantizer import Quantizer, QuantizerKind, quantize_with_reference
from splitinfer.codec.sequence import (
    CodedFrame,
    MissingReferenceError,
    Reference,
    TemporalDecoder,
    TemporalEncoder,
    remap_levels,
)
from splitinfer.codec.tensor import (
    CompressedTensor,
    decode,
    decode_levels,
    default_coder,
    encode,
    encode_levels,
    warm_up,
)

__all__ = [
    "CODER_VERSION",
    "DEFAULT_INTRA_PERIOD",
    "CodedFrame",
    "MissingReferenceError",
    "Reference",
    "TemporalDecoder",
    "PROFILE_ID",
    "CodecError",
    "CodecLimits",
    "CodecProfile",
    "Coder",
    "CompressedTensor",
    "Quantizer",
    "QuantizerKind",
    "TemporalEncoder",
    "decode",
    "decode_indices",
    "decode_levels",
    "default_coder",
    "encode",
    "encode_indices",
    "encode_levels",
    "ideal_cost_bits",
    "parse_coder",
    "quantize_with_reference",
    "remap_levels",
    "warm_up",
]
