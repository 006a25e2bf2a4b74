"""The cloud service: grpc.aio server with InferenceService, health, reflection and Prometheus metrics.

Lifecycle: bind and answer health checks NOT_SERVING while the model loads, SERVING once it is loaded;
on SIGTERM (or `shutdown()`): NOT_SERVING, stop taking streams and frames, answer the frames already
queued, end the streams with UNAVAILABLE (edges reconnect elsewhere), then stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from splitinfer.services.channel_options import DEFAULT_MAX_MESSAGE_BYTES, server_options
from splitinfer.services.cloud.batcher import FrameBatcher
from splitinfer.services.cloud.metrics import CloudMetrics, MetricsHttpServer
from splitinfer.services.cloud.servicer import InferenceServicer
from splitinfer.services.cloud.streams import StreamRegistry
from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.services.errors import ServiceError
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger("splitinfer.cloud")

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
HEALTH_SERVICES = ("", SERVICE_NAME)


@dataclass(frozen=True)
class CloudConfig:
    """Everything `splitinfer cloud` can be told (flags and SPLITINFER_* variables, see commands/cloud.py)."""

    model: str = "yolo-fastest-1.1-xl"
    weights: str | None = None
    host: str = "[::]"
    port: int = 50051
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090  # 0: any free port; -1: no metrics endpoint
    max_streams: int = 16
    workers: int = 2
    stream_queue: int = 4
    subscriber_queue: int = 256
    drain_seconds: float = 30.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connection_age_s: float = 0.0
    max_elements: int = 2**24
    device: str = "auto"
    precision: str = "fp32"
    max_batch: int = 1
    max_batch_delay_ms: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_streams", "workers", "stream_queue", "subscriber_queue", "max_message_bytes", "max_elements",
                     "max_batch"):
            if getattr(self, name) < 1:
                raise ServiceError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if not 0 <= self.port <= 65535 or not -1 <= self.metrics_port <= 65535:
            raise ServiceError(f"ports must be within 0..65535 (metrics: -1 disables), got {self.port} and "
                               f"{self.metrics_port}.")
        if self.drain_seconds < 0:
            raise ServiceError(f"drain-seconds must not be negative, got {self.drain_seconds}.")
        if self.max_batch_delay_ms < 0:
            raise ServiceError(f"max-batch-delay-ms must not be negative, got {self.max_batch_delay_ms}.")


class CloudServer:
    """One cloud service instance; `engine` may be passed in (already loaded) to share a model."""

    def __init__(self, config: CloudConfig, *, engine: object | None = None) -> None:
        self.config = config
        self.metrics = CloudMetrics()
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="cloud")
        self.registry = StreamRegistry(config.max_streams)
        self.hub = SubscriberHub(config.subscriber_queue, on_drop=self.metrics.dropped_results.inc)
        # Every stream has at most one frame in the batcher, so max_streams bounds its queue.
        # One thread runs the tails (the device's work in order); decoding stays on the executor.
        self.tail_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloud-tail")
        self.batcher = FrameBatcher(self.executor, max_batch=config.max_batch,
                                    max_delay_s=config.max_batch_delay_ms / 1000, tail_executor=self.tail_executor,
                                    queue_size=config.max_streams)
        self.servicer = InferenceServicer(registry=self.registry, hub=self.hub, metrics=self.metrics,
                                          executor=self.executor, stream_queue_size=config.stream_queue,
                                          batcher=self.batcher)
        self.health = health.aio.HealthServicer()
        self._engine = engine
        self._server: grpc.aio.Server | None = None
        self._metrics_http: MetricsHttpServer | None = None
        self._port = 0
        self._stopped = asyncio.Event()
        self._shutting_down = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def metrics_port(self) -> int | None:
        return None if self._metrics_http is None else self._metrics_http.port

    @property
    def ready(self) -> bool:
        return self.servicer.engine is not None

    async def start(self) -> None:
        """Bind, answer NOT_SERVING, load the model (unless given), then answer SERVING."""
        server = grpc.aio.server(options=server_options(self.config.max_message_bytes,
                                                        self.config.max_connection_age_s))
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"{self.config.host}:{self.config.port}"
        try:
            self._port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ServiceError(f"could not listen on {address}: {exc}; pick another --port.") from exc
        if self._port == 0:
            raise ServiceError(f"could not listen on {address}: the port is taken or the host is wrong; "
                               "pick another --port (0 picks a free one).")
        for name in HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._server = server
        if self.config.metrics_port >= 0:
            self._metrics_http = MetricsHttpServer(self.metrics, self.config.metrics_host, self.config.metrics_port)
            try:
                await self._metrics_http.start()
            except OSError as exc:
                await self.stop(grace=0)
                raise ServiceError(f"could not serve metrics on port {self.config.metrics_port}: {exc}; "
                                   "pick another --metrics-port (-1 disables it).") from exc
        log.info("listening on port %d; loading model %s", self._port, self.config.model)
        try:
            engine = self._engine or await asyncio.get_running_loop().run_in_executor(self.executor, self._load)
        except BaseException:
            await self.stop(grace=0)
            raise
        try:
            await self.batcher.warm_up(engine)  # nor the device's (CUDA context, cuDNN plans per batch size)
        except BaseException:
            await self.stop(grace=0)
            raise
        self.servicer.engine = engine
        for name in HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on port %d", engine.model_name, self._port)

    def _load(self) -> object:
        from splitinfer.codec import CodecLimits, warm_up
        from splitinfer.services.cloud.engine import TailEngine

        engine = TailEngine.load(self.config.model, weights=self.config.weights,
                                 limits=CodecLimits(max_elements=self.config.max_elements),
                                 device=self.config.device, precision=self.config.precision)
        warm_up()  # before SERVING: the first frame of the first stream should not load the codec's kernels
        log.info("model on %s in %s, batches of up to %d frames", engine.device, engine.precision,
                 self.config.max_batch)
        return engine

    async def shutdown(self) -> None:
        """Graceful stop: NOT_SERVING, drain queued frames (at most drain_seconds), then stop."""
        if self._shutting_down:
            await self._stopped.wait()
            return
        self._shutting_down = True
        log.info("shutting down: draining streams (at most %.0f s)", self.config.drain_seconds)
        await self.health.enter_graceful_shutdown()
        self.servicer.begin_drain()
        if not await self.servicer.wait_idle(self.config.drain_seconds):
            log.warning("streams still open after %.0f s of draining; stopping anyway", self.config.drain_seconds)
        await self.stop(grace=1.0)

    async def stop(self, grace: float | None = None) -> None:
        """Stop at once (after `grace` seconds for open calls); see shutdown() for the graceful path."""
        self.servicer.begin_drain()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self.batcher.close()
        if self._metrics_http is not None:
            await self._metrics_http.stop()
            self._metrics_http = None
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.tail_executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def serve(config: CloudConfig, *, port_file: Path | None = None) -> None:
    """Run a cloud until SIGTERM or SIGINT, then shut down gracefully (the `splitinfer cloud` command)."""
    server = CloudServer(config)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        starting = asyncio.create_task(server.start())
        stopper = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await server.stop(grace=0)
            return
        stopper.cancel()
        starting.result()
        print(f"splitinfer cloud: serving {config.model} on port {server.port}"
              + (f", metrics on port {server.metrics_port}" if server.metrics_port else ""), flush=True)
        if port_file is not None:
            tmp = port_file.with_name(port_file.name + ".tmp")
            tmp.write_text(f"{server.port}\n")
            tmp.replace(port_file)
        await stop_requested.wait()
        await server.shutdown()
        print("splitinfer cloud: stopped", flush=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
