"""bench/'s imports: every outside module a bench script imports is installed by the `dev` extra, and the scripts
import one another without a cycle (shared code lives in bench/common.py, which imports no script)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def _imported_top_level_modules() -> dict[str, str]:
    """Top-level module -> a bench file that imports it, for every import in bench/*.py."""
    found: dict[str, str] = {}
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path.name)
    return found


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_module_bench_imports_is_installed_by_the_dev_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"]) | _requirement_names(project["optional-dependencies"]["dev"])
    local = {path.stem for path in BENCH.glob("*.py")} | {p.name for p in BENCH.iterdir() if p.is_dir()} | {
        "splitinfer", "tests", "bench"}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for name, where in _imported_top_level_modules().items():
        if name in local or name in sys.stdlib_module_names:
            continue
        names = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
        if not names & declared:
            missing[name] = where
    assert not missing, f"bench/ imports modules that the dev extra does not declare (pyproject.toml): {missing}"


def _script_imports() -> dict[str, set[str]]:
    """bench script -> the bench scripts it imports (at the top or inside a function)."""
    scripts = {path.stem for path in BENCH.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(BENCH.glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        graph[path.stem] = found & scripts - {path.stem}
    return graph


def test_bench_scripts_import_one_another_without_a_cycle() -> None:
    graph = _script_imports()
    assert not graph["common"], f"bench/common.py must not import the scripts: {graph['common']}"

    def cycle_from(start: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return (*path, nxt)
            if nxt not in path:
                found = cycle_from(start, (*path, nxt))
                if found:
                    return found
        return None

    cycles = [c for script in graph if (c := cycle_from(script, (script,)))]
    assert not cycles, f"import cycles among bench scripts: {cycles}"
