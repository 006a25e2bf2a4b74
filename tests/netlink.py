"""A real, shaped network link between an "edge" and a "cloud" network namespace, for tests and benchmarks.

Two network namespaces with unique names are joined by a veth pair (edge 10.77.0.1, cloud 10.77.0.2, /30).
Each direction is shaped where it leaves its namespace: the uplink (edge -> cloud) by a `tc qdisc tbf` on the
edge's end, the downlink by one on the cloud's end. Random packet loss is an iptables rule
(`-m statistic --mode random`) on the receiving namespace's INPUT chain; netem is not needed (this kernel
lacks it). A link cut is `ip link set veth0 down` on the edge's end, which takes the carrier of both ends down.

tbf parameters for small rates (why these):
- burst (token bucket depth): the larger of 2 full-size frames (3,028 bytes; tbf cannot send a packet bigger
  than its bucket) and 10 ms of the rate (the bucket must refill at least once per kernel tick, HZ >= 100).
  A deeper bucket would let bursts through at line rate and hide the limit on short transfers.
- limit (queue in bytes): the larger of `queue_s` (default 0.25 s) of the rate and 8 full-size frames. A queue
  of under a few packets makes TCP lose a packet at every window growth and stay far below the rate (at
  256 kbit/s, 100 ms is 2 packets); a 250 ms queue is what a modest cellular or DSL uplink holds, so TCP
  fills the link and the queueing delay shows in the latency, as on a real uplink.
The veth itself adds no delay (netem would be needed for that): the round trip is the queueing plus the hosts'.

Use it as a context manager; everything it made (processes started through it, both namespaces with their
veth ends, qdiscs and rules) is removed on exit, also when the body raises. Namespaces left behind by a
process that was killed before it could clean up are removed the next time a link is made (their names
carry the creating process's pid). `unavailable_reason()` says why a link cannot be made here (not root, no
`ip`/`tc`/`iptables`, no namespaces, no tbf); `ShapedLink` raises `LinkUnavailable` with the same kind of reason.

    with ShapedLink(uplink=Shape(rate_kbit=256), downlink=Shape(rate_kbit=10_000, loss=0.01)) as link:
        cloud = link.popen("cloud", ["python", "-m", "http.server", "--bind", link.cloud_address, "8000"])
        link.run("edge", ["curl", f"http://{link.cloud_address}:8000/"])
        link.cut(); ...; link.restore()
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

Side = Literal["edge", "cloud"]
INTERFACE = "veth0"
EDGE_ADDRESS = "10.77.0.1"
CLOUD_ADDRESS = "10.77.0.2"
_PREFIX = "sil"
_NAME = re.compile(rf"^{_PREFIX}(\d+)x(\d+)[ec]$")
_FRAME_BYTES = 1514  # a full Ethernet frame at the veth's MTU of 1500, as tbf counts it
_counter = itertools.count()


class LinkUnavailable(RuntimeError):
    """A shaped link cannot be made on this machine; the message says why (tests skip with it)."""


@dataclass(frozen=True)
class Shape:
    """One direction of the link: a rate in kbit/s (None: not shaped) and a packet loss probability."""

    rate_kbit: float | None = None
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.rate_kbit is not None and self.rate_kbit <= 0:
            raise ValueError(f"the rate must be positive kbit/s or None (unshaped), got {self.rate_kbit}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"the loss probability must be in [0, 1), got {self.loss}")


def tbf_parameters(rate_kbit: float, queue_s: float = 0.25) -> tuple[int, int]:
    """(burst, limit) in bytes for a tbf at `rate_kbit` (the module docstring says why)."""
    bytes_per_s = rate_kbit * 1000 / 8
    burst = max(2 * _FRAME_BYTES, int(bytes_per_s * 0.010))
    limit = max(8 * _FRAME_BYTES, int(bytes_per_s * queue_s))
    return burst, limit


def unavailable_reason() -> str | None:
    """Why no shaped link can be made here (None when the tools and the privilege are there)."""
    if os.name != "posix" or not os.path.isdir("/proc/self/ns"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root (run the shaped-link tests as root)"
    missing = [tool for tool in ("ip", "tc", "iptables") if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not found: install iproute2 (ip, tc) and iptables "
                "(apt-get install iproute2 iptables)")
    return None


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise LinkUnavailable(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces this module made in processes that no longer exist; returns their names."""
    listing = _run(["ip", "netns", "list"], check=False).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _run(["ip", "netns", "delete", name], check=False)
            removed.append(name)
    return removed


def namespaces() -> list[str]:
    """Names of the network namespaces that exist now (`ip netns list`)."""
    listing = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.split()]


