"""Reading results straight from the results bus (NATS), with their signatures checked.

A consumer with a read-only NATS user (`splitinfer bus-user`) subscribes to the subjects of its streams and gets
each result as the clouds publish it (live; to replay from a position, use `ResultSubscriber` through a cloud,
which also applies the access file). With `keys` (the readers' --bus-keys file) only results whose Ed25519
signature verifies are yielded; the others are counted in `unverified` by reason and logged, never yielded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from splitinfer.bus_connection import BusConnection, is_permission_violation
from splitinfer.bus_subjects import RESULTS_PREFIX, results_subject
from splitinfer.errors import BusAuthError, ServiceError
from splitinfer.result_signing import ResultKeys, UnverifiedResultError, result_key_file
from splitinfer.v1 import inference_pb2

log = logging.getLogger("splitinfer.clients")


class BusReader:
    """Async iterator over results read from NATS, filtered by stream id (empty: every stream), verified.

        async with BusReader(BusConnection("tls://nats:4222", ca_file="ca.crt", user="dashboard",
                                           password_file="dashboard.password"),
                             ["site-a/cam-1"], keys="bus-keys.yaml") as results:
            async for result in results:
                print(result.frame_id, len(result.detections))

    Without `keys` nothing is checked: any NATS user allowed to publish on the subjects can then pass off a
    result (docs/SECURITY.md). The local queue holds at most `max_queue` results; a slower reader loses the
    oldest, counted in `dropped`.
    """

    def __init__(self, connection: BusConnection | str, stream_ids: Iterable[str] = (), *,
                 keys: Path | str | None = None, max_queue: int = 256, connect_timeout_s: float = 30.0) -> None:
        if max_queue < 1:
            raise ServiceError(f"max_queue must be at least 1, got {max_queue}.")
        self.connection = connection if isinstance(connection, BusConnection) else BusConnection(connection)
        self.stream_ids = list(stream_ids)
        self._keys = result_key_file(Path(keys)) if keys is not None else None
        self.max_queue = max_queue
        self.connect_timeout_s = connect_timeout_s
        self.unverified: collections.Counter[str] = collections.Counter()
        self.dropped = 0
        self._queue: collections.deque[inference_pb2.InferenceResult] = collections.deque()
        self._ready = asyncio.Event()
        self._nc: Any = None
        self._errors: collections.deque[str] = collections.deque(maxlen=16)

    @property
    def keys(self) -> ResultKeys | None:
        return self._keys.current() if self._keys is not None else None

    async def __aenter__(self) -> BusReader:
        self._nc = await self.connection.connect(name="splitinfer-bus-reader", timeout_s=self.connect_timeout_s,
                                                 error_cb=self._log_error)
        subjects = [results_subject(s) for s in self.stream_ids] or [f"{RESULTS_PREFIX}.*"]
        for subject in subjects:
            await self._nc.subscribe(subject, cb=self._deliver)
        # After a round trip the server has the subscriptions (results published from now on arrive) and has said
        # whether it refused one; its error reaches the callback as a task of its own, so give that a moment.
        violation = None
        for _ in range(3):
            await self._nc.flush()
            await asyncio.sleep(0.05)
            violation = is_permission_violation(list(self._errors))
            if violation is not None:
                break
        if violation is not None:
            await self.close()
            raise BusAuthError(f"the bus refused this reader's subscription ({violation}); its NATS user "
                               f"({self.connection.credential_flags}) may read only the streams it was made for "
                               "(splitinfer bus-user --stream).")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            await nc.close()

    async def _log_error(self, exc: Exception) -> None:
        self._errors.append(str(exc))
        log.warning("results bus: %s", exc)

    async def _deliver(self, msg: Any) -> None:
        keys = self.keys
        if keys is not None:
            try:
                keys.verify(msg.subject, msg.headers, msg.data)
            except UnverifiedResultError as exc:
                self.unverified[exc.reason] += 1
                log.warning("not yielded (%s): %s", exc.reason, exc)
                return
        result = inference_pb2.InferenceResult()
        try:
            result.ParseFromString(msg.data)
        except Exception:  # noqa: BLE001 - a foreign message on our subject: skip it, never crash
            self.unverified["not_a_result"] += 1
            log.warning("skipped a message on %s that is not an InferenceResult", msg.subject)
            return
        self._queue.append(result)
        while len(self._queue) > self.max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[inference_pb2.InferenceResult]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[inference_pb2.InferenceResult]:
        if self._nc is None:
            raise ServiceError("use `async with BusReader(...)` before iterating over it.")
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            yield self._queue.popleft()
