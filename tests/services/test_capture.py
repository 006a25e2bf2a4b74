"""Capture: file mode delivers every frame in order, live mode keeps the newest, bad sources are reported."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitinfer.services.edge.capture import (
    CaptureMode,
    EndOfSource,
    FrameGrabber,
    SourceKind,
    default_mode,
    source_kind,
)
from splitinfer.services.errors import CaptureError


def drain(grabber: FrameGrabber, delay: float = 0.0) -> tuple[list, EndOfSource]:
    frames = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            frame = grabber.get(timeout=1)
        except EndOfSource as end:
            return frames, end
        if frame is not None:
            frames.append(frame)
            time.sleep(delay)
    raise AssertionError("the grabber did not end within 60 s")


def test_file_mode_delivers_every_frame_in_order_with_stamps(video) -> None:
    with FrameGrabber(str(video), max_frames=12) as grabber:
        frames, end = drain(grabber, delay=0.01)
    assert grabber.mode is CaptureMode.FILE
    assert [f.sequence for f in frames] == list(range(12))
    assert not end.error and "12 frames" in end.reason
    assert all(f.image.shape == (432, 768, 3) for f in frames)
    assert all(a.monotonic_ns < b.monotonic_ns and a.wall_time_ns <= b.wall_time_ns for a, b in zip(frames, frames[1:]))
    assert grabber.stats.dropped == 0 and grabber.fps == pytest.approx(10.0, rel=0.01)


def test_live_mode_keeps_only_the_newest_frame_and_counts_drops(video) -> None:
    with FrameGrabber(str(video), mode=CaptureMode.LIVE, max_frames=40, pace=False) as grabber:
        frames, end = drain(grabber, delay=0.05)
    sequences = [f.sequence for f in frames]
    assert sequences == sorted(set(sequences))
    assert grabber.stats.dropped > 0
    assert grabber.stats.delivered + grabber.stats.dropped == grabber.stats.grabbed
    assert not end.error


def test_a_file_read_in_live_mode_is_paced_at_its_frame_rate(video) -> None:
    with FrameGrabber(str(video), mode=CaptureMode.LIVE, max_frames=6) as grabber:
        frames, _ = drain(grabber)
    span = (frames[-1].monotonic_ns - frames[0].monotonic_ns) / 1e9
    assert span >= 0.9 * (frames[-1].sequence - frames[0].sequence) / 10.0


def test_a_missing_file_is_reported_with_the_path(tmp_path) -> None:
    with pytest.raises(CaptureError, match="does not exist"):
        FrameGrabber(str(tmp_path / "nope.mp4"))


def test_a_file_that_is_not_a_video_ends_with_an_error(tmp_path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video")
    with FrameGrabber(str(path)) as grabber:
        frames, end = drain(grabber)
    assert frames == [] and end.error and str(path) in end.reason


def test_an_unsupported_scheme_is_refused() -> None:
    with pytest.raises(CaptureError, match="scheme"):
        FrameGrabber("ftp://camera.local/stream")


@pytest.mark.parametrize(("source", "kind", "mode"), [
    ("0", SourceKind.CAMERA, CaptureMode.LIVE),
    ("rtsp://cam.local:554/stream", SourceKind.NETWORK, CaptureMode.LIVE),
    ("http://cam.local/mjpg", SourceKind.NETWORK, CaptureMode.LIVE),
    ("clips/walk.mp4", SourceKind.FILE, CaptureMode.FILE),
])
def test_source_kinds_and_their_default_modes(source, kind, mode) -> None:
    assert source_kind(source) is kind and default_mode(kind) is mode


@given(st.text(max_size=40))
def test_any_source_text_is_classified_or_refused_clearly(text) -> None:
    try:
        assert isinstance(source_kind(text), SourceKind)
    except CaptureError as exc:
        assert str(exc)


def test_an_unreachable_live_source_is_retried_with_backoff_and_reported(caplog) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    grabber = FrameGrabber(f"http://127.0.0.1:{port}/video.mjpg", open_timeout_s=1, reopen_initial_s=0.05,
                           reopen_max_s=0.2)
    assert grabber.mode is CaptureMode.LIVE
    with caplog.at_level("WARNING", logger="splitinfer.edge.capture"), grabber:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(caplog.records) < 2:
            assert grabber.get(timeout=0.2) is None  # no frame, and no end: a live source is retried
    assert len(caplog.records) >= 2
    assert all("retrying" in record.getMessage() for record in caplog.records)
