"""Who may publish (Infer) and read (Subscribe) which streams: identities, credentials and scopes.

The access file (`--auth-tokens`, YAML; mount it from a Kubernetes Secret) lists identities:

    identities:
      - name: site-a-edge
        tokens_sha256: ["<64 hex digits>"]         # SHA-256 of each bearer token; two during a rotation
        client_certificates: ["edge.site-a.example"]  # or/and: mTLS client certificate CN or DNS name
        publish: ["site-a/*"]                      # stream-id patterns it may send (Infer)
        subscribe: ["site-a/*"]                    # stream-id patterns it may read (Subscribe)
        max_streams: 4                             # optional: open Infer streams at once

Patterns are shell-style (`*` matches any run of characters, `/` included; `?` one). Tokens are stored only as
hashes and compared in constant time. A caller is identified by its bearer token if it sends one (a wrong
token is refused, never ignored), else by its verified client certificate. Without an access file every
caller is allowed every stream: each verified client certificate is its own identity (so one cannot take
over another's stream), and with no certificate all callers are one anonymous identity. The file is re-read
when it changes; a change that does not load is logged and the previous policy stays.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from splitinfer.errors import ServiceError

log = logging.getLogger("splitinfer.cloud")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_IDENTITY_KEYS = {"name", "tokens_sha256", "client_certificates", "publish", "subscribe", "max_streams"}


class AccessConfigError(ServiceError):
    """The access file is missing, unreadable or malformed."""


class AuthenticationError(ServiceError):
    """The caller sent no credential the cloud accepts, or a wrong one (gRPC UNAUTHENTICATED)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """An authenticated caller and the stream ids it may publish and read."""

    name: str
    publish: tuple[str, ...] = ("*",)
    subscribe: tuple[str, ...] = ("*",)
    max_streams: int | None = None

    def may_publish(self, stream_id: str) -> bool:
        return any(fnmatch.fnmatchcase(stream_id, pattern) for pattern in self.publish)

    def may_subscribe(self, stream_id: str) -> bool:
        return any(fnmatch.fnmatchcase(stream_id, pattern) for pattern in self.subscribe)


ANONYMOUS = Identity("anonymous")


def hash_token(token: str) -> str:
    """The hex SHA-256 of a bearer token: what the access file stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Entry:
    identity: Identity
    token_hashes: tuple[bytes, ...]
    certificate_names: frozenset[str]


class AccessPolicy:
    """Identities from an access file (or the open policy); `authenticate` maps a call's credentials to one."""

    def __init__(self, entries: Sequence[_Entry] = (), *, open_policy: bool = True) -> None:
        self._entries = tuple(entries)
        self.open_policy = open_policy

    @classmethod
    def parse(cls, document: Any, source: str = "the access file") -> AccessPolicy:
        """Build a policy from the parsed YAML document; every mistake names its place and the fix."""
        if not isinstance(document, Mapping) or not isinstance(document.get("identities"), list):
            raise AccessConfigError(f"{source} must be a mapping with a list under 'identities' (see docs/SECURITY.md).")
        entries: list[_Entry] = []
        names: set[str] = set()
        hashes: set[bytes] = set()
        for index, raw in enumerate(document["identities"]):
            where = f"{source}, identity #{index + 1}"
            entry = _parse_identity(raw, where)
            if entry.identity.name in names:
                raise AccessConfigError(f"{where}: the name {entry.identity.name!r} is used twice; names must be unique.")
            if hashes.intersection(entry.token_hashes):
                raise AccessConfigError(f"{where}: a token hash is also listed under another identity.")
            names.add(entry.identity.name)
            hashes.update(entry.token_hashes)
            entries.append(entry)
        return cls(entries, open_policy=False)

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        try:
            text = path.read_text()
        except OSError as exc:
            raise AccessConfigError(f"--auth-tokens {path} cannot be read ({exc.strerror or exc}).") from exc
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise AccessConfigError(f"--auth-tokens {path} is not valid YAML: {exc}") from exc
        return cls.parse(document, str(path))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, metadata: Iterable[tuple[str, Any]], peer_names: Sequence[str]) -> Identity:
        """The identity of a call from its metadata (authorization: Bearer ...) and verified certificate names."""
        token = _bearer_token(metadata)
        if token is not None:
            presented = hashlib.sha256(token.encode("utf-8")).digest()
            found: Identity | None = None
            for entry in self._entries:  # no early exit: the time taken does not tell which hash matched
                for stored in entry.token_hashes:
                    if hmac.compare_digest(presented, stored):
                        found = entry.identity
            if found is None:
                raise AuthenticationError("the bearer token is not valid here; check --token-file (a rotated token "
                                          "must be added to the cloud's access file first).", "INVALID_TOKEN")
            return found
        for entry in self._entries:
            if entry.certificate_names.intersection(peer_names):
                return entry.identity
        if self.open_policy:
            return Identity(f"x509:{peer_names[0]}") if peer_names else ANONYMOUS
        if peer_names:
            raise AuthenticationError(f"the client certificate ({peer_names[0]}) is not listed in the cloud's access "
                                      "file; add it under client_certificates or send a bearer token.",
                                      "UNKNOWN_CERTIFICATE")
        raise AuthenticationError("this cloud requires credentials: pass --token-file (a bearer token) or a client "
                                  "certificate with --tls-cert/--tls-key.", "MISSING_CREDENTIALS")


