"""--device and --precision: clear errors for a device that is not there, and the device code paths on the CPU.

CUDA-only cases skip with the reason where torch sees no GPU (the CI machines); bench/gpu.py runs on one.
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import pytest
import torch

from splitinfer.dnn import load_model
from splitinfer.dnn.device import DeviceError, place_model, resolve_device, resolve_precision
from splitinfer.dnn.yolo_postprocess import EVAL_SCORE_THRESHOLD, yolo_detections_batch
from tests.conftest import REPO, shared_path

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU on this machine; bench/gpu.py covers it")
needs_no_cuda = pytest.mark.skipif(CUDA, reason="checks the error for a missing GPU, and this machine has one")


def test_cpu_and_auto_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", "cuda:-1"])
def test_an_unknown_device_says_what_to_pass(spec: str) -> None:
    with pytest.raises(DeviceError, match="auto .*cpu, cuda or cuda:N"):
        resolve_device(spec)


def test_an_unknown_precision_says_what_to_pass() -> None:
    with pytest.raises(DeviceError, match="fp32, fp16, bf16"):
        resolve_precision("int8", torch.device("cpu"))


@needs_no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_clear_error(spec: str) -> None:
    with pytest.raises(DeviceError, match="torch sees no CUDA GPU.*--device cpu"):
        resolve_device(spec)


@needs_cuda
def test_a_gpu_index_that_does_not_exist_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@needs_no_cuda
def test_the_cloud_fails_on_a_missing_gpu_before_it_loads_the_model() -> None:
    # The checks that need no torch (TLS flags, model name, a --weights path) come first; the device check follows
    # them and comes before the port is bound and the model loads (the cloud logs "listening ... loading model").
    done = subprocess.run([sys.executable, "-m", "splitinfer.cli", "cloud", "--plaintext", "--device", "cuda", "--port",
                           "0", "--metrics-port", "-1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert "device 'cuda' was asked for, but torch sees no CUDA GPU" in done.stderr
    assert "Traceback" not in done.stderr and "loading model" not in done.stderr


@needs_no_cuda
def test_the_edge_fails_on_a_missing_gpu_before_it_loads_the_model(tmp_path) -> None:
    from splitinfer.services.edge.app import EdgeSettings, build_pipeline

    with pytest.raises(DeviceError, match="no CUDA GPU"):
        build_pipeline(EdgeSettings(source="0", weights=str(tmp_path / "absent"), device="cuda"))


def _image_tensors(model, names=("dog.jpg", "person.jpg", "horses.jpg")):
    images = [cv2.imread(str(shared_path("images", name))) for name in names]
    pairs = [model.preprocess(image) for image in images]
    return torch.cat([x for x, _ in pairs]), [info for _, info in pairs]


def _detections(found) -> list[list[tuple]]:
    return [[(d.class_id, round(d.x1, 1), round(d.y1, 1), round(d.x2, 1), round(d.y2, 1), round(d.score, 4))
             for d in sorted(dets, key=lambda d: (d.class_id, -d.score, d.x1))] for dets in found]


def test_fused_batch_postprocess_equals_image_by_image(fastest_xl) -> None:
    """The GPU's fused decode + NMS (run here on the CPU) finds what batch-1 postprocessing finds."""
    x, infos = _image_tensors(fastest_xl)
    split = fastest_xl.split(fastest_xl.default_cut)
    outputs = split.tail(split.head(x))
    for threshold in (EVAL_SCORE_THRESHOLD, 0.25):
        fused = yolo_detections_batch(outputs, fastest_xl.network.yolo_heads, fastest_xl.input_size, infos,
                                      fastest_xl.class_names, score_threshold=threshold, fused=True)
        alone = [fastest_xl.postprocess([o[i:i + 1] for o in outputs], info, score_threshold=threshold)
                 for i, info in enumerate(infos)]
        assert _detections(fused) == _detections(alone)
        assert all(alone)


def _tail_detections(model, x, infos, device: torch.device, dtype: torch.dtype) -> list[list]:
    split = model.split(model.default_cut)
    with torch.no_grad():
        sent = split.head(x)
    place_model(model, device, dtype)
    outputs = split.tail({k: v.to(device, dtype) for k, v in sent.items()})
    return model.postprocess_batch(outputs, infos)


def _agree(reference: list[list], other: list[list], iou: float = 0.5) -> None:
    """Every confident reference detection is found again (same class, IoU >= 0.5, score within 0.05)."""
    for ref_dets, dets in zip(reference, other):
        for r in ref_dets:
            if r.score < 0.4:
                continue
            best = max((d for d in dets if d.class_id == r.class_id), default=None,
                       key=lambda d: _iou(r, d))
            assert best is not None and _iou(r, best) >= iou and abs(best.score - r.score) < 0.05, (r, best)


def _iou(a, b) -> float:
    w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - w * h
    return w * h / union if union > 0 else 0.0


def test_a_bf16_tail_on_the_cpu_finds_the_fp32_detections(fastest_dir) -> None:
    model = load_model("yolo-fastest-1.1-xl", weights=fastest_dir / "yolo-fastest-1.1-xl.weights")
    x, infos = _image_tensors(model)
    reference = _tail_detections(model, x, infos, torch.device("cpu"), torch.float32)
    reduced = _tail_detections(model, x, infos, torch.device("cpu"), torch.bfloat16)
    assert next(model.parameters()).dtype is torch.bfloat16
    _agree(reference, reduced)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_the_tail_on_cuda_finds_the_cpu_detections(fastest_dir, precision: str) -> None:
    model = load_model("yolo-fastest-1.1-xl", weights=fastest_dir / "yolo-fastest-1.1-xl.weights")
    x, infos = _image_tensors(model)
    reference = _tail_detections(model, x, infos, torch.device("cpu"), torch.float32)
    device = resolve_device("cuda")
    on_gpu = _tail_detections(model, x, infos, device, resolve_precision(precision, device))
    _agree(reference, on_gpu)
