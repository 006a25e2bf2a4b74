"""The cloud's self-description for GetServerMetadata: model, cuts, class list, tensors, coders and limits."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from splitinfer.codec.entropy import Coder, coder_versions
from splitinfer.v1 import inference_pb2


def package_version() -> str:
    """The installed splitinfer version ("unknown" when run from a tree that was never installed)."""
    try:
        return metadata.version("splitinfer")
    except metadata.PackageNotFoundError:
        return "unknown"


def server_metadata(engine: Any, split: Any,
                    limits: inference_pb2.ServerLimits) -> inference_pb2.GetServerMetadataResponse:
    """The GetServerMetadata answer for `engine` (a TailEngine) at `split` (the requested cut)."""
    model = engine.model
    width, height = model.input_size
    response = inference_pb2.GetServerMetadataResponse(name="splitinfer", version=package_version(), limits=limits)
    response.models.add(name=engine.model_name, task=model.task, input_width=width, input_height=height,
                        default_cut=model.default_cut, cuts=model.cuts(), class_names=model.class_names)
    response.cut.cut = split.cut
    for spec in split.tensors:
        response.cut.tensors.add(name=spec.name, shape=list(spec.shape), signed=spec.signed)
    for coder in Coder:
        for version in coder_versions(coder):
            response.coders.add(coder=int(coder), version=version)
    return response
