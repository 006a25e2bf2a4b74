"""Atheris harness for the cloud's message handling: InferRequest bytes -> what the servicer does with them.

A start message goes through the stream-id check and `TailEngine.open_stream` / `open_partition`
(LookupError and ValueError are their documented refusals, FAILED_PRECONDITION on the wire); a frame goes
through `TailEngine.process` (decode, tail, NMS; bad input becomes an in-band FrameError) and
`InferenceServicer.finish_result` (stage times, size bound, metrics), with the real Yolo-Fastest-1.1-XL model
and, as the temporal reference, the levels of a real frame. A frame with a video packet is served as a pixels
stream (320x320 H.264, a fresh decoder), one with detections as a detections stream, any other as features.
Defects: any exception (protobuf's DecodeError for unparsable bytes aside), an INTERNAL FrameError (the
engine's catch-all for unexpected exceptions), a result above the message limit or with a stage name outside
the fixed set, detections published for a detections stream that the check would refuse.

    python tests/fuzz/fuzz_servicer.py [libFuzzer flags] [corpus folder]   (see tests/fuzz/README.md)
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

# The numba kernels are compiled, not Python: instrumenting their bytecode would break the compilation; the model
# (dnn) is not what is fuzzed here and runs far slower instrumented.
with atheris.instrument_imports(include=["splitinfer"], exclude=["splitinfer.codec._kernels", "splitinfer.dnn"]):
    from google.protobuf.message import DecodeError

    from splitinfer.codec import CodecLimits, Reference, decode_levels
    from splitinfer.dnn import load_model
    from splitinfer.sample_data import shared_data_dir
    from google.rpc.code_pb2 import INTERNAL

    from splitinfer.services.cloud.edge_detections import checked_detections
    from splitinfer.services.cloud.engine import TailEngine
    from splitinfer.services.cloud.metrics import CloudMetrics
    from splitinfer.services.cloud.servicer import STREAM_ID_PATTERN, InferenceServicer
    from splitinfer.services.cloud.streams import StreamRegistry, StreamState
    from splitinfer.services.cloud.subscribers import SubscriberHub
    from splitinfer.services.stages import STAGES
    from splitinfer.v1 import inference_pb2
    from splitinfer.wire import tensor_from_proto

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import CUT, MODEL, coded_tensors, fuzz_argv  # noqa: E402

MAX_MESSAGE_BYTES = 1024 * 1024


class Harness:
    """The real engine and servicer, set up once; `one_input` runs per fuzzed input."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)  # one input at a time; more threads only contend on a shared machine
        weights = shared_data_dir() / "models" / "yolo-fastest-1.1"
        self.engine = TailEngine(load_model(MODEL, weights=str(weights)), limits=CodecLimits(max_elements=2**20))
        self.split = self.engine.open_stream(MODEL, CUT)
        self.servicer = InferenceServicer(registry=StreamRegistry(4), hub=SubscriberHub(4), metrics=CloudMetrics(),
                                          executor=None, max_message_bytes=MAX_MESSAGE_BYTES)  # type: ignore[arg-type]
        # The levels of real sample 0 (8 levels, BIN_CONTEXTS), held as frame 0: temporal seeds decode against them.
        _, _, _, tensor = next(coded_tensors(samples=1))
        self.reference = {tensor.name: Reference(decode_levels(tensor), tensor.quantizer)}

    def one_input(self, data: bytes) -> None:
        try:
            request = inference_pb2.InferRequest.FromString(data)
        except DecodeError:
            return
        kind = request.WhichOneof("kind")
        if kind == "start":
            start = request.start
            if STREAM_ID_PATTERN.fullmatch(start.stream_id):
                try:
                    if start.partition in (inference_pb2.PARTITION_PIXELS, inference_pb2.PARTITION_DETECTIONS):
                        self.engine.open_partition(start.model, start.partition)
                    else:
                        self.engine.open_stream(start.model, start.cut)
                except (LookupError, ValueError):
                    pass
        elif kind == "frame":
            frame = request.frame
            if frame.HasField("pixels"):
                state = StreamState("fuzz-cam", MODEL, "input", partition=inference_pb2.PARTITION_PIXELS,
                                    pixel_coding=inference_pb2.PixelCoding(codec="h264", width=320, height=320))
                split = self.engine.open_partition(MODEL, inference_pb2.PARTITION_PIXELS)
            elif frame.HasField("detections"):
                state = StreamState("fuzz-cam", MODEL, "output", partition=inference_pb2.PARTITION_DETECTIONS)
                split = self.engine.open_partition(MODEL, inference_pb2.PARTITION_DETECTIONS)
            else:
                state, split = StreamState("fuzz-cam", MODEL, self.split.cut), self.split
                state.decoder.commit(0, self.reference)
            result = self.engine.process(state, split, frame, -1)
            if result.error.code == INTERNAL:
                raise AssertionError(f"the engine failed internally: {result.error.message}")
            self.servicer.finish_result(frame, result, 0.001)
            response = inference_pb2.InferResponse(result=result).SerializeToString()
            assert len(response) <= MAX_MESSAGE_BYTES, len(response)
            assert set(result.stage_seconds) <= set(STAGES), set(result.stage_seconds)
            for message in frame.tensors:  # what the engine decoded, it decoded through the validating API
                if not result.HasField("error") and state.partition == inference_pb2.PARTITION_FEATURES:
                    tensor_from_proto(message, self.engine.limits)
            if state.partition == inference_pb2.PARTITION_DETECTIONS and not result.HasField("error"):
                checked_detections(result.detections, width=result.capture.image_width,
                                   height=result.capture.image_height, class_names=self.engine.model.class_names)


def main(argv: list[str]) -> None:
    harness = Harness()
    atheris.Setup(fuzz_argv("servicer", argv), harness.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
