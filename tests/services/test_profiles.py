"""One codec configuration per stream: flags, a file or the model's shipped profile resolve to one CodecProfile,
and the cloud refuses a stream whose profile was made for another model, cut or tensors."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from splitinfer.codec import CodecProfile, Coder, Quantizer
from splitinfer.errors import ServiceError
from splitinfer.services.profiles import (
    CodecSettings,
    ProfileMismatchError,
    check_stream_profile,
    packaged_profile,
    resolve_profile,
)
from tests.services.conftest import MODEL, run
from tests.services.test_bad_input import Stream, start, with_stream


def test_no_flags_take_the_profile_shipped_for_the_default_cut(model) -> None:
    shipped = CodecProfile.load(packaged_profile(MODEL))
    profile = resolve_profile(model, None, CodecSettings())
    assert (profile.model, profile.cut) == (MODEL, shipped.cut)
    assert profile.quantizer == shipped.quantizer and profile.coder == shipped.coder


def test_a_cut_without_a_shipped_profile_uses_the_shipped_ranges_respaced_to_levels(model) -> None:
    profile = resolve_profile(model, "layer34", CodecSettings(levels=5))
    assert profile.cut == "34" and profile.quantizer is None
    assert list(profile.tensors) == ["layer34"] and profile.tensors["layer34"].levels == 5
    ranges = CodecProfile.load(packaged_profile(MODEL, "ranges")).tensors["layer34"]
    assert (profile.tensors["layer34"].clip_min, profile.tensors["layer34"].clip_max) == (ranges.clip_min,
                                                                                         ranges.clip_max)
    open_cut = resolve_profile(model, "60", CodecSettings(levels=8))  # no range shipped for layer60: percentiles
    assert open_cut.quantizer_for("layer60") is None


def test_flags_override_and_conflicts_are_refused(model, tmp_path: Path) -> None:
    clip = resolve_profile(model, "80", CodecSettings(levels=6, clip_min=-4, clip_max=4, coder="BIN_CONTEXTS",
                                                      intra_period=5))
    assert clip.quantizer == Quantizer.uniform(-4, 4, 6) and clip.coder is Coder.BIN_CONTEXTS and clip.intra_period == 5
    path = tmp_path / "p.json"
    CodecProfile(Quantizer.uniform(-8, 8, 7), model=MODEL, cut="80").save(path)
    with pytest.raises(ServiceError, match="--profile sets the quantizers"):
        resolve_profile(model, None, CodecSettings(profile=str(path), levels=4))
    with pytest.raises(ProfileMismatchError, match="made for cut 80, not 60"):
        resolve_profile(model, "60", CodecSettings(profile=str(path)))
    with pytest.raises(ServiceError, match="pass both --clip-min and --clip-max"):
        resolve_profile(model, None, CodecSettings(clip_min=1.0))
    with pytest.raises(ServiceError, match="does not exist"):
        resolve_profile(model, None, CodecSettings(profile=str(tmp_path / "missing.json")))
    with pytest.raises(ServiceError, match="invalid --cut"):
        resolve_profile(model, "layer9999", CodecSettings(levels=4))
    other = tmp_path / "other.json"
    CodecProfile(Quantizer.uniform(-8, 8, 7), model="resnet50").save(other)
    with pytest.raises(ProfileMismatchError, match="made for model resnet50, not yolo-fastest-1.1-xl"):
        resolve_profile(model, None, CodecSettings(profile=str(other)))


def test_a_version_1_profile_file_still_loads(model, tmp_path: Path) -> None:
    data = json.loads(CodecProfile(Quantizer.uniform(-8, 8, 7), model=MODEL, cut="80").to_json())
    data["id"] = "splitinfer.codec-profile/1"
    for field in ("tensors", "rdo_lambda", "rdo_weights"):  # fields version 1 did not have
        data.pop(field, None)
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(data))
    assert resolve_profile(model, None, CodecSettings(profile=str(path))).quantizer == Quantizer.uniform(-8, 8, 7)


def test_the_cloud_check_refuses_other_models_cuts_and_tensors() -> None:
    profile = CodecProfile(Quantizer.uniform(-8, 8, 7), model=MODEL, cut="80")
    assert check_stream_profile("", MODEL, "80", ["layer80"]) is None
    assert check_stream_profile(profile.to_json(), MODEL, "80", ["layer80"]) == profile
    with pytest.raises(ProfileMismatchError, match="made for cut 80, but the stream runs cut 60"):
        check_stream_profile(profile.to_json(), MODEL, "60", ["layer60"])
    with pytest.raises(ProfileMismatchError, match="made for model"):
        check_stream_profile(profile.to_json(), "resnet50", "80", ["layer80"])
    named = CodecProfile(None, tensors={"layer22": Quantizer.uniform(0, 1, 4)})
    with pytest.raises(ProfileMismatchError, match=r"names tensors \['layer22'\]"):
        check_stream_profile(named.to_json(), MODEL, "80", ["layer80"])


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = error_details_pb2.ErrorInfo()
    assert rpc_status.from_call(error).details[0].Unpack(info)
    return info.reason


@pytest.mark.parametrize(("profile_json", "code", "reason", "says"), [
    (CodecProfile(Quantizer.uniform(-8, 8, 7), model=MODEL, cut="60").to_json(), grpc.StatusCode.FAILED_PRECONDITION,
     "PROFILE_MISMATCH", "made for cut 60"),
    ('{"id": "splitinfer.codec-profile/2", "quantizer": 7}', grpc.StatusCode.INVALID_ARGUMENT, "BAD_CODEC_PROFILE",
     "'quantizer' must be an object"),
    ("x" * 300_000, grpc.StatusCode.INVALID_ARGUMENT, "BAD_CODEC_PROFILE", "at most"),
])
def test_the_cloud_refuses_a_stream_whose_profile_does_not_fit(engine, profile_json, code, reason, says) -> None:
    async def scenario(channel, server):
        stream = Stream(channel)
        request = start(cut="80")
        request.start.codec_profile = profile_json
        await stream.send(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.receive()
        good = Stream(channel)  # the cloud goes on serving
        await good.send(start(stream_id="cam-2", cut="80"))
        accepted = await good.receive()
        return caught.value, accepted

    error, accepted = run(with_stream(engine, scenario))
    assert error.code() == code and says in error.details() and _reason(error) == reason
    assert accepted.HasField("accepted")


def test_the_files_found_by_name_are_the_ones_the_registry_names() -> None:
    """shipped_file finds a model's shipped files by their names, without the registry; the registry's spec must
    name the same files (or none, where none is shipped)."""
    from splitinfer import dnn
    from splitinfer.services.profiles import shipped_file

    folder = Path(dnn.__file__).resolve().parent
    for name in dnn.list_models():
        spec = dnn.get_spec(name)
        for kind, relative in (("default", spec.default_profile), ("ranges", spec.ranges_profile),
                               ("ladder", spec.default_ladder)):
            named = folder / relative if relative and (folder / relative).is_file() else None
            assert shipped_file(name, kind) == named, (name, kind)
            assert packaged_profile(name, kind) == named, (name, kind)
    assert packaged_profile("no-such-model") is None


def test_the_pipeline_uses_what_preflight_read_and_does_not_read_it_again(model, video, tmp_path: Path) -> None:
    """One resolution: check_edge reads and checks the --profile or --ladder file (without torch) and returns it;
    build_pipeline builds from that, so the file is read once (here: it is gone before the pipeline is built)."""
    from splitinfer.services.edge.app import EdgeSettings, build_pipeline
    from splitinfer.services.edge.preflight import check_edge

    path = tmp_path / "p80.json"
    CodecProfile(Quantizer.uniform(-16.0, 16.0, 12), model=MODEL, cut="80").save(path)
    fixed = EdgeSettings(source=str(video), model=MODEL, profile=str(path), cloud="127.0.0.1:1")
    resolved = check_edge(fixed, connect_timeout_s=0)
    assert resolved.codec is not None and resolved.codec.profile is not None and resolved.codec.profile.cut == "80"
    ladder = tmp_path / "ladder.json"
    ladder.write_bytes(packaged_profile(MODEL, "ladder").read_bytes())
    rated = EdgeSettings(source=str(video), model=MODEL, rate_kbps=64.0, ladder=str(ladder), cloud="127.0.0.1:1")
    resolved_rated = check_edge(rated, connect_timeout_s=0)
    path.unlink()
    ladder.unlink()
    pipeline = build_pipeline(fixed, model, resolved)
    assert pipeline.cut == "80" and pipeline.quantizer("layer80").levels == 12
    assert build_pipeline(rated, model, resolved_rated).rate.ladder.points == resolved_rated.codec.ladder.points
    with pytest.raises(ServiceError, match="does not exist"):  # unresolved settings are resolved (read) then
        build_pipeline(fixed, model)
