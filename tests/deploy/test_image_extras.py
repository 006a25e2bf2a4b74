"""The image has every optional extra that an overlay's settings need: rendered offline, without building it.

Each overlay is rendered with kustomize; every SPLITINFER_* setting its containers turn on is looked up in
NEEDS_EXTRA (setting, and value where only some values need it, to the package extra that provides it),
and the extra must be among those deploy/Dockerfile installs (`pip install ... "/src[extra,...]"`). A test
also keeps NEEDS_EXTRA complete: every extra the code tells users to install appears in it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.test_manifests import OVERLAYS, env_of, render, workload

REPO = Path(__file__).resolve().parents[2]
# (setting, value) -> the extra it needs; value None: any non-empty value.
NEEDS_EXTRA: dict[tuple[str, str | None], str] = {
    ("SPLITINFER_NATS", None): "bus",
    ("SPLITINFER_MODEL", "efficientnet-lite0"): "classification",
    ("SPLITINFER_RUNTIME", "onnxruntime"): "onnxruntime",
    ("SPLITINFER_RUNTIME", "openvino"): "openvino",
    ("SPLITINFER_PARTITION", "pixels"): "pixels",
    ("SPLITINFER_TRACKING", "on"): "tracks",
    ("SPLITINFER_ZONES", None): "tracks",
}
# Extras the cloud image needs whatever its settings say: every cloud decodes the pixels streams edges choose, and
# tracks them (--tracking auto is on where supervision is installed).
ALWAYS = {"bus", "pixels", "tracks"}


def image_extras(dockerfile: Path = REPO / "deploy" / "Dockerfile") -> set[str]:
    """The extras the image's install of the package names (`"/src[a,b]"`), from its one pip install of /src."""
    text = "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#"))
    installs = re.findall(r"pip install [^\n]*?[\"']?/src(?:\[([^\]]*)\])?[\"']?(?:\s|$)", text)
    assert len(installs) == 1, f"expected one pip install of /src in {dockerfile.name}, found {len(installs)}"
    return {extra.strip() for extra in installs[0].split(",") if extra.strip()}


def needed_extras(env: dict[str, str | None]) -> dict[str, str]:
    """The extras these container settings need, each with the setting that needs it."""
    needed = {}
    for (name, value), extra in NEEDS_EXTRA.items():
        if env.get(name) and (value is None or env[name] == value):
            needed[extra] = f"{name}={env[name]}"
    return needed


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_image_has_every_extra_the_overlay_turns_on(overlay: Path) -> None:
    installed = image_extras()
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    pod = workload(render(overlay))["spec"]["template"]["spec"]
    for container in pod["containers"]:
        for extra, setting in needed_extras(env_of(container)).items():
            assert extra in declared, f"{setting} needs the extra {extra!r}, which pyproject.toml does not declare"
            assert extra in installed, (f"{overlay.name} sets {setting}, which needs the extra {extra!r}, but "
                                        f"deploy/Dockerfile installs the package with {sorted(installed)} only")


def test_the_production_overlay_needs_the_bus_and_the_image_has_it() -> None:
    """The case that broke: production publishes to NATS, so nats-py must be in the image."""
    env = env_of(workload(render(REPO / "deploy" / "kubernetes" / "overlays" / "production"))
                 ["spec"]["template"]["spec"]["containers"][0])
    assert needed_extras(env) == {"bus": f"SPLITINFER_NATS={env['SPLITINFER_NATS']}"}
    assert "bus" in image_extras()


def test_the_cloud_image_decodes_pixels_streams_whatever_its_settings() -> None:
    """Edges choose their partition, so every cloud must be able to decode a pixels stream (PyAV)."""
    assert ALWAYS <= image_extras()


def test_the_dockerfile_parser_reads_extras() -> None:
    """image_extras reads what it claims to (it would otherwise pass on any Dockerfile)."""
    assert image_extras(REPO / "deploy" / "Dockerfile") >= {"bus"}


def test_image_extras_of_an_install_without_extras_is_empty(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\n# pip install /src[bus]\nRUN pip install -c /src/constraints.txt /src \\\n && true\n")
    assert image_extras(dockerfile) == set()
    dockerfile.write_text('FROM x\nRUN pip install -c /src/constraints.txt "/src[bus, classification]"\n')
    assert image_extras(dockerfile) == {"bus", "classification"}


def test_every_extra_the_code_asks_for_has_a_setting_mapping() -> None:
    """An optional feature that tells users `pip install 'splitinfer[x]'` must be listed in NEEDS_EXTRA."""
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tops = {Path(folder).parts[0] for folder in package_dirs.values()}
    asked = {extra for top in tops for path in (REPO / top).rglob("*.py")
             for extra in re.findall(r"splitinfer\[([a-z0-9_-]+)\]", path.read_text())}
    assert asked, "no `pip install 'splitinfer[...]'` hint found: the search is broken"
    missing = asked - set(NEEDS_EXTRA.values())
    assert not missing, f"add the settings that need the extras {sorted(missing)} to NEEDS_EXTRA"
