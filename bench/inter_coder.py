"""Real bytes and CPU time of TEMPORAL_CONTEXTS version 2 (plane skip + change coding) against version 1.

    python bench/inter_coder.py                 # bytes on all settings and videos, then speed (~1 min)
    python bench/inter_coder.py --rounds 3      # fewer timing rounds

The same inter frames as bench/prototypes/temporal_prototype.py (real Yolo-Fastest-1.1-XL head tensors, cuts 60 and 80,
four videos at about 10 fps, quantized with hysteresis as TemporalEncoder does). Bytes are real payload
lengths; a saving's standard error is that of the mean per-frame difference (paired, frames as samples).
Speed is CPU time (time.process_time) of the entropy stage over all inter frames of a video, v1 and v2
interleaved round by round; the ratio's standard error is over rounds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from splitinfer.codec import Coder, decode_indices, encode_indices
from splitinfer.codec.entropy import INTER_VERSION

from prototypes.temporal_prototype import DESIGN, VIDEOS, heads, sequence, settings  # bench/prototypes/

T = Coder.TEMPORAL_CONTEXTS


def _mean_se(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    se = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else math.nan
    return float(array.mean()), se


def bytes_table(data, levels_by: dict) -> None:
    print("| setting | video | inter frames | v1 B/frame | v2 B/frame | saving |")
    print("|---|---|---|---|---|---|")
    totals: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for label, *_ in settings():
        for video in VIDEOS:
            pairs, n = levels_by[label, video]
            v1 = [len(encode_indices(lv, n, T, reference=rf)) for lv, rf in pairs]
            v2 = []
            for lv, rf in pairs:
                payload = encode_indices(lv, n, T, reference=rf, version=INTER_VERSION)
                assert np.array_equal(decode_indices(payload, lv.shape, n, T, reference=rf, version=INTER_VERSION),
                                      lv)
                v2.append(len(payload))
            diff, se = _mean_se([a - b for a, b in zip(v1, v2)])
            base = float(np.mean(v1))
            totals.setdefault((label, video in DESIGN), []).append((base, float(np.mean(v2))))
            print(f"| {label} | {video}{'' if video in DESIGN else ' (held out)'} | {len(pairs)} | {base:.0f} | "
                  f"{np.mean(v2):.0f} | {100 * diff / base:.1f} ± {100 * se / base:.1f} % |", flush=True)
    print("\n| setting | saving, design videos | saving, held-out videos |")
    print("|---|---|---|")
    for label, *_ in settings():
        cells = []
        for design in (True, False):
            v1 = sum(a for a, _ in totals[label, design])
            v2 = sum(b for _, b in totals[label, design])
            cells.append(f"{100 * (1 - v2 / v1):.1f} %")
        print(f"| {label} | " + " | ".join(cells) + " |")


def speed_table(levels_by: dict, rounds: int) -> None:
    print("\n| setting | video | elements/frame | v1 enc µs | v2 enc µs | v2/v1 enc | v1 dec µs | v2 dec µs | "
          "v2/v1 dec |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, *_ in settings()[::4]:  # the two shipped profiles
        for video in VIDEOS:
            pairs, n = levels_by[label, video]
            payloads = {1: [encode_indices(lv, n, T, reference=rf) for lv, rf in pairs],
                        2: [encode_indices(lv, n, T, reference=rf, version=INTER_VERSION) for lv, rf in pairs]}
            enc: dict[int, list[float]] = {1: [], 2: []}
            dec: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(rounds):
                for version in (1, 2):
                    start = time.process_time()
                    for lv, rf in pairs:
                        encode_indices(lv, n, T, reference=rf, version=version)
                    enc[version].append((time.process_time() - start) / len(pairs) * 1e6)
                    start = time.process_time()
                    for (lv, rf), payload in zip(pairs, payloads[version]):
                        decode_indices(payload, lv.shape, n, T, reference=rf, version=version)
                    dec[version].append((time.process_time() - start) / len(pairs) * 1e6)
            cells = []
            for table in (enc, dec):
                ratio, se = _mean_se([b / a for a, b in zip(table[1], table[2])])
                cells += [f"{np.mean(table[1]):.0f}", f"{np.mean(table[2]):.0f}", f"{ratio:.2f} ± {se:.2f}"]
            print(f"| {label} | {video} | {pairs[0][0].size} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=80, help="frames per video (about 10 fps)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/splitinfer-temporal-heads"))
    args = parser.parse_args()
    data = heads(args.cache, args.frames)
    levels_by = {}
    for label, cut, quantizer, margin in settings():
        for video in VIDEOS:
            levels_by[label, video] = (sequence(data[video, cut], quantizer, margin), quantizer.levels)
    for lv, rf in levels_by[settings()[0][0], "person"][0][:2]:  # compile both kernels before timing anything
        decode_indices(encode_indices(lv, 13, T, reference=rf, version=INTER_VERSION), lv.shape, 13, T, reference=rf,
                       version=INTER_VERSION)
    bytes_table(data, levels_by)
    speed_table(levels_by, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
