"""Export a part of a split model (head, tail or the whole network) to ONNX once, and keep it in the cache.

The file is named by a hash of everything that changes the graph: the model, part and cut, the weights
(after batch-norm folding), torch's and onnxscript's versions and this exporter's own format number. It is
written beside its final name and renamed into place, so concurrent starts never read half a file; a
cache that cannot be written (a read-only root filesystem) costs an export per start, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from splitinfer.dnn.errors import ModelError
from splitinfer.dnn.weights import cache_dir

log = logging.getLogger("splitinfer.dnn")

# Bump when the exported graphs change for the same weights (wrapper modules, export options).
EXPORT_FORMAT = 1
# The batch dimension stays free in every exported graph (the cloud batches tails across streams).
MAX_BATCH = 1024
_NOISY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx")


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the names, shapes and values of every parameter and buffer."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_key(model: str, part: str, cut: str, module: nn.Module) -> str:
    """What names one export in the cache (see the module docstring)."""
    import onnxscript

    text = "\n".join([model, part, cut, torch.__version__, onnxscript.__version__, str(EXPORT_FORMAT),
                      weights_digest(module)])
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs each pass at INFO and warns about its own internals; keep that out of our logs."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export(module: nn.Module, example: Sequence[torch.Tensor], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = (tuple({0: batch} for _ in example),)  # the graphs' forward takes *tensors
    with _quiet_exporter(), contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
        program = torch.onnx.export(module.eval(), tuple(example), dynamo=True, dynamic_shapes=dynamic,
                                    optimize=True, verbose=False)
        if program is None:  # pragma: no cover - the dynamo exporter always returns a program
            raise ModelError("internal error: torch.onnx.export returned no program.")
        program.save(str(path))


def cached_export(name: str, module: nn.Module, example: Sequence[torch.Tensor], key: str) -> Path:
    """The ONNX file of `module` (whose forward takes the tensors of `example`, batch first), from the cache or
    exported now; `name` is the readable part of the file name."""
    folder = cache_dir() / "onnx"
    path = folder / f"{name}-{key[:16]}.onnx"
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".onnx.part")
    except OSError as exc:
        # One folder per user, reused by every start: nothing piles up in the temporary folder.
        fallback = Path(tempfile.gettempdir()) / f"splitinfer-onnx-{os.getuid()}"
        log.warning("cannot write the ONNX cache in %s (%s): exporting %s to %s instead; set SPLITINFER_CACHE_DIR to "
                    "a writable folder to keep it", folder, exc.strerror or exc, name, fallback)
        fallback.mkdir(mode=0o700, exist_ok=True)
        folder, path = fallback, fallback / path.name
        if path.is_file() and path.stat().st_size > 0:
            return path
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".onnx.part")
    os.close(handle)
    log.info("exporting %s to ONNX (once; cached as %s)", name, path)
    try:
        _export(module, example, Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; a cache shared by several users must be readable
        os.replace(temporary, path)
        for stale in folder.glob(f"{name}-*.onnx"):  # earlier weights or versions of the same graph
            if stale != path and len(stale.name) == len(path.name):
                forget(stale)
    except Exception as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"exporting {name} to ONNX failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                         "run it with --runtime torch instead.") from exc
    return path


def forget(path: Path) -> None:
    """Remove a cached export that a runtime could not load (a truncated or corrupt file), so it is made again."""
    with contextlib.suppress(OSError):
        path.unlink()
