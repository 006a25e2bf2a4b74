"""Who may publish (Infer) and read (Subscribe) which streams: identities, credentials and scopes.

The access file (`--auth-tokens`, YAML; mount it from a Kubernetes Secret) lists identities:

    identities:
      - name: site-a-edge
        tokens_sha256: ["<64 hex digits>"]         # SHA-256 of each bearer token; two during a rotation
        client_certificates: ["edge.site-a.example"]  # or/and: mTLS client certificate CN or DNS name
        publish: ["site-a/*"]                      # stream-id patterns it may send (Infer)
        subscribe: ["site-a/*"]                    # stream-id patterns it may read (Subscribe)
        max_streams: 4                             # optional: open Infer streams at once

    revoked_certificates:                          # optional: client certificates refused from now on
      - serial: "4f:1c:...:9a"                     # the serial number (hex, colons optional), and/or
        sha256: "<64 hex digits>"                  # the SHA-256 fingerprint of the DER certificate
        note: "laptop stolen 2026-12-01"           # optional, for people

Patterns are shell-style (`*` matches any run of characters, `/` included; `?` one). Tokens are stored only as
hashes and compared in constant time. A caller is identified by its bearer token if it sends one (a wrong
token is refused, never ignored), else by its verified client certificate. Without an access file every
caller is allowed every stream: each verified client certificate is its own identity (so one cannot take
over another's stream), and with no certificate all callers are one anonymous identity. A revoked client
certificate is refused (UNAUTHENTICATED, REVOKED_CERTIFICATE) whatever else the call presents: revoking one edge
needs no new client CA. The file is re-read when it changes; a change that does not load is logged and the
previous policy stays.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitinfer.errors import ServiceError
from splitinfer.reloading import ReloadingFile, read_yaml

log = logging.getLogger("splitinfer.cloud")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_REVOCATION_KEYS = {"serial", "sha256", "note"}
_SERIAL = re.compile(r"(0x)?[0-9a-f]+")
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

    def __init__(self, entries: Sequence[_Entry] = (), *, open_policy: bool = True,
                 revoked_serials: frozenset[int] = frozenset(), revoked_sha256: frozenset[str] = frozenset()) -> None:
        self._entries = tuple(entries)
        self.open_policy = open_policy
        self.revoked_serials = revoked_serials
        self.revoked_sha256 = revoked_sha256

    @classmethod
    def parse(cls, document: Any, source: str = "the access file") -> AccessPolicy:
        """Build a policy from the parsed YAML document; every mistake names its place and the fix."""
        if not isinstance(document, Mapping) or not isinstance(document.get("identities"), list):
            raise AccessConfigError(f"{source} must be a mapping with a list under 'identities' (see docs/SECURITY.md).")
        unknown = set(document) - {"identities", "revoked_certificates"}
        if unknown:
            raise AccessConfigError(f"{source}: unknown top-level keys {sorted(map(str, unknown))}; allowed: "
                                    "identities, revoked_certificates.")
        serials, fingerprints = _parse_revocations(document.get("revoked_certificates", []), source)
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
        return cls(entries, open_policy=False, revoked_serials=serials, revoked_sha256=fingerprints)

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        return cls.parse(read_yaml(path, "--auth-tokens", AccessConfigError), str(path))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, metadata: Iterable[tuple[str, Any]], peer_names: Sequence[str],
                     peer_certificate: bytes | None = None) -> Identity:
        """The identity of a call from its metadata (authorization: Bearer ...) and verified certificate names.

        `peer_certificate` (the verified client certificate, PEM) is checked against the revocation list first.
        """
        if peer_certificate is not None and (self.revoked_serials or self.revoked_sha256):
            self._refuse_if_revoked(peer_certificate, peer_names)
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


    def _refuse_if_revoked(self, pem: bytes, peer_names: Sequence[str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return  # gRPC verified it already; what it hands over is a certificate
        if (certificate.serial_number in self.revoked_serials
                or certificate.fingerprint(hashes.SHA256()).hex() in self.revoked_sha256):
            name = peer_names[0] if peer_names else f"serial {certificate.serial_number:x}"
            raise AuthenticationError(f"the client certificate ({name}) has been revoked in the cloud's access file; "
                                      "the client needs a new certificate.", "REVOKED_CERTIFICATE")


class AccessFile(ReloadingFile[AccessPolicy]):
    """An access file re-read when it changes (a Kubernetes Secret is updated in place)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, AccessPolicy.load, logger=log, what="access file", kept="policy")

    @property
    def policy(self) -> AccessPolicy:
        return self.value


def peer_certificate_names(auth_context: Mapping[str, Sequence[bytes]]) -> list[str]:
    """The verified client certificate's common name and DNS names, from a call's gRPC auth context."""
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            name = value.decode("utf-8", errors="replace")
            if name not in names:
                names.append(name)
    return names


def peer_certificate_pem(auth_context: Mapping[str, Sequence[bytes]]) -> bytes | None:
    """The verified client certificate (PEM) from a call's gRPC auth context, if the client presented one."""
    values = auth_context.get("x509_pem_cert", ())
    return values[0] if values else None


def _parse_revocations(raw: Any, source: str) -> tuple[frozenset[int], frozenset[str]]:
    """Serial numbers and SHA-256 fingerprints of revoked certificates; each entry's mistake names its place."""
    if not isinstance(raw, list):
        raise AccessConfigError(f"{source}: revoked_certificates must be a list of entries with serial and/or sha256.")
    serials: set[int] = set()
    fingerprints: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"{source}, revoked_certificates #{index + 1}"
        if not isinstance(entry, Mapping) or not ({"serial", "sha256"} & set(entry)) or set(entry) - _REVOCATION_KEYS:
            raise AccessConfigError(f"{where} must be a mapping with serial and/or sha256 (and an optional note).")
        if "serial" in entry:
            text = str(entry["serial"]).strip().lower().replace(":", "")
            if not isinstance(entry["serial"], str) or not _SERIAL.fullmatch(text):
                raise AccessConfigError(f"{where}: serial {str(entry['serial'])[:80]!r} is not a hexadecimal serial "
                                        "number (as `openssl x509 -noout -serial` prints it, colons allowed); quote "
                                        "it in YAML.")
            serials.add(int(text, 16))
        if "sha256" in entry:
            text = str(entry["sha256"]).strip().lower().replace(":", "")
            if not _HEX64.fullmatch(text):
                raise AccessConfigError(f"{where}: sha256 must be the certificate's SHA-256 fingerprint, 64 hex digits "
                                        "(`openssl x509 -noout -fingerprint -sha256`, colons allowed).")
            fingerprints.add(text)
    return frozenset(serials), frozenset(fingerprints)


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
