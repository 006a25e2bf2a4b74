"""Signatures on what the cloud puts on the results bus, so that no other NATS user can pass off a result as its own.

The cloud signs each message with Ed25519 over the subject, the Nats-Msg-Id (the result id) and the payload,
and sends the key id and the signature in two NATS headers; whoever reads the bus (Subscribe on any replica,
`splitinfer.clients.BusReader`) verifies them against a set of public keys. Signing with a private key that only
the clouds hold means a consumer's key file cannot forge results either.

The key file (YAML, from a Kubernetes Secret; `splitinfer bus-key` makes entries for it):

    keys:                      # verification keys: id -> base64 of the 32-byte Ed25519 public key
      2026-12: "<base64>"
      2027-01: "<base64>"
    signing_key:               # the clouds' file only: the key they sign with
      id: 2027-01
      private: "<base64 of the 32-byte Ed25519 private key>"

Rotation with nothing refused: add the new public key under `keys` everywhere, then switch `signing_key` of the
clouds to it, then (once --bus-max-age has passed, so nothing on the bus is signed with it) remove the old one.
Files are re-read when they change (splitinfer.reloading).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitinfer.errors import ConfigError, SplitInferError
from splitinfer.reloading import ReloadingFile, read_yaml

__all__ = ["KEY_ID_HEADER", "SIGNATURE_HEADER", "ResultKeyError", "ResultKeys", "UnverifiedResultError",
           "generate_key", "result_key_file"]

log = logging.getLogger("splitinfer.bus")

KEY_ID_HEADER = "Splitinfer-Key-Id"
SIGNATURE_HEADER = "Splitinfer-Signature"
# Domain separation: a signature made for this purpose is never valid for another.
_CONTEXT = b"splitinfer.bus.result-signature.v1\n"
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


class ResultKeyError(ConfigError):
    """The result-key file (--bus-keys) is missing, unreadable or malformed."""


class UnverifiedResultError(SplitInferError):
    """A message on the bus has no valid signature; `reason` (a metric label) says which check failed."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _import_ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ResultKeyError("signed results need the cryptography package (a dependency of splitinfer): "
                             "pip install cryptography.") from exc
    return ed25519


def _signed_bytes(subject: str, msg_id: str, payload: bytes) -> bytes:
    return _CONTEXT + subject.encode() + b"\n" + msg_id.encode() + b"\n" + payload


