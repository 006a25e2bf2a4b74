"""Where and in which precision a model runs: `--device auto|cpu|cuda|cuda:N` and `--precision fp32|fp16|bf16`.

`resolve_device` turns the flag into a torch.device and says clearly when the device is not there (before
any model is loaded); `place_model` moves a SplitModel's network there in the chosen dtype, channels-last
on CUDA (cuDNN's fast convolution layout), and `to_device` moves host tensors through pinned memory.
"""

from __future__ import annotations

import re

import torch

from splitinfer.dnn.errors import ModelError

DEVICE_CHOICES_HELP = "auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N"
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::(\d+))?")


class DeviceError(ModelError):
    """The requested device or precision is not available here."""


def resolve_device(spec: str) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> a torch.device that exists; DeviceError says what to pass instead."""
    text = (spec or "auto").strip().lower()
    match = _DEVICE_PATTERN.fullmatch(text)
    if match is None:
        raise DeviceError(f"unknown device {spec!r}: use {DEVICE_CHOICES_HELP}.")
    if text == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if available else torch.device("cpu")
    if not available:
        why = ("this torch is a CPU-only build: install a CUDA build of torch" if torch.version.cuda is None else
               f"this torch is built for CUDA {torch.version.cuda} but finds no GPU: check the NVIDIA driver, "
               "CUDA_VISIBLE_DEVICES and the container's GPU request")
        raise DeviceError(f"device {spec!r} was asked for, but torch sees no CUDA GPU here ({why}), or pass "
                          "--device cpu (or auto).")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device {spec!r} does not exist: torch sees {count} CUDA GPU(s), cuda:0..cuda:{count - 1}.")
    return torch.device("cuda", index)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """`fp32`, `fp16` or `bf16` -> a dtype the device can run convolutions in; DeviceError otherwise."""
    dtype = PRECISIONS.get((name or "fp32").strip().lower())
    if dtype is None:
        raise DeviceError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}.")
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{torch.cuda.get_device_name(device)} has no bf16 support: use --precision fp16 or fp32.")
    return dtype


def channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """Channels-last helps where cuDNN's tensor-core convolutions run (CUDA); on the CPU it measured no better."""
    return device.type == "cuda"


def place_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move a model to `device` in `dtype` (channels-last on CUDA), in place; returns it."""
    model.to(device=device, dtype=dtype)
    if channels_last(device, dtype):
        model.to(memory_format=torch.channels_last)
    return model


def pinned_empty(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A float32 host buffer to fill before a copy to `device`: pinned for CUDA (an async copy), plain otherwise."""
    return torch.empty(shape, dtype=torch.float32, pin_memory=device.type == "cuda")


def to_device(host: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A (pinned) host tensor on `device` in `dtype`, channels-last where the model is; no copy on the CPU in fp32."""
    tensor = host.to(device, non_blocking=True) if device.type != "cpu" else host
    if tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if tensor.dim() == 4 and channels_last(device, dtype):
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing and warm-up need it; a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
