"""The real edge and cloud on two sides of a shaped link (tests/netlink.py): the stream survives a link cut and
1 % packet loss with every file-mode frame answered exactly once; with rate control (when this build has it)
the coded stream holds the budget on the link.

One cloud serves the whole module in the cloud namespace; each test reshapes the link and runs its own
`splitinfer edge` process in the edge namespace, reading its JSON lines as they come.
"""

from __future__ import annotations

import re
import statistics
import time

import pytest

from tests.netlink import LinkUnavailable, Shape, ShapedLink, namespaces
from tests.services.link_processes import EdgeRun, edge_supports, run_edge, start_cloud, write_clip

pytestmark = pytest.mark.slow

UPLINK_KBIT, DOWNLINK_KBIT = 1000, 4000
CUT_S = 4.0
# Longer than gRPC's keepalive time + timeout (splitinfer.channel_options: 20 s + 10 s): the edge's connection
# is declared dead during the cut, and the edge reconnects once the link is back.
LONG_CUT_S = 35.0


@pytest.fixture(scope="module")
def link(weights_dir, tmp_path_factory):
    """A 1 Mbit/s up, 4 Mbit/s down link with a serving cloud on its far side; skipped where no link can be made."""
    shaped = ShapedLink(uplink=Shape(rate_kbit=UPLINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))
    try:
        shaped.open()
    except LinkUnavailable as exc:
        pytest.skip(f"no shaped link on this machine: {exc}")
    try:
        start_cloud(shaped, weights_dir, tmp_path_factory.mktemp("cloud"))
        yield shaped
    finally:
        shaped.close()
        assert not set(shaped.namespace.values()) & set(namespaces()), "a namespace outlived the tests"


def _edge(link: ShapedLink, video, weights_dir, tmp_path, stream_id: str, *extra: str, **kwargs) -> EdgeRun:
    """`splitinfer edge` in the edge namespace, file mode unless `extra` says otherwise: the place to add edge
    flags for new link tests (the rate-control test below passes --rate-kbps through run_edge the same way)."""
    return run_edge(link, video, weights_dir, tmp_path, stream_id, "--reconnect-timeout", "120", *extra, **kwargs)


def _every_frame_once(run: EdgeRun, frames: int) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(run.frame_ids) == list(range(frames)), (run.frame_ids, run.stderr[-3000:])
    assert run.frame_ids == list(range(frames)), "results came out of order"
    assert not [r for r in run.results if r.get("error")], "frames answered with an error"


def _run_with_cut(link: ShapedLink, video, weights_dir, tmp_path, stream_id: str, frames: int, cut_after: int,
                  cut_s: float) -> tuple[EdgeRun, int, int]:
    """A file-mode edge whose link is cut for `cut_s` after its `cut_after`-th result; the run, cut and restore ns."""
    link.shape(uplink=Shape(rate_kbit=UPLINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))
    cut_window: list[int] = []

    def cut_the_link(count: int, record: dict) -> None:
        if count == cut_after:
            cut_window.append(time.monotonic_ns())
            link.cut()
            time.sleep(cut_s)
            cut_window.append(time.monotonic_ns())
            link.restore()

    run = _edge(link, video, weights_dir, tmp_path, stream_id, "--frames", str(frames), "--window", "4",
                on_result=cut_the_link)
    assert len(cut_window) == 2, "the edge ended before the link was cut"
    _every_frame_once(run, frames)
    cut_ns, restored_ns = cut_window
    arrivals = [run.arrival_ns(r) for r in run.results]
    # The cut was real: nothing arrived while it lasted (after a moment for what was already in the pipe)...
    assert not [t for t in arrivals if cut_ns + 200_000_000 < t < restored_ns], "results arrived across a cut link"
    # ... and it fell mid-stream: a frame captured before the restore was answered after it.
    spanning = [r for r in run.results
                if int(r["capture"]["capture_monotonic_ns"]) < restored_ns < run.arrival_ns(r)]
    assert spanning, "no frame was in flight across the cut"
    assert run.counters["results"] == frames and run.counters["frame_errors"] == 0, run.counters
    return run, cut_ns, restored_ns


def test_the_stream_survives_a_short_link_cut_and_every_frame_is_answered_once(link, video, weights_dir,
                                                                                 tmp_path) -> None:
    """A few seconds' cut: TCP retransmits once the link is back and the same connection carries on."""
    _run_with_cut(link, video, weights_dir, tmp_path, "cam-cut", frames=40, cut_after=10, cut_s=CUT_S)


