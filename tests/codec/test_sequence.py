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
    [(dict(intra_period=0), "intra_period"), (dict(intra_coder=Coder.TEMPORAL_CONTEXTS), "no reference"),
     (dict(rdo_lambda=-1.0), "rdo_lambda must be a number in")],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(CodecError, match=message):
        TemporalEncoder(**kwargs)


# TemporalDecoder: the decoder's twin, and quantizer switches on any frame (rate control).

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from splitinfer.codec import MissingReferenceError, TemporalDecoder, remap_levels  # noqa: E402

LADDER = [Quantizer.uniform(-2.0, 2.0, 9), Quantizer.uniform(-3.0, 3.0, 5), Quantizer.uniform(-1.5, 2.5, 13),
          Quantizer.uniform(-2.0, 2.0, 3)]


@settings(max_examples=40, deadline=None)
@given(switches=st.lists(st.integers(0, len(LADDER) - 1), min_size=2, max_size=12),
       margins=st.lists(st.sampled_from([0.0, 0.1, 0.3]), min_size=12, max_size=12),
       period=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_the_decoder_follows_the_encoder_across_quantizer_switches(switches, margins, period, seed) -> None:
    encoder, decoder = TemporalEncoder(intra_period=period), TemporalDecoder()
    previous_id = None
    for frame_id, (frame, index) in enumerate(zip(frames(len(switches), seed), switches)):
        coded = encoder.code(frame, {"layer60": LADDER[index]}, hysteresis=margins[frame_id])
        encoder.commit(coded)
        decoded = decoder.decode_frame(coded.tensors, None if coded.intra else previous_id)
        decoder.commit(frame_id, decoded)
        previous_id = frame_id
        np.testing.assert_array_equal(decoded["layer60"].levels, coded.references["layer60"].levels)
        assert decoded["layer60"].quantizer == LADDER[index]


def test_a_switch_maps_the_reference_to_the_nearest_new_level() -> None:
    old, new = Quantizer.uniform(-2.0, 2.0, 9), Quantizer.uniform(-2.0, 2.0, 5)
    levels = np.arange(9, dtype=np.uint8)
    np.testing.assert_array_equal(remap_levels(levels, old, new), new.quantize(old.dequantize(levels)))
    assert remap_levels(levels, old, old) is levels


def test_a_switch_costs_no_intra_frame_and_trials_leave_the_state_alone() -> None:
    encoder = TemporalEncoder(intra_period=30)
    scene = frames(3)
    encoder.commit(encoder.code(scene[0], {"layer60": LADDER[0]}))
    trial = encoder.code(scene[1], {"layer60": LADDER[1]})
    assert not trial.intra and trial.tensors["layer60"].coder is Coder.TEMPORAL_CONTEXTS
    again = encoder.code(scene[1], {"layer60": LADDER[0]})  # the trial changed nothing
    assert not again.intra and again.references["layer60"].quantizer == LADDER[0]
    assert trial.nbytes < again.nbytes  # 5 levels cost fewer bytes than 9


def test_the_decoder_refuses_a_frame_coded_against_a_reference_it_does_not_hold() -> None:
    encoder, decoder = TemporalEncoder(), TemporalDecoder()
    scene = frames(3)
    first = encoder.code(scene[0], {"layer60": QUANTIZER})
    encoder.commit(first)
    second = encoder.code(scene[1], {"layer60": QUANTIZER})
    with pytest.raises(MissingReferenceError, match="holds none; send an intra frame"):
        decoder.decode_frame(second.tensors, 0)
    decoder.commit(0, decoder.decode_frame(first.tensors))
    with pytest.raises(MissingReferenceError, match="coded against frame 7, but this decoder holds frame 0"):
        decoder.decode_frame(second.tensors, 7)
    with pytest.raises(MissingReferenceError, match="has no reference"):
        decoder.decode_frame(second.tensors, None)  # inter tensors in a frame that claims to be intra
    decoded = decoder.decode_frame(second.tensors, 0)
    np.testing.assert_array_equal(decoded["layer60"].levels, second.references["layer60"].levels)
    decoder.restart()
    assert decoder.reference_id is None


def test_a_corrupt_tensor_names_itself_and_leaves_the_reference_alone() -> None:
    from dataclasses import replace

    encoder, decoder = TemporalEncoder(), TemporalDecoder()
    scene = frames(2)
    first = encoder.code(scene[0], {"layer60": QUANTIZER})
    encoder.commit(first)
    decoder.commit(0, decoder.decode_frame(first.tensors))
    second = encoder.code(scene[1], {"layer60": QUANTIZER})
    broken = {"layer60": replace(second.tensors["layer60"], payload=second.tensors["layer60"].payload[:-2])}
    with pytest.raises(CodecError, match="tensor 'layer60' could not be decoded"):
        decoder.decode_frame(broken, 0)
    assert decoder.reference_id == 0
    decoder.decode_frame(second.tensors, 0)


def test_the_decoder_applies_the_limits_it_is_given() -> None:
    from splitinfer.codec import CodecLimits

    encoder, decoder = TemporalEncoder(), TemporalDecoder()
    first = encoder.code(frames(1)[0], {"layer60": QUANTIZER})
    with pytest.raises(CodecError, match="tensor 'layer60' could not be decoded"):
        decoder.decode_frame(first.tensors, limits=CodecLimits(max_elements=100))
    assert decoder.decode_frame(first.tensors)["layer60"].levels.size == 4 * 12 * 12
