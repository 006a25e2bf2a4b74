"""The cloud's TLS: server certificate and key, optional client CA (mTLS), re-read when the files change.

gRPC asks `_fetch` for the certificate configuration at each new TLS handshake; it answers a new
configuration only when a file's modification time or size changed, so a renewed certificate (a cert-manager
Secret updated in place) is served from the next connection on without a restart. A renewal that does not
load (a half-written file, a key that does not match) is logged and the previous certificate stays in use.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from splitinfer.errors import ServiceError

log = logging.getLogger("splitinfer.cloud")


@dataclass(frozen=True)
class ServerTls:
    """Paths of the server's PEM certificate chain and key, and of the CA that signs client certificates."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        """True when clients must present a certificate signed by `client_ca_file` (mTLS)."""
        return self.client_ca_file is not None


class CertificateReloader:
    """Builds gRPC server credentials whose certificate follows the files on disk."""

    def __init__(self, tls: ServerTls) -> None:
        self.tls = tls
        self._lock = threading.Lock()  # gRPC calls _fetch from its own threads
        self._stamp = self._file_stamp()
        self._refused_stamp: tuple[tuple[int, int], ...] | None = None
        self.reloads = 0
        self._check_loadable()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch, require_client_authentication=self.tls.mutual)

    def _files(self) -> list[Path]:
        return [p for p in (self.tls.cert_file, self.tls.key_file, self.tls.client_ca_file) if p is not None]

    def _file_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self._files():
            try:
                stat = path.stat()
            except OSError as exc:
                raise ServiceError(f"TLS file {path} cannot be read ({exc.strerror or exc}); check --tls-cert, "
                                   "--tls-key and --tls-client-ca.") from exc
            stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _check_loadable(self) -> None:
        """Refuse files that do not parse, or a key that does not match its certificate, with a clear message."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ServiceError(f"--tls-cert {self.tls.cert_file} and --tls-key {self.tls.key_file} do not load as a "
                               f"PEM certificate chain and its private key ({exc}).") from exc
        if self.tls.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.tls.client_ca_file))
            except (ssl.SSLError, OSError) as exc:
                raise ServiceError(f"--tls-client-ca {self.tls.client_ca_file} does not load as PEM CA "
                                   f"certificates ({exc}).") from exc

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        key = self.tls.key_file.read_bytes()
        chain = self.tls.cert_file.read_bytes()
        roots = self.tls.client_ca_file.read_bytes() if self.tls.client_ca_file is not None else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration if a file changed since the last one, else None (keep the current one)."""
        with self._lock:
            try:
                stamp = self._file_stamp()
            except ServiceError:
                return None  # a file is being replaced right now: keep serving, look again at the next handshake
            if stamp in (self._stamp, self._refused_stamp):
                return None
            try:
                self._check_loadable()
                configuration = self._configuration()
            except (ServiceError, OSError) as exc:
                self._refused_stamp = stamp
                log.error("TLS files changed but do not load; still serving the previous certificate: %s", exc)
                return None
            self._stamp = stamp
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self.tls.cert_file)
            return configuration
