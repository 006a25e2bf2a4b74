"""The results bus inside the security model, on a real nats-server running the shipped configuration
(deploy/nats/nats-server.conf: TLS, JetStream, the clouds' user and read-only consumer users) with certificates
made by the test: who may connect, publish and read, and that no result published by anyone but a cloud is ever
served or yielded, even by a NATS user that was wrongly given publish rights.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from splitinfer.bus_connection import BusConnection
from splitinfer.clients import BusReader, ResultSubscriber
from splitinfer.errors import BusAuthError
from splitinfer.result_signing import KEY_ID_HEADER, SIGNATURE_HEADER, ResultKeys, generate_key
from splitinfer.services.cloud.bus import STREAM_NAME, ResultBus, results_subject
from splitinfer.v1 import inference_pb2
from tests.services.certificates import Authority
from tests.services.conftest import PLAINTEXT, REPO, encoded_frames, run, running_cloud
from tests.services.nats_server import NatsServer
from tests.services.test_subscriptions import send_frames

CONFIG = REPO / "deploy" / "nats" / "nats-server.conf"
STREAM, OTHER = "site-a/cam-1", "site-b/cam-1"


@dataclass
class SecureBus:
    """A nats-server with the shipped configuration, and the files each party connects with."""

    server: NatsServer
    ca: Path
    other_ca: Path
    passwords: dict[str, Path]
    authority: Authority

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.server.port}"

    def connection(self, user: str | None, *, ca: Path | None = None) -> BusConnection:
        return BusConnection(self.url, ca_file=ca or self.ca, user=user,
                             password_file=self.passwords[user] if user else None)


def consumer_entry(user: str, stream: str, password_out: Path) -> str:
    """The users-list entry that `splitinfer bus-user` prints (run as a user would)."""
    made = subprocess.run([sys.executable, "-m", "splitinfer.cli", "bus-user", "--user", user, "--stream", stream,
                           "--password-out", str(password_out)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture
def secure_bus(tmp_path: Path):
    bus = start_secure_bus(tmp_path)
    yield bus
    bus.server.close()


def start_secure_bus(tmp_path: Path, *, client_certificates: bool = False) -> SecureBus:
    """The shipped configuration (with `verify: true` when client certificates are required) and its users."""
    ca = Authority(tmp_path, "bus-ca")
    other = Authority(tmp_path, "other-ca")
    server_cert = ca.issue("nats.test", server=True, file_stem="nats-server")
    passwords = {"splitinfer-cloud": tmp_path / "cloud.password", "dashboard-a": tmp_path / "dashboard-a.password",
                 "ops": tmp_path / "ops.password"}
    passwords["splitinfer-cloud"].write_text("cloud-password-for-the-test\n")
    passwords["ops"].write_text("ops-password-for-the-test\n")
    dashboard = consumer_entry("dashboard-a", STREAM, passwords["dashboard-a"])
    # The misconfiguration the signatures must survive: an operator's user that may publish anywhere.
    rogue = json.dumps({"user": "ops", "password": "ops-password-for-the-test",
                        "permissions": {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}})
    marker = "    # consumers: one line each"
    text = CONFIG.read_text()
    assert marker in text
    text = text.replace(marker, f"    {dashboard}\n    {rogue}\n{marker}")
    if client_certificates:
        assert "  # verify: true" in text
        text = text.replace("  # verify: true", "  verify: true")
    server = NatsServer(tmp_path / "nats", config_text=text, env={
        "NATS_TLS_CERT": str(server_cert.cert), "NATS_TLS_KEY": str(server_cert.key), "NATS_TLS_CA": str(ca.ca),
        "NATS_CLOUD_PASSWORD": "cloud-password-for-the-test"})
    return SecureBus(server, ca.ca, other.ca, passwords, ca)


@pytest.fixture
def key_files(tmp_path: Path):
    """Two key pairs, A and B, and a writer of the clouds' and the readers' key files."""
    keys = {name: generate_key() for name in ("a", "b")}
    clouds, readers = tmp_path / "clouds-keys.yaml", tmp_path / "readers-keys.yaml"

    def write(signer: str, verifiers: tuple[str, ...]) -> None:
        public = {name: keys[name][1] for name in verifiers}
        for path, document in ((clouds, {"keys": public, "signing_key": {"id": signer, "private": keys[signer][0]}}),
                               (readers, {"keys": public})):
            stamp = path.stat().st_mtime_ns if path.exists() else 0
            path.write_text(yaml.safe_dump(document))
            os.utime(path, ns=(stamp + 1_000_000, max(stamp + 1_000_000, path.stat().st_mtime_ns)))

    write("a", ("a",))
    return write, clouds, readers


def a_result(stream_id: str, frame_id: int) -> inference_pb2.InferenceResult:
    result = inference_pb2.InferenceResult(stream_id=stream_id, frame_id=frame_id, model="yolo-fastest-1.1-xl")
    result.capture.capture_time.FromNanoseconds(1_700_000_000_000_000_000 + frame_id)
    return result


def bus_for(secure_bus: SecureBus, user: str | None, **kwargs) -> ResultBus:
    return ResultBus(secure_bus.connection(user, **kwargs), capacity=16, max_bytes=1 << 20,
                     registry=CollectorRegistry())


# -- who may connect and publish ------------------------------------------------------------------------------


def test_the_clouds_user_publishes_and_a_cloud_without_it_is_refused_with_the_flag_to_fix(secure_bus) -> None:
    async def scenario():
        cloud = bus_for(secure_bus, "splitinfer-cloud")
        await cloud.start(connect_timeout_s=20)
        await cloud.publish(a_result(STREAM, 0))
        info = await cloud._js.stream_info(STREAM_NAME)
        await cloud.aclose()
        refusals = {}
        for case, bus in (("none", bus_for(secure_bus, None)), ("consumer", bus_for(secure_bus, "dashboard-a")),
                          ("wrong-ca", bus_for(secure_bus, "splitinfer-cloud", ca=secure_bus.other_ca))):
            with pytest.raises(BusAuthError) as refused:
                await bus.start(connect_timeout_s=20)
            refusals[case] = str(refused.value)
        return info.state.messages, refusals

    stored, refusals = run(scenario())
    assert stored == 1
    assert "Authorization Violation" in refusals["none"] and "--nats-user" in refusals["none"]
    assert "may not manage the JetStream stream" in refusals["consumer"] and "dashboard-a" in refusals["consumer"]
    assert "TLS handshake failed" in refusals["wrong-ca"] and "--nats-ca" in refusals["wrong-ca"]


def test_with_client_certificates_required_the_cloud_connects_with_its_certificate_and_not_without(
        tmp_path) -> None:
    bus = start_secure_bus(tmp_path, client_certificates=True)
    issued = bus.authority.issue("splitinfer-cloud", server=False)

    async def scenario():
        with_certificate = ResultBus(BusConnection(bus.url, ca_file=bus.ca, cert_file=issued.cert, key_file=issued.key,
                                                   user="splitinfer-cloud",
                                                   password_file=bus.passwords["splitinfer-cloud"]),
                                     capacity=16, max_bytes=1 << 20, registry=CollectorRegistry())
        await with_certificate.start(connect_timeout_s=20)
        await with_certificate.aclose()
        with pytest.raises(BusAuthError) as refused:
            await bus_for(bus, "splitinfer-cloud").start(connect_timeout_s=20)
        return str(refused.value)

    try:
        refusal = run(scenario())
    finally:
        bus.server.close()
    assert "--nats-cert" in refusal


def test_the_cloud_command_exits_with_a_clear_error_when_the_bus_refuses_it(secure_bus, weights_dir, tmp_path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    refused = subprocess.run(
        [sys.executable, "-m", "splitinfer.cli", "cloud", "--plaintext", "--host", "127.0.0.1", "--port", "0",
         "--metrics-port", "-1", "--weights", str(weights_dir), "--nats", secure_bus.url,
         "--nats-ca", str(secure_bus.ca), "--nats-user", "splitinfer-cloud", "--nats-password-file", str(wrong)],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert refused.returncode == 2
    assert "refused this cloud" in refused.stderr and "--nats-password-file" in refused.stderr
    assert "Traceback" not in refused.stderr


# -- consumers ------------------------------------------------------------------------------------------------


def test_a_consumers_read_only_user_reads_its_streams_and_nothing_else(secure_bus, key_files) -> None:
    _, clouds, readers = key_files
    import nats

    async def scenario():
        signing = ResultKeys.load(clouds)
        cloud = ResultBus(secure_bus.connection("splitinfer-cloud"), capacity=16, max_bytes=1 << 20,
                          keys=lambda: signing)
        await cloud.start(connect_timeout_s=20)
        async with BusReader(secure_bus.connection("dashboard-a"), [STREAM], keys=readers) as own:
            await cloud.publish(a_result(OTHER, 0))
            await cloud.publish(a_result(STREAM, 1))
            got = await asyncio.wait_for(anext(aiter(own)), 30)
        with pytest.raises(BusAuthError) as other_stream:
            async with BusReader(secure_bus.connection("dashboard-a"), [OTHER], keys=readers):
                pass
        # Publishing as the consumer: the server refuses, and nothing reaches the stream.
        errors: list[str] = []

        async def note(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(secure_bus.url, tls=secure_bus.connection("dashboard-a").tls_context(),
                                user="dashboard-a", password=secure_bus.passwords["dashboard-a"].read_text().strip(),
                                error_cb=note)
        await nc.publish(results_subject(STREAM), a_result(STREAM, 2).SerializeToString())
        await nc.flush()
        await asyncio.sleep(0.2)
        await nc.close()
        stored = (await cloud._js.stream_info(STREAM_NAME)).state.messages
        await cloud.aclose()
        return got, str(other_stream.value), errors, stored

    got, other_stream, errors, stored = run(scenario())
    assert (got.stream_id, got.frame_id) == (STREAM, 1)
    assert "refused this reader's subscription" in other_stream and "--stream" in other_stream
    assert any("permissions violation for publish" in e.lower() for e in errors)
    assert stored == 2  # the two results of the cloud, not the consumer's


# -- forgeries ------------------------------------------------------------------------------------------------


async def publish_forgeries(secure_bus: SecureBus) -> None:
    """What a NATS user with publish rights (a misconfiguration) can put on a stream's subject, and does."""
    import nats

    nc = await nats.connect(secure_bus.url, tls=secure_bus.connection("ops").tls_context(), user="ops",
                            password=secure_bus.passwords["ops"].read_text().strip())
    js = nc.jetstream()
    subject = results_subject(STREAM)
    forged = a_result(STREAM, 99)
    forged.detections.add(label="person", score=0.99)
    payload = forged.SerializeToString()
    some_signature = "A" * 86 + "=="
    for number, headers in enumerate([
        None,                                                          # no signature at all
        {KEY_ID_HEADER: "a", SIGNATURE_HEADER: some_signature},          # a made-up signature
        {KEY_ID_HEADER: "not-a-key", SIGNATURE_HEADER: some_signature},  # a key id nobody has
        {KEY_ID_HEADER: "a", SIGNATURE_HEADER: "not base64!"},         # garbage
    ]):
        await js.publish(subject, payload, headers={**(headers or {}), "Nats-Msg-Id": f"forged-{number}"})
    await nc.close()


