"""The held-out protocol (docs/PROTOCOL.md): which data chooses an operating point and which data reports it.

Every split is a fixed, seeded rule on names, so anyone gets the same halves: a name goes to the selection
half when the SHA-256 of "<salt>:<name>" sorts in the first half of all names' digests. The salt is fixed per
data set below; changing it is changing the protocol.

    python bench/heldout.py          # prints every split (counts and the first names of each half)
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from splitinfer.sample_data import shared_data_dir

DATA = shared_data_dir()
OPENCV_VIDEOS = Path("/usr/share/doc/opencv-doc/examples/data")  # apt-get install opencv-doc

IMAGES_SALT = "splitinfer-heldout-coco-val2017"
IMAGENET_SALT = "splitinfer-heldout-imagenet-sample"

# Design (clip ranges, quantizer levels): coco-mini/calib2017, for every model; never selects or reports.
DESIGN_FOLDER = DATA / "coco-mini" / "calib2017"
# Video: operating points are chosen on the first two, reported on the last two.
SELECTION_VIDEOS = (DATA / "video" / "one-by-one-person-detection.mp4", OPENCV_VIDEOS / "vtest.avi")
REPORT_VIDEOS = (OPENCV_VIDEOS / "Megamind.avi", OPENCV_VIDEOS / "tree.avi")


def split_names(names: Iterable[str], salt: str) -> tuple[list[str], list[str]]:
    """(selection, report): the names in two halves by the seeded digest rule, each half sorted by name."""
    unique = sorted(set(names))
    ranked = sorted(unique, key=lambda n: hashlib.sha256(f"{salt}:{n}".encode()).hexdigest())
    half = (len(ranked) + 1) // 2
    return sorted(ranked[:half]), sorted(ranked[half:])


def image_split(folder: Path | None = None) -> tuple[list[str], list[str]]:
    """coco-mini/val2017 file names as (selection, report)."""
    from splitinfer.dnn.eval_images import image_files

    folder = folder or DATA / "coco-mini" / "val2017"
    return split_names((p.name for p in image_files(folder)), IMAGES_SALT)


def imagenet_split(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """imagenet-sample file names (labels.csv `file`) as (selection, report)."""
    return split_names(names, IMAGENET_SALT)


def pick(names: list[str], subset: str, salt: str) -> list[str]:
    """`names` restricted to one half ("selection", "report") or all of them ("all")."""
    if subset == "all":
        return sorted(names)
    selection, report = split_names(names, salt)
    if subset == "selection":
        return selection
    if subset == "report":
        return report
    raise ValueError(f"subset must be all, selection or report, got {subset!r}")


def main() -> int:
    import csv

    selection, report = image_split()
    print(f"coco-mini val2017: selection {len(selection)} ({', '.join(selection[:3])}, ...), "
          f"report {len(report)} ({', '.join(report[:3])}, ...)")
    with (DATA / "imagenet-sample" / "labels.csv").open(newline="") as stream:
        files = [row["file"] for row in csv.DictReader(stream)]
    selection, report = imagenet_split(files)
    print(f"imagenet-sample: selection {len(selection)} ({', '.join(selection[:3])}, ...), "
          f"report {len(report)} ({', '.join(report[:3])}, ...)")
    print("video selection:", ", ".join(str(v) for v in SELECTION_VIDEOS))
    print("video report:   ", ", ".join(str(v) for v in REPORT_VIDEOS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
