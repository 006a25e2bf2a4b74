"""The model registry and weight resolution: explicit path, $SPLITINFER_WEIGHTS_DIR, cache, sample data, verified
download."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from splitinfer.dnn import (
    MissingDependencyError,
    ModelError,
    WeightsError,
    WeightsUnavailableError,
    get_spec,
    list_models,
    load_model,
)
from splitinfer.dnn.fusion import fold_batch_norms
from splitinfer.dnn.registry import register
from splitinfer.dnn.weights import RemoteFile, resolve_file


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITINFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPLITINFER_WEIGHTS_DIR", raising=False)


def test_the_registry_lists_the_required_models():
    assert {"yolov3", "yolov3-tiny", "yolov4-tiny", "yolo-fastest-1.1", "yolo-fastest-1.1-xl",
            "resnet50", "vgg16", "efficientnet-lite0"} <= set(list_models())
    assert get_spec("yolov3").default_cut == "12"
    for name in list_models():
        spec = get_spec(name)
        assert spec.default_profile is None or spec.default_profile.endswith(".json")
        if isinstance(spec.weights, RemoteFile):
            assert spec.weights.url.startswith("https://") and len(spec.weights.sha256) == 64


def test_unknown_model_and_duplicate_registration_are_errors():
    with pytest.raises(ModelError, match="unknown model 'yolov9'; known models: efficientnet-lite0"):
        load_model("yolov9")
    with pytest.raises(ModelError, match="already registered"):
        register(get_spec("yolov3"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_download_error_names_file_url_flag_and_variable(tmp_path):
    remote = RemoteFile("yolov3.weights", f"http://127.0.0.1:{_closed_port()}/yolov3.weights", "0" * 64)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_file(remote)
    message = str(info.value)
    for part in ("yolov3.weights", remote.url, "--weights", "SPLITINFER_WEIGHTS_DIR", str(tmp_path / "cache")):
        assert part in message
    assert not list((tmp_path / "cache").glob("*"))  # no partial file left behind


def test_registered_yolov3_without_weights_fails_with_the_download_hint():
    # The machine running the tests is offline or the URL is reachable: both must end well. Refuse downloads here.
    with pytest.raises(WeightsUnavailableError, match=r"yolov3\.weights .*pjreddie\.com.*--weights"):
        load_model("yolov3", download=False)


class _Files(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_is_verified_and_cached(file_server, tmp_path):
    _Files.body = b"darknet weights" * 1000
    url = f"http://127.0.0.1:{file_server.server_port}/model.weights"
    good = RemoteFile("model.weights", url, hashlib.sha256(_Files.body).hexdigest())
    path = resolve_file(good)
    assert path == tmp_path / "cache" / "model.weights" and path.read_bytes() == _Files.body
    assert resolve_file(good) == path  # the second time from the cache
    bad = RemoteFile("other.weights", url, "ab" * 32)
    with pytest.raises(WeightsError, match=r"has SHA-256 .* expected abab"):
        resolve_file(bad)
    assert not (tmp_path / "cache" / "other.weights").exists()


def test_explicit_path_then_weights_dir_then_cache(tmp_path, monkeypatch):
    remote = RemoteFile("m.weights", "http://127.0.0.1:9/m.weights", "0" * 64)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "m.weights").write_bytes(b"x")
    assert resolve_file(remote, folder) == folder / "m.weights"
    assert resolve_file(remote, folder / "m.weights") == folder / "m.weights"
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_file(remote, tmp_path / "nowhere.weights")
    monkeypatch.setenv("SPLITINFER_WEIGHTS_DIR", str(folder))
    assert resolve_file(remote) == folder / "m.weights"


def test_after_the_cache_the_sample_data_then_the_error_lists_every_place_tried(tmp_path, monkeypatch):
    """The same order for every command: $SPLITINFER_WEIGHTS_DIR, the cache, the sample data's models/*, a
    download; a file found nowhere is reported with each place that was looked in and how to point at it."""
    remote = RemoteFile("m.weights", "http://127.0.0.1:9/m.weights", "0" * 64)
    data = tmp_path / "data"
    (data / "models" / "some-model").mkdir(parents=True)
    monkeypatch.setenv("SPLITINFER_SHARED_DATA", str(data))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_file(remote, download=False)
    message = str(info.value)
    for part in (str(tmp_path / "cache" / "m.weights"), str(data / "models" / "some-model" / "m.weights"),
                 "--weights", "$SPLITINFER_WEIGHTS_DIR is not set", "SPLITINFER_SHARED_DATA"):
        assert part in message, message
    (data / "models" / "some-model" / "m.weights").write_bytes(b"sample")
    assert resolve_file(remote, download=False) == data / "models" / "some-model" / "m.weights"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "m.weights").write_bytes(b"cached")
    assert resolve_file(remote, download=False) == tmp_path / "cache" / "m.weights"  # the cache comes first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "m.weights").write_bytes(b"mine")
    monkeypatch.setenv("SPLITINFER_WEIGHTS_DIR", str(mine))
    assert resolve_file(remote, download=False) == mine / "m.weights"


def test_yolo_fastest_resolves_from_the_weights_dir(fastest_dir, monkeypatch):
    monkeypatch.setenv("SPLITINFER_WEIGHTS_DIR", str(fastest_dir))
    model = load_model("yolo-fastest-1.1", download=False)
    assert model.input_size == (320, 320) and len(model.class_names) == 80
    assert model.class_names[0] == "person" and model.class_names[-1] == "toothbrush"


# torchvision weights cannot be downloaded here: these tests check the cut mechanics with random init.
@pytest.mark.parametrize(("name", "cuts", "signed"), [
    ("resnet50", {"layer2": (512, 28, 28), "layer4": (2048, 7, 7), "maxpool": (64, 56, 56)}, False),
    ("vgg16", {"features.16": (256, 28, 28), "features.14": (256, 56, 56)}, None),
])
def test_torchvision_cuts_reproduce_the_full_model_random_init(name, cuts, signed):
    torch.manual_seed(0)
    model = load_model(name, pretrained=False)
    assert model.default_cut in model.cuts()
    x = torch.randn(1, 3, 224, 224)
    full = model(x)
    for cut, shape in cuts.items():
        split = model.split(cut)
        assert split.tensors[0].shape == shape
        if signed is not None:
            assert split.tensors[0].signed is signed
        torch.testing.assert_close(split.tail(split.head(x)), full)
    with pytest.raises(ModelError, match="valid cuts are"):
        model.split("layer9")


def test_vgg16_signedness_follows_the_layer_types():
    model = load_model("vgg16", pretrained=False)
    assert model.split("features.14").tensors[0].signed  # a convolution
    assert not model.split("features.15").tensors[0].signed  # its ReLU
    assert not model.split("features.16").tensors[0].signed  # max-pool of ReLU outputs
    assert model.split("classifier.0").tensors[0].signed  # a linear layer


def test_torchvision_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    source = load_model("resnet50", pretrained=False, fold_batch_norm=False)  # torchvision's keys, batch norms too
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(_resnet_state(source), path)
    fold_batch_norms(source.network)  # as load_model does
    model = load_model("resnet50", weights=path)
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(model(x), source(x))
    (tmp_path / "broken.pth").write_bytes(b"not a state dict")
    with pytest.raises(WeightsError, match="not a PyTorch state dict"):
        load_model("resnet50", weights=tmp_path / "broken.pth")


def _resnet_state(model) -> dict:
    # Rebuild torchvision's key names from the stages (conv1, bn1, layer1..4, fc).
    import torchvision

    reference = torchvision.models.resnet50(weights=None)
    stage_modules = dict(zip(model.network.names, model.network.stages))
    reference.conv1, reference.bn1 = stage_modules["relu"][0], stage_modules["relu"][1]
    for name in ("layer1", "layer2", "layer3", "layer4", "fc"):
        setattr(reference, name, stage_modules[name])
    return reference.state_dict()


def test_efficientnet_lite0_classifies_real_images():
    from tests.conftest import shared_path

    folder = shared_path("imagenet-sample")
    try:
        model = load_model("efficientnet-lite0")
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    from splitinfer.dnn.eval_images import read_image

    hits = 0
    files = sorted(Path(folder).glob("*.JPEG"))[:8]
    lines = (folder / "labels.csv").read_text().splitlines()[1:]
    truth = {line.split(",")[0]: int(line.split(",")[1]) for line in lines}
    for path in files:
        x, info = model.preprocess(read_image(path))
        split = model.split(model.default_cut)
        scores = model.postprocess(split.tail(split.head(x)), info)
        assert len(scores) == 5 and scores[0].score >= scores[1].score
        hits += scores[0].class_id == truth[path.name]
    assert hits >= 5  # about 80 % top-1 on these images


def test_exported_names_do_not_drift():
    import splitinfer.dnn as dnn

    assert set(dnn.__all__) == {
        "CfgError", "ClassScore", "Detection", "ImageDecodeError", "MissingDependencyError", "ModelError",
        "ModelSpec", "PreprocessInfo", "Split", "SplitModel", "TensorSpec", "WeightsError",
        "WeightsUnavailableError", "get_spec", "list_models", "load_model",
    }
    assert all(issubclass(getattr(dnn, n), dnn.ModelError) for n in dnn.__all__ if n.endswith("Error") and n != "ModelError")