def test_a_result_forged_by_a_nats_user_with_publish_rights_is_never_served_nor_yielded_and_is_counted(
        engine, model, video, secure_bus, key_files) -> None:
    _, clouds, readers = key_files
    frames = encoded_frames(model, video, 1)
    bus_settings = dict(nats=secure_bus.url, nats_ca=secure_bus.ca, nats_user="splitinfer-cloud",
                        nats_password_file=secure_bus.passwords["splitinfer-cloud"], bus_keys=clouds)

    async def scenario():
        async with running_cloud(engine, **bus_settings) as cloud_a, running_cloud(engine, **bus_settings) as cloud_b:
            subscribers = [ResultSubscriber(f"127.0.0.1:{c.port}", [STREAM], security=PLAINTEXT)
                           for c in (cloud_a, cloud_b)]
            async with subscribers[0] as on_a, subscribers[1] as on_b, \
                    BusReader(secure_bus.connection("dashboard-a"), [STREAM], keys=readers) as direct:
                await on_a.wait_subscribed()
                await on_b.wait_subscribed()
                await publish_forgeries(secure_bus)
                answers = await send_frames(f"127.0.0.1:{cloud_a.port}", STREAM, frames)
                first = [await asyncio.wait_for(anext(aiter(s)), 30) for s in (on_a, on_b)]
                yielded = await asyncio.wait_for(anext(aiter(direct)), 30)
                # Replayed from the bus's first message: the forgeries are stored there, and still never served.
                async with ResultSubscriber(f"127.0.0.1:{cloud_b.port}", [STREAM], after_sequence=1,
                                            security=PLAINTEXT) as replay:
                    replayed = await asyncio.wait_for(anext(aiter(replay)), 30)
                counted = {c: {reason: c.metrics.registry.get_sample_value("splitinfer_bus_unverified_results_total",
                                                                            {"reason": reason})
                               for reason in ("missing_signature", "bad_signature", "unknown_key",
                                              "malformed_signature")} for c in (cloud_a, cloud_b)}
                return answers, first, yielded, replayed, list(counted.values()), dict(direct.unverified)

    answers, first, yielded, replayed, counted, direct_counts = run(scenario(), timeout=240)
    assert [item.result for item in first] == answers * 2
    assert yielded == answers[0] and replayed.result == answers[0]
    for per_cloud in counted:  # every replica counted each forgery that reached its subscriber
        assert all(value and value >= 1 for value in per_cloud.values()), per_cloud
    assert direct_counts == {"missing_signature": 1, "bad_signature": 1, "unknown_key": 1, "malformed_signature": 1}


