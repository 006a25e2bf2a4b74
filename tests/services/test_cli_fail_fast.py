"""#12 items 1-4 and 6: mistakes are refused before the model loads, with the fix in the message; every command
has --log-format json; native (OpenCV/FFmpeg) noise goes through our logger; --display says why it cannot."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from splitinfer.cli import build_parser, main
from splitinfer.errors import ConfigError
from tests.services.conftest import MODEL, free_port

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "dnn" / "profiles" / "yolo-fastest-1.1-xl.json"
LADDER = REPO / "dnn" / "profiles" / "yolo-fastest-1.1-xl-ladder.json"


def test_calibrate_help_prints_instead_of_crashing(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--help"])
    assert exit_info.value.code == 0
    assert "20-30 % of the bytes" in " ".join(capsys.readouterr().out.split())  # the % that crashed argparse


def test_every_command_has_the_log_options() -> None:
    parser = build_parser()
    for name in ("roundtrip", "calibrate", "eval", "config", "cloud", "edge", "watch", "demo"):
        args = parser.parse_args([name, "--log-format", "json", "--log-level", "DEBUG"])
        assert args.log_format == "json" and args.log_level == "DEBUG"


def _command_in_subprocess(command: str, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, bool]:
    """`splitinfer COMMAND ARGV` in a fresh interpreter: exit code, stderr, and whether torch was ever imported.

    Whether torch was imported is the measure of "before the model loads": importing it is most of the wait
    (13-15 s on a loaded machine), so a check that runs before it is not slowed by it."""
    code = ("import sys\nfrom splitinfer.cli import main\nrc = main(sys.argv[1:])\n"
            "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH')\nsys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code, command, *argv], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=env)
    return done.returncode, done.stderr, "TORCH-IMPORTED" in done.stdout


def _edge_in_subprocess(*argv: str) -> tuple[int, str, bool]:
    return _command_in_subprocess("edge", *argv)


@pytest.mark.parametrize(("argv", "message"), [
    (["--source", "missing-clip.mp4"], "video file 'missing-clip.mp4' does not exist"),
    (["--source", "ftp://camera.local/stream"], "unsupported source scheme 'ftp'"),
    (["--source", "/dev/video93"], "no such device /dev/video93"),
    (["--weights", "/no/such/weights"], "--weights /no/such/weights does not exist"),
    (["--profile", str(PROFILE), "--model", "yolov3-tiny"], "made for model yolo-fastest-1.1-xl, not yolov3-tiny"),
    (["--profile", str(PROFILE), "--cut", "12"], "made for cut 60, not 12"),
    (["--preview-port", "70000"], "--preview-port must be"),
    (["--rate-kbps", "64", "--profile", str(PROFILE)], "--rate-kbps chooses among the points of a codec ladder"),
    (["--rate-kbps", "0.5"], "--rate-kbps must be at least 1 kbit/s"),
    (["--rate-kbps", "64", "--ladder", "/no/ladder.json"], "codec ladder '/no/ladder.json' does not exist"),
    (["--rate-kbps", "64", "--ladder", str(PROFILE)], "not a codec ladder"),
    (["--ladder", str(LADDER)], "--ladder is read only with --rate-kbps"),
    (["--model", "yolo9000"], "--model: unknown model 'yolo9000'; known models: "),
    (["--cut", "999"], "--cut: unknown cut '999': Darknet cuts are layer indices 0..130"),
    (["--rate-kbps", "64", "--cut", "80"], "was made for cut 60, not 80"),
    # Partitions (docs/PARTITIONS.md): flags of another partition are refused, not silently ignored.
    (["--partition", "detections", "--profile", str(PROFILE)], "--profile set(s) the feature codec, which "
                                                               "--partition detections does not use"),
    (["--partition", "detections", "--rate-kbps", "64"], "drop --rate-kbps"),
    (["--partition", "pixels", "--cut", "80"], "--cut set(s) the feature codec"),
    (["--partition", "features", "--pixel-crf", "23"], "--pixel-crf set(s) the pixel encoder"),
    (["--partition", "pixels", "--pixel-crf", "23", "--rate-kbps", "64"], "--pixel-crf and --rate-kbps both set"),
    (["--partition", "pixels", "--pixel-crf", "60"], "--pixel-crf must be within 0..51"),
    (["--partition", "pixels", "--intra-period", "0"], "at least 1"),
    (["--partition", "teleport"], "invalid choice: 'teleport'"),
    (["--frames", "-3"], "--frames must be 0 (the whole source) or a positive count, got -3"),
    (["--threads", "-1"], "--threads must be 0 (automatic) or a positive count, got -1"),
])
def test_edge_mistakes_are_refused_before_torch_is_even_imported(video, argv, message) -> None:
    source = [] if "--source" in argv else ["--source", str(video)]
    rc, stderr, torch_imported = _edge_in_subprocess(*source, "--connect-timeout", "0", *argv)
    assert rc == 2 and message in stderr, stderr
    assert not torch_imported, "the check ran after the model started loading"


def test_a_cloud_that_is_down_is_refused_at_once_not_after_the_connect_timeout(video) -> None:
    """Connection refused ends the check when it happens: with --connect-timeout 600 the edge would otherwise wait
    10 minutes (the subprocess's 120 s timeout would fail this test)."""
    rc, stderr, torch_imported = _edge_in_subprocess("--source", str(video), "--cloud", f"127.0.0.1:{free_port()}",
                                                     "--connect-timeout", "600")
    assert rc == 2 and "nothing listens at 127.0.0.1:" in stderr and "connection refused" in stderr, stderr
    assert "start `splitinfer cloud`" in stderr
    assert not torch_imported


@pytest.mark.parametrize(("argv", "message"), [
    ([], "the cloud serves TLS: give --tls-cert and --tls-key (PEM files), or pass --plaintext"),
    (["--plaintext", "--model", "yolo9000"], "--model: unknown model 'yolo9000'"),
    (["--plaintext", "--weights", "/no/such/weights"], "--weights /no/such/weights does not exist"),
    (["--plaintext", "--tls-cert", "tls.crt"], "--plaintext cannot be combined with --tls-cert"),
])
def test_cloud_mistakes_are_refused_before_torch_is_even_imported(argv, message) -> None:
    rc, stderr, torch_imported = _command_in_subprocess("cloud", "--metrics-port", "-1", *argv)
    assert rc == 2 and message in stderr, stderr
    assert not torch_imported, "the check ran after the model started loading"


def test_a_wrong_cut_or_weights_folder_is_refused_without_loading_weights(weights_dir, tmp_path) -> None:
    from splitinfer.services.edge.preflight import check_model

    with pytest.raises(ConfigError, match=r"--cut: unknown cut '999': Darknet cuts are layer indices 0\.\."):
        check_model(MODEL, str(weights_dir), "999")
    check_model(MODEL, str(weights_dir), "80")
    with pytest.raises(ConfigError, match=r"--weights: .*yolo-fastest-1.1-xl.weights does not exist"):
        check_model(MODEL, str(tmp_path), None)  # was: an error about downloading the .cfg
    with pytest.raises(ConfigError, match="unknown model 'yolo-nonexistent'; known models: "):
        check_model("yolo-nonexistent", None, None)


def test_display_without_a_display_says_why() -> None:
    from splitinfer.services.edge.output import display_plan

    if not sys.platform.startswith("linux"):
        pytest.skip("DISPLAY/WAYLAND_DISPLAY decide only on Linux")
    with pytest.raises(ConfigError, match="neither DISPLAY nor WAYLAND_DISPLAY is set.*--preview-port"):
        display_plan({})


@contextlib.contextmanager
def _listening_socket(path: Path):
    """A unix socket that accepts connections, as a display server's does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        yield path


def _unused_x_display() -> str:
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    return f":{number}"


def test_display_set_but_nothing_answering_is_refused_before_anything_starts(tmp_path) -> None:
    """DISPLAY or WAYLAND_DISPLAY left over from another session: --display says so instead of starting a browser
    that dies at once (the edge then exited 0 beside a defunct chromium)."""
    from splitinfer.services.edge.output import _check_display_answers, display_plan

    if not sys.platform.startswith("linux"):
        pytest.skip("DISPLAY/WAYLAND_DISPLAY decide only on Linux")
    display = _unused_x_display()
    with pytest.raises(ConfigError, match=f"no display server answers at DISPLAY={display}.*--preview-port"):
        display_plan({"DISPLAY": display})
    with pytest.raises(ConfigError, match="WAYLAND_DISPLAY=wayland-9 .* or DISPLAY="):
        display_plan({"WAYLAND_DISPLAY": "wayland-9", "XDG_RUNTIME_DIR": str(tmp_path), "DISPLAY": display})
    with _listening_socket(tmp_path / "wayland-9"):  # the compositor answers: fine, whatever DISPLAY says
        # (the display check alone: display_plan would go on to look for a browser, which webbrowser then caches)
        _check_display_answers({"WAYLAND_DISPLAY": "wayland-9", "XDG_RUNTIME_DIR": str(tmp_path), "DISPLAY": display})


def test_demo_with_a_dead_display_exits_2_before_torch_is_imported() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("DISPLAY/WAYLAND_DISPLAY decide only on Linux")
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "BROWSER")}
    rc, stderr, torch_imported = _command_in_subprocess("demo", "--display", env={**env, "DISPLAY": _unused_x_display()})
    assert rc == 2 and "no display server answers" in stderr, stderr
    assert not torch_imported


def test_display_on_a_desktop_opens_the_live_page_in_the_browser(tmp_path, monkeypatch) -> None:
    """With the headless OpenCV wheel, --display shows the live page in the desktop's browser ($BROWSER here)."""
    import asyncio

    from splitinfer.services.edge.output import display_plan, opencv_has_gui
    from splitinfer.services.edge.views import ViewRequest, build_views

    if opencv_has_gui():
        pytest.skip("this OpenCV has a GUI: --display opens a native window instead")
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.py"
    script.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    monkeypatch.setenv("BROWSER", f"{sys.executable} {script} %s")
    with _listening_socket(tmp_path / "wayland-0") as compositor:
        assert display_plan({"WAYLAND_DISPLAY": str(compositor)}) == "browser"

    async def scenario():
        views = build_views(ViewRequest(title="t", display="browser"))
        await views.servers[0].start()
        try:
            views.on_started()
            for _ in range(200):
                if opened.exists() and opened.read_text():
                    break
                await asyncio.sleep(0.05)
            return views.servers[0].url
        finally:
            await views.servers[0].stop()

    url = asyncio.run(scenario())
    assert opened.read_text() == url and url.startswith("http://127.0.0.1:")


def test_native_opencv_noise_goes_through_our_logger_as_json(tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 100)
    code = (
        "import cv2, logging\n"
        "from splitinfer.logs import NativeStderr, configure_logging\n"
        "configure_logging('INFO', 'json')\n"
        "with NativeStderr():\n"
        f"    cv2.VideoCapture({str(broken)!r}).release()\n"
        f"    cv2.VideoCapture('http://127.0.0.1:{free_port()}/x', cv2.CAP_FFMPEG).release()\n"
        "    logging.getLogger('splitinfer.edge').info('ours')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON: nothing native leaked around the logger
    assert any(r["logger"] == "splitinfer.edge" and r["message"] == "ours" for r in records)
    native = [r for r in records if r["logger"] == "splitinfer.native"]
    assert native and all(r["level"] in ("WARNING", "ERROR", "INFO") for r in native), records
    assert any("Connection refused" in r["message"] for r in native), native


def test_a_wrong_weights_path_is_named_not_reported_as_a_missing_cfg(tmp_path) -> None:
    from splitinfer.dnn import WeightsError, load_model

    with pytest.raises(WeightsError, match=r"yolo-fastest-1.1-xl.weights does not exist") as info:
        load_model(MODEL, weights=str(tmp_path))
    assert ".cfg" not in str(info.value)


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "{images}", "--cut", "999"], "--cut: unknown cut '999'"),
    (["eval", "{images}", "--model", "yolo9000"], "--model: unknown model 'yolo9000'"),
    (["calibrate", "--data", "{images}", "--model", "yolo9000"], "--model: unknown model 'yolo9000'"),
    (["calibrate", "--data", "{images}", "--weights", "/no/such/weights"], "--weights /no/such/weights does not exist"),
])
def test_eval_and_calibrate_check_the_model_cut_and_weights_before_building_the_model(tmp_path, argv, message) -> None:
    """The same checks as the edge and the cloud, from the registry and the cfg: no model is built first."""
    argv = [a.format(images=tmp_path) for a in argv]
    rc, stderr, _ = _command_in_subprocess(argv[0], *argv[1:])
    assert rc == 2 and message in stderr, stderr
