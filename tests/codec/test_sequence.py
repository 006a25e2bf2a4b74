"""TemporalEncoder: the encoder-side state of a stream coded with temporal contexts."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer.codec import CodecError, Coder, Quantizer, TemporalEncoder, decode_levels

QUANTIZER = Quantizer.uniform(-2.0, 2.0, 9)


def frames(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A slowly changing scene: each frame is the previous one plus a little noise."""
    rng = np.random.default_rng(seed)
    scene = rng.normal(size=(1, 4, 12, 12)).astype(np.float32)
    out = []
    for _ in range(count):
        scene = scene + rng.normal(scale=0.05, size=scene.shape).astype(np.float32)
        out.append({"layer60": scene.copy()})
    return out


def test_inter_frames_decode_with_the_previous_levels_and_intra_recurs() -> None:
    encoder = TemporalEncoder(intra_period=4)
    previous = None
    kinds = []
    for frame in frames(9):
        coded, intra = encoder.encode_frame(frame, {"layer60": QUANTIZER})
        kinds.append(intra)
        tensor = coded["layer60"]
        assert (tensor.coder is Coder.TEMPORAL_CONTEXTS) == (not intra)
        levels = decode_levels(tensor, reference=None if intra else previous)
        np.testing.assert_array_equal(levels, QUANTIZER.quantize(frame["layer60"]))  # no hysteresis: lossless
        previous = levels
    assert kinds == [True, False, False, False, True, False, False, False, True]


def test_inter_frames_of_a_slow_scene_cost_less_than_intra() -> None:
    sizes = {}
    for period in (1, 100):
        encoder = TemporalEncoder(intra_period=period)
        sizes[period] = sum(encoder.encode_frame(f, {"layer60": QUANTIZER})[0]["layer60"].nbytes for f in frames(10))
    assert sizes[100] < sizes[1]


def test_restart_makes_the_next_frame_intra() -> None:
    encoder = TemporalEncoder(intra_period=100)
    sequence = frames(3)
    assert encoder.encode_frame(sequence[0], {"layer60": QUANTIZER})[1] is True
    assert encoder.encode_frame(sequence[1], {"layer60": QUANTIZER})[1] is False
    encoder.restart()
    assert encoder.encode_frame(sequence[2], {"layer60": QUANTIZER})[1] is True


def test_hysteresis_only_ever_keeps_the_previous_level() -> None:
    encoder = TemporalEncoder(intra_period=100, hysteresis=0.2)
    sequence = frames(2)
    first, _ = encoder.encode_frame(sequence[0], {"layer60": QUANTIZER})
    reference = decode_levels(first["layer60"])
    second, intra = encoder.encode_frame(sequence[1], {"layer60": QUANTIZER})
    assert not intra
    levels = decode_levels(second["layer60"], reference=reference)
    plain = QUANTIZER.quantize(sequence[1]["layer60"])
    differs = levels != plain
    np.testing.assert_array_equal(levels[differs], reference[differs])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(intra_period=0), "intra_period"), (dict(intra_coder=Coder.TEMPORAL_CONTEXTS), "no reference")],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(CodecError, match=message):
        TemporalEncoder(**kwargs)
