"""Compiled kernels: a bit-exact binary range coder and the context models that drive it.

Private: arrays in, arrays out, no validation (splitinfer.codec.entropy validates). All arithmetic is
on int64 holding 32-bit quantities, so the bitstream is identical on every machine.

Range coder (LZMA style): 32-bit range, carry propagated through `cache` + `pending` 0xFF bytes,
renormalised a byte at a time below 2**24. The always-zero first byte is not emitted, so a stream
is exactly (renormalisations + 4) bytes and a decoder consumes exactly all of it.

Probability model: P(bin = 0) as the mean of two 15-bit estimates adapting at rates 1/16 and 1/128
(a fast and a slow window, as in VVC). The estimates stay in [16, 32752] and [128, 32640], so the
mixed probability is in [72, 32696]: one bin never costs more than 8.9 bits nor less than 0.0031.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PROB_BITS = 15
PROB_ONE = 1 << PROB_BITS
FAST_RATE = 4
SLOW_RATE = 7
# Each estimate moves 1/2**rate of the way to its target: HIGH after a 0-bin, LOW after a 1-bin
# (arithmetic shift, so it rounds towards -inf and never passes the target).
FAST_LOW = 1 << FAST_RATE
FAST_HIGH = PROB_ONE - FAST_LOW
SLOW_LOW = 1 << SLOW_RATE
SLOW_HIGH = PROB_ONE - SLOW_LOW
TOP = 1 << 24
MASK32 = 0xFFFFFFFF
# A bin renormalises at most twice (it keeps >= 72/2**15 of a range >= 2**24) and each renormalisation
# emits at most one byte, so B bins take at most 2B + 5 bytes. Encoders write into a caller's buffer,
# check before each element that its worst case (N bins) fits, and return -1 if it might not.
_ELEMENT_ROOM = 2


@njit(cache=True, inline="always")
def _shift_low(low, cache, pending, out, pos):
    if low < 0xFF000000 or low > MASK32:
        carry = low >> 32
        out[np.uint64(pos)] = (cache + carry) & 0xFF
        pos += 1
        while pending > 0:
            out[np.uint64(pos)] = (0xFF + carry) & 0xFF
            pos += 1
            pending -= 1
        cache = (low >> 24) & 0xFF
    else:
        pending += 1
    low = (low & 0x00FFFFFF) << 8
    return low, cache, pending, pos


@njit(cache=True, inline="always")
def _encode_bin(bit, probs, ctx, low, rng, cache, pending, out, pos):
    # Branch-free: the bin's value selects the sub-range and the adaptation target through a mask.
    c = np.uint64(2 * ctx)
    pa = probs[c]
    pb = probs[c + np.uint64(1)]
    bound = (rng >> PROB_BITS) * ((pa + pb) >> 1)
    mask = -np.int64(bit)
    low += bound & mask
    rng = bound + ((rng - bound - bound) & mask)
    probs[c] = pa + (((FAST_HIGH - ((FAST_HIGH - FAST_LOW) & mask)) - pa) >> FAST_RATE)
    probs[c + np.uint64(1)] = pb + (((SLOW_HIGH - ((SLOW_HIGH - SLOW_LOW) & mask)) - pb) >> SLOW_RATE)
    while rng < TOP:
        rng <<= 8
        low, cache, pending, pos = _shift_low(low, cache, pending, out, pos)
    return low, rng, cache, pending, pos


@njit(cache=True, inline="always")
def _bin_cost(bit, probs, ctx, cost_table):
    p = (probs[2 * ctx] + probs[2 * ctx + 1]) >> 1
    if bit == 0:
        return cost_table[p]
    return cost_table[PROB_ONE - p]


@njit(cache=True, inline="always")
def _decode_bin(probs, ctx, code, rng, data, pos):
    c = np.uint64(2 * ctx)
    pa = probs[c]
    pb = probs[c + np.uint64(1)]
    bound = (rng >> PROB_BITS) * ((pa + pb) >> 1)
    bit = np.int64(code >= bound)
    mask = -bit
    code -= bound & mask
    rng = bound + ((rng - bound - bound) & mask)
    probs[c] = pa + (((FAST_HIGH - ((FAST_HIGH - FAST_LOW) & mask)) - pa) >> FAST_RATE)
    probs[c + np.uint64(1)] = pb + (((SLOW_HIGH - ((SLOW_HIGH - SLOW_LOW) & mask)) - pb) >> SLOW_RATE)
    while rng < TOP:
        rng <<= 8
        byte = 0
        if pos < data.size:
            byte = data[pos]
        pos += 1
        code = ((code << 8) | byte) & MASK32
    return bit, code, rng, pos


@njit(cache=True, inline="always")
def _flush(low, cache, pending, out, pos):
    for _ in range(5):
        low, cache, pending, pos = _shift_low(low, cache, pending, out, pos)
    return pos


@njit(cache=True, inline="always")
def _start_decoder(data):
    code = 0
    for i in range(4):
        byte = 0
        if i < data.size:
            byte = data[i]
        code = (code << 8) | byte
    return code, 4


# Truncated unary: level k -> k one-bins then a zero-bin (none after the largest level). Bin b's context:
#   BIN_CONTEXTS:        b
#   NEIGHBOUR_CONTEXTS:  3b + (left > b) + (above > b)         neighbours outside the plane count as 0
#   TEMPORAL_CONTEXTS:   3b + cmp(ref, b), cmp = 0, 1, 2 for ref < b, ref == b, ref > b, where ref is the
#                        co-located level of the previous frame (on the shared video the spatial
#                        neighbours add nothing once it is known; fewer contexts adapt faster)
# Element indices are cast to unsigned where the kernels read or write levels (and the context index in
# _encode_bin / _decode_bin, the output index in _shift_low): numba then drops its negative-index
# wraparound, 1-10 % of the time (docs/BENCHMARKS.md, "Intra coding").
# The kernels take `neighbours` (None or any int) and `reference` (None or an array): numba compiles one
# specialisation per combination and prunes the branches on None, so each coder gets a tight loop.
# Decoders stop once they have decoded more than `max_bins` bins (a bound on the work a forged payload
# can cause) and say so in their last return value; they also stop as soon as they have read past the
# payload's end (a valid stream is consumed exactly), so a truncated or forged payload costs only the
# work its own length can pay for.


@njit(cache=True, inline="always")
def _tu_context(b, left, above, ref, neighbours, reference):
    if neighbours is not None:
        return 3 * b + (left > b) + (above > b)
    if reference is not None:
        return 3 * b + (ref >= b) + (ref > b)
    return b


@njit(cache=True, nogil=True)
def _encode_tu(levels, planes, height, width, n_levels, neighbours, reference, out, cost_table):
    stride = 1 if neighbours is None and reference is None else 3
    probs = np.full(2 * (n_levels - 1) * stride, PROB_ONE // 2, np.int64)
    cost = 0.0
    low = 0
    rng = MASK32
    cache = 0
    pending = 0
    pos = 0
    room = _ELEMENT_ROOM * n_levels
    last = n_levels - 1
    plane_size = height * width
    for p in range(planes):
        base = p * plane_size
        for y in range(height):
            row = base + y * width
            left = 0
            for x in range(width):
                i = row + x
                if pos + pending + room > out.size:
                    return -1, cost
                k = levels[np.uint64(i)]
                above = 0
                if neighbours is not None and y > 0:
                    above = levels[np.uint64(i - width)]
                ref = 0
                if reference is not None:
                    ref = reference[i]
                for b in range(last):
                    bit = 1 if k > b else 0
                    ctx = _tu_context(b, left, above, ref, neighbours, reference)
                    if cost_table is not None:
                        cost += _bin_cost(bit, probs, ctx, cost_table)
                    low, rng, cache, pending, pos = _encode_bin(bit, probs, ctx, low, rng, cache, pending, out, pos)
                    if bit == 0:
                        break
                left = k
    if pos + pending + 8 > out.size:
        return -1, cost
    pos = _flush(low, cache, pending, out, pos)
    return pos, cost


@njit(cache=True, nogil=True)
def _decode_tu(data, planes, height, width, n_levels, neighbours, reference, max_bins):
    stride = 1 if neighbours is None and reference is None else 3
    levels = np.empty(planes * height * width, np.uint8)
    probs = np.full(2 * (n_levels - 1) * stride, PROB_ONE // 2, np.int64)
    rng = MASK32
    code, pos = _start_decoder(data)
    bins = 0
    last = n_levels - 1
    plane_size = height * width
    for p in range(planes):
        base = p * plane_size
        for y in range(height):
            row = base + y * width
            left = 0
            for x in range(width):
                i = row + x
                above = 0
                if neighbours is not None and y > 0:
                    above = levels[np.uint64(i - width)]
                ref = 0
                if reference is not None:
                    ref = reference[i]
                k = 0
                for b in range(last):
                    ctx = _tu_context(b, left, above, ref, neighbours, reference)
                    bit, code, rng, pos = _decode_bin(probs, ctx, code, rng, data, pos)
                    if bit == 0:
                        break
                    k += 1
                levels[np.uint64(i)] = k
                left = k
                bins += k + 1
                if bins > max_bins:
                    return levels, pos, False, True
                if pos > data.size:  # read past the end: the payload cannot end cleanly, stop the work now
                    return levels, pos, False, False
    return levels, pos, code < rng, False


# Signed binarization around the most probable level m (side info: the payload's first byte):
#   bin "off": k != m            context (left != m) + (above != m)                       (0..2)
#   bin "up":  k > m             context 3 + 3 * cmp(left, m) + cmp(above, m); coded only when
#                                levels exist on both sides of m                            (3..11)
#   magnitude |k - m| - 1 in truncated unary up to the levels on that side; bin j has context
#   12 + 3 * (side * (N - 1) + j) + (|left - m| > j + 1) + (|above - m| > j + 1).
# Neighbours outside the plane count as level m.


@njit(cache=True, inline="always")
def _cmp3(value, pivot):
    return (value >= pivot) + (value > pivot)


@njit(cache=True, nogil=True)
def _encode_signed(levels, planes, height, width, n_levels, mode, out, cost_table):
    probs = np.full(2 * (12 + 6 * (n_levels - 1)), PROB_ONE // 2, np.int64)
    cost = 0.0
    low = 0
    rng = MASK32
    cache = 0
    pending = 0
    pos = 0
    room = _ELEMENT_ROOM * n_levels
    up_room = n_levels - 1 - mode
    both_sides = mode > 0 and up_room > 0
    plane_size = height * width
    for p in range(planes):
        base = p * plane_size
        for y in range(height):
            row = base + y * width
            left = mode
            for x in range(width):
                i = row + x
                if pos + pending + room > out.size:
                    return -1, cost
                k = np.int64(levels[np.uint64(i)])
                above = np.int64(levels[np.uint64(i - width)]) if y > 0 else mode
                off = 1 if k != mode else 0
                ctx = (left != mode) + (above != mode)
                if cost_table is not None:
                    cost += _bin_cost(off, probs, ctx, cost_table)
                low, rng, cache, pending, pos = _encode_bin(off, probs, ctx, low, rng, cache, pending, out, pos)
                if off == 0:
                    left = k
                    continue
                up = 1 if k > mode else 0
                if both_sides:
                    ctx = 3 + 3 * _cmp3(left, mode) + _cmp3(above, mode)
                    if cost_table is not None:
                        cost += _bin_cost(up, probs, ctx, cost_table)
                    low, rng, cache, pending, pos = _encode_bin(up, probs, ctx, low, rng, cache, pending, out, pos)
                magnitude = k - mode - 1 if up == 1 else mode - k - 1
                span = up_room - 1 if up == 1 else mode - 1
                dleft = abs(left - mode)
                dabove = abs(above - mode)
                side = up * (n_levels - 1)
                for j in range(span):
                    bit = 1 if magnitude > j else 0
                    ctx = 12 + 3 * (side + j) + (dleft > j + 1) + (dabove > j + 1)
                    if cost_table is not None:
                        cost += _bin_cost(bit, probs, ctx, cost_table)
                    low, rng, cache, pending, pos = _encode_bin(bit, probs, ctx, low, rng, cache, pending, out, pos)
                    if bit == 0:
                        break
                left = k
    if pos + pending + 8 > out.size:
        return -1, cost
    pos = _flush(low, cache, pending, out, pos)
    return pos, cost


@njit(cache=True, nogil=True)
def _decode_signed(data, planes, height, width, n_levels, mode, max_bins):
    levels = np.empty(planes * height * width, np.uint8)
    probs = np.full(2 * (12 + 6 * (n_levels - 1)), PROB_ONE // 2, np.int64)
    rng = MASK32
    code, pos = _start_decoder(data)
    bins = 0
    up_room = n_levels - 1 - mode
    both_sides = mode > 0 and up_room > 0
    plane_size = height * width
    for p in range(planes):
        base = p * plane_size
        for y in range(height):
            row = base + y * width
            left = mode
            for x in range(width):
                i = row + x
                above = np.int64(levels[np.uint64(i - width)]) if y > 0 else mode
                ctx = (left != mode) + (above != mode)
                off, code, rng, pos = _decode_bin(probs, ctx, code, rng, data, pos)
                bins += 1
                if off == 0:
                    levels[np.uint64(i)] = mode
                    left = mode
                    if bins > max_bins:  # a long run at the pivot counts against the work limit too
                        return levels, pos, False, True
                    continue
                if both_sides:
                    ctx = 3 + 3 * _cmp3(left, mode) + _cmp3(above, mode)
                    up, code, rng, pos = _decode_bin(probs, ctx, code, rng, data, pos)
                else:
                    up = 1 if up_room > 0 else 0
                span = up_room - 1 if up == 1 else mode - 1
                dleft = abs(left - mode)
                dabove = abs(above - mode)
                side = up * (n_levels - 1)
                magnitude = 0
                for j in range(span):
                    ctx = 12 + 3 * (side + j) + (dleft > j + 1) + (dabove > j + 1)
                    bit, code, rng, pos = _decode_bin(probs, ctx, code, rng, data, pos)
                    if bit == 0:
                        break
                    magnitude += 1
                left = mode + 1 + magnitude if up == 1 else mode - 1 - magnitude
                levels[np.uint64(i)] = left
                bins += magnitude + 2
                if bins > max_bins:
                    return levels, pos, False, True
                if pos > data.size:  # read past the end: the payload cannot end cleanly, stop the work now
                    return levels, pos, False, False
    return levels, pos, code < rng, False


@njit(cache=True, nogil=True)
def _quantize(values, thresholds, out):
    """out[i] = number of thresholds below values[i] (= searchsorted side "left"); True if any value is NaN."""
    nan = False
    m = thresholds.size
    if m <= 32:
        for i in range(values.size):
            v = values[i]
            k = 0
            for j in range(m):
                k += v > thresholds[j]
            out[i] = k
            nan |= v != v
    else:
        # Guess the level from the thresholds' mean spacing (exact for uniform levels but for rounding), then walk
        # to the true count; non-uniform thresholds walk further but give the same answer.
        first = np.float64(thresholds[0])
        scale = (m - 1) / (np.float64(thresholds[m - 1]) - first) if thresholds[m - 1] > thresholds[0] else 0.0
        for i in range(values.size):
            v = values[i]
            if v != v:
                nan = True
                out[i] = 0
                continue
            guess = (np.float64(v) - first) * scale + 1.0
            k = 0 if guess <= 0.0 else (m if guess >= m else int(guess))
            while k > 0 and not thresholds[k - 1] < v:
                k -= 1
            while k < m and thresholds[k] < v:
                k += 1
            out[i] = k
    return nan


@njit(cache=True, nogil=True)
def _histogram(levels, n_levels):
    counts = np.zeros(max(n_levels, 256), np.int64)
    for i in range(levels.size):
        counts[levels[i]] += 1
    return counts[:n_levels]


@njit(cache=True, nogil=True)
def _quantize_with_reference(values, thresholds, reconstruction, reference, margin, out):
    """_quantize, but keep reference[i] while values[i] lies within `margin` steps beyond its cell; True on NaN.

    A step is the distance between the reference's reconstruction value and its neighbour's on that side.
    """
    nan = _quantize(values, thresholds, out)
    if margin <= 0.0:
        return nan
    for i in range(values.size):
        k = out[i]
        r = reference[i]
        if k == r:
            continue
        v = values[i]
        if k > r:
            keep = v <= thresholds[r] + margin * (reconstruction[r + 1] - reconstruction[r])
        else:
            keep = v > thresholds[r - 1] - margin * (reconstruction[r] - reconstruction[r - 1])
        if keep:
            out[i] = r
    return nan


@njit(cache=True, nogil=True)
def _rdo_refine(values, reconstruction, reference, lam, weights, plane_size, out):
    """Rate-distortion refinement of inter levels `out` (from _quantize_with_reference), in place.

    An element whose level changed keeps the reference level when the distortion that adds (squared error in
    steps, times its plane's weight) is at most `lam` times the bits the change would cost; then a plane whose
    remaining changes add less distortion than `lam` times the plane's bits is skipped whole (set to the
    reference). Bits follow TEMPORAL_CONTEXTS v2's bins with one change probability per tensor (the share of
    changed elements): [changed] -log2 p, [up] 1 bit where the reference is an inner level, the magnitude's
    unary bins 1 bit each (min(|k - r|, span)); [unchanged] -log2(1 - p). Returns the number of elements that
    still change.
    """
    n = out.size
    n_levels = reconstruction.size
    changed = np.empty(n, np.int64)  # indices of the changed elements, ascending (so grouped by plane)
    count = 0
    for i in range(n):
        changed[count] = i
        count += out[i] != reference[i]
    if count == 0 or lam <= 0.0 or plane_size <= 0:
        return count
    low = reconstruction[0]
    high = reconstruction[n_levels - 1]
    step = (np.float64(high) - np.float64(low)) / (n_levels - 1)
    if not step > 0.0:
        return count
    inverse = 1.0 / (step * step)
    p = min(max(count / n, 1.0 / 4096.0), 0.5)
    keep_bits = -np.log2(1.0 - p)
    change_bits = -np.log2(p) - keep_bits
    remaining = 0
    j = 0
    while j < count:
        c = changed[j] // plane_size
        end = (c + 1) * plane_size
        weight = weights[c] * inverse
        first = j
        added = 0.0
        bits = 0.0
        kept = 0
        while j < count and changed[j] < end:
            i = changed[j]
            j += 1
            k = np.int64(out[i])
            r = np.int64(reference[i])
            v = min(max(np.float64(values[i]), low), high)
            ek = v - reconstruction[k]
            er = v - reconstruction[r]
            distortion = weight * (er * er - ek * ek)
            d = abs(k - r)
            span = n_levels - 1 - r if k > r else r
            rate = change_bits + (1.0 if 0 < r < n_levels - 1 else 0.0) + min(d, span - 1)
            if distortion <= lam * rate:
                out[i] = r
            else:
                added += distortion
                bits += rate
                kept += 1
        if kept and added <= lam * (bits + plane_size * keep_bits):
            for m in range(first, j):
                out[changed[m]] = reference[changed[m]]
            kept = 0
        remaining += kept
    return remaining


# TEMPORAL_CONTEXTS version 2 (docs/BITSTREAM.md, section 4.3): per plane a skip bin [plane == reference]
# (context: the previous plane's skip bin); in a plane that is not skipped, per element the change from the
# co-located reference level r, with m the most probable level of the reference and dl / da the left /
# above neighbours' change (k - r, 0 outside the plane):
#   bin "changed" [k != r]   context 2 + (dl != 0) + (da != 0) + 3 min(|r - m|, 2)                     (2..10)
#   bin "up" [k > r]         context 11 + sgn3(dl + da) + 3 cmp(r, m); implied when r is 0 or N - 1   (11..19)
#   |k - r| - 1 in truncated unary up to the levels on that side; bin j has context
#                            20 + 3 (2 min(j, 3) + up) + (|dl| > 1) + (|da| > 1)                       (20..43)
INTER_CONTEXTS = 44


@njit(cache=True, inline="always")
def _inter_change_ctx(r, mode, dl, da):
    return 2 + (dl != 0) + (da != 0) + 3 * min(abs(r - mode), 2)


@njit(cache=True, inline="always")
def _inter_up_ctx(r, mode, dl, da):
    s = dl + da
    return 11 + (s >= 0) + (s > 0) + 3 * ((r >= mode) + (r > mode))


@njit(cache=True, inline="always")
def _inter_mag_ctx(j, up, dl, da):
    return 20 + 3 * (2 * min(j, 3) + up) + (abs(dl) > 1) + (abs(da) > 1)


@njit(cache=True, nogil=True)
def _encode_inter(levels, reference, planes, height, width, n_levels, mode, out, cost_table):
    probs = np.full(2 * INTER_CONTEXTS, PROB_ONE // 2, np.int64)
    cost = 0.0
    low = 0
    rng = MASK32
    cache = 0
    pending = 0
    pos = 0
    room = _ELEMENT_ROOM * (n_levels + 1)
    plane_size = height * width
    if plane_size == 0:
        planes = 0
    previous = 0
    for p in range(planes):
        base = p * plane_size
        if pos + pending + room > out.size:
            return -1, cost
        skip = 1
        for i in range(base, base + plane_size):
            if levels[i] != reference[i]:
                skip = 0
                break
        if cost_table is not None:
            cost += _bin_cost(skip, probs, previous, cost_table)
        low, rng, cache, pending, pos = _encode_bin(skip, probs, previous, low, rng, cache, pending, out, pos)
        previous = skip
        if skip == 1:
            continue
        for y in range(height):
            row = base + y * width
            for x in range(width):
                i = row + x
                if pos + pending + room > out.size:
                    return -1, cost
                k = np.int64(levels[i])
                r = np.int64(reference[i])
                dl = np.int64(levels[i - 1]) - np.int64(reference[i - 1]) if x > 0 else 0
                da = np.int64(levels[i - width]) - np.int64(reference[i - width]) if y > 0 else 0
                changed = 1 if k != r else 0
                ctx = _inter_change_ctx(r, mode, dl, da)
                if cost_table is not None:
                    cost += _bin_cost(changed, probs, ctx, cost_table)
                low, rng, cache, pending, pos = _encode_bin(changed, probs, ctx, low, rng, cache, pending, out, pos)
                if changed == 0:
                    continue
                up = 1 if k > r else 0
                if 0 < r < n_levels - 1:
                    ctx = _inter_up_ctx(r, mode, dl, da)
                    if cost_table is not None:
                        cost += _bin_cost(up, probs, ctx, cost_table)
                    low, rng, cache, pending, pos = _encode_bin(up, probs, ctx, low, rng, cache, pending, out, pos)
                span = n_levels - 2 - r if up == 1 else r - 1
                magnitude = k - r - 1 if up == 1 else r - k - 1
                for j in range(span):
                    bit = 1 if magnitude > j else 0
                    ctx = _inter_mag_ctx(j, up, dl, da)
                    if cost_table is not None:
                        cost += _bin_cost(bit, probs, ctx, cost_table)
                    low, rng, cache, pending, pos = _encode_bin(bit, probs, ctx, low, rng, cache, pending, out, pos)
                    if bit == 0:
                        break
    if pos + pending + 8 > out.size:
        return -1, cost
    pos = _flush(low, cache, pending, out, pos)
    return pos, cost


@njit(cache=True, nogil=True)
def _decode_inter(data, reference, planes, height, width, n_levels, mode, max_bins):
    levels = np.empty(planes * height * width, np.uint8)
    probs = np.full(2 * INTER_CONTEXTS, PROB_ONE // 2, np.int64)
    rng = MASK32
    code, pos = _start_decoder(data)
    bins = 0
    plane_size = height * width
    if plane_size == 0:
        planes = 0
    previous = 0
    for p in range(planes):
        base = p * plane_size
        skip, code, rng, pos = _decode_bin(probs, previous, code, rng, data, pos)
        previous = skip
        bins += 1
        if bins > max_bins:
            return levels, pos, False, True
        if pos > data.size:
            return levels, pos, False, False
        if skip == 1:
            for i in range(base, base + plane_size):
                levels[i] = reference[i]
            continue
        for y in range(height):
            row = base + y * width
            for x in range(width):
                i = row + x
                r = np.int64(reference[i])
                dl = np.int64(levels[i - 1]) - np.int64(reference[i - 1]) if x > 0 else 0
                da = np.int64(levels[i - width]) - np.int64(reference[i - width]) if y > 0 else 0
                ctx = _inter_change_ctx(r, mode, dl, da)
                changed, code, rng, pos = _decode_bin(probs, ctx, code, rng, data, pos)
                bins += 1
                if changed == 0:
                    levels[i] = r
                else:
                    if 0 < r < n_levels - 1:
                        up, code, rng, pos = _decode_bin(probs, _inter_up_ctx(r, mode, dl, da), code, rng, data, pos)
                    else:
                        up = 1 if r == 0 else 0
                    span = n_levels - 2 - r if up == 1 else r - 1
                    magnitude = 0
                    for j in range(span):
                        bit, code, rng, pos = _decode_bin(probs, _inter_mag_ctx(j, up, dl, da), code, rng, data, pos)
                        if bit == 0:
                            break
                        magnitude += 1
                    levels[i] = r + 1 + magnitude if up == 1 else r - 1 - magnitude
                    bins += magnitude + 2
                if bins > max_bins:
                    return levels, pos, False, True
                if pos > data.size:  # read past the end: the payload cannot end cleanly, stop the work now
                    return levels, pos, False, False
    return levels, pos, code < rng, False
