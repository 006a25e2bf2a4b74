"""Hypothesis strategies for level-index tensors shaped like real activations."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitinfer.codec import Quantizer

KINDS = ("relu", "leaky", "signed", "uniform", "constant", "zero", "max")


def shapes(max_dims: int = 4, max_side: int = 9) -> st.SearchStrategy[tuple[int, ...]]:
    return hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)


@st.composite
def level_arrays(draw, max_dims: int = 4, max_side: int = 9, levels=None):
    """(indices, levels): a uint8 array of one of the KINDS of distribution found at a DNN cut."""
    n = draw(levels if levels is not None else st.one_of(st.integers(2, 9), st.integers(2, 256)))
    shape = draw(shapes(max_dims, max_side))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = int(np.prod(shape))
    if kind == "relu":  # most at 0, a geometric tail, a pile at the top
        q = np.minimum(rng.geometric(draw(st.floats(0.3, 0.95)), size) - 1, n - 1)
    elif kind == "leaky":  # most at 1 (the level holding 0), some below
        q = np.clip(rng.geometric(0.6, size) - 1 + (rng.random(size) > 0.2), 0, n - 1)
    elif kind == "signed":  # around the middle level, both sides
        q = np.clip(np.rint(rng.normal((n - 1) / 2, max(n / 6, 0.5), size)), 0, n - 1)
    elif kind == "uniform":
        q = rng.integers(0, n, size)
    elif kind == "constant":
        q = np.full(size, draw(st.integers(0, n - 1)))
    elif kind == "zero":
        q = np.zeros(size)
    else:
        q = np.full(size, n - 1)
    return q.astype(np.uint8).reshape(shape), n


@st.composite
def inter_frames(draw, max_planes: int = 4):
    """(quantizer, values, reference levels): a frame of planes and its predecessor's levels, noise between them."""
    levels = draw(st.integers(2, 17))
    low = draw(st.floats(-50, 0))
    quantizer = Quantizer.uniform(low, low + draw(st.floats(0.5, 50)), levels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, max_planes)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    span = quantizer.clip_max - quantizer.clip_min
    previous = rng.uniform(quantizer.clip_min - 0.1 * span, quantizer.clip_max + 0.1 * span, shape)
    values = (previous + rng.normal(0, draw(st.floats(0.01, 0.5)) * span / levels, shape)).astype(np.float32)
    return quantizer, values, quantizer.quantize(previous)
