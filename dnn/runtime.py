"""Where a model's graphs run: torch eager (the default), ONNX Runtime or OpenVINO on the CPU.

`RuntimeConfig` is the choice (`--runtime`, `--threads`); `check_runtime` says, before any model loads,
which extra to install when a runtime's packages are missing; `compile_graph` exports a graph once
(splitinfer.dnn.onnx_export), loads it into the runtime and checks it against torch on a fixed input:
an export that disagrees by more than float rounding is refused rather than served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from splitinfer.dnn.errors import InferenceRuntimeError, MissingDependencyError
from splitinfer.dnn.onnx_export import cached_export, export_key, forget
from splitinfer.runtimes import RUNTIMES, check_runtime_flags, missing_message, missing_packages

log = logging.getLogger("splitinfer.dnn")

# OpenVINO's inference precision hints; ONNX Runtime's CPU provider runs fp32 only.
_OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# An fp32 export may differ from torch by float rounding in a different summation order, nothing more.
_RELATIVE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class RuntimeConfig:
    """Which runtime runs the model's graphs, with how many threads per call and in which precision."""

    name: str = "torch"
    threads: int = 1
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.name not in RUNTIMES:
            raise InferenceRuntimeError(f"unknown runtime {self.name!r}: use one of {', '.join(RUNTIMES)}.")
        if self.threads < 1:
            raise InferenceRuntimeError(f"a runtime needs at least one thread per call, got {self.threads}.")
        if self.name == "onnxruntime" and self.precision != "fp32":
            raise InferenceRuntimeError(f"ONNX Runtime's CPU provider runs fp32 only, not {self.precision}: drop --precision "
                                "or use --runtime openvino (bf16 on CPUs with AVX-512 BF16 or AMX).")
        if self.name == "openvino" and self.precision not in _OPENVINO_PRECISIONS:
            raise InferenceRuntimeError(f"OpenVINO has no precision {self.precision!r}: use {', '.join(_OPENVINO_PRECISIONS)}.")

    @property
    def compiled(self) -> bool:
        """True when graphs are exported to ONNX and run outside torch."""
        return self.name != "torch"


def check_runtime(name: str) -> None:
    """Raise MissingDependencyError naming the extra to install when `name`'s packages are absent (imports
    nothing, so it runs before torch or the model load)."""
    if name not in RUNTIMES:
        raise InferenceRuntimeError(f"unknown runtime {name!r}: use one of {', '.join(RUNTIMES)}.")
    missing = missing_packages(name)
    if missing:
        raise MissingDependencyError(missing_message(name, missing))


def resolve_runtime(name: str, threads: int | None = 0, *, concurrent_calls: int = 1, precision: str = "fp32",
                    device: str = "auto") -> RuntimeConfig:
    """The RuntimeConfig that `--runtime`, `--threads`, `--precision` and `--device` describe.

    threads 0 or None: splitinfer.dnn.threads' default for `concurrent_calls` calls at once. ONNX Runtime and
    OpenVINO run on the CPU here: a CUDA --device with them is refused; torch keeps its precision on the device."""
    from splitinfer.dnn.threads import resolve_threads

    check_runtime_flags(name, threads or 0, device)
    return RuntimeConfig(name, resolve_threads(threads, concurrent_calls), precision if name != "torch" else "fp32")


class CompiledGraph:
    """One exported graph loaded into a runtime: numpy arrays in (batch first), numpy arrays out."""

    def __init__(self, path: Path, config: RuntimeConfig) -> None:
        self.path, self.config = path, config

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeGraph(CompiledGraph):
    def __init__(self, path: Path, config: RuntimeConfig) -> None:
        super().__init__(path, config)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning workers burn the cores that gRPC, the codec and other processes need between calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(self._session.run(None, dict(zip(self._inputs, inputs))))  # InferenceSession.run is thread-safe


class OpenVinoGraph(CompiledGraph):
    def __init__(self, path: Path, config: RuntimeConfig) -> None:
        super().__init__(path, config)
        import openvino as ov

        core = ov.Core()
        self._model = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_NUM_THREADS": config.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISIONS[config.precision], "ENABLE_CPU_PINNING": False,
        })
        self._local = threading.local()  # an infer request serves one call at a time: one per calling thread

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._model.create_infer_request()
        request.infer(list(inputs))
        # The request's output buffers are reused by its next call: copy them out.
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(len(self._model.outputs))]


_GRAPHS: dict[str, type[CompiledGraph]] = {"onnxruntime": OnnxRuntimeGraph, "openvino": OpenVinoGraph}


def as_inputs(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Tensors as a compiled graph takes them: contiguous float32 numpy arrays on the host."""
    return [np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32) for t in tensors]


def compile_graph(model_name: str, part: str, cut: str, module: nn.Module, example: Sequence[torch.Tensor],
                  config: RuntimeConfig) -> tuple[CompiledGraph, float]:
    """Export `module` (cached), load it into `config`'s runtime and run both on `example`.

    Returns the graph and its largest absolute difference from torch; an fp32 graph that differs by more than
    float rounding (1e-3 of the output's range) raises InferenceRuntimeError."""
    check_runtime(config.name)
    name = f"{model_name}-{part}" + (f"-cut{cut}" if cut else "")
    path = cached_export(name, module, example, export_key(model_name, part, cut, module))
    try:
        graph = _GRAPHS[config.name](path, config)
    except Exception as exc:  # a truncated or corrupt cache entry: export it again, once
        log.warning("%s could not load %s (%s): exporting it again", config.name, path, str(exc).splitlines()[0][:200])
        forget(path)
        path = cached_export(name, module, example, export_key(model_name, part, cut, module))
        try:
            graph = _GRAPHS[config.name](path, config)
        except Exception as again:
            raise InferenceRuntimeError(f"{config.name} cannot load {name} even from a fresh export ({type(again).__name__}: "
                                        f"{str(again).splitlines()[0][:300]}); use --runtime torch and report it. "
                                        f"({path})") from again
    with torch.no_grad():
        expected = module(*example)
    got = graph(as_inputs(example))
    if len(got) != len(expected):
        raise InferenceRuntimeError(f"internal error: the exported {name} returns {len(got)} tensors, torch {len(expected)}.")
    difference, scale = 0.0, 1.0
    for ours, theirs in zip(got, expected):
        reference = theirs.detach().cpu().numpy()
        if ours.shape != reference.shape:
            raise InferenceRuntimeError(f"internal error: the exported {name} returns shape {ours.shape}, torch "
                                f"{reference.shape}.")
        difference = max(difference, float(np.max(np.abs(ours - reference), initial=0.0)))
        scale = max(scale, float(np.max(np.abs(reference), initial=0.0)))
    log.info("%s runs %s with %d thread(s) in %s; largest difference from torch %.3g", config.name, name,
             config.threads, config.precision, difference)
    if config.precision == "fp32" and not difference <= _RELATIVE_TOLERANCE * scale:
        raise InferenceRuntimeError(f"the {config.name} graph of {name} differs from torch by {difference:.3g} (outputs up to "
                            f"{scale:.3g}): the export is wrong; use --runtime torch and report it. ({path})")
    return graph, difference
