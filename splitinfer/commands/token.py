"""`splitinfer token`: make a bearer token for an edge or consumer, and the line the cloud's access file stores."""

from __future__ import annotations

import argparse

from splitinfer.settings import Option

NAME = "token"
HELP = ("Make a random bearer token (give it to the client, e.g. in --token-file) and print the SHA-256 hash that "
        "the cloud's access file (--auth-tokens) stores instead of the token.")
OPTIONS = [
    Option("token-out", "Write the token to this file (mode 0600) instead of printing it."),
]


def run(args: argparse.Namespace) -> int:
    import os
    import secrets
    import sys

    from splitinfer.errors import ConfigError
    from splitinfer.services.cloud.access import hash_token

    token = secrets.token_urlsafe(32)
    if args.token_out:
        try:
            descriptor = os.open(args.token_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigError(f"--token-out {args.token_out}: {exc.strerror or exc} (it must not exist yet).") from exc
        with os.fdopen(descriptor, "w") as handle:
            handle.write(token + "\n")
        print(f"token written to {args.token_out}", file=sys.stderr)
    else:
        print(f"token:         {token}")
    print(f"tokens_sha256: [\"{hash_token(token)}\"]")
    return 0