class ShapedLink:
    """Two network namespaces joined by a veth pair, shaped with tbf, lossy with iptables; see the module docstring."""

    edge_address = EDGE_ADDRESS
    cloud_address = CLOUD_ADDRESS

    def __init__(self, uplink: Shape = Shape(), downlink: Shape = Shape(), *, queue_s: float = 0.25) -> None:
        self.uplink, self.downlink = uplink, downlink
        self.queue_s = queue_s
        serial = f"{_PREFIX}{os.getpid()}x{next(_counter)}"
        self.namespace: dict[Side, str] = {"edge": f"{serial}e", "cloud": f"{serial}c"}
        self.is_cut = False
        self._processes: list[subprocess.Popen[Any]] = []
        self._made: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Make the namespaces, the veth pair, the addresses and the shaping; LinkUnavailable says what failed."""
        if self._made:
            raise RuntimeError("this link is already open")
        reason = unavailable_reason()
        if reason:
            raise LinkUnavailable(reason)
        remove_stale_namespaces()
        edge, cloud = self.namespace["edge"], self.namespace["cloud"]
        try:
            for name in (edge, cloud):
                _run(["ip", "netns", "add", name])
                self._made.append(name)
                self._ip(name, "link", "set", "lo", "up")
            _run(["ip", "link", "add", INTERFACE, "netns", edge, "type", "veth", "peer", "name", INTERFACE,
                  "netns", cloud])
            for name, address in ((edge, EDGE_ADDRESS), (cloud, CLOUD_ADDRESS)):
                self._ip(name, "addr", "add", f"{address}/30", "dev", INTERFACE)
                self._ip(name, "link", "set", INTERFACE, "up")
            self.shape(self.uplink, self.downlink)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the processes started here, then delete both namespaces (their veth ends, qdiscs and rules go too)."""
        for process in self._processes:
            _stop(process)
        self._processes.clear()
        for name in self._made:
            for pid in _run(["ip", "netns", "pids", name], check=False).stdout.split():
                # Children of the processes above (started through this link): nothing else runs in it.
                _kill(int(pid))
            _run(["ip", "netns", "delete", name], check=False)
        self._made.clear()

    # -- the link --------------------------------------------------------------------------------
    def shape(self, uplink: Shape | None = None, downlink: Shape | None = None) -> None:
        """Set (or change) the rate and loss of either direction while the link is up."""
        for shape, sender, receiver in ((uplink, "edge", "cloud"), (downlink, "cloud", "edge")):
            if shape is None:
                continue
            sender_ns, receiver_ns = self.namespace[sender], self.namespace[receiver]  # type: ignore[index]
            if shape.rate_kbit is None:
                _run(["ip", "netns", "exec", sender_ns, "tc", "qdisc", "del", "dev", INTERFACE, "root"], check=False)
            else:
                burst, limit = tbf_parameters(shape.rate_kbit, self.queue_s)
                self._exec(sender_ns, "tc", "qdisc", "replace", "dev", INTERFACE, "root", "tbf",
                           "rate", f"{shape.rate_kbit:g}kbit", "burst", str(burst), "limit", str(limit))
            self._exec(receiver_ns, "iptables", "-w", "-F", "INPUT")
            if shape.loss > 0:
                self._exec(receiver_ns, "iptables", "-w", "-A", "INPUT", "-i", INTERFACE, "-m", "statistic",
                           "--mode", "random", "--probability", f"{shape.loss:g}", "-j", "DROP")
            if sender == "edge":
                self.uplink = shape
            else:
                self.downlink = shape

    def cut(self) -> None:
        """Take the link down (both ends lose their carrier; packets in flight are lost)."""
        self._ip(self.namespace["edge"], "link", "set", INTERFACE, "down")
        self.is_cut = True

    def restore(self) -> None:
        """Bring the link back up after `cut` (addresses and shaping stay as they were)."""
        self._ip(self.namespace["edge"], "link", "set", INTERFACE, "up")
        self.is_cut = False

    def qdisc_stats(self, side: Side) -> dict[str, int]:
        """The tbf's counters on `side`'s end (sent bytes and packets, dropped, overlimits)."""
        text = _run(["ip", "netns", "exec", self.namespace[side], "tc", "-s", "qdisc", "show", "dev", INTERFACE]).stdout
        match = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", text)
        if not match:
            raise LinkUnavailable(f"unexpected `tc -s qdisc show` output: {text!r}")
        sent, packets, dropped, overlimits = (int(g) for g in match.groups())
        return {"sent_bytes": sent, "sent_packets": packets, "dropped": dropped, "overlimits": overlimits}

    def loss_drops(self, side: Side) -> int:
        """Packets the random-loss rule dropped on arrival at `side` so far."""
        text = _run(["ip", "netns", "exec", self.namespace[side], "iptables", "-w", "-L", "INPUT", "-v", "-x",
                     "-n"]).stdout
        return sum(int(line.split()[0]) for line in text.splitlines() if "statistic" in line)

    # -- processes in a namespace ------------------------------------------------------------------
    def command(self, side: Side, argv: Sequence[str]) -> list[str]:
        """`argv` as run inside `side`'s namespace."""
        return ["ip", "netns", "exec", self.namespace[side], *argv]

    def popen(self, side: Side, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` in `side`'s namespace; it is stopped (SIGTERM, then SIGKILL) when the link closes."""
        process = subprocess.Popen(self.command(side, argv), **kwargs)
        self._processes.append(process)
        return process

    def run(self, side: Side, argv: Sequence[str], *, check: bool = False, timeout: float = 60.0,
            **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run `argv` in `side`'s namespace to completion (subprocess.run's arguments)."""
        return subprocess.run(self.command(side, argv), check=check, timeout=timeout, **kwargs)

    def _ip(self, namespace: str, *argv: str) -> None:
        _run(["ip", "-n", namespace, *argv])

    def _exec(self, namespace: str, *argv: str) -> None:
        _run(["ip", "netns", "exec", namespace, *argv])


def _stop(process: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
