"""The thread policy (#20 item 4): a container's CPU quota lowers the CPUs counted, one core is left to gRPC and
the codec, the rest is shared by the model calls that run at once, and a negative --threads is refused."""

from __future__ import annotations

import os

import pytest

from splitinfer.dnn import threads
from splitinfer.errors import ConfigError


def _affinity() -> float:
    return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@pytest.fixture
def cpu_max(tmp_path, monkeypatch):
    """Point the module at a cgroup v2 cpu.max file of our own, holding `text` (None: no such file)."""
    path = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", path)

    def write(text: str | None) -> None:
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)

    return write


@pytest.mark.parametrize("text", [None, "max 100000\n", "garbage\n", "", "150000 0\n", "many cpus please\n"])
def test_no_quota_or_an_unreadable_one_leaves_the_affinity_mask(cpu_max, text) -> None:
    cpu_max(text)
    assert threads.available_cpus() == max(_affinity(), 1.0)


def test_a_quota_lowers_the_cpus_to_quota_over_period(cpu_max) -> None:
    cpu_max("150000 100000\n")  # docker run --cpus 1.5
    assert threads.available_cpus() == min(_affinity(), 1.5)
    cpu_max("50000 100000\n")  # half a core is still one CPU to plan with
    assert threads.available_cpus() == 1.0


def test_a_quota_above_the_affinity_mask_does_not_raise_it(cpu_max) -> None:
    cpu_max(f"{int(_affinity() * 4 * 100000)} 100000\n")
    assert threads.available_cpus() == _affinity()


@pytest.mark.parametrize(("cpus", "calls", "expected"), [
    (1, 1, 1), (1, 2, 1),   # never fewer than one
    (2, 1, 1), (2, 2, 1),   # one core left to gRPC and the codec
    (4, 1, 3), (4, 2, 1),   # 3 free cores shared by 2 calls: 1 each, not 2 (that would oversubscribe)
    (16, 1, 15), (16, 2, 7),
    (2.5, 1, 1), (16.9, 1, 15),  # whole CPUs only
])
def test_default_threads_leave_one_core_and_share_the_rest(cpus, calls, expected) -> None:
    assert threads.default_threads(calls, cpus=cpus) == expected


def test_default_threads_follow_the_quota(cpu_max) -> None:
    cpu_max("150000 100000\n")
    assert threads.default_threads() == 1
    if _affinity() >= 4:
        cpu_max("400000 100000\n")
        assert threads.default_threads() == 3
        assert threads.default_threads(2) == 1


def test_resolve_threads_takes_a_count_as_given_and_zero_or_none_as_the_default(cpu_max) -> None:
    cpu_max("max 100000\n")
    assert threads.resolve_threads(3) == 3
    assert threads.resolve_threads(0) == threads.default_threads()
    assert threads.resolve_threads(None, 2) == threads.default_threads(2)


@pytest.mark.parametrize("requested", [-1, -8])
def test_negative_threads_are_a_config_error_naming_the_flag(requested) -> None:
    with pytest.raises(ConfigError, match=rf"--threads must be 0 .* got {requested}"):
        threads.resolve_threads(requested)


def test_apply_torch_threads_sets_the_pool_and_may_be_called_again() -> None:
    """torch allows its inter-op pool to be set once per process: a second call must not fail on it."""
    import torch

    previous = torch.get_num_threads()
    try:
        threads.apply_torch_threads(2)
        assert torch.get_num_threads() == 2
        threads.apply_torch_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