@dataclass(frozen=True)
class ResultKeys:
    """Verification keys by id and, in a cloud's file, the signing key."""

    public_keys: Mapping[str, Any] = field(default_factory=dict)
    signing_key_id: str | None = None
    signing_key: Any = None

    @property
    def can_sign(self) -> bool:
        return self.signing_key is not None

    def sign(self, subject: str, msg_id: str, payload: bytes) -> dict[str, str]:
        """The two headers that authenticate `payload` published on `subject` under `msg_id`."""
        if self.signing_key is None or self.signing_key_id is None:
            raise ResultKeyError("this key file has no signing_key: the cloud's --bus-keys file needs one "
                                 "(splitinfer bus-key makes it).")
        signature = self.signing_key.sign(_signed_bytes(subject, msg_id, payload))
        return {KEY_ID_HEADER: self.signing_key_id, SIGNATURE_HEADER: base64.b64encode(signature).decode()}

    def verify(self, subject: str, headers: Mapping[str, str] | None, payload: bytes) -> str:
        """The id of the key that signed this message; UnverifiedResultError (with a reason) if none did."""
        headers = headers or {}
        key_id, signature_text = headers.get(KEY_ID_HEADER), headers.get(SIGNATURE_HEADER)
        if not key_id or not signature_text:
            raise UnverifiedResultError(f"a message on {subject} has no {SIGNATURE_HEADER} header: it was not "
                                        "published by a cloud that signs results.", "missing_signature")
        key = self.public_keys.get(key_id)
        if key is None:
            raise UnverifiedResultError(f"a message on {subject} is signed with key {key_id[:64]!r}, which is not "
                                        "among the verification keys; add its public key to the key file if it is "
                                        "a new key of the clouds.", "unknown_key")
        try:
            signature = base64.b64decode(signature_text, validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != _SIGNATURE_BYTES:
            raise UnverifiedResultError(f"a message on {subject} has a malformed {SIGNATURE_HEADER} header.",
                                        "malformed_signature")
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(signature, _signed_bytes(subject, headers.get("Nats-Msg-Id", ""), payload))
        except InvalidSignature:
            raise UnverifiedResultError(f"a message on {subject} does not match its signature (key {key_id!r}): "
                                        "it was forged or altered.", "bad_signature") from None
        return key_id

    @classmethod
    def parse(cls, document: Any, source: str = "the result-key file") -> ResultKeys:
        """Keys from the parsed YAML document; every mistake names its place and the fix."""
        ed25519 = _import_ed25519()
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), Mapping) or not document["keys"]:
            raise ResultKeyError(f"{source} must be a mapping with at least one entry under 'keys' (key id: base64 "
                                 "public key); `splitinfer bus-key` makes one.")
        unknown = set(document) - {"keys", "signing_key"}
        if unknown:
            raise ResultKeyError(f"{source}: unknown keys {sorted(map(str, unknown))}; allowed: keys, signing_key.")
        public: dict[str, Any] = {}
        for key_id, text in document["keys"].items():
            key_id = _key_id(key_id, f"{source}, keys")
            public[key_id] = ed25519.Ed25519PublicKey.from_public_bytes(
                _key_bytes(text, f"{source}, keys.{key_id}", "public"))
        signing = document.get("signing_key")
        if signing is None:
            return cls(public)
        if not isinstance(signing, Mapping) or set(signing) != {"id", "private"}:
            raise ResultKeyError(f"{source}: signing_key must be a mapping with exactly 'id' and 'private'.")
        key_id = _key_id(signing["id"], f"{source}, signing_key.id")
        private = ed25519.Ed25519PrivateKey.from_private_bytes(
            _key_bytes(signing["private"], f"{source}, signing_key.private", "private"))
        listed = public.get(key_id)
        if listed is None:
            raise ResultKeyError(f"{source}: the signing key {key_id!r} is not listed under 'keys'; add its public "
                                 "key there (and to every reader's key file) before signing with it.")
        if listed.public_bytes_raw() != private.public_key().public_bytes_raw():
            raise ResultKeyError(f"{source}: the public key listed for {key_id!r} does not belong to signing_key's "
                                 "private key; copy both from the same `splitinfer bus-key` output.")
        return cls(public, key_id, private)

    @classmethod
    def load(cls, path: Path) -> ResultKeys:
        return cls.parse(read_yaml(path, "--bus-keys", ResultKeyError), f"--bus-keys {path}")


def result_key_file(path: Path, *, signing: bool = False) -> ReloadingFile[ResultKeys]:
    """The key file at `path`, loaded now (a bad file raises ResultKeyError) and re-read when it changes.

    `signing` (the clouds): a file without a signing_key is refused, at start and on every reload.
    """
    def load(path: Path) -> ResultKeys:
        keys = ResultKeys.load(path)
        if signing and not keys.can_sign:
            raise ResultKeyError(f"--bus-keys {path} has no signing_key: the cloud signs what it publishes, so its "
                                 "file needs the private key (splitinfer bus-key makes it); a file without one is "
                                 "for readers.")
        return keys

    return ReloadingFile(path, load, logger=log, what="result-key file", kept="keys")


def generate_key() -> tuple[str, str]:
    """A new Ed25519 key pair as (base64 private key, base64 public key)."""
    ed25519 = _import_ed25519()
    private = ed25519.Ed25519PrivateKey.generate()
    return (base64.b64encode(private.private_bytes_raw()).decode(),
            base64.b64encode(private.public_key().public_bytes_raw()).decode())


def _key_id(value: Any, where: str) -> str:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not _KEY_ID.fullmatch(text):
        raise ResultKeyError(f"{where}: key id {str(value)[:64]!r} must be 1-64 letters, digits and ._- starting "
                             "with a letter or digit.")
    return text


def _key_bytes(value: Any, where: str, kind: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _KEY_BYTES:
        raise ResultKeyError(f"{where} must be the base64 of a 32-byte Ed25519 {kind} key; copy it from "
                             "`splitinfer bus-key`.")
    return raw
