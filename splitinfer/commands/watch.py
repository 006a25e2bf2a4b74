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
    Option("coco", "Print one COCO results JSON array at the end instead of JSON lines (image ids 1, 2, ... per "
           "(stream, frame) in order of arrival; see --coco-images).", flag=True, default=False),
    Option("coco-images", "With --coco: write the image ids to this file as JSON [{id, stream_id, frame_id}]."),
    Option("count", "Stop after this many results (0: until the cloud ends the subscription or Ctrl-C).", cast=int,
           default=0),
    Option("timeout", "Stop after this many seconds (0: no limit).", cast=float, default=0.0),
    Option("max-lag", "Drop (and count) results that waited longer than this many seconds in this subscriber's "
           "queue because it reads too slowly (0: no time bound; the queue is bounded in count and bytes anyway).",
           cast=float, default=0.0),
    Option("after-sequence", "Resume after this position (the `sequence` of the last result seen; 0: from now).",
           cast=int, default=0),
]


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import logging
    import sys
    from pathlib import Path

    from splitinfer.clients import coco_image_ids, coco_results

    logging.basicConfig(level=logging.WARNING, format="splitinfer watch: %(message)s")
    stream_ids = [s.strip() for s in (args.stream or "").split(",") if s.strip()]
    collected: list = []
    try:
        dropped = asyncio.run(_watch(args, stream_ids, collected))
    except KeyboardInterrupt:
        dropped = 0
    if args.coco:
        image_ids = coco_image_ids(collected)
        json.dump(coco_results(collected, image_ids=image_ids), sys.stdout)
        sys.stdout.write("\n")
        if args.coco_images:
            Path(args.coco_images).write_text(json.dumps(
                [{"id": i, "stream_id": s, "frame_id": f} for (s, f), i in image_ids.items()]) + "\n")
    if dropped:
        print(f"splitinfer watch: {dropped} results were dropped because this subscriber read too slowly",
              file=sys.stderr)
    return 0


async def _watch(args: argparse.Namespace, stream_ids: list[str], collected: list) -> int:
    """Print (or collect, with --coco) results until --count or --timeout; returns how many were dropped."""
    import asyncio
    import sys

    from splitinfer.clients import ResultSubscriber, result_to_json

    dropped = 0

    index = 0

    async def loop(results: ResultSubscriber) -> None:
        nonlocal dropped, index
        async for item in results:
            index += 1
            dropped += item.dropped
            if args.coco:
                collected.append(item.result)
            else:
                annotations: dict = {"sequence": str(item.sequence)} if item.sequence else {}
                if item.dropped:
                    annotations["dropped_before"] = item.dropped
                sys.stdout.write(result_to_json(item.result, **annotations) + "\n")
                sys.stdout.flush()
            if args.count and index >= args.count:
                return

    async with ResultSubscriber(args.cloud, stream_ids, after_sequence=args.after_sequence,
                                max_lag_s=args.max_lag or None,
                                security=client_security.security_from_args(args)) as results:
        try:
            await asyncio.wait_for(loop(results), args.timeout or None)
        except asyncio.TimeoutError:
            if not results.subscribed:
                from splitinfer.errors import CloudUnavailableError

                raise CloudUnavailableError(f"could not subscribe to the cloud at {args.cloud} within --timeout "
                                            f"{args.timeout:g} s; the log above says why.") from None
            if index == 0:
                print(f"splitinfer watch: no result within --timeout {args.timeout:g} s. watch shows results from the "
                      "moment it subscribes: start it before the edge, or pass --after-sequence 1 to replay what the "
                      "cloud still holds.", file=sys.stderr)
    return dropped
