"""Dynamic batching across streams: frames that arrive within a short window go through the tail together.

Like Triton's dynamic batcher, as a two-stage pipeline: each frame is checked and decoded on the shared
executor as soon as it arrives (CPU, numba, in parallel), then waits for others; the first decoded frame
waiting opens a batch, dispatched when it holds `max_batch` frames or `max_delay_s` after that frame
arrived. One batch at a time runs its tail and postprocess on the tail executor (one thread: the device's
work stays in order, cuDNN's per-thread plans are made once), while the next batch decodes and fills.
The caller awaits a stream's frame before it submits the stream's next one (the servicer does), so a
batch never holds two frames of a stream and temporal references stay exact; each frame keeps its own
FrameError. With `max_batch` 1 on the CPU a frame goes straight to the executor, as before batching.
`process_together` is the same batching done synchronously, for benches and tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from splitinfer.errors import ServiceError
from splitinfer.v1 import inference_pb2


FrameWork = tuple[Any, Any, inference_pb2.FeatureFrame, int]  # (stream state, split, frame, previous frame id)


def process_together(engine: Any, items: Sequence[FrameWork]) -> list[inference_pb2.InferenceResult]:
    """Answer frames of several streams with one tail call per cut (engine.finish); results in the order of `items`.

    A stream that appears twice is split into consecutive batches, so each frame decodes against the reference its
    predecessor left (as one frame at a time would; FrameBatcher never has to, see the module docstring)."""
    segments: list[list[FrameWork]] = [[]]
    for item in items:
        if any(item[0] is other[0] for other in segments[-1]):
            segments.append([])
        segments[-1].append(item)
    results: list[inference_pb2.InferenceResult] = []
    for segment in segments:
        prepared = [engine.prepare(*work) for work in segment]
        finished = iter(engine.finish([p for p in prepared if not isinstance(p, inference_pb2.InferenceResult)]))
        results += [p if isinstance(p, inference_pb2.InferenceResult) else next(finished) for p in prepared]
    return results


@dataclass
class _Item:
    decoded: Any  # engine.prepare's Decoded
    future: asyncio.Future
    arrived: float  # time.monotonic()


class FrameBatcher:
    """Collects decoded frames of many streams into batches for `engine.finish` on the tail executor."""

    def __init__(self, executor: Executor, *, max_batch: int = 1, max_delay_s: float = 0.002,
                 tail_executor: Executor | None = None, queue_size: int = 256) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ServiceError(f"max-batch and the batch queue must be at least 1, got {max_batch} and {queue_size}.")
        if max_delay_s < 0:
            raise ServiceError(f"max-batch-delay-ms must not be negative, got {max_delay_s * 1000:g}.")
        self.executor = executor
        self.tail_executor = tail_executor or executor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._queue: asyncio.Queue[_Item] | None = None
        self._queue_size = queue_size
        self._collector: asyncio.Task | None = None
        self.batches = 0  # tail calls, and the frames in them: frames / batches is the mean batch size
        self.frames = 0

    def pipelined(self, engine: Any) -> bool:
        """Whether frames go through decode -> batch -> tail (batching, or any device but the CPU)."""
        return self.max_batch > 1 or getattr(engine, "device", None) is not None and engine.device.type != "cpu"

    async def warm_up(self, engine: Any) -> None:
        """Warm the engine on the thread that will run its tails (before the server says SERVING)."""
        executor = self.tail_executor if self.pipelined(engine) else self.executor
        await asyncio.get_running_loop().run_in_executor(executor, engine.warm_up, self.max_batch)

    async def process(self, engine: Any, state: Any, split: Any, frame: inference_pb2.FeatureFrame,
                      previous_frame_id: int) -> inference_pb2.InferenceResult:
        """The result of one frame, computed alone (max_batch 1 on the CPU) or in a batch with other streams'."""
        loop = asyncio.get_running_loop()
        if not self.pipelined(engine):
            self.batches += 1
            self.frames += 1
            return await loop.run_in_executor(self.executor, engine.process, state, split, frame, previous_frame_id)
        prepared = await loop.run_in_executor(self.executor, engine.prepare, state, split, frame, previous_frame_id)
        if isinstance(prepared, inference_pb2.InferenceResult):
            return prepared  # a FrameError: nothing for the tail
        if self._collector is None or self._collector.done():
            self._queue = asyncio.Queue(maxsize=self._queue_size)
            self._collector = asyncio.create_task(self._collect(engine), name="frame-batcher")
        assert self._queue is not None
        future: asyncio.Future[inference_pb2.InferenceResult] = loop.create_future()
        await self._queue.put(_Item(prepared, future, time.monotonic()))
        return await future

    async def close(self) -> None:
        """Stop collecting; frames still waiting get CancelledError (the server is stopping)."""
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()

    async def _collect(self, engine: Any) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            try:
                deadline = batch[0].arrived + self.max_delay_s  # the oldest frame waits at most max_delay_s
                while len(batch) < self.max_batch:
                    if not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                        continue
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                    except asyncio.TimeoutError:
                        break
                live = [item for item in batch if not item.future.cancelled()]
                self.batches += 1
                self.frames += len(live)
                # While this batch runs, the next one decodes and queues: the pipeline.
                results = await loop.run_in_executor(self.tail_executor, engine.finish, [i.decoded for i in live])
                for item, result in zip(live, results):
                    if not item.future.done():
                        item.future.set_result(result)
            except asyncio.CancelledError:
                for item in batch:
                    item.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - finish answers bad frames itself; this is a broken engine
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
