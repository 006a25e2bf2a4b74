"""The flags with which the edge and `watch` reach a cloud securely, shared so both spell them the same."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from splitinfer.settings import Option

if TYPE_CHECKING:  # grpc loads only when a command runs, so `splitinfer --help` and signal handling start fast
    from splitinfer.channel_security import ChannelSecurity

OPTIONS = [
    Option("tls-ca", "PEM CA certificates that sign the cloud's certificate (default: the system's roots).",
           cast=Path),
    Option("tls-cert", "PEM client certificate to present (mTLS; with --tls-key).", cast=Path),
    Option("tls-key", "PEM private key of --tls-cert.", cast=Path),
    Option("tls-server-name", "Host name to expect in the cloud's certificate, when it differs from --cloud's."),
    Option("token-file", "File holding this client's bearer token (sent only over TLS).", cast=Path),
    Option("plaintext", "Connect without TLS (loopback or a trusted network only).", flag=True, default=False),
]


def security_from_args(args: argparse.Namespace) -> ChannelSecurity:
    """The ChannelSecurity that the flags above describe (raises ConfigError for a contradiction)."""
    from splitinfer.channel_security import ChannelSecurity

    return ChannelSecurity(plaintext=args.plaintext, ca_file=args.tls_ca, cert_file=args.tls_cert,
                           key_file=args.tls_key, token_file=args.token_file, server_name=args.tls_server_name)
