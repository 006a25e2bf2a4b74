"""The lightweight feature codec: clip, quantize, binarize, context-adaptive binary arithmetic coding.

numpy + numba only: no torch, no grpc, no protobuf. Services convert at the edge of the codec.
"""

from splitinfer.codec.errors import CodecError
from splitinfer.codec.quantizer import Quantizer, QuantizerKind

__all__ = ["CodecError", "Quantizer", "QuantizerKind"]
