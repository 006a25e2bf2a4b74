"""The cloud service: grpc.aio server with InferenceService, health, reflection and Prometheus metrics.

Transport: TLS (mTLS with a client CA) from certificate files that are re-read when they change, or plaintext
when asked for explicitly; an optional second, plaintext port serves only the health service, for probes
that cannot speak TLS (kubelet's native gRPC probes). Who may do what: services/cloud/access.py.

Lifecycle: bind and answer health checks NOT_SERVING while the model loads, SERVING once it is loaded;
on SIGTERM (or `shutdown()`): NOT_SERVING, stop taking streams and frames, answer the frames already
queued, end the streams with UNAVAILABLE (edges reconnect elsewhere), let the subscribers receive those
results (from the bus with --nats), end the subscriptions with UNAVAILABLE + RetryInfo (they resume
elsewhere), then stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES, server_options
from splitinfer.services.cloud.access import AccessFile, AccessPolicy
from splitinfer.services.cloud.authentication import AuthenticationInterceptor
from splitinfer.services.cloud.batcher import FrameBatcher
from splitinfer.services.cloud.bus import ResultBus
from splitinfer.services.cloud.metrics import CloudMetrics, MetricsHttpServer
from splitinfer.services.cloud.reflection import enable_reflection
from splitinfer.services.cloud.servicer import InferenceServicer
from splitinfer.services.cloud.streams import StreamRegistry
from splitinfer.services.cloud.subscribers import SubscriberHub
from splitinfer.services.cloud.tracking import Tracker, tracking_available
from splitinfer.services.cloud.zones import ZonesConfig, load_zones
from splitinfer.services.cloud.tls import CertificateReloader, ServerTls
from splitinfer.bus_connection import BusConnection
from splitinfer.errors import ConfigError, ServiceError
from splitinfer.logs import say
from splitinfer.reloading import ReloadingFile
from splitinfer.result_signing import result_key_file
from splitinfer.settings import DEFAULT_MODEL
from splitinfer.v1 import inference_pb2, inference_pb2_grpc

if TYPE_CHECKING:
    from splitinfer.services.cloud.engine import TailEngine

log = logging.getLogger("splitinfer.cloud")

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
HEALTH_SERVICES = ("", SERVICE_NAME)


@dataclass(frozen=True)
class CloudConfig:
    """Everything `splitinfer cloud` can be told (flags and SPLITINFER_* variables, see commands/cloud.py)."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    host: str = "[::]"
    port: int = 50051
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090  # 0: any free port; -1: no metrics endpoint
    max_streams: int = 16
    max_streams_per_peer: int = 0  # 0: no cap per client address
    stream_idle_timeout_s: float = 60.0  # 0: never end an idle stream
    workers: int = 2
    stream_queue: int = 4
    stream_queue_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    subscriber_queue: int = 256
    subscriber_max_bytes: int = 16 * 1024 * 1024
    subscriber_max_lag_s: float = 10.0  # a result that waited longer for its subscriber is dropped; 0: no bound
    nats: str | None = None  # results bus URL (NATS JetStream); None keeps results in this process
    nats_json: bool = False  # also publish CloudEvents JSON to splitinfer.events.<stream>
    nats_ca: Path | None = None
    nats_cert: Path | None = None
    nats_key: Path | None = None
    nats_creds: Path | None = None
    nats_user: str | None = None
    nats_password_file: Path | None = None
    bus_keys: Path | None = None  # result-key file: sign what is published, serve only what verifies
    metrics_token_file: Path | None = None  # /metrics asks for this bearer token
    bus_max_age_s: float = 24 * 3600.0
    bus_max_bytes: int = 1024**3
    drain_seconds: float = 30.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connection_age_s: float = 0.0
    max_elements: int = 2**24
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    plaintext: bool = False
    auth_tokens: Path | None = None
    health_port: int = -1  # a plaintext port serving only grpc.health.v1 (-1: none)
    reflection: bool = True
    max_streams_per_identity: int | None = None  # None: half of max_streams; 0: no cap (see identity_stream_cap)
    device: str = "auto"
    precision: str = "fp32"
    max_batch: int = 1
    max_batch_delay_ms: float = 2.0
    runtime: str = "torch"  # torch, onnxruntime or openvino (splitinfer.dnn.runtime)
    threads: int = 0  # per tail call; 0: splitinfer.dnn.threads' default for the tails that run at once
    tracking: str = "auto"  # on, off, or auto: on when supervision is installed (docs/TRACKS.md)
    zones: Path | None = None  # zones file: zones and lines per stream (services/cloud/zones.py)

    @property
    def concurrent_tails(self) -> int:
        """Tails that may run at once: one per executor worker, or the one tail thread when batching."""
        return self.workers if self.max_batch == 1 else 1

    def __post_init__(self) -> None:
        for name in ("max_streams", "workers", "stream_queue", "stream_queue_bytes", "subscriber_queue",
                     "subscriber_max_bytes", "max_message_bytes", "max_elements", "bus_max_bytes", "max_batch"):
            if getattr(self, name) < 1:
                raise ServiceError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.max_streams_per_peer < 0:
            raise ServiceError(f"max-streams-per-peer must be 0 (no cap) or more, got {self.max_streams_per_peer}.")
        if self.subscriber_max_lag_s < 0:
            raise ServiceError(f"subscriber-max-lag must be 0 (no bound) or more seconds, got "
                               f"{self.subscriber_max_lag_s}.")
        if self.stream_idle_timeout_s < 0:
            raise ServiceError(f"stream-idle-timeout must be 0 (never) or more seconds, got {self.stream_idle_timeout_s}.")
        if not 0 <= self.port <= 65535 or not -1 <= self.metrics_port <= 65535:
            raise ServiceError(f"ports must be within 0..65535 (metrics: -1 disables), got {self.port} and "
                               f"{self.metrics_port}.")
        if self.bus_max_age_s <= 0:
            raise ServiceError(f"bus-max-age must be positive, got {self.bus_max_age_s}.")
        if self.drain_seconds < 0:
            raise ServiceError(f"drain-seconds must not be negative, got {self.drain_seconds}.")
        if self.max_batch_delay_ms < 0:
            raise ServiceError(f"max-batch-delay-ms must not be negative, got {self.max_batch_delay_ms}.")
        if not -1 <= self.health_port <= 65535:
            raise ServiceError(f"health-port must be within 0..65535 (-1: none), got {self.health_port}.")
        if self.max_streams_per_identity is not None and self.max_streams_per_identity < 0:
            raise ServiceError("max-streams-per-identity must be 0 (no cap), at least 1, or unset (half of "
                               f"--max-streams), got {self.max_streams_per_identity}.")
        if self.plaintext and (self.tls_cert or self.tls_key or self.tls_client_ca):
            raise ServiceError("--plaintext cannot be combined with --tls-cert, --tls-key or --tls-client-ca: choose "
                               "one.")
        if not self.plaintext and (self.tls_cert is None or self.tls_key is None):
            raise ServiceError("the cloud serves TLS: give --tls-cert and --tls-key (PEM files), or pass --plaintext "
                               "to serve without encryption (only on a trusted network).")
        bus_flags = [name for name in ("nats_ca", "nats_cert", "nats_key", "nats_creds", "nats_user",
                                       "nats_password_file", "bus_keys") if getattr(self, name) is not None]
        if bus_flags and not self.nats:
            raise ServiceError(f"--{bus_flags[0].replace('_', '-')} needs --nats (the results bus URL).")
        if self.tracking not in ("auto", "on", "off"):
            raise ServiceError(f"tracking must be auto, on or off, got {self.tracking!r}.")
        if self.zones is not None and self.tracking == "off":
            raise ServiceError("--zones needs tracking: zone and line events follow tracks. Drop --tracking off, or "
                               "drop --zones.")
        if self.plaintext and self.auth_tokens is not None:
            raise ServiceError("--auth-tokens needs TLS: bearer tokens would travel in clear over --plaintext. Give "
                               "--tls-cert and --tls-key.")

    @property
    def identity_stream_cap(self) -> int | None:
        """Streams one authenticated identity may hold open (None: no cap): by default half of max_streams, so that
        one token or certificate cannot take every slot (the anonymous caller of an open cloud is not capped)."""
        if self.max_streams_per_identity is None:
            return max(1, self.max_streams // 2)
        return self.max_streams_per_identity or None

    @property
    def bus_connection(self) -> BusConnection | None:
        """How to reach the results bus, or None without --nats."""
        if not self.nats:
            return None
        try:
            return BusConnection(self.nats, ca_file=self.nats_ca, cert_file=self.nats_cert, key_file=self.nats_key,
                                 creds_file=self.nats_creds, user=self.nats_user,
                                 password_file=self.nats_password_file)
        except ConfigError as exc:
            raise ServiceError(str(exc)) from exc

    @property
    def tls(self) -> ServerTls | None:
        if self.plaintext or self.tls_cert is None or self.tls_key is None:
            return None
        return ServerTls(self.tls_cert, self.tls_key, self.tls_client_ca)


class CloudServer:
    """One cloud service instance; `engine` may be passed in (already loaded) to share a model."""

    def __init__(self, config: CloudConfig, *, engine: TailEngine | None = None) -> None:
        self.config = config
        self.metrics = CloudMetrics()
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="cloud")
        self.registry = StreamRegistry(config.max_streams, max_streams_per_peer=config.max_streams_per_peer)
        self.hub: SubscriberHub | ResultBus
        self.result_keys = result_key_file(config.bus_keys, signing=True) if config.bus_keys is not None else None
        connection = config.bus_connection
        if connection is not None:
            self.hub = ResultBus(connection, capacity=config.subscriber_queue, max_bytes=config.subscriber_max_bytes,
                                 max_age_s=config.bus_max_age_s, stream_max_bytes=config.bus_max_bytes,
                                 publish_json=config.nats_json, on_drop=self.metrics.dropped_results.inc,
                                 registry=self.metrics.registry,
                                 keys=self.result_keys.current if self.result_keys is not None else None,
                                 max_lag_s=config.subscriber_max_lag_s)
        else:
            self.hub = SubscriberHub(config.subscriber_queue, config.subscriber_max_bytes,
                                     on_drop=self.metrics.dropped_results.inc, max_lag_s=config.subscriber_max_lag_s)
        self.certificates = CertificateReloader(config.tls) if config.tls is not None else None
        self.access_file = AccessFile(config.auth_tokens) if config.auth_tokens is not None else None
        open_policy = AccessPolicy()
        # Every stream has at most one frame in the batcher, so max_streams bounds its queue.
        # One thread runs the tails (the device's work in order); decoding stays on the executor.
        self.tail_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloud-tail")
        self.batcher = FrameBatcher(self.executor, max_batch=config.max_batch,
                                    max_delay_s=config.max_batch_delay_ms / 1000, tail_executor=self.tail_executor,
                                    queue_size=config.max_streams)
        self.servicer = InferenceServicer(
            registry=self.registry, hub=self.hub, metrics=self.metrics, executor=self.executor,
            stream_queue_size=config.stream_queue, stream_queue_bytes=config.stream_queue_bytes,
            stream_idle_timeout_s=config.stream_idle_timeout_s, max_message_bytes=config.max_message_bytes,
            access=self.access_file.current if self.access_file is not None else lambda: open_policy,
            max_streams_per_identity=config.identity_stream_cap, batcher=self.batcher)
        self.servicer.subscription_max_age_s = config.max_connection_age_s
        self.zones_file, self.servicer.publisher.tracker = self._tracking(config)
        self.servicer.limits = inference_pb2.ServerLimits(
            max_elements=config.max_elements, max_message_bytes=config.max_message_bytes,
            max_streams=config.max_streams, stream_queue=config.stream_queue,
            subscriber_queue=config.subscriber_queue, subscriber_max_bytes=config.subscriber_max_bytes,
            max_connection_age_seconds=config.max_connection_age_s, results_bus=bool(config.nats))
        self.health = health.aio.HealthServicer()
        self._health_server: grpc.aio.Server | None = None
        self._health_port = 0
        self._engine = engine
        self._server: grpc.aio.Server | None = None
        self._metrics_http: MetricsHttpServer | None = None
        self._port = 0
        self._stopped = asyncio.Event()
        self._shutting_down = False

    def _tracking(self, config: CloudConfig) -> tuple[ReloadingFile[ZonesConfig] | None, Tracker | None]:
        """The zones file and the tracker that --tracking and --zones ask for; their errors come before the model."""
        zones_file = None
        if config.zones is not None:
            zones_file = ReloadingFile(config.zones, load_zones, logger=log, what="zones file", kept="zones")
        on = config.tracking == "on" or config.zones is not None or (config.tracking == "auto" and tracking_available())
        if not on:
            if config.tracking == "auto":
                log.info("tracking is off: supervision is not installed (pip install 'splitinfer[tracks]')")
            return zones_file, None
        # A missing supervision raises TrackingUnavailableError here, before the model loads.
        tracker = Tracker(zones_file.current if zones_file is not None else None,
                          on_event=self.metrics.count_track_event, on_stale=self.metrics.untracked_results.inc)
        return zones_file, tracker

    @property
    def port(self) -> int:
        return self._port

    @property
    def health_port(self) -> int | None:
        """The plaintext health-only port, if one was asked for."""
        return self._health_port if self._health_server is not None else None

    @property
    def metrics_port(self) -> int | None:
        return None if self._metrics_http is None else self._metrics_http.port

    @property
    def ready(self) -> bool:
        return self.servicer.engine is not None

    async def start(self) -> None:
        """Bind, answer NOT_SERVING, load the model (unless given), then answer SERVING."""
        authentication = AuthenticationInterceptor(
            self.servicer.access, f"/{SERVICE_NAME}/",
            on_refused=self.metrics.rejected_streams.labels("unauthenticated").inc)
        server = grpc.aio.server(options=server_options(self.config.max_message_bytes,
                                                        self.config.max_connection_age_s),
                                 interceptors=[authentication])
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.config.reflection:
            enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
        self._port = _bind(server, self.config.host, self.config.port, "--port",
                           self.certificates.credentials() if self.certificates is not None else None)
        if self.config.plaintext:
            _warn_if_exposed(self.config.host)
        for name in HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.config.health_port >= 0:
            health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, health_server)
            try:
                self._health_port = _bind(health_server, self.config.host, self.config.health_port, "--health-port",
                                          None)
            except ServiceError:
                await health_server.stop(0)
                raise
            await health_server.start()
            self._health_server = health_server
        if isinstance(self.hub, ResultBus):
            try:
                await self.hub.start()
            except BaseException:
                await self.stop(grace=0)
                raise
        await server.start()
        self._server = server
        if self.config.metrics_port >= 0:
            self._metrics_http = MetricsHttpServer(self.metrics.exposition, self.config.metrics_host,
                                                   self.config.metrics_port, token_file=self.config.metrics_token_file)
            try:
                await self._metrics_http.start()
            except ConfigError as exc:
                await self.stop(grace=0)
                raise ServiceError(str(exc)) from exc
            except OSError as exc:
                await self.stop(grace=0)
                raise ServiceError(f"could not serve metrics on port {self.config.metrics_port}: {exc}; "
                                   "pick another --metrics-port (-1 disables it).") from exc
        log.info("listening on port %d; loading model %s", self._port, self.config.model)
        try:
            engine = self._engine if self._engine is not None else await asyncio.get_running_loop().run_in_executor(
                self.executor, self._load)
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

    def _load(self) -> TailEngine:
        from splitinfer.codec import CodecLimits, warm_up
        from splitinfer.services.cloud.engine import TailEngine

        engine = TailEngine.load(self.config.model, weights=self.config.weights,
                                 limits=CodecLimits(max_elements=self.config.max_elements),
                                 device=self.config.device, precision=self.config.precision,
                                 runtime=self.config.runtime, threads=self.config.threads,
                                 concurrent_calls=self.config.concurrent_tails)
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
        # Every answered frame is published by now: subscribers get what is queued, then UNAVAILABLE + RetryInfo.
        await self.hub.flush()
        self.servicer.end_subscriptions()
        for _ in range(50):
            if not len(self.hub):
                break
            await asyncio.sleep(0.02)
        await self.stop(grace=1.0)

    async def stop(self, grace: float | None = None) -> None:
        """Stop at once (after `grace` seconds for open calls); see shutdown() for the graceful path."""
        self.servicer.begin_drain()
        self.servicer.end_subscriptions()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        await self.batcher.close()
        await self.hub.aclose()
        if self._metrics_http is not None:
            await self._metrics_http.stop()
            self._metrics_http = None
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.tail_executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def _bind(server: grpc.aio.Server, host: str, port: int, flag: str,
          credentials: grpc.ServerCredentials | None) -> int:
    """Listen on host:port (TLS when credentials are given); the bound port, or a ServiceError with the fix."""
    address = f"{host}:{port}"
    try:
        bound = (server.add_insecure_port(address) if credentials is None
                 else server.add_secure_port(address, credentials))
    except RuntimeError as exc:
        raise ServiceError(f"could not listen on {address}: {exc}; pick another {flag}.") from exc
    if bound == 0:
        raise ServiceError(f"could not listen on {address}: the port is taken or the host is wrong; "
                           f"pick another {flag} (0 picks a free one).")
    return bound


def _warn_if_exposed(host: str) -> None:
    """Plaintext is for loopback and trusted networks: say so loudly when the cloud listens beyond loopback."""
    name = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    if not loopback:
        log.warning("!!! serving PLAINTEXT gRPC on %s: feature streams, detections and any credentials travel "
                    "unencrypted and unauthenticated to anyone who can reach this port. Use --tls-cert/--tls-key "
                    "(see docs/SECURITY.md), or --host 127.0.0.1 for local use. !!!", host)


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
        transport = "plaintext" if config.plaintext else ("mTLS" if config.tls_client_ca else "TLS")
        say(f"splitinfer cloud: serving {config.model} on port {server.port} ({transport})"
            + (f", health on port {server.health_port}" if server.health_port else "")
            + (f", metrics on port {server.metrics_port}" if server.metrics_port else ""), logger="splitinfer.cloud",
            fields={"port": server.port})
        if port_file is not None:
            tmp = port_file.with_name(port_file.name + ".tmp")
            tmp.write_text(f"{server.port}\n")
            tmp.replace(port_file)
        await stop_requested.wait()
        await server.shutdown()
        say("splitinfer cloud: stopped", logger="splitinfer.cloud")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
