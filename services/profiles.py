"""The codec configuration of a stream, resolved once: flags, a profile file, or the model's shipped profile.

Edge side, `resolve_profile` turns what the user said into one `CodecProfile` with its model and cut set:

    --profile FILE                  that file (its cut is the default cut; --coder, --intra-period override)
    nothing                         the profile shipped with the model, if it was made for the cut
    --clip-min/--clip-max [--levels] one uniform quantizer for every tensor
    --levels, or a cut without a shipped profile: the model's shipped clip ranges per tensor re-spaced
                                    to --levels (DEFAULT_LEVELS) levels; a tensor without a range is
                                    quantized over its first frame's percentiles by the edge

`resolve_codec` does the part that needs no model (reads the --profile or ladder file and checks it against the
model and cut) before the model loads; its `ResolvedCodec` finishes with the model (`profile_for`, `ladder_for`)
without reading or checking the file again. `shipped_file` is the one place that finds a model's shipped files.

Cloud side, `check_stream_profile` reads the profile a StreamStart carries and refuses one made for
another model or cut.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from splitinfer.codec import CodecError, CodecProfile, Quantizer, parse_coder
from splitinfer.codec.ladder import CodecLadder
from splitinfer.errors import ServiceError
from splitinfer.settings import DEFAULT_MODEL as DEFAULT_MODEL

DEFAULT_LEVELS = 8
# A profile carried in a StreamStart larger than this is refused before it is parsed.
MAX_PROFILE_JSON_BYTES = 256 * 1024


class ProfileMismatchError(ServiceError):
    """The codec profile was made for another model, cut or tensors than it is used with."""


@dataclass(frozen=True, kw_only=True)
class CodecSettings:
    """The feature codec flags of `splitinfer edge` (None: not given); EdgeSettings extends them."""

    profile: str | None = None
    levels: int | None = None
    clip_min: float | None = None
    clip_max: float | None = None
    coder: str | None = None
    intra_period: int | None = None

    @classmethod
    def of(cls, settings: Any) -> CodecSettings:
        """The codec flags of a settings object that has them under the same names (EdgeSettings)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    @property
    def quantizer_flags(self) -> bool:
        return self.levels is not None or self.clip_min is not None or self.clip_max is not None

    def check_rate_control(self) -> None:
        """--rate-kbps picks among a ladder's points: refuse the flags that fix a profile instead."""
        if self.profile or self.quantizer_flags or self.coder:
            raise ServiceError("--rate-kbps chooses among the points of a codec ladder: drop --profile, --levels, "
                               "--clip-min/--clip-max and --coder (pass --ladder to use another ladder).")


@dataclass(frozen=True)
class ResolvedCodec:
    """The features partition's codec as far as it resolves without the model (and torch): the --profile file or
    the ladder read once and checked against the model and cut. `profile_for`/`ladder_for` finish it with the
    loaded model; nothing is read or checked twice."""

    model: str
    cut: str | None
    settings: CodecSettings
    rated: bool = False  # rate control: a ladder (else one fixed profile)
    profile: CodecProfile | None = None  # --profile, read and checked
    ladder: CodecLadder | None = None  # with rated: --ladder or the shipped one, read and checked
    ladder_path: str | None = None

    def profile_for(self, model: Any) -> CodecProfile:
        return resolve_profile(model, self.cut, self.settings, loaded=self.profile)

    def ladder_for(self, model: Any) -> CodecLadder:
        return resolve_ladder(model, self.cut, self.ladder_path, self.settings.intra_period, loaded=self.ladder)


def resolve_codec(model_name: str, cut: str | None, settings: CodecSettings, *, rated: bool = False,
                  ladder: str | None = None) -> ResolvedCodec:
    """The torch-free part of resolving the codec flags: read --profile (or, with `rated`, --ladder or the shipped
    ladder) and refuse one made for another model or cut. Raises ServiceError saying what to change."""
    if not rated:
        profile = None
        if settings.profile:
            profile = load_profile(settings.profile)
            check_matches(profile, model_name, cut, f"codec profile {settings.profile!r}")
        return ResolvedCodec(model_name, cut, settings, profile=profile)
    settings.check_rate_control()
    path = ladder or shipped_file(model_name, "ladder")
    if path is None:  # the model registry (after torch loads) says why there is none
        return ResolvedCodec(model_name, cut, settings, rated=True)
    loaded = load_ladder(str(path))
    check_matches(loaded.points[0], model_name, cut, f"codec ladder {str(path)!r}")
    return ResolvedCodec(model_name, cut, settings, rated=True, ladder=loaded, ladder_path=str(path))


