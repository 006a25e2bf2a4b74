"""How a client (edge, `watch`, `splitinfer.clients`) reaches the cloud: TLS, mTLS, a bearer token, or plaintext.

TLS is the default: the cloud's certificate is checked against `ca_file` (or the system's roots), a client
certificate is presented when `cert_file`/`key_file` are set (mTLS), and a bearer token from `token_file` is
sent with every call. Plaintext must be asked for (`plaintext=True`, the `--plaintext` flag), and a token is
never sent over it. Files are read each time a channel is opened, so a renewed certificate or token is used
from the next reconnect on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from splitinfer.errors import ConfigError

ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class ChannelSecurity:
    """Transport security and credentials of a client channel (see the module docstring)."""

    plaintext: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    token_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file", "token_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.plaintext:
            given = [flag for flag, value in (("--tls-ca", self.ca_file), ("--tls-cert", self.cert_file),
                                              ("--tls-key", self.key_file), ("--token-file", self.token_file))
                     if value is not None]
            if given:
                raise ConfigError(f"--plaintext cannot be combined with {', '.join(given)}: a token or certificate "
                                  "would travel unprotected. Drop --plaintext to use TLS.")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("a client certificate needs both --tls-cert and --tls-key (PEM files).")

    def describe(self) -> str:
        """A short phrase for log lines: how the channel is secured."""
        if self.plaintext:
            return "plaintext"
        parts = ["TLS", "mTLS" if self.cert_file else None, "token" if self.token_file else None]
        return "+".join(p for p in parts if p)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials (None for plaintext); reads the files now and says which one is wrong."""
        if self.plaintext:
            return None
        ssl = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "--tls-ca"),
            private_key=_read(self.key_file, "--tls-key"),
            certificate_chain=_read(self.cert_file, "--tls-cert"),
        )
        if self.token_file is None:
            return ssl
        return grpc.composite_channel_credentials(ssl, grpc.access_token_call_credentials(self.token()))

    def token(self) -> str:
        """The bearer token from `token_file` (surrounding whitespace removed)."""
        if self.token_file is None:
            raise ConfigError("no --token-file was given.")
        raw = _read(self.token_file, "--token-file")
        token = (raw or b"").decode("utf-8", errors="replace").strip()
        if not token or any(ch.isspace() for ch in token):
            raise ConfigError(f"--token-file {self.token_file} must hold one token (no spaces or line breaks inside).")
        return token

    def options(self, options: ChannelOptions = ()) -> list[tuple[str, Any]]:
        """`options` plus the TLS host-name override, if one is set."""
        extra = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name and not self.plaintext else []
        return [*options, *extra]

    def aio_channel(self, target: str, options: ChannelOptions = ()) -> grpc.aio.Channel:
        """An asyncio channel to `target` with these credentials."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=self.options(options))
        return grpc.aio.secure_channel(target, credentials, options=self.options(options))

    def channel(self, target: str, options: ChannelOptions = ()) -> grpc.Channel:
        """A blocking channel to `target` with these credentials."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(target, options=self.options(options))
        return grpc.secure_channel(target, credentials, options=self.options(options))


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path} cannot be read ({exc.strerror or exc}); check the path and its "
                          "permissions.") from exc


def is_tls_failure(details: str | None) -> bool:
    """True if a gRPC error's text says the TLS handshake failed (wrong CA, expired or missing certificate)."""
    text = (details or "").lower()
    return any(word in text for word in ("ssl", "tls", "handshake", "certificate"))


def connection_hint(details: str | None, security: ChannelSecurity) -> str:
    """What to check when a connection failed, judged from gRPC's error text and how this client connects."""
    text = (details or "").lower()
    if not security.plaintext and "wrong_version_number" in text:
        return "the cloud does not speak TLS: it runs with --plaintext, so add --plaintext here (trusted networks only)"
    if not security.plaintext and is_tls_failure(details):
        return ("the TLS handshake failed: check --tls-ca (the CA that signed the cloud's certificate), "
                "--tls-server-name, and that your client certificate is valid and not expired")
    if security.plaintext and any(word in text for word in ("socket closed", "connection reset", "protocol")):
        return ("if the cloud serves TLS, drop --plaintext and give --tls-ca; else check that `splitinfer cloud` "
                "runs there and the address is right")
    return ("check that `splitinfer cloud` runs there, the address is right, and both sides agree on TLS or "
            "--plaintext")
