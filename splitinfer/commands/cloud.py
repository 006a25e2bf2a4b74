"""`splitinfer cloud`: serve InferenceService (decode -> tail -> NMS) with health, reflection and metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from splitinfer.channel_options import DEFAULT_MAX_MESSAGE_BYTES
from splitinfer.commands import WEIGHTS_OPTION, runtime_options
from splitinfer.settings import DEFAULT_MODEL, Option

NAME = "cloud"
HELP = "Run the cloud service: decode feature streams, run the tail of the model, stream detections back."
OPTIONS = [
    Option("model", "Registry name of the model to serve.", default=DEFAULT_MODEL),
    WEIGHTS_OPTION,
    Option("host", "Address to listen on for gRPC.", default="[::]"),
    Option("port", "gRPC port (0 picks a free one; see --port-file).", cast=int, default=50051),
    Option("metrics-port", "Port of the Prometheus /metrics endpoint (0: a free one, -1: none).", cast=int,
           default=9090),
    Option("metrics-token-file", "File holding a bearer token that /metrics asks for (401 without it; re-read on "
           "each scrape). Unset: /metrics is open to whoever reaches the port.", cast=Path),
    Option("metrics-host", "Address the /metrics endpoint listens on (127.0.0.1: this machine only).",
           default="0.0.0.0"),
    Option("max-streams", "Infer streams served at once; more get RESOURCE_EXHAUSTED.", cast=int, default=16),
    Option("max-streams-per-peer", "Infer streams served at once from one client address (0: no cap); more get "
           "RESOURCE_EXHAUSTED. Behind a proxy or NAT every client shares one address: leave it 0 there.",
           cast=int, default=0),
    Option("stream-idle-timeout", "Seconds an Infer stream may go without a frame before it is ended with "
           "DEADLINE_EXCEEDED to free its slot (0: never); edges reconnect and resume.", cast=float, default=60.0),
    Option("workers", "Executor threads for decode, tail and NMS (shared by all streams).", cast=int, default=2),
    Option("stream-queue", "Frames queued per stream before gRPC flow control pushes back.", cast=int, default=4),
    Option("stream-queue-bytes", "Bytes of frames queued per stream before gRPC flow control pushes back (one "
           "frame always fits).", cast=int, default=DEFAULT_MAX_MESSAGE_BYTES),
    Option("subscriber-queue", "Results queued per Subscribe stream; a slow subscriber loses the oldest.", cast=int,
           default=256),
    Option("subscriber-max-bytes", "Bytes of results queued per Subscribe stream; a slow subscriber loses the "
           "oldest.", cast=int, default=16 * 1024 * 1024),
    Option("subscriber-max-lag", "Seconds a result may wait for a Subscribe stream before it is dropped (and counted "
           "in `dropped`) instead of sent; with SubscribeWithCredits no result a client reads is older (0: no bound).",
           cast=float, default=10.0),
    Option("nats", "Results bus: NATS URL (e.g. nats://nats:4222, JetStream enabled); every result is published "
           "there and Subscribe on any replica reads it (unset: results stay in this process)."),
    Option("nats-json", "With --nats: also publish each result as CloudEvents JSON to splitinfer.events.<stream>.",
           flag=True, default=False),
    Option("nats-ca", "With --nats: PEM CA certificates that signed nats-server's certificate (connects with TLS).",
           cast=Path),
    Option("nats-cert", "With --nats: PEM client certificate for nats-server (TLS with verify on).", cast=Path),
    Option("nats-key", "With --nats: PEM private key of --nats-cert.", cast=Path),
    Option("nats-creds", "With --nats: NATS creds file (user JWT and nkey seed, from nsc) of the clouds' user.",
           cast=Path),
    Option("nats-user", "With --nats: NATS user name of the clouds (deploy/nats/nats-server.conf); its password "
           "comes from --nats-password-file."),
    Option("nats-password-file", "With --nats: file holding the password of --nats-user (from a Secret).",
           cast=Path),
    Option("bus-keys", "With --nats: result-key file (YAML, from a Secret; `splitinfer bus-key` makes entries): every "
           "result is signed with its signing_key and Subscribe serves only results that verify against its keys "
           "(re-read on change). Unset: nothing is signed or checked (docs/SECURITY.md).", cast=Path),
    Option("bus-max-age", "With --nats: seconds the bus keeps a result.", cast=float, default=24 * 3600.0),
    Option("bus-max-bytes", "With --nats: bytes the bus keeps in all (the oldest results go first).", cast=int,
           default=1024**3),
    Option("tracking", "Tracks (Detection.track_id) and track events per stream with supervision's ByteTrack "
           "(docs/TRACKS.md): on (an error at start if supervision is missing), off, or auto (on when the `tracks` "
           "extra is installed).", default="auto", choices=("auto", "on", "off")),
    Option("zones", "Zones file (YAML, in source-image pixels; re-read on change): named zones and lines per stream "
           "that make track events (docs/TRACKS.md). Needs tracking.", cast=Path),
    Option("drain-seconds", "On SIGTERM: seconds to answer queued frames before stopping.", cast=float,
           default=30.0),
    Option("max-message-bytes", "Largest gRPC message sent or received (both sides must agree).", cast=int,
           default=DEFAULT_MAX_MESSAGE_BYTES),
    Option("max-connection-age", "Seconds before a connection is closed so a load balancer can rebalance "
           "(0: never); edges reconnect and resume.", cast=float, default=0.0),
    Option("max-elements", "Largest decoded tensor (elements) accepted from a frame.", cast=int, default=2**24),
    Option("device", "Where the tail, YOLO decode and NMS run: auto (CUDA when torch sees a GPU), cpu, cuda or "
           "cuda:N; feature decoding stays on the CPU.", default="auto"),
    Option("precision", "Tail precision on the device: fp32, fp16 or bf16 (see docs/RESULTS.md for the accuracy "
           "change).", default="fp32", choices=("fp32", "fp16", "bf16")),
    Option("max-batch", "Frames of different streams run through the tail together at most (1: no batching).",
           cast=int, default=1),
    Option("max-batch-delay-ms", "Longest a frame waits for others to join its batch, in milliseconds.", cast=float,
           default=2.0),
    *runtime_options.OPTIONS,
    Option("tls-cert", "PEM certificate chain the cloud serves TLS with (re-read when the file changes).", cast=Path),
    Option("tls-key", "PEM private key of --tls-cert.", cast=Path),
    Option("tls-client-ca", "PEM CA certificates: require client certificates they sign (mTLS).", cast=Path),
    Option("plaintext", "Serve without TLS (loopback or a trusted network only); required when no --tls-cert is "
           "given.", flag=True, default=False),
    Option("auth-tokens", "Access file (YAML): identities, token hashes, client certificate names and the stream-id "
           "patterns each may publish and subscribe to (docs/SECURITY.md). Unset: every caller may do everything.",
           cast=Path),
    Option("max-streams-per-identity", "Infer streams one authenticated identity (token or client certificate) may "
           "hold open at once, so that one credential cannot take every slot (unset: half of --max-streams; 0: no "
           "cap). An open cloud's anonymous callers are not capped by it.", cast=int),
    Option("health-port", "Second, plaintext port that serves only the gRPC health service, for probes that "
           "cannot speak TLS (-1: none).", cast=int, default=-1),
    Option("reflection", "Serve gRPC server reflection.", flag=True, default=True),
    Option("port-file", "Write the bound gRPC port to this file once the model is loaded and serving."),
    Option("log-level", "Logging level on stderr.", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
]


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from splitinfer.runtimes import check_runtime_flags
    from splitinfer.services.cloud.server import CloudConfig, serve
    from splitinfer.services.preflight import check_model, check_weights_path

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every check that needs no torch first (TLS flags, runtime, model name, weights path): a mistake costs a second.
    check_runtime_flags(args.runtime, args.threads, args.device)
    config = CloudConfig(
        model=args.model, weights=args.weights, host=args.host, port=args.port, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        max_streams=args.max_streams, max_streams_per_peer=args.max_streams_per_peer,
        stream_idle_timeout_s=args.stream_idle_timeout, workers=args.workers, stream_queue=args.stream_queue,
        stream_queue_bytes=args.stream_queue_bytes,
        subscriber_queue=args.subscriber_queue, subscriber_max_bytes=args.subscriber_max_bytes,
        subscriber_max_lag_s=args.subscriber_max_lag, nats=args.nats or None,
        nats_json=args.nats_json, nats_ca=args.nats_ca, nats_cert=args.nats_cert, nats_key=args.nats_key,
        nats_creds=args.nats_creds, nats_user=args.nats_user or None, nats_password_file=args.nats_password_file,
        bus_keys=args.bus_keys, metrics_token_file=args.metrics_token_file, bus_max_age_s=args.bus_max_age, bus_max_bytes=args.bus_max_bytes,
        drain_seconds=args.drain_seconds,
        max_message_bytes=args.max_message_bytes, max_connection_age_s=args.max_connection_age,
        max_elements=args.max_elements, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca, plaintext=args.plaintext, auth_tokens=args.auth_tokens,
        max_streams_per_identity=args.max_streams_per_identity, health_port=args.health_port,
        reflection=args.reflection, device=args.device, precision=args.precision, max_batch=args.max_batch,
        max_batch_delay_ms=args.max_batch_delay_ms, runtime=args.runtime, threads=args.threads,
        tracking=args.tracking, zones=args.zones,
    )
    check_weights_path(args.weights)
    check_model(args.model, args.weights, None)
    if args.runtime == "torch":
        from splitinfer.dnn.device import resolve_device, resolve_precision

        resolve_precision(args.precision, resolve_device(args.device))  # a missing GPU fails here, before binding
    asyncio.run(serve(config, port_file=Path(args.port_file) if args.port_file else None))
    return 0
