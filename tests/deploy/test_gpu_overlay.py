"""The GPU overlay: one NVIDIA GPU per cloud pod, scheduled on GPU nodes, the CUDA image, batching on."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.test_manifests import main_container, render

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "deploy" / "kubernetes" / "overlays" / "gpu"


def test_the_gpu_overlay_asks_for_a_gpu_on_a_gpu_node() -> None:
    docs = render(GPU)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = main_container(docs)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["image"].endswith(":0.1.0-cuda")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPLITINFER_DEVICE"] == "cuda" and int(env["SPLITINFER_MAX_BATCH"]) > 1
    # The base's settings survive the patch (the merge is by variable name).
    assert env["SPLITINFER_DRAIN_SECONDS"] == "30" and env["SPLITINFER_PORT"] == "50051"
    assert env["SPLITINFER_THREADS"] == str(container["resources"]["limits"]["cpu"])


def test_the_image_builds_cpu_torch_unless_told_otherwise() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert '--index-url "$TORCH_INDEX_URL"' in dockerfile
