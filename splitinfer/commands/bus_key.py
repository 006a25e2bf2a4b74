"""`splitinfer bus-key`: make an Ed25519 key pair that signs results on the bus, as entries of a --bus-keys file."""

from __future__ import annotations

import argparse

from splitinfer.commands import write_new_secret
from splitinfer.settings import Option

NAME = "bus-key"
HELP = ("Make a key pair for signing results on the bus: writes the clouds' --bus-keys file (private key, mode 0600) "
        "and prints the public-key line that every reader's --bus-keys file lists under 'keys'.")
OPTIONS = [
    Option("key-id", "Id of the new key (letters, digits, ._-), e.g. the month it starts signing: 2027-01.",
           default="k1"),
    Option("key-out", "Write the clouds' --bus-keys file here (mode 0600; it must not exist yet). Unset: print it."),
]


def run(args: argparse.Namespace) -> int:
    import sys

    import yaml

    from splitinfer.result_signing import ResultKeys, generate_key

    private, public = generate_key()
    clouds = {"keys": {args.key_id: public}, "signing_key": {"id": args.key_id, "private": private}}
    ResultKeys.parse(clouds, "--key-id")  # a bad key id fails here, with the rule it broke
    text = yaml.safe_dump(clouds, sort_keys=False)
    if args.key_out:
        write_new_secret(args.key_out, text, "--key-out")
        print(f"clouds' key file written to {args.key_out}; during a rotation merge its entries into the current "
              "file (keep the old public key under keys).", file=sys.stderr)
    else:
        print("# the clouds' --bus-keys file (keep it in a Secret):")
        print(text, end="")
    print("# every reader's --bus-keys file (public; no signing_key):")
    print(yaml.safe_dump({"keys": {args.key_id: public}}, sort_keys=False), end="")
    return 0
