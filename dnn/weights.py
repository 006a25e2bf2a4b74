"""Find a model file: an explicit path, then $SPLITINFER_WEIGHTS_DIR, then the cache, then the sample data
(../shared/data/models/* beside the checkout, or $SPLITINFER_SHARED_DATA/models/*), then a verified download.

Every command that loads a model (edge, cloud, eval, calibrate, demo) finds it this way, and the error when
none has it lists every place tried.

Downloads go to a temporary file beside the cache entry, show a progress bar, and are moved into place
only after their SHA-256 (or the hash prefix in a torchvision file name) matches.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from splitinfer.dnn.errors import WeightsError, WeightsUnavailableError
from splitinfer.sample_data import SHARED_DATA_ENV, shared_data_dir

WEIGHTS_DIR_ENV = "SPLITINFER_WEIGHTS_DIR"
CACHE_DIR_ENV = "SPLITINFER_CACHE_DIR"
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RemoteFile:
    """A file that a model needs: its name, where to download it, and its SHA-256 (full hex or a prefix)."""

    filename: str
    url: str
    sha256: str

    def matches(self, digest: str) -> bool:
        return digest.startswith(self.sha256.lower())


def cache_dir() -> Path:
    """$SPLITINFER_CACHE_DIR, else $XDG_CACHE_HOME/splitinfer, else ~/.cache/splitinfer."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "splitinfer"


def resolve_file(remote: RemoteFile, explicit: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The local path of `remote`: explicit path (file or folder), $SPLITINFER_WEIGHTS_DIR, cache, sample data,
    download."""
    if explicit is not None:
        path = Path(explicit)
        if path.is_dir():
            path = path / remote.filename
        if not path.is_file():
            raise WeightsError(f"{path} does not exist; pass the path of {remote.filename} or a folder that holds it.")
        return path
    tried = local_candidates(remote.filename)
    for path in tried:
        if path.is_file():
            return path
    cached = cache_dir() / remote.filename
    if not download:
        raise WeightsUnavailableError(_unavailable(remote, tried, cached, "downloads are disabled"))
    return _download(remote, cached, tried)


def local_candidates(filename: str) -> list[Path]:
    """Where `filename` is looked for on this machine, in order: $SPLITINFER_WEIGHTS_DIR, the cache, then each
    folder of the sample data's models/ (sorted, so the order is the same everywhere)."""
    places = []
    weights_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if weights_dir:
        places.append(Path(weights_dir) / filename)
    places.append(cache_dir() / filename)
    models = shared_data_dir() / "models"
    folders = sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
    places.extend(folder / filename for folder in folders or [models])
    return places


def _unavailable(remote: RemoteFile, tried: list[Path], cached: Path, reason: str) -> str:
    weights_dir = "" if os.environ.get(WEIGHTS_DIR_ENV) else f" (${WEIGHTS_DIR_ENV} is not set)"
    return (
        f"{remote.filename} is not on this machine and could not be downloaded from {remote.url} ({reason}). "
        f"Looked in: {', '.join(str(p) for p in tried)}{weights_dir}. Download it yourself and pass its path "
        f"with --weights (weights=... in Python), put it in the folder named by ${WEIGHTS_DIR_ENV}, copy it to "
        f"{cached}, or point ${SHARED_DATA_ENV} at a data folder whose models/ holds it."
    )


def _download(remote: RemoteFile, destination: Path, tried: list[Path]) -> Path:
    from tqdm import tqdm

    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the cache folder {destination.parent}: {exc.strerror or exc}; set ${CACHE_DIR_ENV}.") from exc
    partial = destination.with_name(destination.name + ".part")
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(remote.url, headers={"User-Agent": "splitinfer"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=remote.filename, leave=False) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise WeightsUnavailableError(_unavailable(remote, tried, destination, str(reason))) from exc
    if not remote.matches(digest.hexdigest()):
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"the download of {remote.filename} from {remote.url} has SHA-256 {digest.hexdigest()}, expected "
            f"{remote.sha256}: the file changed or was corrupted; retry, or get it elsewhere and pass --weights."
        )
    partial.replace(destination)
    return destination
