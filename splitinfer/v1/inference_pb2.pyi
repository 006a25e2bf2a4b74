import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from splitinfer.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Partition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARTITION_UNSPECIFIED: _ClassVar[Partition]
    PARTITION_FEATURES: _ClassVar[Partition]
    PARTITION_PIXELS: _ClassVar[Partition]
    PARTITION_DETECTIONS: _ClassVar[Partition]

class ZoneShapeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZONE_SHAPE_KIND_UNSPECIFIED: _ClassVar[ZoneShapeKind]
    ZONE_SHAPE_KIND_ZONE: _ClassVar[ZoneShapeKind]
    ZONE_SHAPE_KIND_LINE: _ClassVar[ZoneShapeKind]

class FrameErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_ERROR_REASON_UNSPECIFIED: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_FRAME_ID_NOT_INCREASING: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_BAD_IMAGE_SIZE: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_WRONG_TENSORS: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_WRONG_SHAPE: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_UNDECODABLE_TENSOR: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_MISSING_REFERENCE: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_RESULT_TOO_LARGE: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_INTERNAL: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_BAD_CAPTURE_TIME: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_UNDECODABLE_PIXELS: _ClassVar[FrameErrorReason]
    FRAME_ERROR_REASON_BAD_DETECTIONS: _ClassVar[FrameErrorReason]

class TrackEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRACK_EVENT_KIND_UNSPECIFIED: _ClassVar[TrackEventKind]
    TRACK_EVENT_KIND_ZONE_ENTERED: _ClassVar[TrackEventKind]
    TRACK_EVENT_KIND_ZONE_LEFT: _ClassVar[TrackEventKind]
    TRACK_EVENT_KIND_LINE_CROSSED: _ClassVar[TrackEventKind]
    TRACK_EVENT_KIND_TRACKS_RESTARTED: _ClassVar[TrackEventKind]
PARTITION_UNSPECIFIED: Partition
PARTITION_FEATURES: Partition
PARTITION_PIXELS: Partition
PARTITION_DETECTIONS: Partition
ZONE_SHAPE_KIND_UNSPECIFIED: ZoneShapeKind
ZONE_SHAPE_KIND_ZONE: ZoneShapeKind
ZONE_SHAPE_KIND_LINE: ZoneShapeKind
FRAME_ERROR_REASON_UNSPECIFIED: FrameErrorReason
FRAME_ERROR_REASON_FRAME_ID_NOT_INCREASING: FrameErrorReason
FRAME_ERROR_REASON_BAD_IMAGE_SIZE: FrameErrorReason
FRAME_ERROR_REASON_WRONG_TENSORS: FrameErrorReason
FRAME_ERROR_REASON_WRONG_SHAPE: FrameErrorReason
FRAME_ERROR_REASON_UNDECODABLE_TENSOR: FrameErrorReason
FRAME_ERROR_REASON_MISSING_REFERENCE: FrameErrorReason
FRAME_ERROR_REASON_RESULT_TOO_LARGE: FrameErrorReason
FRAME_ERROR_REASON_INTERNAL: FrameErrorReason
FRAME_ERROR_REASON_BAD_CAPTURE_TIME: FrameErrorReason
FRAME_ERROR_REASON_UNDECODABLE_PIXELS: FrameErrorReason
FRAME_ERROR_REASON_BAD_DETECTIONS: FrameErrorReason
TRACK_EVENT_KIND_UNSPECIFIED: TrackEventKind
TRACK_EVENT_KIND_ZONE_ENTERED: TrackEventKind
TRACK_EVENT_KIND_ZONE_LEFT: TrackEventKind
TRACK_EVENT_KIND_LINE_CROSSED: TrackEventKind
TRACK_EVENT_KIND_TRACKS_RESTARTED: TrackEventKind

