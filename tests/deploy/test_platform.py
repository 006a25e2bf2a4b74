"""What a platform engineer checks in the rendered overlays beyond validity: variable references that expand,
registry-qualified images, model files that are not downloaded at every start, probes on the edge, and an
autoscaler that follows each overlay's stream limit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_manifests import (CLOUD_OVERLAYS, EDGE_OVERLAYS, KUBE, OVERLAYS, env_of, main_container,
                                         of_kind, render, workload)

# $(VAR) is a reference; $$(VAR) is an escaped, literal $(VAR) (Kubernetes' expansion rules).
REFERENCE = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def unexpanded_references(container: dict) -> list[str]:
    """References Kubernetes leaves literal: in env, to a variable not declared earlier in the same list;
    in command and args, to a variable the container does not declare."""
    problems = []
    declared: list[str] = []
    for variable in container.get("env", []):
        for name in REFERENCE.findall(variable.get("value") or ""):
            if name not in declared:
                problems.append(f"{variable['name']}={variable['value']} uses $({name}) before it is declared")
        declared.append(variable["name"])
    for field in ("command", "args"):
        for word in container.get(field, []):
            problems += [f"{field} {word!r} uses the undeclared $({name})" for name in REFERENCE.findall(word)
                         if name not in declared]
    return problems


def containers(docs: tuple[dict, ...]) -> list[dict]:
    pod = workload(docs)["spec"]["template"]["spec"]
    return pod["containers"] + pod.get("initContainers", [])


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_variable_reference_expands(overlay: Path) -> None:
    for container in containers(render(overlay)):
        assert not unexpanded_references(container), f"{overlay.name}, container {container['name']}"


def test_the_edge_stream_id_expands_to_the_node_name() -> None:
    (overlay,) = [o for o in EDGE_OVERLAYS if o.name == "edge-site"]
    container = main_container(render(overlay))
    names = [variable["name"] for variable in container["env"]]
    assert "$(NODE_NAME)" in env_of(container)["SPLITINFER_STREAM_ID"]
    assert names.index("NODE_NAME") < names.index("SPLITINFER_STREAM_ID")


def test_a_reference_before_its_declaration_is_caught() -> None:
    """The check itself: the order the edge-site overlay once rendered is refused, the fixed order passes."""
    node = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    stream = {"name": "SPLITINFER_STREAM_ID", "value": "site-a/$(NODE_NAME)/video0"}
    assert unexpanded_references({"env": [stream, node]})
    assert not unexpanded_references({"env": [node, stream]})
    assert not unexpanded_references({"env": [{"name": "A", "value": "literal $$(NODE_NAME)"}]})
    assert unexpanded_references({"env": [node], "args": ["--x", "$(MISSING)"]})


def registry_of(image: str) -> str | None:
    """The registry host an image reference names, or None for a short name (which a node may look up on
    Docker Hub, where anyone can publish it)."""
    first, _, rest = image.partition("/")
    return first if rest and ("." in first or ":" in first or first == "localhost") else None


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_image_is_registry_qualified(overlay: Path) -> None:
    for container in containers(render(overlay)):
        assert registry_of(container["image"]), f"{overlay.name}: {container['image']} names no registry"
    # The qualified names come from the overlays' `images:`, not from the bases (one place to change them).
    for base in (KUBE / "base", KUBE / "edge"):
        for path in base.glob("*.yaml"):
            for doc in yaml.safe_load_all(path.read_text()):
                for container in (doc or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                    assert "/" not in container["image"], f"{path}: set the registry through kustomize images:"


def test_registry_of_refuses_short_names() -> None:
    assert registry_of("splitinfer:0.1.0") is None and registry_of("library/splitinfer:0.1.0") is None
    assert registry_of("registry.example.com/splitinfer/splitinfer:0.1.0") == "registry.example.com"
    assert registry_of("localhost/splitinfer:0.1.0") == "localhost"


def egress_to_any_address(docs: tuple[dict, ...]) -> set[int | str]:
    """Ports the cloud may reach at any address (egress rules without `to`)."""
    labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    ports: set[int | str] = set()
    for policy in of_kind(docs, "NetworkPolicy"):
        if all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items()):
            for rule in policy["spec"].get("egress", []):
                if not rule.get("to"):
                    ports |= {port["port"] for port in rule.get("ports", [])} or {"any"}
    return ports


def lists_component(overlay: Path, component: str) -> bool:
    listed = yaml.safe_load((overlay / "kustomization.yaml").read_text()).get("components", [])
    return any(Path(entry).name == component for entry in listed)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_model_files_come_from_the_image_or_a_volume_unless_a_download_is_asked_for(overlay: Path) -> None:
    docs = render(overlay)
    pod = workload(docs)["spec"]["template"]["spec"]
    env = env_of(main_container(docs))
    open_ports = egress_to_any_address(docs) - {53}
    if lists_component(overlay, "weights-download"):
        assert "SPLITINFER_WEIGHTS_DIR" not in env and env["SPLITINFER_CACHE_DIR"]
        assert open_ports == {443}, "the download needs HTTPS, and nothing more"
        return
    if overlay in CLOUD_OVERLAYS:  # an edge reaches its cloud's external address on 443 anyway
        assert not open_ports, f"{overlay.name} may reach any address on {sorted(open_ports, key=str)}"
    weights_dir = env["SPLITINFER_WEIGHTS_DIR"]
    (mount,) = [m for m in main_container(docs)["volumeMounts"] if m["mountPath"] == weights_dir]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    if "persistentVolumeClaim" in volume:
        return
    # An emptyDir filled by an init container from the weights image.
    assert set(volume) == {"name", "emptyDir"}
    fillers = [c for c in pod.get("initContainers", [])
               if any(m["name"] == volume["name"] for m in c.get("volumeMounts", []))]
    assert fillers and all("splitinfer-weights" in c["image"] for c in fillers)
    assert "SPLITINFER_CACHE_DIR" not in env, "no download cache where nothing is downloaded"


def test_production_downloads_nothing_by_default() -> None:
    production = KUBE / "overlays" / "production"
    assert not lists_component(production, "weights-download")
    assert "SPLITINFER_WEIGHTS_DIR" in env_of(main_container(render(production)))


@pytest.mark.parametrize("overlay", EDGE_OVERLAYS, ids=lambda p: p.name)
def test_the_edge_is_probed_on_its_metrics_endpoint(overlay: Path) -> None:
    from splitinfer.commands.edge import OPTIONS

    container = main_container(render(overlay))
    env = env_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == int(env["SPLITINFER_METRICS_PORT"])
    assert env["SPLITINFER_METRICS_HOST"] in ("0.0.0.0", "::"), "the kubelet probes the pod's address"
    assert any(o.env == "SPLITINFER_METRICS_HOST" for o in OPTIONS)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ("metrics", ports["metrics"]) and get["path"] == "/metrics", probe
    # Startup covers the model's load; liveness gives a stuck loop a minute.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_the_edge_metrics_endpoint_answers_the_probe_path() -> None:
    """The probe's path is one the edge's /metrics server answers 200 (and another path is not)."""
    import asyncio

    from splitinfer.services.prometheus import MetricsHttpServer

    (overlay,) = EDGE_OVERLAYS
    path = main_container(render(overlay))["livenessProbe"]["httpGet"]["path"]

    async def status_of(request_path: str) -> bytes:
        server = MetricsHttpServer(lambda: b"splitinfer_build_info 1\n", "127.0.0.1", 0)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {request_path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
            await writer.drain()
            status = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return status
        finally:
            await server.stop()

    assert b" 200 " in asyncio.run(status_of(path))
    assert b" 404 " in asyncio.run(status_of("/healthz"))