def canonical_cut(cut: str | int) -> str:
    """A cut name as profiles record it ("layer80" and "80" are the same Darknet cut)."""
    return str(cut).removeprefix("layer")


def packaged_profile(model_name: str, kind: str = "default") -> Path | None:
    """A file shipped with a registered model (`shipped_file`); None for a model the registry does not know."""
    from splitinfer import dnn

    try:
        dnn.get_spec(model_name)
    except dnn.ModelError:
        return None
    return shipped_file(model_name, kind)


def shipped_file(model_name: str, kind: str) -> Path | None:
    """The one place that finds a file shipped with a model: dnn/profiles/<model>.json (its "default" profile),
    else dnn/profiles/<model>-<kind>.json ("ranges", "ladder", "partitions"); None when it ships none. Needs no
    model registry (and no torch), so that preflight can use it before the model loads."""
    import importlib.util

    spec = importlib.util.find_spec("splitinfer.dnn")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = model_name if kind == "default" else f"{model_name}-{kind}"
    path = Path(list(spec.submodule_search_locations)[0]) / "profiles" / f"{name}.json"
    return path if path.is_file() else None


def load_profile(path: str | Path) -> CodecProfile:
    """A profile file, or ServiceError saying what is wrong with it."""
    if not Path(path).is_file():
        raise ServiceError(f"codec profile {str(path)!r} does not exist: check --profile.")
    try:
        return CodecProfile.load(path)
    except CodecError as exc:
        raise ServiceError(f"codec profile {str(path)!r} is invalid: {exc}") from exc


# What to say when a profile was made for another model or cut ({what}, {recorded}, {wanted}): on the edge, and
# in the cloud about the profile a StreamStart carries.
EDGE_HINTS = {"model": "{what} was made for model {recorded}, not {wanted}: pass --model {recorded}, or calibrate "
                       "one for {wanted} (splitinfer calibrate).",
              "cut": "{what} was made for cut {recorded}, not {wanted}: drop --cut to use its cut, or calibrate one "
                     "for cut {wanted}."}
STREAM_HINTS = {"model": "{what} was made for model {recorded!r}, but the stream runs {wanted!r}: start the edge "
                         "with a profile for {wanted}.",
                "cut": "{what} was made for cut {recorded}, but the stream runs cut {wanted}: start the edge with a "
                       "profile for cut {wanted} (or without --cut)."}


def check_matches(profile: CodecProfile, model_name: str, cut: str | None, what: str = "the codec profile",
                  hints: dict[str, str] = EDGE_HINTS) -> None:
    """Refuse a profile made for another model, or for another cut than the one asked for (None: any)."""
    wrong = profile.mismatch(model_name, cut)
    if wrong is not None:
        wanted = model_name if wrong == "model" else cut
        raise ProfileMismatchError(hints[wrong].format(what=what, recorded=getattr(profile, wrong), wanted=wanted))


def load_ladder(path: str | Path) -> CodecLadder:
    """A codec ladder file, or ServiceError saying what is wrong with it."""
    if not Path(path).is_file():
        raise ServiceError(f"codec ladder {str(path)!r} does not exist: check --ladder (splitinfer calibrate --ladder "
                           "writes one).")
    try:
        return CodecLadder.load(path)
    except CodecError as exc:
        raise ServiceError(f"codec ladder {str(path)!r} is invalid: {exc}") from exc


