"""`splitinfer roundtrip`: the README's main job runs on the real tensor and reports a lossless entropy stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitinfer.cli import main
from tests.conftest import shared_path


def test_roundtrip_on_the_real_tensor(capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_path("activations", "yolo-fastest-1.1-xl.npz")
    assert main(["roundtrip", "--activations", str(path), "--levels", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "[layer80] sample 0" in out and "(1, 48, 20, 20)" in out
    assert "vs quantizer  MSE 0, max error 0" in out
    bits = float(out.split("bits/element")[1].split()[0])
    assert 0.2 < bits < 2.0


def test_roundtrip_without_data_says_it_is_synthetic(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SPLITINFER_SHARED_DATA", str(tmp_path))
    assert main(["roundtrip", "--coder", "BIN_CONTEXTS", "--repeat", "1"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tensor", "layer99"], "--tensor 'layer99' is not in"),
        (["--levels", "300"], "levels must be in 2..256"),
        (["--clip-min", "3", "--clip-max", "1"], "clip_min < clip_max"),
        (["--sample", "99"], "--sample 99 is out of range"),
        (["--clip-percentile", "60"], "--clip-percentile must be in"),
        (["--coder", "TEMPORAL_CONTEXTS"], "needs the previous frame"),
    ],
)
def test_roundtrip_bad_options_print_one_line(argv: list[str], message: str, capsys) -> None:
    path = shared_path("activations", "yolo-fastest-1.1-xl.npz")
    assert main(["roundtrip", "--activations", str(path), "--repeat", "1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_coder_from_the_environment_in_another_command_spelling(capsys) -> None:
    import argparse

    from splitinfer.commands import roundtrip
    from splitinfer.settings import add_options

    path = shared_path("activations", "yolo-fastest-1.1-xl.npz")
    parser = argparse.ArgumentParser()
    add_options(parser, roundtrip.OPTIONS, environ={"SPLITINFER_CODER": "NEIGHBOUR_CONTEXTS"})
    assert roundtrip.run(parser.parse_args(["--activations", str(path), "--repeat", "1"])) == 0
    assert "coder         NEIGHBOUR_CONTEXTS" in capsys.readouterr().out
