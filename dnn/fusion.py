"""Inference-ready networks: fold each batch norm into the convolution before it.

In eval mode a batch norm is a per-channel affine map, so conv -> bn equals one convolution with scaled
weights and a shifted bias: one pass over the feature map instead of two (Darknet and ResNet run every
convolution through one). Only exact `nn.BatchNorm2d` modules are folded; subclasses that add work of their
own (timm's BatchNormAct2d) stay as they are.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Attribute pairs that torchvision's residual blocks apply in sequence: out = bnN(convN(x)).
_PAIRED_ATTRIBUTES = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _foldable(conv: object, bn: object) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and conv.out_channels == bn.num_features)


def fold_batch_norms(network: nn.Module) -> int:
    """Fold every conv -> BatchNorm2d pair of `network` (eval mode) in place; returns how many were folded.

    Pairs are adjacent children of an nn.Sequential (Darknet blocks, ResNet stems and shortcuts) or the
    conv1/bn1 .. conv3/bn3 attributes of a torchvision residual block."""
    if network.training:
        raise ValueError("fold_batch_norms needs a network in eval mode (call .eval() first): in training mode a "
                         "batch norm uses the batch's statistics, which no folded weight can reproduce.")
    folded = 0
    with torch.no_grad():
        for module in list(network.modules()):
            if isinstance(module, nn.Sequential):
                names = list(module._modules)
                pairs = [(a, b) for a, b in zip(names, names[1:]) if _foldable(module._modules[a], module._modules[b])]
                for first, second in pairs:  # disjoint: a BatchNorm2d is never also the conv of a pair
                    conv, bn = cast(nn.Conv2d, module._modules[first]), cast(nn.BatchNorm2d, module._modules[second])
                    module._modules[first] = fuse_conv_bn_eval(conv, bn)
                    del module._modules[second]
                    folded += 1
                continue
            for conv_name, bn_name in _PAIRED_ATTRIBUTES:
                first_module, second_module = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if _foldable(first_module, second_module):
                    setattr(module, conv_name, fuse_conv_bn_eval(cast(nn.Conv2d, first_module),
                                                                 cast(nn.BatchNorm2d, second_module)))
                    setattr(module, bn_name, nn.Identity())
                    folded += 1
    return folded