class InferRequest(_message.Message):
    __slots__ = ("start", "frame")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    start: StreamStart
    frame: FeatureFrame
    def __init__(self, start: _Optional[_Union[StreamStart, _Mapping]] = ..., frame: _Optional[_Union[FeatureFrame, _Mapping]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("accepted", "result")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    accepted: StreamAccepted
    result: InferenceResult
    def __init__(self, accepted: _Optional[_Union[StreamAccepted, _Mapping]] = ..., result: _Optional[_Union[InferenceResult, _Mapping]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("stream_id", "model", "cut", "codec_profile", "partition", "pixel_coding")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    CODEC_PROFILE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PIXEL_CODING_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    model: str
    cut: str
    codec_profile: str
    partition: Partition
    pixel_coding: PixelCoding
    def __init__(self, stream_id: _Optional[str] = ..., model: _Optional[str] = ..., cut: _Optional[str] = ..., codec_profile: _Optional[str] = ..., partition: _Optional[_Union[Partition, str]] = ..., pixel_coding: _Optional[_Union[PixelCoding, _Mapping]] = ...) -> None: ...

class PixelCoding(_message.Message):
    __slots__ = ("codec", "width", "height", "preset", "crf", "target_kbps", "key_interval")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    CRF_FIELD_NUMBER: _ClassVar[int]
    TARGET_KBPS_FIELD_NUMBER: _ClassVar[int]
    KEY_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    codec: str
    width: int
    height: int
    preset: str
    crf: int
    target_kbps: float
    key_interval: int
    def __init__(self, codec: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., preset: _Optional[str] = ..., crf: _Optional[int] = ..., target_kbps: _Optional[float] = ..., key_interval: _Optional[int] = ...) -> None: ...

class StreamAccepted(_message.Message):
    __slots__ = ("stream_id", "tensor_names", "partition", "zones", "derives_uniform_quantizers")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    TENSOR_NAMES_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    DERIVES_UNIFORM_QUANTIZERS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    tensor_names: _containers.RepeatedScalarFieldContainer[str]
    partition: Partition
    zones: _containers.RepeatedCompositeFieldContainer[ZoneShape]
    derives_uniform_quantizers: bool
    def __init__(self, stream_id: _Optional[str] = ..., tensor_names: _Optional[_Iterable[str]] = ..., partition: _Optional[_Union[Partition, str]] = ..., zones: _Optional[_Iterable[_Union[ZoneShape, _Mapping]]] = ..., derives_uniform_quantizers: _Optional[bool] = ...) -> None: ...

class ZoneShape(_message.Message):
    __slots__ = ("name", "kind", "coordinates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COORDINATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ZoneShapeKind
    coordinates: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ZoneShapeKind, str]] = ..., coordinates: _Optional[_Iterable[float]] = ...) -> None: ...

class CaptureInfo(_message.Message):
    __slots__ = ("capture_time", "capture_monotonic_ns", "image_width", "image_height")
    CAPTURE_TIME_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_MONOTONIC_NS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    capture_time: _timestamp_pb2.Timestamp
    capture_monotonic_ns: int
    image_width: int
    image_height: int
    def __init__(self, capture_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., capture_monotonic_ns: _Optional[int] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ...) -> None: ...

class FeatureFrame(_message.Message):
    __slots__ = ("frame_id", "capture", "tensors", "reference_frame_id", "edge_stage_seconds", "pixels", "detections", "ladder_point")
    class EdgeStageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    LADDER_POINT_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    capture: CaptureInfo
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.CompressedTensor]
    reference_frame_id: int
    edge_stage_seconds: _containers.ScalarMap[str, float]
    pixels: VideoPacket
    detections: EdgeDetections
    ladder_point: int
    def __init__(self, frame_id: _Optional[int] = ..., capture: _Optional[_Union[CaptureInfo, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.CompressedTensor, _Mapping]]] = ..., reference_frame_id: _Optional[int] = ..., edge_stage_seconds: _Optional[_Mapping[str, float]] = ..., pixels: _Optional[_Union[VideoPacket, _Mapping]] = ..., detections: _Optional[_Union[EdgeDetections, _Mapping]] = ..., ladder_point: _Optional[int] = ...) -> None: ...

