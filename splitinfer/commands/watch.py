"""`splitinfer watch`: subscribe to a cloud's results and print them (JSON lines, or COCO results JSON)."""

from __future__ import annotations

import argparse

from splitinfer.settings import Option

NAME = "watch"
HELP = "Subscribe to a cloud's detections and print them as JSON lines (or COCO results JSON with --coco)."
OPTIONS = [
    Option("cloud", "Address of the cloud service, HOST:PORT.", default="localhost:50051"),
    Option("stream", "Only these stream ids (comma-separated; default: every stream)."),
    Option("coco", "Print one COCO results JSON array at the end instead of JSON lines (image ids 1, 2, ... per "
           "(stream, frame) in order of arrival; see --coco-images).", flag=True, default=False),
    Option("coco-images", "With --coco: write the image ids to this file as JSON [{id, stream_id, frame_id}]."),
    Option("count", "Stop after this many results (0: until the cloud ends the subscription or Ctrl-C).", cast=int,
           default=0),
    Option("timeout", "Stop after this many seconds (0: no limit).", cast=float, default=0.0),
    Option("after-sequence", "Resume after this position (the `sequence` of the last result seen; 0: from now).",
           cast=int, default=0),
]


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from splitinfer.clients import coco_image_ids, coco_results, result_to_json, subscribe

    stream_ids = [s.strip() for s in (args.stream or "").split(",") if s.strip()]
    collected = []
    dropped = 0
    try:
        items = subscribe(args.cloud, stream_ids, timeout=args.timeout or None, after_sequence=args.after_sequence)
        for index, item in enumerate(items, start=1):
            dropped += item.dropped
            if args.coco:
                collected.append(item.result)
            else:
                annotations = {"sequence": str(item.sequence)} if item.sequence else {}
                if item.dropped:
                    annotations["dropped_before"] = item.dropped
                sys.stdout.write(result_to_json(item.result, **annotations) + "\n")
                sys.stdout.flush()
            if args.count and index >= args.count:
                break
    except KeyboardInterrupt:
        pass
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
