"""`splitinfer token`: make a bearer token for an edge or consumer, and the line the cloud's access file stores."""

from __future__ import annotations

import argparse

from splitinfer.commands import write_new_secret
from splitinfer.settings import Option

NAME = "token"
HELP = ("Make a random bearer token (give it to the client, e.g. in --token-file) and print the SHA-256 hash that "
        "the cloud's access file (--auth-tokens) stores instead of the token.")
OPTIONS = [
    Option("token-out", "Write the token to this file (mode 0600) instead of printing it."),
]


def run(args: argparse.Namespace) -> int:
    import secrets
    import sys

    from splitinfer.services.cloud.access import hash_token

    token = secrets.token_urlsafe(32)
    if args.token_out:
        write_new_secret(args.token_out, token + "\n", "--token-out")
        print(f"token written to {args.token_out}", file=sys.stderr)
    else:
        print(f"token:         {token}")
    print(f"tokens_sha256: [\"{hash_token(token)}\"]")
    return 0