# -- key rotation ---------------------------------------------------------------------------------------------


def test_rotating_the_signing_key_loses_and_refuses_no_result(engine, secure_bus, key_files) -> None:
    write, clouds, readers = key_files
    bus_settings = dict(nats=secure_bus.url, nats_ca=secure_bus.ca, nats_user="splitinfer-cloud",
                        nats_password_file=secure_bus.passwords["splitinfer-cloud"], bus_keys=clouds)
    steps = [("a", ("a",)), ("a", ("a", "b")), ("b", ("a", "b")), ("b", ("b",))]

    async def scenario():
        async with running_cloud(engine, **bus_settings) as cloud_a, running_cloud(engine, **bus_settings) as cloud_b:
            async with ResultSubscriber(f"127.0.0.1:{cloud_b.port}", [STREAM], security=PLAINTEXT) as subscriber, \
                    BusReader(secure_bus.connection("dashboard-a"), [STREAM], keys=readers) as direct:
                await subscriber.wait_subscribed()
                served, yielded, signed_with = [], [], []
                for frame_id, (signer, verifiers) in enumerate(steps):
                    write(signer, verifiers)
                    await cloud_a.hub.publish(a_result(STREAM, frame_id))
                    served.append((await asyncio.wait_for(anext(aiter(subscriber)), 30)).result.frame_id)
                    yielded.append((await asyncio.wait_for(anext(aiter(direct)), 30)).frame_id)
                    signed_with.append(cloud_a.result_keys.current().signing_key_id)
                refused = cloud_b.metrics.registry.get_sample_value("splitinfer_bus_unverified_results_total",
                                                                    {"reason": "unknown_key"})
                return served, yielded, signed_with, refused, dict(direct.unverified)

    served, yielded, signed_with, refused, direct_refused = run(scenario(), timeout=180)
    assert served == yielded == [0, 1, 2, 3]
    assert signed_with == ["a", "a", "b", "b"]
    assert refused is None and direct_refused == {}


# -- consumer credentials -------------------------------------------------------------------------------------


def test_bus_user_maps_stream_ids_to_subject_tokens_and_refuses_patterns_nats_cannot_express() -> None:
    from splitinfer.commands.bus_user import consumer_subjects
    from splitinfer.errors import ConfigError

    assert consumer_subjects(["site-a/cam.1", "*"]) == [
        "splitinfer.results.site-a%2Fcam%2E1", "splitinfer.events.site-a%2Fcam%2E1", "splitinfer.tracks.site-a%2Fcam%2E1",
        "splitinfer.results.*", "splitinfer.events.*", "splitinfer.tracks.*"]
    for pattern in (["site-a/*"], ["cam-?"], []):
        with pytest.raises(ConfigError, match="list the ids|give --stream"):
            consumer_subjects(pattern)
