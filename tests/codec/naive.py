"""A slow, obvious pure-Python version of the codec's entropy coders, to check the compiled kernels against.

Written from the format description (codec/_kernels.py docstrings), one element and one bin at a time:
binarize, pick the context, code the bin with an LZMA-style range coder, adapt the probability.
"""

from __future__ import annotations

import math

import numpy as np

PROB_ONE = 1 << 15
TU_MODELS = {1: (1, 0, 0, 0), 2: (3, 1, 1, 0), 4: (3, 0, 0, 1)}


class Model:
    """Two adaptive estimates of P(bin = 0) per context, at rates 1/16 and 1/128, starting at 1/2."""

    def __init__(self) -> None:
        self.fast: dict[int, int] = {}
        self.slow: dict[int, int] = {}

    def p0(self, ctx: int) -> int:
        return (self.fast.get(ctx, PROB_ONE // 2) + self.slow.get(ctx, PROB_ONE // 2)) // 2

    def update(self, ctx: int, bit: int) -> None:
        """Move each estimate 1/16 (1/128) of the way, rounding down, to its target for this bin value."""
        fast = self.fast.get(ctx, PROB_ONE // 2)
        slow = self.slow.get(ctx, PROB_ONE // 2)
        fast_target, slow_target = (PROB_ONE - 16, PROB_ONE - 128) if bit == 0 else (16, 128)
        self.fast[ctx] = fast + (fast_target - fast) // 16
        self.slow[ctx] = slow + (slow_target - slow) // 128


class Encoder:
    """Range encoder; `cost` sums -log2 p of every bin (the ideal adaptive cost)."""

    def __init__(self) -> None:
        self.model = Model()
        self.low, self.range, self.cache, self.pending = 0, 0xFFFFFFFF, 0, 0
        self.out = bytearray()
        self.cost = 0.0

    def shift_low(self) -> None:
        if self.low < 0xFF000000 or self.low > 0xFFFFFFFF:
            carry = self.low >> 32
            self.out.append((self.cache + carry) & 0xFF)
            self.out.extend([(0xFF + carry) & 0xFF] * self.pending)
            self.pending = 0
            self.cache = (self.low >> 24) & 0xFF
        else:
            self.pending += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def bin(self, bit: int, ctx: int) -> None:
        p = self.model.p0(ctx)
        self.cost -= math.log2((p if bit == 0 else PROB_ONE - p) / PROB_ONE)
        bound = (self.range >> 15) * p
        if bit == 0:
            self.range = bound
        else:
            self.low += bound
            self.range -= bound
        self.model.update(ctx, bit)
        while self.range < 1 << 24:
            self.range <<= 8
            self.shift_low()

    def finish(self) -> bytes:
        for _ in range(5):
            self.shift_low()
        return bytes(self.out[1:])  # the first byte is always 0 and is not sent


class Decoder:
    def __init__(self, data: bytes) -> None:
        self.model = Model()
        self.data = data
        self.code = int.from_bytes(data[:4], "big")
        self.pos = 4
        self.range = 0xFFFFFFFF

    def bin(self, ctx: int) -> int:
        bound = (self.range >> 15) * self.model.p0(ctx)
        if self.code < bound:
            bit, self.range = 0, bound
        else:
            bit = 1
            self.code -= bound
            self.range -= bound
        self.model.update(ctx, bit)
        while self.range < 1 << 24:
            self.range <<= 8
            byte = self.data[self.pos] if self.pos < len(self.data) else 0
            self.pos += 1
            self.code = ((self.code << 8) | byte) & 0xFFFFFFFF
        return bit


def planes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 0:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, 1, shape[0]
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def positions(shape: tuple[int, ...]):
    """(flat index, x, y) in coding order: plane by plane, row by row."""
    n_planes, height, width = planes(shape)
    for p in range(n_planes):
        for y in range(height):
            for x in range(width):
                yield (p * height + y) * width + x, x, y


def cmp3(value: int, pivot: int) -> int:
    return 0 if value < pivot else (1 if value == pivot else 2)


def encode_tu(q: np.ndarray, levels: int, coder: int, reference: np.ndarray | None = None) -> tuple[bytes, float]:
    stride, w_left, w_above, w_ref = TU_MODELS[coder]
    flat = [int(v) for v in q.reshape(-1)]
    ref = [int(v) for v in reference.reshape(-1)] if reference is not None else None
    width = planes(q.shape)[2]
    enc = Encoder()
    for i, x, y in positions(q.shape):
        left = flat[i - 1] if x > 0 else 0
        above = flat[i - width] if y > 0 else 0
        for b in range(levels - 1):
            ctx = b * stride + w_left * (left > b) + w_above * (above > b)
            if w_ref:
                ctx += w_ref * cmp3(ref[i], b)
            bit = int(flat[i] > b)
            enc.bin(bit, ctx)
            if not bit:
                break
    return enc.finish(), enc.cost


def decode_tu(data: bytes, shape: tuple[int, ...], levels: int, coder: int,
              reference: np.ndarray | None = None) -> np.ndarray:
    stride, w_left, w_above, w_ref = TU_MODELS[coder]
    ref = [int(v) for v in reference.reshape(-1)] if reference is not None else None
    flat = [0] * math.prod(shape)
    width = planes(shape)[2]
    dec = Decoder(data)
    for i, x, y in positions(shape):
        left = flat[i - 1] if x > 0 else 0
        above = flat[i - width] if y > 0 else 0
        k = 0
        for b in range(levels - 1):
            ctx = b * stride + w_left * (left > b) + w_above * (above > b)
            if w_ref:
                ctx += w_ref * cmp3(ref[i], b)
            if not dec.bin(ctx):
                break
            k += 1
        flat[i] = k
    return np.array(flat, dtype=np.uint8).reshape(shape)


def encode_signed(q: np.ndarray, levels: int) -> tuple[bytes, float]:
    flat = [int(v) for v in q.reshape(-1)]
    mode = max(range(levels), key=lambda level: (flat.count(level), -level)) if flat else 0
    width = planes(q.shape)[2]
    enc = Encoder()
    for i, x, y in positions(q.shape):
        k = flat[i]
        left = flat[i - 1] if x > 0 else mode
        above = flat[i - width] if y > 0 else mode
        enc.bin(int(k != mode), (left != mode) + (above != mode))
        if k == mode:
            continue
        up = int(k > mode)
        if 0 < mode < levels - 1:
            enc.bin(up, 3 + 3 * cmp3(left, mode) + cmp3(above, mode))
        magnitude = abs(k - mode) - 1
        span = (levels - 1 - mode if up else mode) - 1
        for j in range(span):
            bit = int(magnitude > j)
            ctx = 12 + 3 * (up * (levels - 1) + j) + (abs(left - mode) > j + 1) + (abs(above - mode) > j + 1)
            enc.bin(bit, ctx)
            if not bit:
                break
    return bytes([mode]) + enc.finish(), enc.cost


def encode(q: np.ndarray, levels: int, coder: int, reference: np.ndarray | None = None) -> tuple[bytes, float]:
    """(payload, ideal cost in bits) exactly as the codec should produce them."""
    if coder == 3:
        return encode_signed(q, levels)
    return encode_tu(q, levels, coder, reference)


def inter_mode(reference: np.ndarray, levels: int) -> int:
    """The reference's most frequent level, the lowest on a tie (0 for an empty reference)."""
    ref = [int(v) for v in reference.reshape(-1)]
    return max(range(levels), key=lambda level: (ref.count(level), -level)) if ref else 0


def _inter_contexts(flat: list[int], ref: list[int], i: int, x: int, y: int, width: int, mode: int):
    """(dl, da, context of the changed bin): the left / above neighbours' change from their reference."""
    dl = flat[i - 1] - ref[i - 1] if x > 0 else 0
    da = flat[i - width] - ref[i - width] if y > 0 else 0
    return dl, da, 2 + (dl != 0) + (da != 0) + 3 * min(abs(ref[i] - mode), 2)


def encode_inter(q: np.ndarray, levels: int, reference: np.ndarray) -> tuple[bytes, float]:
    """TEMPORAL_CONTEXTS version 2: per-plane skip bin, then per element the change from the reference."""
    flat = [int(v) for v in q.reshape(-1)]
    ref = [int(v) for v in reference.reshape(-1)]
    mode = inter_mode(reference, levels)
    n_planes, height, width = planes(q.shape)
    enc = Encoder()
    previous = 0
    for p in range(n_planes if flat else 0):
        plane = range(p * height * width, (p + 1) * height * width)
        skip = int(all(flat[i] == ref[i] for i in plane))
        enc.bin(skip, previous)
        previous = skip
        if skip:
            continue
        for y in range(height):
            for x in range(width):
                i = (p * height + y) * width + x
                k, r = flat[i], ref[i]
                dl, da, ctx = _inter_contexts(flat, ref, i, x, y, width, mode)
                enc.bin(int(k != r), ctx)
                if k == r:
                    continue
                up = int(k > r)
                if 0 < r < levels - 1:
                    enc.bin(up, 11 + cmp3(dl + da, 0) + 3 * cmp3(r, mode))
                span = levels - 2 - r if up else r - 1
                for j in range(span):
                    bit = int(abs(k - r) - 1 > j)
                    enc.bin(bit, 20 + 3 * (2 * min(j, 3) + up) + (abs(dl) > 1) + (abs(da) > 1))
                    if not bit:
                        break
    return enc.finish(), enc.cost


def decode_inter(data: bytes, shape: tuple[int, ...], levels: int, reference: np.ndarray) -> np.ndarray:
    ref = [int(v) for v in reference.reshape(-1)]
    mode = inter_mode(reference, levels)
    flat = [0] * math.prod(shape)
    n_planes, height, width = planes(shape)
    dec = Decoder(data)
    previous = 0
    for p in range(n_planes if flat else 0):
        previous = dec.bin(previous)
        for y in range(height):
            for x in range(width):
                i = (p * height + y) * width + x
                r = ref[i]
                flat[i] = r
                if previous:
                    continue
                dl, da, ctx = _inter_contexts(flat, ref, i, x, y, width, mode)
                if not dec.bin(ctx):
                    continue
                up = dec.bin(11 + cmp3(dl + da, 0) + 3 * cmp3(r, mode)) if 0 < r < levels - 1 else int(r == 0)
                magnitude = 0
                for j in range(levels - 2 - r if up else r - 1):
                    if not dec.bin(20 + 3 * (2 * min(j, 3) + up) + (abs(dl) > 1) + (abs(da) > 1)):
                        break
                    magnitude += 1
                flat[i] = r + 1 + magnitude if up else r - 1 - magnitude
    assert dec.pos == len(data) and dec.code < dec.range, "the stream is not consumed exactly"
    return np.array(flat, dtype=np.uint8).reshape(shape)
