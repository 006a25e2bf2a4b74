from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuantizerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTIZER_KIND_UNSPECIFIED: _ClassVar[QuantizerKind]
    QUANTIZER_KIND_UNIFORM: _ClassVar[QuantizerKind]
    QUANTIZER_KIND_ECSQ: _ClassVar[QuantizerKind]

class EntropyCoder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTROPY_CODER_UNSPECIFIED: _ClassVar[EntropyCoder]
    ENTROPY_CODER_BIN_CONTEXTS: _ClassVar[EntropyCoder]
    ENTROPY_CODER_NEIGHBOUR_CONTEXTS: _ClassVar[EntropyCoder]
    ENTROPY_CODER_SIGNED_NEIGHBOUR_CONTEXTS: _ClassVar[EntropyCoder]
    ENTROPY_CODER_TEMPORAL_CONTEXTS: _ClassVar[EntropyCoder]
QUANTIZER_KIND_UNSPECIFIED: QuantizerKind
QUANTIZER_KIND_UNIFORM: QuantizerKind
QUANTIZER_KIND_ECSQ: QuantizerKind
ENTROPY_CODER_UNSPECIFIED: EntropyCoder
ENTROPY_CODER_BIN_CONTEXTS: EntropyCoder
ENTROPY_CODER_NEIGHBOUR_CONTEXTS: EntropyCoder
ENTROPY_CODER_SIGNED_NEIGHBOUR_CONTEXTS: EntropyCoder
ENTROPY_CODER_TEMPORAL_CONTEXTS: EntropyCoder

class Quantizer(_message.Message):
    __slots__ = ("kind", "levels", "reconstruction", "thresholds")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    kind: QuantizerKind
    levels: int
    reconstruction: _containers.RepeatedScalarFieldContainer[float]
    thresholds: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kind: _Optional[_Union[QuantizerKind, str]] = ..., levels: _Optional[int] = ..., reconstruction: _Optional[_Iterable[float]] = ..., thresholds: _Optional[_Iterable[float]] = ...) -> None: ...

class CompressedTensor(_message.Message):
    __slots__ = ("name", "shape", "clip_min", "clip_max", "quantizer", "coder", "coder_version", "payload", "payload_crc32")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CLIP_MIN_FIELD_NUMBER: _ClassVar[int]
    CLIP_MAX_FIELD_NUMBER: _ClassVar[int]
    QUANTIZER_FIELD_NUMBER: _ClassVar[int]
    CODER_FIELD_NUMBER: _ClassVar[int]
    CODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_CRC32_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    clip_min: float
    clip_max: float
    quantizer: Quantizer
    coder: EntropyCoder
    coder_version: int
    payload: bytes
    payload_crc32: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., clip_min: _Optional[float] = ..., clip_max: _Optional[float] = ..., quantizer: _Optional[_Union[Quantizer, _Mapping]] = ..., coder: _Optional[_Union[EntropyCoder, str]] = ..., coder_version: _Optional[int] = ..., payload: _Optional[bytes] = ..., payload_crc32: _Optional[int] = ...) -> None: ...
