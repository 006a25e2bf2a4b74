"""The shaped link of tests/netlink.py is real: each direction runs at its tbf rate, loss drops about the share
asked for, a cut stops traffic until restored, and nothing is left behind (not even when the body fails).

The throughput check measures the shaper, not our code: its bounds are wide (0.75-1.1 x the tbf rate; TCP/IP
headers alone take ~4 % of the rate) and hold on a loaded machine, since 1 Mbit/s is far below what loopback
Python sockets move.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.netlink import (
    CLOUD_ADDRESS,
    LinkUnavailable,
    Shape,
    ShapedLink,
    namespaces,
    tbf_parameters,
)

PORT = 5201

# Receives one TCP connection (or UDP datagrams for `seconds`) and prints what arrived, and when, as JSON.
_RECEIVER = r"""
import json, socket, sys, time
host, port, proto, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
server = socket.socket(socket.AF_INET, kind)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port))
print("ready", flush=True)
received, first, last = 0, None, None
if proto == "tcp":
    server.listen(1)
    conn, _ = server.accept()
    while chunk := conn.recv(65536):
        now = time.monotonic()
        first = first if first is not None else now
        received, last = received + len(chunk), now
else:
    server.settimeout(seconds)
    try:
        while server.recv(2048):
            received += 1
    except TimeoutError:
        pass
print(json.dumps({"received": received, "first": first, "last": last}), flush=True)
"""

# Sends to the receiver: for `seconds` as fast as TCP lets it, or `count` UDP datagrams paced 5 ms apart.
_SENDER = r"""
import socket, sys, time
host, port, proto, amount = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if proto == "tcp":
    conn = socket.create_connection((host, port), timeout=10)
    block, deadline = b"x" * 16384, time.monotonic() + amount
    while time.monotonic() < deadline:
        conn.sendall(block)
    conn.close()
else:
    conn = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(int(amount)):
        conn.sendto(b"y" * 100, (host, port))
        time.sleep(0.005)
"""


@pytest.fixture
def make_link():
    """ShapedLink(...) entered for the test and closed after it; skipped with the reason where none can be made."""
    links: list[ShapedLink] = []

    def make(**kwargs) -> ShapedLink:
        link = ShapedLink(**kwargs)
        try:
            link.open()
        except LinkUnavailable as exc:
            pytest.skip(f"no shaped link on this machine: {exc}")
        links.append(link)
        return link

    yield make
    for link in links:
        link.close()
    left = [name for link in links for name in link.namespace.values() if name in namespaces()]
    assert not left, f"namespaces left behind: {left}"


def _transfer(link: ShapedLink, sender: str, receiver: str, proto: str, amount: float) -> dict:
    """Run the receiver in `receiver`'s namespace and the sender in `sender`'s; what the receiver saw."""
    address = CLOUD_ADDRESS if receiver == "cloud" else link.edge_address
    receive = link.popen(receiver, [sys.executable, "-c", _RECEIVER, address, str(PORT), proto, "3"],
                         stdout=subprocess.PIPE, text=True)
    assert receive.stdout.readline().strip() == "ready"
    link.run(sender, [sys.executable, "-c", _SENDER, address, str(PORT), proto, str(amount)], check=True,
             timeout=120)
    out, _ = receive.communicate(timeout=60)
    return json.loads(out)


def test_each_direction_runs_at_its_tbf_rate(make_link) -> None:
    link = make_link(uplink=Shape(rate_kbit=256), downlink=Shape(rate_kbit=1000))
    for sender, receiver, rate_kbit in (("edge", "cloud", 256), ("cloud", "edge", 1000)):
        seen = _transfer(link, sender, receiver, "tcp", 3.0)
        measured_kbit = seen["received"] * 8 / (seen["last"] - seen["first"]) / 1000
        assert 0.75 * rate_kbit < measured_kbit < 1.1 * rate_kbit, (sender, receiver, measured_kbit)
    # The shaper, not something else, set the pace: it held packets back (overlimits) on both ends.
    assert link.qdisc_stats("edge")["overlimits"] > 0 and link.qdisc_stats("cloud")["overlimits"] > 0


def test_loss_drops_about_the_share_asked_for_and_only_that_direction(make_link) -> None:
    link = make_link(uplink=Shape(loss=0.2))
    sent = 300
    seen = _transfer(link, "edge", "cloud", "udp", sent)
    # Binomial(300, 0.8): mean 240, sd 6.9; the bounds are more than 5 sd away.
    assert 200 < seen["received"] < 280, seen
    assert link.loss_drops("cloud") == sent - seen["received"]
    back = _transfer(link, "cloud", "edge", "udp", 100)
    assert back["received"] == 100 and link.loss_drops("edge") == 0


def test_a_cut_stops_traffic_until_the_link_is_restored(make_link) -> None:
    link = make_link(uplink=Shape(rate_kbit=1000), downlink=Shape(rate_kbit=1000))
    probe = [sys.executable, "-c", f"import socket; socket.create_connection(('{CLOUD_ADDRESS}', {PORT}), timeout=2)"]
    listen = (f"import socket, time; s = socket.create_server(('{CLOUD_ADDRESS}', {PORT})); "
              "print('ready', flush=True); time.sleep(600)")
    listener = link.popen("cloud", [sys.executable, "-c", listen], stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    assert link.run("edge", probe, capture_output=True).returncode == 0
    link.cut()
    cut = link.run("edge", probe, capture_output=True, text=True)
    assert cut.returncode != 0 and ("unreachable" in cut.stderr or "timed out" in cut.stderr), cut.stderr
    link.restore()
    assert link.run("edge", probe, capture_output=True).returncode == 0
    assert link.qdisc_stats("edge")["sent_packets"] > 0  # the shaping survived the cut


def test_nothing_is_left_behind_when_the_body_fails() -> None:
    link = ShapedLink(uplink=Shape(rate_kbit=500))
    with pytest.raises(ZeroDivisionError):
        try:
            with link:
                sleeper = link.popen("edge", [sys.executable, "-c", "import time; time.sleep(600)"])
                1 / 0  # noqa: B018 - a test body that fails
        except LinkUnavailable as exc:
            pytest.skip(f"no shaped link on this machine: {exc}")
    assert sleeper.poll() is not None, "a process started through the link outlived it"
    assert not set(link.namespace.values()) & set(namespaces())


def test_tbf_parameters_fit_small_rates() -> None:
    burst, limit = tbf_parameters(256)
    assert burst >= 2 * 1514 and limit >= 8 * 1514  # at least two full frames in the bucket, eight in the queue
    burst, limit = tbf_parameters(10_000)
    assert burst == 12_500 and limit == 312_500  # 10 ms and 250 ms of 10 Mbit/s
    with pytest.raises(ValueError, match="loss probability"):
        Shape(loss=1.5)