class AccessFile:
    """An access file re-read when it changes (a Kubernetes Secret is updated in place)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self.policy = AccessPolicy.load(path)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> AccessPolicy:
        """The policy, re-read first if the file changed; a change that does not load keeps the old policy."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return self.policy
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.policy = AccessPolicy.load(self.path)
                    log.info("access file %s reloaded: %d identities", self.path, len(self.policy))
                except AccessConfigError as exc:
                    log.error("access file changed but does not load; keeping the previous policy: %s", exc)
        return self.policy


def peer_certificate_names(auth_context: Mapping[str, Sequence[bytes]]) -> list[str]:
    """The verified client certificate's common name and DNS names, from a call's gRPC auth context."""
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            name = value.decode("utf-8", errors="replace")
            if name not in names:
                names.append(name)
    return names


def _bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationError("the authorization header must be 'Bearer <token>'.", "MALFORMED_TOKEN")
            return token.strip()
    return None


def _parse_identity(raw: Any, where: str) -> _Entry:
    if not isinstance(raw, Mapping):
        raise AccessConfigError(f"{where} must be a mapping with name, tokens_sha256 and/or client_certificates, "
                                "publish and subscribe.")
    unknown = set(raw) - _IDENTITY_KEYS
    if unknown:
        raise AccessConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_IDENTITY_KEYS)}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise AccessConfigError(f"{where}: 'name' must be a non-empty string.")
    tokens = _strings(raw.get("tokens_sha256", []), f"{where} ({name}), tokens_sha256")
    for digest in tokens:
        if not _HEX64.fullmatch(digest):
            raise AccessConfigError(f"{where} ({name}): an entry of tokens_sha256 is not a SHA-256 hex digest (64 "
                                    "lowercase hex digits); if it is the token itself, replace it by its hash and "
                                    "treat the token as leaked: `splitinfer token` makes a new one with its hash.")
    certificates = _strings(raw.get("client_certificates", []), f"{where} ({name}), client_certificates")
    if not tokens and not certificates:
        raise AccessConfigError(f"{where} ({name}): give tokens_sha256 or client_certificates, or the identity can "
                                "never be used.")
    max_streams = raw.get("max_streams")
    if max_streams is not None and (not isinstance(max_streams, int) or isinstance(max_streams, bool)
                                    or max_streams < 1):
        raise AccessConfigError(f"{where} ({name}): max_streams must be a whole number of at least 1.")
    identity = Identity(
        name=name,
        publish=tuple(_strings(raw.get("publish", []), f"{where} ({name}), publish")),
        subscribe=tuple(_strings(raw.get("subscribe", []), f"{where} ({name}), subscribe")),
        max_streams=max_streams,
    )
    return _Entry(identity, tuple(bytes.fromhex(t) for t in tokens), frozenset(certificates))


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise AccessConfigError(f"{where} must be a list of non-empty strings.")
    return list(value)
