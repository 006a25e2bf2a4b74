"""How the cloud and the Python bus reader reach NATS: TLS (a CA, optionally a client certificate) and credentials.

Credentials are either a NATS creds file (`--nats-creds`: the user JWT and nkey seed that `nsc` makes, for an
operator-mode server) or a user name and a file holding its password (`--nats-user`, `--nats-password-file`,
from a Secret). A server that refuses them is a `BusAuthError` at once, naming the flags to fix, instead of
a connection retried until a timeout.

nats-py is an optional dependency (`pip install 'splitinfer[bus]'`); it is imported on first use.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitinfer.errors import BusAuthError, BusError, ConfigError

log = logging.getLogger("splitinfer.bus")

# What nats-server says (through nats-py's error callback) when it refuses credentials or a subject.
_AUTHORIZATION = "authorization violation"
_PERMISSIONS = "permissions violation"


def import_nats() -> Any:
    """nats-py, or a BusError saying how to install it."""
    try:
        import nats
        import nats.js.api
    except ImportError as exc:
        raise BusError("the results bus needs the NATS client: pip install 'splitinfer[bus]' (nats-py).") from exc
    return nats


@dataclass(frozen=True)
class BusConnection:
    """A NATS URL with its transport security and credentials (see the module docstring)."""

    url: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    creds_file: Path | None = None
    user: str | None = None
    password_file: Path | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file", "creds_file", "password_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("a NATS client certificate needs both --nats-cert and --nats-key (PEM files).")
        if (self.user is None) != (self.password_file is None):
            raise ConfigError("NATS user credentials need both --nats-user and --nats-password-file.")
        if self.creds_file is not None and self.user is not None:
            raise ConfigError("give either --nats-creds (a JWT creds file) or --nats-user/--nats-password-file, "
                              "not both.")

    @property
    def secured(self) -> bool:
        """True if the connection uses TLS (a tls:// URL or a CA or client certificate given)."""
        return self.url.startswith("tls://") or self.ca_file is not None or self.cert_file is not None

    @property
    def credential_flags(self) -> str:
        """The flags a refused credential comes from, for error messages."""
        if self.creds_file is not None:
            return f"--nats-creds {self.creds_file}"
        if self.user is not None:
            return f"--nats-user {self.user} / --nats-password-file {self.password_file}"
        return "no credentials (give --nats-user and --nats-password-file, or --nats-creds)"

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None for a plaintext connection; reads the files now."""
        if not self.secured:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--nats-ca {self.ca_file} does not load as PEM CA certificates ({exc}).") from exc
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"--nats-cert {self.cert_file} and --nats-key {self.key_file} do not load as a "
                                  f"PEM certificate and its key ({exc}).") from exc
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of nats.connect for security and credentials; reads the files now."""
        options: dict[str, Any] = {}
        context = self.tls_context()
        if context is not None:
            options["tls"] = context
        if self.creds_file is not None:
            if not self.creds_file.is_file():
                raise ConfigError(f"--nats-creds {self.creds_file} is not a readable file.")
            options["user_credentials"] = str(self.creds_file)
        if self.user is not None and self.password_file is not None:
            try:
                password = self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"--nats-password-file {self.password_file} cannot be read "
                                  f"({exc.strerror or exc}).") from exc
            if not password or any(ch.isspace() for ch in password):
                raise ConfigError(f"--nats-password-file {self.password_file} must hold one password on one line.")
            options["user"], options["password"] = self.user, password
        return options

    async def connect(self, *, name: str, timeout_s: float,
                      error_cb: Callable[[Exception], Awaitable[None]] | None = None) -> Any:
        """A connection that reconnects for ever once made; BusAuthError at once if the server refuses us.

        The first connection gets `timeout_s` in all. nats-py retries a refused connection like an absent
        server, so its error callback is watched: the server's "Authorization Violation" ends the attempt.
        """
        nats = import_nats()
        options = self.connect_options()
        refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        connected = False

        async def on_error(exc: Exception) -> None:
            text = str(exc)
            if not connected and not refused.done():
                if _AUTHORIZATION in text.lower():
                    refused.set_result("the server refused the credentials (Authorization Violation)")
                elif isinstance(exc, ssl.SSLError):
                    refused.set_result(f"the TLS handshake failed ({exc})")
            if error_cb is not None:
                await error_cb(exc)

        attempt = asyncio.ensure_future(nats.connect(
            self.url, name=name, connect_timeout=2, allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=0.5, error_cb=on_error, **options))
        done, _ = await asyncio.wait({attempt, refused}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if refused in done:
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            reason = refused.result()
            if reason.startswith("the TLS"):
                raise BusAuthError(f"could not connect to the results bus at {self.url}: {reason}; check --nats-ca "
                                   "(the CA that signed nats-server's certificate) and --nats-cert/--nats-key.")
            raise BusAuthError(f"the results bus at {self.url} refused this cloud: {reason}; check "
                               f"{self.credential_flags}.")
        if attempt not in done:
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            raise BusError(f"could not reach the results bus at {self.url}: no connection within {timeout_s:g} s; "
                           "check that nats-server runs there with JetStream (-js), or leave --nats unset to keep "
                           "results in this process.")
        try:
            nc = attempt.result()
        except Exception as exc:  # noqa: BLE001 - nats raises several unrelated types for "cannot connect"
            if isinstance(exc, ssl.SSLError) or "ssl" in type(exc).__name__.lower():
                raise BusAuthError(f"could not connect to the results bus at {self.url}: the TLS handshake failed "
                                   f"({exc}); check --nats-ca and --nats-cert/--nats-key.") from exc
            if "secure" in type(exc).__name__.lower():
                raise BusAuthError(f"the results bus at {self.url} and this client disagree on TLS ({exc}): give "
                                   "--nats-ca (and tls:// in --nats) when nats-server has TLS on.") from exc
            raise BusError(f"could not reach the results bus at {self.url}: {exc or type(exc).__name__}; check that "
                           "nats-server runs there with JetStream (-js), or leave --nats unset to keep results in "
                           "this process.") from exc
        connected = True
        return nc


def is_permission_violation(errors: list[str]) -> str | None:
    """The first "permissions violation" the server reported among `errors`, if any."""
    return next((text for text in errors if _PERMISSIONS in text.lower()), None)