def resolve_profile(model: Any, cut: str | None, settings: CodecSettings,
                    loaded: CodecProfile | None = None) -> CodecProfile:
    """The one CodecProfile a stream of `model` (a loaded SplitModel) uses, with `model`, `cut` and the tensors
    of that cut set (see the module docstring for the rules); `loaded`: the --profile file, already read and
    checked (resolve_codec)."""
    model_name, default_cut = model.name, model.default_cut
    try:
        coder = parse_coder(settings.coder)
    except CodecError as exc:
        raise ServiceError(f"invalid --coder: {exc}") from exc
    if settings.intra_period is not None and settings.intra_period < 1:
        raise ServiceError(f"--intra-period must be at least 1 frame, got {settings.intra_period}.")
    if settings.profile:
        if settings.quantizer_flags:
            raise ServiceError("--profile sets the quantizers: drop --levels/--clip-min/--clip-max, or drop --profile.")
        profile = loaded if loaded is not None else load_profile(settings.profile)
    else:
        shipped_path = None if settings.quantizer_flags else packaged_profile(model_name)
        shipped = CodecProfile.load(shipped_path) if shipped_path is not None else None
        if shipped is not None and shipped.mismatch(None, cut) == "cut":
            shipped = None  # the shipped profile is for another cut
        profile = shipped if shipped is not None else _profile_from_flags(model_name, settings)
    if loaded is None:
        check_matches(profile, model_name, cut)
    try:
        split = model.split(cut if cut is not None else profile.cut or default_cut)
    except Exception as exc:  # noqa: BLE001 - the model says why (ModelError)
        raise ServiceError(f"invalid --cut: {exc}") from exc
    names = [spec.name for spec in split.tensors]
    unknown = sorted(set(profile.tensors) - set(names))
    if unknown and profile.cut is not None:
        raise ProfileMismatchError(f"the codec profile names tensors {unknown} that cut {split.cut} does not send "
                                   f"(it sends {names}): calibrate a profile for this cut.")
    changes: dict = {"model": model_name, "cut": canonical_cut(split.cut),
                     "tensors": {name: q for name, q in profile.tensors.items() if name in names}}
    if coder is not None:
        changes["coder"] = coder
    if settings.intra_period is not None:
        changes["intra_period"] = settings.intra_period
    try:
        return profile.replace(**changes)
    except CodecError as exc:
        raise ServiceError(f"invalid codec settings: {exc}") from exc


def resolve_ladder(model: Any, cut: str | None, path: str | None, intra_period: int | None = None,
                   loaded: CodecLadder | None = None) -> CodecLadder:
    """The codec ladder for rate control: `path` (--ladder) or the model's shipped one, checked against the cut;
    `loaded`: that ladder, already read and checked (resolve_codec)."""
    if loaded is None and path is None:
        shipped = packaged_profile(model.name, "ladder")
        if shipped is None:
            raise ServiceError(f"{model.name} ships no codec ladder: make one with `splitinfer calibrate --ladder` and "
                               "pass it with --ladder.")
        path = str(shipped)
    ladder = loaded if loaded is not None else load_ladder(str(path))
    if ladder.cut is None:
        raise ServiceError(f"the codec ladder {path!r} names no cut: make it with splitinfer calibrate --ladder.")
    if loaded is None:
        check_matches(ladder.points[0], model.name, cut, f"the codec ladder {path!r}")
    if intra_period is not None:
        if intra_period < 1:
            raise ServiceError(f"--intra-period must be at least 1 frame, got {intra_period}.")
        ladder = CodecLadder(tuple(p.replace(intra_period=intra_period) for p in ladder.points), ladder.figures)
    return ladder


def _profile_from_flags(model_name: str, settings: CodecSettings) -> CodecProfile:
    levels = DEFAULT_LEVELS if settings.levels is None else settings.levels
    if (settings.clip_min is None) != (settings.clip_max is None):
        raise ServiceError("pass both --clip-min and --clip-max (or neither, to use the model's clip ranges).")
    if not 2 <= levels <= 256:
        raise ServiceError(f"--levels must be within 2..256, got {levels}.")
    try:
        if settings.clip_min is not None and settings.clip_max is not None:
            return CodecProfile(Quantizer.uniform(settings.clip_min, settings.clip_max, levels))
        ranges = packaged_profile(model_name, "ranges")
        tensors = {} if ranges is None else CodecProfile.load(ranges).tensors
        return CodecProfile(None, tensors={name: Quantizer.uniform(q.clip_min, q.clip_max, levels)
                                           for name, q in tensors.items()})
    except CodecError as exc:
        raise ServiceError(f"invalid quantizer settings: {exc}") from exc


def check_stream_profile(profile_json: str, model_name: str, cut: str,
                         tensor_names: list[str]) -> CodecProfile | None:
    """The profile a StreamStart carries (None when it carries none), checked against the stream's model and cut.

    Raises CodecError for a malformed profile, ProfileMismatchError for one made for another model, cut or tensors."""
    if not profile_json:
        return None
    if len(profile_json) > MAX_PROFILE_JSON_BYTES:
        raise CodecError(f"the codec profile is {len(profile_json)} characters; at most {MAX_PROFILE_JSON_BYTES} "
                         "are read (drop its figures).")
    profile = CodecProfile.from_json(profile_json)
    check_matches(profile, model_name, cut, "the stream's codec profile", STREAM_HINTS)
    unknown = sorted(set(profile.tensors) - set(tensor_names))
    if unknown:
        raise ProfileMismatchError(f"the stream's codec profile names tensors {unknown} that cut {cut} does not send "
                                   f"(it sends {sorted(tensor_names)}): calibrate a profile for this cut.")
    return profile
