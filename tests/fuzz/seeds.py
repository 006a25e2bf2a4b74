"""Seed corpora for the fuzz harnesses, made at run time from the real activations in ../shared/data.

Nothing here is committed as binary: `write_seeds(kind, folder)` codes real layer-80 activations of
Yolo-Fastest-1.1-XL with every coder and writes one seed file per input, in the harness's own input
format (see fuzz_decoder.py and fuzz_servicer.py).
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np

from splitinfer.codec import Coder, Quantizer, encode
from splitinfer.sample_data import shared_data_dir

ACTIVATIONS = ("activations", "yolo-fastest-1.1-xl.npz")
TENSOR = "layer80"  # the tensor at the cut the service tests pin (cut 80)
MODEL = "yolo-fastest-1.1-xl"
CUT = "80"
RAW_MODE = 1  # fuzz_decoder input: mode byte 1 = header + raw payload, anything else = a wire message


def activations() -> np.ndarray:
    """The real layer-80 activations, (8, 48, 20, 20) float32; FileNotFoundError with the path if absent."""
    path = shared_data_dir().joinpath(*ACTIVATIONS)
    if not path.exists():
        raise FileNotFoundError(f"{path} is absent: the fuzz seeds are made from ../shared/data activations")
    with np.load(path) as data:
        return data[TENSOR].astype(np.float32)


def coded_tensors(samples: int = 3):
    """(sample, coder, levels, CompressedTensor) for a few real samples, every intra coder and two level counts;
    TEMPORAL_CONTEXTS codes sample i against sample i - 1 (its levels are the reference)."""
    values = activations()[:samples]
    for levels in (8, 3):
        quantizer = Quantizer.uniform(-12.0, 12.0, levels)
        previous = None
        for i, sample in enumerate(values):
            tensor = sample[None]
            for coder in (Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS):
                yield i, coder, levels, encode(tensor, quantizer, coder=coder, name=TENSOR)
            if previous is not None:
                yield i, Coder.TEMPORAL_CONTEXTS, levels, encode(tensor, quantizer, coder=Coder.TEMPORAL_CONTEXTS,
                                                                 name=TENSOR, reference=quantizer.quantize(previous))
            previous = tensor


def raw_input(shape: tuple[int, ...], levels: int, coder: Coder, payload: bytes) -> bytes:
    """fuzz_decoder's raw format: mode, coder, levels - 1, rank, each dimension (u16 LE), then the payload."""
    return bytes([RAW_MODE, int(coder), levels - 1, len(shape)]) + struct.pack(f"<{len(shape)}H", *shape) + payload


def write_seeds(kind: str, folder: Path) -> int:
    """Write the seed corpus of harness `kind` ("decoder" or "servicer") into folder; the number of seeds."""
    from splitinfer.v1 import inference_pb2
    from splitinfer.wire import tensor_to_proto

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for sample, coder, levels, tensor in coded_tensors():
        name = f"{kind}-{sample}-{coder.name.lower()}-{levels}"
        if kind == "decoder":
            (folder / f"{name}-raw").write_bytes(raw_input(tensor.shape, levels, coder, tensor.payload))
            (folder / f"{name}-wire").write_bytes(b"\0" + tensor_to_proto(tensor).SerializeToString())
            count += 2
        else:
            frame = inference_pb2.FeatureFrame(frame_id=sample + 1)
            frame.capture.capture_time.FromNanoseconds(1_700_000_000_000_000_000 + sample)
            frame.capture.image_width, frame.capture.image_height = 768, 432
            frame.tensors.append(tensor_to_proto(tensor))
            if coder is Coder.TEMPORAL_CONTEXTS:
                frame.reference_frame_id = sample  # the harness holds sample - 1's levels as frame `sample`
            frame.edge_stage_seconds.update({"capture": 0.004, "preprocess": 0.002, "head": 0.01, "encode": 0.003})
            request = inference_pb2.InferRequest(frame=frame)
            (folder / name).write_bytes(request.SerializeToString())
            count += 1
    if kind == "servicer":
        start = inference_pb2.StreamStart(stream_id="fuzz-cam", model=MODEL, cut=CUT)
        (folder / "servicer-start").write_bytes(inference_pb2.InferRequest(start=start).SerializeToString())
        count += 1 + _write_partition_seeds(folder)
    return count


def _write_partition_seeds(folder: Path) -> int:
    """A pixels key frame (a real 320x320 H.264 packet of the shared video's first frame) and a detections frame."""
    import zlib

    import cv2

    from splitinfer.v1 import inference_pb2

    frame = inference_pb2.FeatureFrame(frame_id=1)
    frame.capture.capture_time.FromNanoseconds(1_700_000_000_000_000_000)
    frame.capture.image_width, frame.capture.image_height = 768, 432
    detections = inference_pb2.FeatureFrame()
    detections.CopyFrom(frame)
    detections.detections.detections.add(x1=10, y1=20, x2=110, y2=400, class_id=0, label="person", score=0.9)
    (folder / "servicer-detections").write_bytes(inference_pb2.InferRequest(frame=detections).SerializeToString())
    from splitinfer.services.pixels import PixelEncoder, PixelSettings, available

    if not available():  # PyAV is absent: no pixels seed (the harness still reaches the pixels path by mutation)
        return 1
    capture = cv2.VideoCapture(str(shared_data_dir() / "video" / "one-by-one-person-detection.mp4"))
    ok, image = capture.read()
    capture.release()
    if not ok:
        return 1
    packet = PixelEncoder(320, 320, PixelSettings()).encode(cv2.resize(image, (320, 320)))
    frame.pixels.data, frame.pixels.key_frame = packet.data, True
    frame.pixels.data_crc32 = zlib.crc32(packet.data)
    (folder / "servicer-pixels").write_bytes(inference_pb2.InferRequest(frame=frame).SerializeToString())
    return 2


def seed_if_empty(kind: str, folder: Path) -> None:
    """Seed a corpus folder that does not exist or is empty (a corpus that grew over earlier runs is kept)."""
    if not folder.exists() or not any(folder.iterdir()):
        write_seeds(kind, folder)


def fuzz_argv(kind: str, argv: list[str]) -> list[str]:
    """A harness's libFuzzer arguments with a seeded corpus: the folder given (seeded if empty), a temporary
    one when none is given, or none when replaying input files (e.g. a crash file)."""
    corpus = [arg for arg in argv[1:] if not arg.startswith("-")]
    if corpus and Path(corpus[0]).is_file():
        return argv
    if not corpus:
        corpus = [tempfile.mkdtemp(prefix=f"fuzz-{kind}-")]
        argv = [*argv, corpus[0]]
    seed_if_empty(kind, Path(corpus[0]))
    return argv
