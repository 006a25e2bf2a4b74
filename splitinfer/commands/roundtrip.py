"""`splitinfer roundtrip`: code a real activation tensor and decode it again; print size, rate, error and time."""

from __future__ import annotations

import argparse
from pathlib import Path

from splitinfer.commands import coder_name
from splitinfer.errors import ConfigError
from splitinfer.sample_data import shared_data_dir
from splitinfer.settings import Option

NAME = "roundtrip"
HELP = "Codec round trip on a real activation tensor: shape, coded bytes, bits per element, error, time."



def _optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("", "none", "auto") else float(text)


OPTIONS = [
    Option("activations", "npz file of activation tensors (default: ../shared/data/activations/yolo-fastest-1.1-xl.npz, "
           "or $SPLITINFER_SHARED_DATA/activations/...)", str, None),
    Option("tensor", "key of the tensor in the npz file", str, "layer80"),
    Option("sample", "index of the sample along the first dimension", int, 0),
    Option("levels", "number of quantizer levels N (2..256)", int, 8),
    Option("clip-min", "lower clip value (default: the --clip-percentile low percentile of the tensor)",
           _optional_float, None),
    Option("clip-max", "upper clip value (default: the --clip-percentile high percentile of the tensor)",
           _optional_float, None),
    Option("clip-percentile", "percentile p: the default clip range is [p-th, (100-p)-th] percentile", float, 0.1),
    Option("coder", "entropy coder (auto, bin-contexts, neighbour-contexts, signed-neighbour-contexts; any case, "
           "- or _); auto picks the measured best for the tensor kind", coder_name, "auto"),
    Option("repeat", "timed repetitions (the median is printed)", int, 5),
]


def _activations_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    return shared_data_dir() / "activations" / "yolo-fastest-1.1-xl.npz"


def _load_tensor(args: argparse.Namespace):
    import numpy as np

    path = _activations_path(args.activations)
    if not path.exists():
        if args.activations:
            raise ConfigError(f"--activations {path} does not exist; pass an .npz file of activation tensors.")
        rng = np.random.default_rng(0)
        x = rng.normal(0.0, 2.0, size=(1, 48, 20, 20)).astype(np.float32)
        return x, f"SYNTHETIC normal(0, 2) tensor: {path} is absent (set --activations or SPLITINFER_SHARED_DATA)"
    try:
        with np.load(path) as data:
            names = list(data.files)
            stack = data[args.tensor] if args.tensor in names else None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} as an .npz file: {exc}") from exc
    if stack is None:
        raise ConfigError(f"--tensor {args.tensor!r} is not in {path}; it holds {', '.join(names)}.")
    if stack.dtype.kind != "f" or stack.ndim < 1:
        raise ConfigError(f"--tensor {args.tensor!r} in {path} is not a float tensor (dtype {stack.dtype}).")
    if not 0 <= args.sample < stack.shape[0]:
        raise ConfigError(f"--sample {args.sample} is out of range: {args.tensor} has {stack.shape[0]} samples.")
    return stack[args.sample : args.sample + 1], f"{path} [{args.tensor}] sample {args.sample}"


def run(args: argparse.Namespace) -> int:
    import statistics
    import time

    import numpy as np

    from splitinfer.codec import Coder, Quantizer, decode, encode, parse_coder

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {args.repeat}.")
    coder = parse_coder(args.coder)
    if coder is Coder.TEMPORAL_CONTEXTS:
        raise ConfigError("--coder temporal-contexts needs the previous frame of a video; the round trip codes one "
                          "tensor: pick an intra coder (or auto).")
    if not 0.0 <= args.clip_percentile < 50.0:
        raise ConfigError(f"--clip-percentile must be in [0, 50), got {args.clip_percentile}.")
    x, source = _load_tensor(args)
    low, high = np.percentile(x, [args.clip_percentile, 100.0 - args.clip_percentile])
    clip_min = float(low) if args.clip_min is None else args.clip_min
    clip_max = float(high) if args.clip_max is None else args.clip_max
    quantizer = Quantizer.uniform(clip_min, clip_max, args.levels)

    start = time.perf_counter()
    tensor = encode(x, quantizer, coder=coder, name=args.tensor)
    first_encode = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode(tensor)
    first_decode = time.perf_counter() - start
    encode_times, decode_times = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        tensor = encode(x, quantizer, coder=coder, name=args.tensor)
        encode_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        decoded = decode(tensor)
        decode_times.append(time.perf_counter() - start)

    expected = quantizer.dequantize(quantizer.quantize(x))
    error_q = np.abs(decoded.astype(np.float64) - expected)
    error_x = decoded.astype(np.float64) - x
    elements = tensor.elements
    t_enc, t_dec = statistics.median(encode_times), statistics.median(decode_times)
    print(f"tensor        {source}")
    print(f"shape         {tuple(x.shape)} ({elements} elements, {4 * elements} bytes as float32)")
    print(f"quantizer     {quantizer.levels} uniform levels over [{quantizer.clip_min:.4g}, {quantizer.clip_max:.4g}]")
    print(f"coder         {tensor.coder.name} (version {tensor.coder_version})")
    print(f"coded bytes   {tensor.nbytes} ({32 / max(tensor.bits_per_element, 1e-12):.1f}x smaller than float32)")
    print(f"bits/element  {tensor.bits_per_element:.4f}")
    print(f"vs quantizer  MSE {np.mean(error_q**2):.3g}, max error {error_q.max(initial=0):.3g} (lossless: both 0)")
    print(f"vs original   MSE {np.mean(error_x**2):.4g}, max error {np.abs(error_x).max(initial=0):.4g}")
    print(f"encode        {t_enc * 1e3:.3f} ms ({elements / t_enc / 1e6:.1f} M elements/s), first call "
          f"{first_encode * 1e3:.1f} ms")
    print(f"decode        {t_dec * 1e3:.3f} ms ({elements / t_dec / 1e6:.1f} M elements/s), first call "
          f"{first_decode * 1e3:.1f} ms")
    return 0