class VideoPacket(_message.Message):
    __slots__ = ("data", "data_crc32", "key_frame")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_CRC32_FIELD_NUMBER: _ClassVar[int]
    KEY_FRAME_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    data_crc32: int
    key_frame: bool
    def __init__(self, data: _Optional[bytes] = ..., data_crc32: _Optional[int] = ..., key_frame: _Optional[bool] = ...) -> None: ...

class EdgeDetections(_message.Message):
    __slots__ = ("detections",)
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    def __init__(self, detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2", "class_id", "label", "score", "track_id")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    label: str
    score: float
    track_id: int
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ..., class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., track_id: _Optional[int] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("class_id", "label", "score")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("code", "message", "intra_frame_requested", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INTRA_FRAME_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    intra_frame_requested: bool
    reason: FrameErrorReason
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., intra_frame_requested: _Optional[bool] = ..., reason: _Optional[_Union[FrameErrorReason, str]] = ...) -> None: ...

class InferenceResult(_message.Message):
    __slots__ = ("stream_id", "frame_id", "capture", "model", "detections", "classes", "error", "stage_seconds", "payload_bytes", "elements", "origin", "zone_counts")
    class StageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ZONE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    frame_id: int
    capture: CaptureInfo
    model: str
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    classes: _containers.RepeatedCompositeFieldContainer[ClassScore]
    error: FrameError
    stage_seconds: _containers.ScalarMap[str, float]
    payload_bytes: int
    elements: int
    origin: ResultOrigin
    zone_counts: _containers.RepeatedCompositeFieldContainer[ZoneCount]
    def __init__(self, stream_id: _Optional[str] = ..., frame_id: _Optional[int] = ..., capture: _Optional[_Union[CaptureInfo, _Mapping]] = ..., model: _Optional[str] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., classes: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ..., payload_bytes: _Optional[int] = ..., elements: _Optional[int] = ..., origin: _Optional[_Union[ResultOrigin, _Mapping]] = ..., zone_counts: _Optional[_Iterable[_Union[ZoneCount, _Mapping]]] = ...) -> None: ...

class ZoneCount(_message.Message):
    __slots__ = ("name", "kind", "inside", "forward", "backward")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INSIDE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ZoneShapeKind
    inside: int
    forward: int
    backward: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ZoneShapeKind, str]] = ..., inside: _Optional[int] = ..., forward: _Optional[int] = ..., backward: _Optional[int] = ...) -> None: ...

