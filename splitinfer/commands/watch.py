"""`splitinfer watch`: subscribe to a cloud's results and print them (JSON lines, or COCO results JSON)."""

from __future__ import annotations

import argparse

from splitinfer.commands import client_security
from splitinfer.settings import Option

NAME = "watch"
HELP = "Subscribe to a cloud's detections and print them as JSON lines (or COCO results JSON with --coco)."
OPTIONS = [
    Option("cloud", "Address of the cloud service, HOST:PORT.", default="localhost:50051"),
    *client_security.OPTIONS,
    Option("stream", "Only these stream ids (comma-separated; default: every stream)."),
    Option("coco", "Print one COCO results JSON array at the end instead of JSON lines.", flag=True, default=False),
    Option("count", "Stop after this many results (0: until the cloud ends the subscription or Ctrl-C).", cast=int,
           default=0),
    Option("timeout", "Stop after this many seconds (0: no limit).", cast=float, default=0.0),
]


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from splitinfer.clients import coco_results, result_to_dict, subscribe

    stream_ids = [s.strip() for s in (args.stream or "").split(",") if s.strip()]
    collected = []
    dropped = 0
    try:
        for index, item in enumerate(subscribe(args.cloud, stream_ids, timeout=args.timeout or None,
                                                     security=client_security.security_from_args(args)), start=1):
            dropped += item.dropped
            if args.coco:
                collected.append(item.result)
            else:
                record = result_to_dict(item.result)
                if item.dropped:
                    record["dropped_before"] = item.dropped
                sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
                sys.stdout.flush()
            if args.count and index >= args.count:
                break
    except KeyboardInterrupt:
        pass
    if args.coco:
        json.dump(coco_results(collected), sys.stdout)
        sys.stdout.write("\n")
    if dropped:
        print(f"splitinfer watch: {dropped} results were dropped because this subscriber read too slowly",
              file=sys.stderr)
    return 0
