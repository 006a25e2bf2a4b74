"""Write bitstreams.json: small level arrays and the exact payload each coder makes of them.

Run only when the bitstream format changes on purpose (and bump CODER_VERSION with it):
    python tests/codec/golden/generate.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from splitinfer.codec import CODER_VERSION, Coder, Quantizer, encode, encode_indices


def _cases() -> list[dict]:
    rng = np.random.default_rng(20260101)
    relu = np.minimum(rng.geometric(0.55, (2, 3, 5, 6)) - 1, 3)
    signed = np.clip(np.rint(rng.normal(2, 1.1, (2, 4, 6))), 0, 4).astype(int)
    wide = rng.integers(0, 256, (3, 7))
    binary = (rng.random((5, 9)) < 0.2).astype(int)
    previous = relu.copy()
    previous[rng.random(relu.shape) < 0.15] = 0
    specs = [
        ("relu-like", relu, 4, None),
        ("signed", signed, 5, None),
        ("wide", wide, 256, None),
        ("binary", binary, 2, None),
        ("scalar", np.array(3), 4, None),
        ("empty", np.zeros((0, 4), int), 4, None),
        ("constant-max", np.full((3, 3), 7), 8, None),
    ]
    cases = []
    for label, q, levels, _ in specs:
        for coder in (Coder.BIN_CONTEXTS, Coder.NEIGHBOUR_CONTEXTS, Coder.SIGNED_NEIGHBOUR_CONTEXTS):
            cases.append(_case(label, q, levels, coder, None))
    cases.append(_case("relu-like", relu, 4, Coder.TEMPORAL_CONTEXTS, previous))
    cases.append(_case("signed", signed, 5, Coder.TEMPORAL_CONTEXTS, np.roll(signed, 1, axis=-1)))
    return cases


def _case(label: str, q: np.ndarray, levels: int, coder: Coder, reference: np.ndarray | None) -> dict:
    payload = encode_indices(q, levels, coder, reference=reference)
    return {
        "label": label,
        "coder": coder.name,
        "levels": levels,
        "shape": list(q.shape),
        "indices": q.reshape(-1).astype(int).tolist(),
        "reference": None if reference is None else reference.reshape(-1).astype(int).tolist(),
        "payload_hex": payload.hex(),
    }


def _tensor_case() -> dict:
    x = np.linspace(-3.0, 5.0, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4) ** 3 / 20
    quantizer = Quantizer.uniform(-1.0, 4.0, 6)
    t = encode(x, quantizer, name="golden")
    return {
        "values": x.reshape(-1).tolist(),
        "shape": list(x.shape),
        "clip_min": -1.0,
        "clip_max": 4.0,
        "levels": 6,
        "coder": t.coder.name,
        "payload_hex": t.payload.hex(),
        "payload_crc32": t.payload_crc32,
    }


def main() -> None:
    path = Path(__file__).with_name("bitstreams.json")
    document = {"coder_version": CODER_VERSION, "cases": _cases(), "tensor": _tensor_case()}
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
