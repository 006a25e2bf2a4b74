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
                                         of_kind, option_default, render, workload)

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
