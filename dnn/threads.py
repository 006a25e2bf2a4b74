"""How many threads one model call may use, so that the model, gRPC, the event loop and the codec share the
cores instead of fighting over them.

An OpenMP pool with more threads than free cores spins and yields against everything else in the process:
on 2 cores the whole model took 390-1,050 ms of CPU per frame with torch's default of 2 threads beside the
services' threads, against 45 ms with one (docs/BENCHMARKS.md, "Runtimes"). The default leaves one core to
the rest of the process and splits the others among the calls that run at once.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from splitinfer.errors import ConfigError

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus() -> float:
    """CPUs this process may use: its affinity mask, lowered by a cgroup v2 quota (a container's CPU limit)."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            cpus = min(cpus, float(quota) / float(period))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable here: the affinity mask is the limit
    return max(cpus, 1.0)


def default_threads(concurrent_calls: int = 1, cpus: float | None = None) -> int:
    """Threads per model call: the whole CPUs less one for the rest of the process, shared by the calls that
    run at once (the cloud's --workers); at least 1."""
    whole = math.floor(available_cpus() if cpus is None else cpus)
    return max(1, (whole - 1) // max(1, concurrent_calls))


def resolve_threads(requested: int | None, concurrent_calls: int = 1) -> int:
    """`--threads`: a positive count as given, 0 or None for the default; negative is a ConfigError."""
    if requested is None or requested == 0:
        return default_threads(concurrent_calls)
    if requested < 0:
        raise ConfigError(f"--threads must be 0 (one per free core, shared by the calls that run at once) or a "
                          f"positive count, got {requested}.")
    return requested


def apply_torch_threads(threads: int) -> None:
    """Set torch's intra-op pool to `threads` and its inter-op pool to one (our graphs have no parallel branches
    worth a second pool; the executors already run calls side by side)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or inter-op work already ran in this process: it can be set only once