class ResultOrigin(_message.Message):
    __slots__ = ("partition", "cut", "ladder_point", "pixel_coding")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    LADDER_POINT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_CODING_FIELD_NUMBER: _ClassVar[int]
    partition: Partition
    cut: str
    ladder_point: int
    pixel_coding: PixelCoding
    def __init__(self, partition: _Optional[_Union[Partition, str]] = ..., cut: _Optional[str] = ..., ladder_point: _Optional[int] = ..., pixel_coding: _Optional[_Union[PixelCoding, _Mapping]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("stream_ids", "after_sequence", "events")
    STREAM_IDS_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    stream_ids: _containers.RepeatedScalarFieldContainer[str]
    after_sequence: int
    events: bool
    def __init__(self, stream_ids: _Optional[_Iterable[str]] = ..., after_sequence: _Optional[int] = ..., events: _Optional[bool] = ...) -> None: ...

class SubscribeWithCreditsRequest(_message.Message):
    __slots__ = ("subscription", "credits")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    subscription: SubscribeRequest
    credits: int
    def __init__(self, subscription: _Optional[_Union[SubscribeRequest, _Mapping]] = ..., credits: _Optional[int] = ...) -> None: ...

class SubscribeWithCreditsResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: SubscribeResponse
    def __init__(self, item: _Optional[_Union[SubscribeResponse, _Mapping]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("result", "dropped", "sequence", "queued_seconds", "event")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    result: InferenceResult
    dropped: int
    sequence: int
    queued_seconds: float
    event: TrackEvent
    def __init__(self, result: _Optional[_Union[InferenceResult, _Mapping]] = ..., dropped: _Optional[int] = ..., sequence: _Optional[int] = ..., queued_seconds: _Optional[float] = ..., event: _Optional[_Union[TrackEvent, _Mapping]] = ...) -> None: ...

class TrackEvent(_message.Message):
    __slots__ = ("id", "stream_id", "frame_id", "time", "kind", "name", "track_id", "class_id", "label", "dwell_seconds", "direction", "count")
    ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DWELL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    stream_id: str
    frame_id: int
    time: _timestamp_pb2.Timestamp
    kind: TrackEventKind
    name: str
    track_id: int
    class_id: int
    label: str
    dwell_seconds: float
    direction: str
    count: int
    def __init__(self, id: _Optional[str] = ..., stream_id: _Optional[str] = ..., frame_id: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[TrackEventKind, str]] = ..., name: _Optional[str] = ..., track_id: _Optional[int] = ..., class_id: _Optional[int] = ..., label: _Optional[str] = ..., dwell_seconds: _Optional[float] = ..., direction: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetServerMetadataRequest(_message.Message):
    __slots__ = ("model", "cut")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    model: str
    cut: str
    def __init__(self, model: _Optional[str] = ..., cut: _Optional[str] = ...) -> None: ...

class GetServerMetadataResponse(_message.Message):
    __slots__ = ("name", "version", "models", "cut", "coders", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    CODERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    models: _containers.RepeatedCompositeFieldContainer[ModelMetadata]
    cut: CutMetadata
    coders: _containers.RepeatedCompositeFieldContainer[CoderMetadata]
    limits: ServerLimits
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelMetadata, _Mapping]]] = ..., cut: _Optional[_Union[CutMetadata, _Mapping]] = ..., coders: _Optional[_Iterable[_Union[CoderMetadata, _Mapping]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("name", "task", "input_width", "input_height", "default_cut", "cuts", "class_names")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CUT_FIELD_NUMBER: _ClassVar[int]
    CUTS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    input_width: int
    input_height: int
    default_cut: str
    cuts: _containers.RepeatedScalarFieldContainer[str]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., input_width: _Optional[int] = ..., input_height: _Optional[int] = ..., default_cut: _Optional[str] = ..., cuts: _Optional[_Iterable[str]] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class CutMetadata(_message.Message):
    __slots__ = ("cut", "tensors")
    CUT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    cut: str
    tensors: _containers.RepeatedCompositeFieldContainer[TensorMetadata]
    def __init__(self, cut: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[TensorMetadata, _Mapping]]] = ...) -> None: ...

class TensorMetadata(_message.Message):
    __slots__ = ("name", "shape", "signed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    signed: bool
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., signed: _Optional[bool] = ...) -> None: ...

class CoderMetadata(_message.Message):
    __slots__ = ("coder", "version")
    CODER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    coder: _tensor_pb2.EntropyCoder
    version: int
    def __init__(self, coder: _Optional[_Union[_tensor_pb2.EntropyCoder, str]] = ..., version: _Optional[int] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_elements", "max_message_bytes", "max_streams", "stream_queue", "subscriber_queue", "subscriber_max_bytes", "max_connection_age_seconds", "results_bus")
    MAX_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    STREAM_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONNECTION_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_BUS_FIELD_NUMBER: _ClassVar[int]
    max_elements: int
    max_message_bytes: int
    max_streams: int
    stream_queue: int
    subscriber_queue: int
    subscriber_max_bytes: int
    max_connection_age_seconds: float
    results_bus: bool
    def __init__(self, max_elements: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_streams: _Optional[int] = ..., stream_queue: _Optional[int] = ..., subscriber_queue: _Optional[int] = ..., subscriber_max_bytes: _Optional[int] = ..., max_connection_age_seconds: _Optional[float] = ..., results_bus: _Optional[bool] = ...) -> None: ...