def test_after_a_long_cut_the_edge_reconnects_and_resends_what_was_unanswered(link, video, weights_dir,
                                                                              tmp_path) -> None:
    """A cut past the keepalive: the edge sees the connection die, retries while the network is unreachable,
    reconnects when the link is back and resends the unanswered frames; still every frame exactly once."""
    run, _, _ = _run_with_cut(link, video, weights_dir, tmp_path, "cam-long-cut", frames=16, cut_after=4,
                              cut_s=LONG_CUT_S)
    assert run.counters["reconnects"] >= 1 and run.counters["resent"] >= 1, run.counters
    assert "reconnecting in" in run.stderr


def test_the_stream_completes_with_one_percent_loss_each_way(link, video, weights_dir, tmp_path) -> None:
    link.shape(uplink=Shape(rate_kbit=UPLINK_KBIT, loss=0.01), downlink=Shape(rate_kbit=DOWNLINK_KBIT, loss=0.01))
    try:
        frames = 30
        run = _edge(link, video, weights_dir, tmp_path, "cam-loss", "--frames", str(frames), "--window", "4")
        dropped = link.loss_drops("cloud") + link.loss_drops("edge")
        _every_frame_once(run, frames)
        assert run.counters["results"] == frames, (run.counters, f"{dropped} packets dropped by the loss rules")
    finally:
        link.shape(uplink=Shape(rate_kbit=UPLINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))


# Rate control: the fixed profile sends about 2.7 kB/frame, 108 kbit/s at 5 frames/s; the target is well below
# that, at half the uplink, so the check tells a controller from the link's own limit (with the target at 80 %
# of a 100 kbit/s uplink, the link alone held an uncontrolled edge to 85 kbit/s of payload: a test that could not
# fail). The source is paced at 5 frames/s (every 2nd frame of the 10 fps video), like a camera.
RATE_LINK_KBIT, RATE_TARGET_KBIT = 128, 64
RATE_CLIP_FPS, RATE_CLIP_FRAMES = 5.0, 120
# Where the machine kept up (this many results after the start-up), the controller must also use its budget.
RATE_KEPT_UP = 20
_RATE_DROPPED = re.compile(r"rate control: .* (\d+) dropped; frames per point")


def test_rate_control_holds_the_budget_on_a_shaped_link(link, video, weights_dir, tmp_path) -> None:
    """--rate-kbps 64 on a 128 kbit/s uplink, live mode. What live mode promises, however fast the CPU is today:
    the newest frame wins (results in capture order, every frame not sent counted as dropped by the grabber or by
    rate control) and the payload bits per second of capture time of the frames that were sent stay within
    +10 % of the budget. A loaded machine sends fewer frames (one run at load 15-21 sent 5 of 120); where it kept
    up (RATE_KEPT_UP results after the start-up), the rate is also no more than 10 % under the budget."""
    if not edge_supports("--rate-kbps"):
        pytest.skip("rate control not in this build (`splitinfer edge --help` lists no --rate-kbps)")
    clip = write_clip(video, tmp_path / "clip-5fps.avi", RATE_CLIP_FRAMES, stride=2, fps=RATE_CLIP_FPS)
    link.shape(uplink=Shape(rate_kbit=RATE_LINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))
    try:
        run = run_edge(link, clip, weights_dir, tmp_path, "cam-rate", "--reconnect-timeout", "120", "--mode", "live",
                       "--window", "4", "--rate-kbps", str(RATE_TARGET_KBIT))
    finally:
        link.shape(uplink=Shape(rate_kbit=UPLINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))
    assert run.returncode == 0, run.stderr[-3000:]
    assert not [r for r in run.results if r.get("error")], "frames answered with an error"
    # The newest frame wins: frame ids are the grabber's sequence numbers, so they rise, with a gap per dropped
    # frame, and every grabbed frame was sent (and answered once) or counted as dropped.
    assert run.frame_ids == sorted(set(run.frame_ids)), "an older frame was answered after a newer one"
    rate_dropped = _RATE_DROPPED.search(run.stderr)
    assert run.counters and rate_dropped, f"no done/rate-control line: {run.stderr[-3000:]}"
    assert run.counters["results"] == run.counters["sent"] == len(run.results), run.counters
    assert run.counters["grabbed"] == run.counters["dropped"] + run.counters["sent"] + int(rate_dropped[1]), (
        run.counters, rate_dropped[0])
    assert run.frame_ids[-1] < run.counters["grabbed"]
    assert len(run.results) >= 2, f"fewer than two frames sent in {RATE_CLIP_FRAMES / RATE_CLIP_FPS:.0f} s of video"
    # The budget, held on what was sent: bits after the first frame over the capture time they span.
    counted = run.steady(after_s=2.0)
    if len(counted) < 2:  # a machine so slow that the start-up took most of the clip: judge every result
        counted = run.results
    captured = [int(r["capture"]["capture_monotonic_ns"]) for r in counted]
    bits = sum(int(r["payload_bytes"]) for r in counted[1:]) * 8
    achieved_kbit = bits / ((captured[-1] - captured[0]) / 1e9) / 1000
    per_frame = statistics.mean(int(r["payload_bytes"]) for r in counted)
    report = (f"achieved {achieved_kbit:.0f} kbit/s for --rate-kbps {RATE_TARGET_KBIT} ({per_frame:.0f} bytes/frame "
              f"over {len(counted)} frames; counters {run.counters}; {rate_dropped[0]})")
    assert achieved_kbit <= 1.1 * RATE_TARGET_KBIT, report
    if len(counted) >= RATE_KEPT_UP:
        assert achieved_kbit >= 0.9 * RATE_TARGET_KBIT, report


