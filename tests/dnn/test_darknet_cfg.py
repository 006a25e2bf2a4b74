"""The Darknet cfg parser and network builder: the public cfgs build with the right layers, bad ones fail clearly."""

from __future__ import annotations

from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.dnn import CfgError, WeightsError
from splitinfer.dnn.darknet import DarknetNetwork, build_darknet, expected_weight_count, load_darknet_weights
from splitinfer.dnn.darknet_cfg import parse_cfg, parse_cfg_text


def _packaged(name: str) -> DarknetNetwork:
    return DarknetNetwork(parse_cfg(str(resources.files("splitinfer.dnn").joinpath("cfg", name))))


# Sizes of the public weights files (bytes): 20-byte header + 4 bytes per float the cfg needs.
@pytest.mark.parametrize(
    ("cfg", "layers", "yolo_layers", "weights_bytes"),
    [
        ("yolov3.cfg", 107, [82, 94, 106], 248_007_048),
        ("yolov3-tiny.cfg", 24, [16, 23], 35_434_956),
        ("yolov4-tiny.cfg", 38, [30, 37], 24_251_276),
    ],
)
def test_packaged_cfgs_match_the_public_weights_files(cfg, layers, yolo_layers, weights_bytes):
    network = _packaged(cfg)
    assert network.num_layers == layers
    assert [h.layer for h in network.yolo_heads] == yolo_layers
    assert 20 + 4 * expected_weight_count(network) == weights_bytes


def test_yolov3_layer_12_is_the_papers_cut_and_later_cuts_send_several_tensors():
    network = _packaged("yolov3.cfg")
    assert [(s.name, s.shape, s.signed) for s in network.tensor_specs("12")] == [("layer12", (256, 52, 52), True)]
    # Route layers 86 and 98 read layers 61 and 36: a cut in between must send them too.
    assert [s.name for s in network.tensor_specs("40")] == ["layer36", "layer40"]
    assert [s.name for s in network.tensor_specs("70")] == ["layer36", "layer61", "layer68", "layer70"]  # 71 adds 68
    assert [s.name for s in network.tensor_specs("71")] == ["layer36", "layer61", "layer71"]
    assert [s.name for s in network.tensor_specs("90")] == ["layer36", "layer82", "layer90"]


def test_yolov4_tiny_route_groups_take_half_the_channels():
    network = _packaged("yolov4-tiny.cfg")
    assert network.infos[3].shape == (32, 104, 104)  # [route] groups=2 group_id=1 of a 64-channel layer
    assert network.infos[8].shape == (128, 104, 104)
    assert [h.scale_x_y for h in network.yolo_heads] == [1.05, 1.05]


def test_yolov3_tiny_stride_one_maxpool_keeps_the_size():
    network = _packaged("yolov3-tiny.cfg")
    assert network.infos[11].type == "maxpool" and network.infos[11].shape == (512, 13, 13)


_NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"
_CONV = "[convolutional]\nfilters=255\nsize=1\nactivation=linear\n"
_YOLO = "[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nclasses=80\n"


def test_a_minimal_cfg_builds():
    network = DarknetNetwork(parse_cfg_text(_NET + _CONV + _YOLO))
    assert network.num_layers == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_NET + "[deconvolutional]\nfilters=3\n" + _CONV + _YOLO, r"line 5 \(\[deconvolutional\]\): unknown layer type"),
        (_NET + _CONV + "[route]\nlayers=-4\n" + _YOLO, r"line 9 \(\[route\]\): layer 1 refers to layer -4"),
        (_NET + _CONV + "[route]\nlayers=5\n" + _YOLO, r"refers to layer 5"),
        (_NET + _CONV + "[shortcut]\nfrom=-9\n" + _YOLO, r"refers to layer -9"),
        (_NET + "[convolutional]\nfilters=abc\n" + _YOLO, r"'filters=abc' is not an integer"),
        (_NET + "[convolutional]\nsize=3\n" + _YOLO, r"the option 'filters' is required"),
        (_NET + "[convolutional]\nfilters=8\nactivation=gelu\n" + _YOLO, r"activation 'gelu' is not supported"),
        (_NET + "[convolutional]\nfilters=8\n" + _YOLO, r"8 channels; 3 anchors x \(80 classes \+ 5\) = 255 expected"),
        (_NET + _CONV, r"no \[yolo\] layer"),
        ("[convolutional]\nfilters=3\n", r"first section must be \[net\]"),
        (_NET + "filters 3\n", r"line 5: 'filters 3' is not 'key=value'"),
        (_NET + "[convolutional\n", r"line 5: .* is not a section header"),
    ],
)
def test_malformed_cfgs_name_the_line_and_what_was_expected(text, message):
    with pytest.raises(CfgError, match=message):
        DarknetNetwork(parse_cfg_text(text, source="bad.cfg"))


def test_a_missing_cfg_file_is_a_cfg_error(tmp_path):
    with pytest.raises(CfgError, match="cannot read the cfg file"):
        parse_cfg(tmp_path / "absent.cfg")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]=,#-\n abcfilterysoum0123456789")), max_size=300))
def test_arbitrary_text_is_either_a_network_or_a_cfg_error(text):
    try:
        DarknetNetwork(parse_cfg_text(_NET + text))
    except CfgError:
        pass


def test_weights_of_the_wrong_size_name_the_file_and_the_counts(tmp_path, fastest_dir):
    good = (fastest_dir / "yolo-fastest-1.1-xl.weights").read_bytes()
    cfg = fastest_dir / "yolo-fastest-1.1-xl.cfg"
    for name, data, message in [
        ("short.weights", good[:-4], r"short\.weights holds 923485 float32 values .* needs exactly 923486"),
        ("long.weights", good + b"\0\0\0\0", r"holds 923487 float32 values"),
        ("tiny.weights", good[:10], r"shorter than a Darknet header"),
        ("other.weights", (fastest_dir / "yolo-fastest-1.1.weights").read_bytes(), r"belong to another cfg"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(WeightsError, match=message):
            build_darknet(cfg, path)
    with pytest.raises(WeightsError, match="cannot read the weights file"):
        load_darknet_weights(DarknetNetwork(parse_cfg(cfg)), tmp_path / "absent.weights")


@pytest.mark.parametrize(("activation", "signed"), [
    ("leaky", True), ("linear", True), ("mish", True), ("swish", True), ("relu", False), ("logistic", False),
])
def test_activations_decide_whether_a_cut_is_signed(activation, signed):
    import torch

    text = (_NET + f"[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation={activation}\n"
            "[maxpool]\nsize=2\nstride=2\n[dropout]\nprobability=.1\n" + _CONV + _YOLO)
    network = DarknetNetwork(parse_cfg_text(text)).eval()
    assert [s.signed for s in network.tensor_specs("2")] == [signed]
    assert network.tensor_specs("2")[0].shape == (8, 16, 16)
    sent = network.head("2", torch.randn(2, 3, 32, 32) * 5)["layer2"]
    assert bool((sent < 0).any()) is signed
