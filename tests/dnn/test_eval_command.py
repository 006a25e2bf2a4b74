"""`splitinfer eval` as people meet it (#12 items 6 and 8, #13 item 6): a progress bar while it works, and a
truncated video gives its figures, a warning and exit 1 (0 with --allow-truncated)."""

from __future__ import annotations

import json

import pytest

from splitinfer.cli import main
from tests.conftest import shared_path, truncated_avi


@pytest.mark.slow  # two model loads
def test_eval_of_a_truncated_video_warns_and_exits_1_unless_allowed(tmp_path, capfd) -> None:
    weights = str(shared_path("models", "yolo-fastest-1.1"))
    _, clip = truncated_avi(tmp_path, frames=20)
    assert main(["eval", str(clip), "--weights", weights, "--json"]) == 1
    out, err = capfd.readouterr()
    report = json.loads(out)
    assert 0 < report["images"] < 20 and "of the 20 frames its header reports" in report["truncated"]
    assert "warning: the video" in err and "--allow-truncated" in err
    assert "evaluating yolo-fastest-1.1-xl" in err and f"{report['images']}/20" in err  # the progress bar

    assert main(["eval", str(clip), "--weights", weights, "--json", "--allow-truncated", "--no-progress"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["images"] == report["images"] and "evaluating" not in err
