"""`splitinfer watch`: subscribe to a cloud's results and print them: one readable line per result on a terminal,
JSON lines when piped (or --format json), or COCO results JSON."""

from __future__ import annotations

import argparse

from splitinfer.commands import client_security
from splitinfer.settings import Option

NAME = "watch"
HELP = ("Subscribe to a cloud's detections and print them: one line per result on a terminal, JSON lines when piped "
        "(or COCO results JSON with --coco).")
# When no result has come for the streams asked for after this long, say how the edge names its streams.
HINT_AFTER_S = 10.0
OPTIONS = [
    Option("cloud", "Address of the cloud service, HOST:PORT.", default="localhost:50051"),
    *client_security.OPTIONS,
    Option("stream", "Only these stream ids (comma-separated; default: every stream). The edge names its stream "
           "HOST-SOURCE (e.g. myhost-video.mp4) unless given --stream-id; its log says 'as stream ...'."),
    Option("format", "auto: one readable line per result on a terminal, JSON lines (docs/RESULTS_SCHEMA.md) when "
           "the output is a pipe or a file; table or json: always that.", default="auto",
           choices=("auto", "table", "json")),
    Option("coco", "Print one COCO results JSON array at the end instead of JSON lines (image ids 1, 2, ... per "
           "(stream, frame) in order of arrival; see --coco-images).", flag=True, default=False),
    Option("coco-images", "With --coco: write the image ids to this file as JSON [{id, stream_id, frame_id}]."),
    Option("count", "Stop after this many results, track events included with --events (0: until the cloud ends the "
           "subscription or Ctrl-C).", cast=int, default=0),
    Option("timeout", "Stop after this many seconds (0: no limit).", cast=float, default=0.0),
    Option("max-lag", "Drop (and count) results that waited longer than this many seconds in all (in the cloud "
           "and here) because this subscriber reads too slowly (0: the cloud's --subscriber-max-lag only).",
           cast=float, default=0.0),
    Option("after-sequence", "Resume after this position (the `sequence` of the last result seen; 0: from now).",
           cast=int, default=0),
    Option("events", "Also print the streams' track events (zone entered / left, line crossed; docs/TRACKS.md): "
           "one line each on a terminal, a JSON line {\"track_event\": {...}, \"sequence\": ...} when piped.",
           flag=True, default=False),
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
        from splitinfer.logs import say

        say(f"splitinfer watch: {dropped} results were dropped because this subscriber read too slowly",
            stream=sys.stderr, level="WARNING", logger="splitinfer.watch")
    return 0


async def _watch(args: argparse.Namespace, stream_ids: list[str], collected: list) -> int:
    """Print (or collect, with --coco) results until --count or --timeout; returns how many were dropped."""
    import asyncio
    import json
    import sys
    import time

    from splitinfer.clients import ResultSubscriber, result_to_json
    from splitinfer.logs import say
    from splitinfer.results import event_to_dict, event_to_line, result_to_line

    table = args.format == "table" or (args.format == "auto" and sys.stdout.isatty())
    dropped = 0
    index = 0
    asked = ", ".join(stream_ids) if stream_ids else "every stream"
    what = " (results and track events)" if args.events else ""
    count = f" ({len(stream_ids)} stream{'s' if len(stream_ids) != 1 else ''})" if stream_ids else ""

    announced = False

    def announce() -> None:
        """The subscription line, once: before the first result even when results come before `tell` looks."""
        nonlocal announced
        if not announced:
            announced = True
            say(f"splitinfer watch: subscribed to {asked}{count} at {args.cloud}{what}; waiting for results",
                stream=sys.stderr, logger="splitinfer.watch")

    async def loop(results: ResultSubscriber) -> None:
        nonlocal dropped, index
        async for item in results:
            announce()
            index += 1
            dropped += item.dropped
            if item.event is not None:
                if not args.coco:
                    sys.stdout.write((event_to_line(item.event) if table else json.dumps(
                        {"track_event": event_to_dict(item.event), "sequence": str(item.sequence)},
                        separators=(",", ":"))) + "\n")
                    sys.stdout.flush()
            elif args.coco:
                collected.append(item.result)
            elif table:
                line = result_to_line(item.result, time.time_ns())
                if item.dropped:
                    line += f"  [{item.dropped} dropped before: reading too slowly]"
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            else:
                annotations: dict = {"sequence": str(item.sequence)} if item.sequence else {}
                if item.dropped:
                    annotations["dropped_before"] = item.dropped
                sys.stdout.write(result_to_json(item.result, **annotations) + "\n")
                sys.stdout.flush()
            if args.count and index >= args.count:
                return

    async def tell(results: ResultSubscriber) -> None:
        """Say on stderr when the subscription stands, and hint at stream names while nothing comes."""
        while not results.subscribed:
            await asyncio.sleep(0.1)
        announce()
        await asyncio.sleep(HINT_AFTER_S)
        if index == 0:
            which = f"for stream{'s' if len(stream_ids) != 1 else ''} {asked}" if stream_ids else "from any stream"
            say(f"splitinfer watch: no result {which} in {HINT_AFTER_S:g} s. Is an edge streaming to {args.cloud}? "
                "The edge names its stream HOST-SOURCE (e.g. myhost-video.mp4 for --source video.mp4) unless it is "
                "given --stream-id, and logs 'as stream ...' when it starts: watch that id, watch without --stream "
                "to see every stream, or start the edge with --stream-id. Results sent before watch subscribed "
                "are shown with --after-sequence 1.", stream=sys.stderr, level="WARNING", logger="splitinfer.watch")

    async with ResultSubscriber(args.cloud, stream_ids, after_sequence=args.after_sequence,
                                max_lag_s=args.max_lag or None, events=args.events,
                                security=client_security.security_from_args(args)) as results:
        teller = asyncio.create_task(tell(results))
        try:
            await asyncio.wait_for(loop(results), args.timeout or None)
        except asyncio.TimeoutError:
            if not results.subscribed:
                from splitinfer.errors import CloudUnavailableError

                raise CloudUnavailableError(f"could not subscribe to the cloud at {args.cloud} within --timeout "
                                            f"{args.timeout:g} s; the log above says why.") from None
            if index == 0:
                say(f"splitinfer watch: no result within --timeout {args.timeout:g} s. watch shows results from the "
                    "moment it subscribes: start it before the edge, or pass --after-sequence 1 to replay what the "
                    "cloud still holds.", stream=sys.stderr, level="WARNING", logger="splitinfer.watch")
        finally:
            teller.cancel()
    return dropped
