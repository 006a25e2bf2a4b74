"""The runtimes a model can run in and the packages each needs, known without importing torch, so that a
missing package is named before any model loads (splitinfer.dnn.runtime runs them)."""

from __future__ import annotations

import importlib.util

from splitinfer.errors import ConfigError

RUNTIMES = ("torch", "onnxruntime", "openvino")
# What each runtime imports (the ONNX exporter's packages too); the pip extra of the same name installs them.
PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": (),
    "onnxruntime": ("onnxruntime", "onnx", "onnxscript"),
    "openvino": ("openvino", "onnx", "onnxscript"),
}


def missing_packages(runtime: str) -> list[str]:
    """The packages of `runtime` that are not installed (none for an unknown name: check it against RUNTIMES)."""
    return [package for package in PACKAGES.get(runtime, ()) if importlib.util.find_spec(package) is None]


def missing_message(runtime: str, missing: list[str]) -> str:
    """What to tell a user whose `runtime` lacks `missing`."""
    return (f"--runtime {runtime} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: pip install 'splitinfer[{runtime}]' (or use --runtime torch).")


def check_runtime_flags(runtime: str, threads: int, device: str = "auto") -> None:
    """Refuse a bad --threads, a runtime whose packages are missing, or a compiled runtime on a GPU device,
    before torch or the model load."""
    if threads < 0:
        raise ConfigError(f"--threads must be 0 (automatic) or a positive count, got {threads}.")
    missing = missing_packages(runtime)
    if missing:
        raise ConfigError(missing_message(runtime, missing))
    if runtime != "torch" and (device or "auto").strip().lower() not in ("auto", "cpu"):
        raise ConfigError(f"--runtime {runtime} runs on the CPU: use --device cpu (or auto), or --runtime torch for "
                          f"--device {device}.")
