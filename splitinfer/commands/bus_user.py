"""`splitinfer bus-user`: a read-only NATS user for one consumer, limited to the subjects of its streams.

What `splitinfer token` is for gRPC: it prints the user's entry for the `users` list of nats-server's
configuration (deploy/nats/nats-server.conf) and writes the password to a file for the consumer.
"""

from __future__ import annotations

import argparse

from splitinfer.commands import write_new_secret
from splitinfer.errors import ConfigError
from splitinfer.settings import Option

NAME = "bus-user"
HELP = ("Make a read-only NATS user for a consumer of the results bus, limited to the subjects of the given stream "
        "ids: prints its entry for nats-server's users list and writes its password to a file.")
OPTIONS = [
    Option("user", "NATS user name of the consumer, e.g. dashboard-site-a.", default="consumer"),
    Option("stream", "Stream ids it may read, comma-separated: exact ids (site-a/cam-1,site-a/cam-2), or * for "
           "every stream. NATS wildcards match whole subject tokens and a stream id is one token, so a pattern such "
           "as site-a/* cannot be expressed: list the ids.", default=""),
    Option("password-out", "Write the password here (mode 0600; it must not exist yet). Unset: print it."),
]


def run(args: argparse.Namespace) -> int:
    import json
    import secrets
    import sys


    subjects = consumer_subjects([s.strip() for s in args.stream.split(",") if s.strip()])
    password = secrets.token_urlsafe(24)
    if args.password_out:
        write_new_secret(args.password_out, password + "\n", "--password-out")
        print(f"password written to {args.password_out}", file=sys.stderr)
    entry = {"user": args.user, "password": password,
             "permissions": {"publish": {"deny": [">"]}, "subscribe": {"allow": subjects}}}
    # NATS's configuration format reads JSON; this is one entry of authorization.users (deploy/nats/).
    print(json.dumps(entry))
    return 0


def consumer_subjects(stream_ids: list[str]) -> list[str]:
    """The result, event and track-event subjects of `stream_ids` ("*": every stream); ConfigError for what NATS cannot express."""
    from splitinfer.bus_subjects import EVENTS_PREFIX, RESULTS_PREFIX, TRACKS_PREFIX, subject_token

    if not stream_ids:
        raise ConfigError("give --stream: the stream ids this consumer may read (comma-separated), or * for all.")
    subjects: list[str] = []
    for stream_id in stream_ids:
        if stream_id == "*":
            token = "*"
        elif set(stream_id) & set("*?[]"):
            raise ConfigError(f"--stream {stream_id!r} is a pattern; NATS wildcards match whole subject tokens "
                              "and a stream id is one token (site-a/cam-1 is site-a%2Fcam-1), so patterns such as "
                              "site-a/* cannot become a NATS permission: list the ids, or * for every stream.")
        else:
            token = subject_token(stream_id)
        subjects += [f"{RESULTS_PREFIX}.{token}", f"{EVENTS_PREFIX}.{token}", f"{TRACKS_PREFIX}.{token}"]
    return subjects
