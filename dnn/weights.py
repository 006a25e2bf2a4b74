"""Find a model file: an explicit path, then $SPLITINFER_WEIGHTS_DIR, then the cache, then a verified download.

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
    """The local path of `remote`: explicit path (file or folder), $SPLITINFER_WEIGHTS_DIR, cache, download."""
    if explicit is not None:
        path = Path(explicit)
        if path.is_dir():
            path = path / remote.filename
        if not path.is_file():
            raise WeightsError(f"{path} does not exist; pass the path of {remote.filename} or a folder that holds it.")
        return path
    weights_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if weights_dir and (Path(weights_dir) / remote.filename).is_file():
        return Path(weights_dir) / remote.filename
    cached = cache_dir() / remote.filename
    if cached.is_file():
        return cached
    if not download:
        raise WeightsUnavailableError(_unavailable(remote, cached, "downloads are disabled"))
    return _download(remote, cached)


def _unavailable(remote: RemoteFile, cached: Path, reason: str) -> str:
    return (
        f"{remote.filename} is not on this machine and could not be downloaded from {remote.url} ({reason}). "
        f"Download it yourself and pass its path with --weights (weights=... in Python), put it in the folder "
        f"named by ${WEIGHTS_DIR_ENV}, or copy it to {cached}."
    )


def _download(remote: RemoteFile, destination: Path) -> Path:
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
        raise WeightsUnavailableError(_unavailable(remote, destination, str(reason))) from exc
    if not remote.matches(digest.hexdigest()):
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"the download of {remote.filename} from {remote.url} has SHA-256 {digest.hexdigest()}, expected "
            f"{remote.sha256}: the file changed or was corrupted; retry, or get it elsewhere and pass --weights."
        )
    partial.replace(destination)
    return destination
