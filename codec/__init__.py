"""The lightweight feature codec: clip, quantize, binarize, context-adaptive binary arithmetic coding.

numpy + numba only: no torch, no grpc, no protobuf. Services convert at the edge of the codec.
"""

from splitinfer.codec.entropy import (
    CODER_VERSION,
    CodecLimits,
    Coder,
    decode_indices,
    encode_indices,
    ideal_cost_bits,
)
from splitinfer.codec.errors import CodecError
from splitinfer.codec.profile import PROFILE_ID, CodecProfile
from splitinfer.codec.quantizer import Quantizer, QuantizerKind
from splitinfer.codec.tensor import CompressedTensor, decode, decode_levels, default_coder, encode, encode_levels

__all__ = [
    "CODER_VERSION",
    "PROFILE_ID",
    "CodecError",
    "CodecLimits",
    "CodecProfile",
    "Coder",
    "CompressedTensor",
    "Quantizer",
    "QuantizerKind",
    "decode",
    "decode_indices",
    "decode_levels",
    "default_coder",
    "encode",
    "encode_indices",
    "encode_levels",
    "ideal_cost_bits",
]