# Auto: curves made up so that features win at 128 kbit/s and pixels at 8 kbit/s (the only points below 128).
AUTO_START_KBIT, AUTO_DROPPED_LINK_KBIT = 128, 24
AUTO_CURVES = {"id": "splitinfer.partition-curves/1", "model": "yolo-fastest-1.1-xl", "cut": "60", "video": "made up",
               "edge_ms": {}, "points": [
                   {"partition": "pixels", "kbps": 8.0, "changes_per_frame": 0.3, "target_kbps": 8.0},
                   {"partition": "features", "kbps": 8.0, "changes_per_frame": 1.5, "target_kbps": 8.0},
                   {"partition": "pixels", "kbps": 128.0, "changes_per_frame": 0.6, "target_kbps": 128.0},
                   {"partition": "features", "kbps": 128.0, "changes_per_frame": 0.1, "target_kbps": 128.0}]}


def test_auto_switches_from_features_to_pixels_when_the_links_rate_drops(link, video, weights_dir, tmp_path) -> None:
    """Live mode, --partition auto at 128 kbit/s on a 1 Mbit/s uplink: features. After the switcher's minimum
    run the uplink drops to 24 kbit/s; the features partition's backpressure estimate falls, auto re-plans and
    goes on in pixels in a new call. Results stay in capture order, none with an error, and the switch is logged
    and counted."""
    import json

    from splitinfer.services.edge.auto_partition import MIN_FRAMES_BETWEEN_SWITCHES

    if not edge_supports("--partitions"):
        pytest.skip("auto partitioning not in this build (`splitinfer edge --help` lists no --partitions)")
    curves = tmp_path / "curves.json"
    curves.write_text(json.dumps(AUTO_CURVES))
    # 45 s of live video: on a loaded machine the backpressure estimate takes longer to fall, and the switch waits
    # for the frames in flight on the thin link (a 30 s clip once ended between the switch and its first result).
    clip = write_clip(video, tmp_path / "clip-auto.avi", 450, fps=10.0)
    dropped_at: list[int] = []

    def drop_the_link(count: int, record: dict) -> None:
        if not dropped_at and count >= MIN_FRAMES_BETWEEN_SWITCHES:
            link.shape(uplink=Shape(rate_kbit=AUTO_DROPPED_LINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))
            dropped_at.append(count)

    link.shape(uplink=Shape(rate_kbit=UPLINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))
    try:
        run = run_edge(link, clip, weights_dir, tmp_path, "cam-auto", "--reconnect-timeout", "120", "--mode", "live",
                       "--window", "4", "--partition", "auto", "--rate-kbps", str(AUTO_START_KBIT), "--partitions",
                       "pixels,features", "--edge-budget-ms", "1000", "--partition-curves", str(curves),
                       on_result=drop_the_link)
    finally:
        link.shape(uplink=Shape(rate_kbit=UPLINK_KBIT), downlink=Shape(rate_kbit=DOWNLINK_KBIT))
    assert run.returncode == 0, run.stderr[-3000:]
    if not dropped_at:
        pytest.skip(f"this machine answered fewer than {MIN_FRAMES_BETWEEN_SWITCHES} frames of the live clip")
    assert not [r for r in run.results if r.get("error")], "frames answered with an error"
    assert run.frame_ids == sorted(set(run.frame_ids)), "an older frame was answered after a newer one"
    partitions = [r["origin"]["partition"] for r in run.results]
    assert partitions[0] == "PARTITION_FEATURES", partitions
    assert "PARTITION_PIXELS" in partitions, (partitions, run.stderr[-3000:])
    switch_at = partitions.index("PARTITION_PIXELS")
    assert switch_at >= dropped_at[0] and set(partitions[switch_at:]) == {"PARTITION_PIXELS"}, partitions
    assert "switching from features to pixels" in run.stderr and "auto partition: 1 switch(es)" in run.stderr
