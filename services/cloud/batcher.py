"""Dynamic batching across streams: frames that arrive within a short window go through the tail together.

Like Triton's dynamic batcher: the first frame waiting opens a batch; it is dispatched when it holds
`max_batch` frames or `max_delay_s` after it opened, whichever comes first. At most `max_in_flight`
batches run on the executor at once, so while they run the next batch fills. A stream never has two
frames in one batch (the servicer awaits each frame's result before the next, and the collector keeps
a second one for the following batch), so per-stream order and temporal references stay exact; each
frame keeps its own FrameError. With `max_batch` 1 a frame goes straight to the executor, as before.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from splitinfer.services.errors import ServiceError
from splitinfer.v1 import inference_pb2



@dataclass
class _Item:
    work: tuple[Any, Any, inference_pb2.FeatureFrame, int]  # (state, split, frame, previous frame id)
    future: asyncio.Future
    arrived: float  # time.monotonic()

    def same_stream(self, batch: list[_Item]) -> bool:
        return any(self.work[0] is other.work[0] for other in batch)


class FrameBatcher:
    """Collects frames of many streams into batches for `engine.process_batch` on the executor."""

    def __init__(self, executor: Executor, *, max_batch: int = 1, max_delay_s: float = 0.002,
                 max_in_flight: int = 1, queue_size: int = 256) -> None:
        if max_batch < 1 or max_in_flight < 1 or queue_size < 1:
            raise ServiceError(f"max-batch, in-flight batches and the batch queue must be at least 1, got "
                               f"{max_batch}, {max_in_flight} and {queue_size}.")
        if max_delay_s < 0:
            raise ServiceError(f"max-batch-delay-ms must not be negative, got {max_delay_s * 1000:g}.")
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_in_flight = max_in_flight
        self._queue: asyncio.Queue[_Item] | None = None
        self._queue_size = queue_size
        self._collector: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        self.batches = 0  # batches dispatched, and the frames in them: frames / batches is the mean batch size
        self.frames = 0

    async def process(self, engine: Any, state: Any, split: Any, frame: inference_pb2.FeatureFrame,
                      previous_frame_id: int) -> inference_pb2.InferenceResult:
        """The result of one frame, computed alone (max_batch 1) or in a batch with other streams' frames."""
        loop = asyncio.get_running_loop()
        if self.max_batch == 1:
            self.batches += 1
            self.frames += 1
            return await loop.run_in_executor(self.executor, engine.process, state, split, frame, previous_frame_id)
        if self._collector is None or self._collector.done():
            self._queue = asyncio.Queue(maxsize=self._queue_size)
            self._slots = asyncio.Semaphore(self.max_in_flight)
            self._collector = asyncio.create_task(self._collect(engine), name="frame-batcher")
        assert self._queue is not None
        future: asyncio.Future[inference_pb2.InferenceResult] = loop.create_future()
        await self._queue.put(_Item((state, split, frame, previous_frame_id), future, time.monotonic()))
        return await future

    async def close(self) -> None:
        """Stop collecting; frames still waiting get CancelledError (the server is stopping)."""
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        for task in list(self._running):
            await asyncio.gather(task, return_exceptions=True)
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()

    async def _collect(self, engine: Any) -> None:
        assert self._queue is not None and self._slots is not None
        held: list[_Item] = []  # a stream's next frame while its previous one is in the batch being filled
        while True:
            await self._slots.acquire()
            batch: list[_Item] = []
            try:
                batch.append(held.pop(0) if held else await self._queue.get())
                deadline = batch[0].arrived + self.max_delay_s  # the oldest frame waits at most max_delay_s
                while len(batch) < self.max_batch:
                    free = next((item for item in held if not item.same_stream(batch)), None)
                    if free is not None:
                        held.remove(free)
                        batch.append(free)
                        continue
                    if self._queue.empty():
                        timeout = deadline - time.monotonic()
                        if timeout <= 0:
                            break
                        try:
                            item = await asyncio.wait_for(self._queue.get(), timeout)
                        except asyncio.TimeoutError:
                            break
                    else:
                        item = self._queue.get_nowait()
                    if item.same_stream(batch):
                        held.append(item)  # bounded: the queue's items move here one at a time, at most max_batch
                        if len(held) >= self.max_batch:
                            break
                    else:
                        batch.append(item)
            except BaseException:
                self._slots.release()
                for item in batch + held:
                    item.future.cancel()
                raise
            task = asyncio.create_task(self._run(engine, batch), name="frame-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, engine: Any, batch: list[_Item]) -> None:
        assert self._slots is not None
        try:
            live = [item for item in batch if not item.future.cancelled()]
            self.batches += 1
            self.frames += len(live)
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.executor, engine.process_batch, [item.work for item in live])
            for item, result in zip(live, results):
                if not item.future.done():
                    item.future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - process_batch answers bad frames itself; this is a broken engine
            for item in batch:
                if not item.future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        item.future.cancel()
                    else:
                        item.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._slots.release()
