"""Where results live on the bus: the JetStream stream, its subjects, and a stream id as one subject token.

<token> is the stream id with every byte outside [A-Za-z0-9_-] written as %XX (upper-case hex): a stream id may
hold '/', '.', ':' and '@', but a NATS subject token may not hold '.', and MQTT maps '/' to '.', so `site-a/cam-1`
becomes `site-a%2Fcam-1` (one token; `stream_id_from_token` reverses it). Shared by the cloud's bus, the Python
bus reader and `splitinfer bus-user`.
"""

from __future__ import annotations

import re

__all__ = ["EVENTS_PREFIX", "RESULTS_PREFIX", "STREAM_NAME", "TRACKS_PREFIX", "events_subject", "results_subject",
           "stream_id_from_token", "subject_token", "tracks_subject"]

STREAM_NAME = "SPLITINFER_RESULTS"
RESULTS_PREFIX = "splitinfer.results"
EVENTS_PREFIX = "splitinfer.events"
# Track events (zone entered / left, line crossed; docs/TRACKS.md) as CloudEvents JSON.
TRACKS_PREFIX = "splitinfer.tracks"
_PLAIN = re.compile(r"[A-Za-z0-9_-]")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def subject_token(stream_id: str) -> str:
    """The stream id as one NATS subject token (and MQTT topic level): bytes outside [A-Za-z0-9_-] as %XX."""
    return "".join(ch if _PLAIN.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in stream_id)


def stream_id_from_token(token: str) -> str:
    """The stream id back from its subject token."""
    return _ESCAPE.sub(lambda m: bytes.fromhex(m.group(1)).decode("latin-1"), token).encode("latin-1").decode()


def results_subject(stream_id: str) -> str:
    return f"{RESULTS_PREFIX}.{subject_token(stream_id)}"


def events_subject(stream_id: str) -> str:
    return f"{EVENTS_PREFIX}.{subject_token(stream_id)}"


def tracks_subject(stream_id: str) -> str:
    return f"{TRACKS_PREFIX}.{subject_token(stream_id)}"
