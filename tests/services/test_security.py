"""TLS, mTLS and per-stream authorization over real TLS on loopback, with certificates made by the test.

Every refusal comes with the right status and ErrorInfo reason, and leaves the other streams undisturbed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from splitinfer.channel_security import ChannelSecurity
from splitinfer.clients import ResultSubscriber, check_health
from splitinfer.errors import CloudUnavailableError, ConfigError, ServiceError
from splitinfer.channel_options import channel_options
from splitinfer.services.cloud.access import hash_token
from tests.services.certificates import Authority
from tests.services.conftest import REPO, encoded_frames, run, running_cloud
from tests.services.test_bad_input import Stream, frame_request

EDGE_A, EDGE_B, DASHBOARD = "token-of-edge-a", "token-of-edge-b", "token-of-the-dashboard"


@pytest.fixture(scope="module")
def frames(model, video) -> list:
    return encoded_frames(model, video, 3)


@pytest.fixture
def pki(tmp_path: Path):
    """A CA with a server certificate, two client certificates (one expired) and a second, unrelated CA."""
    ca = Authority(tmp_path, "site-ca")
    other = Authority(tmp_path, "other-ca")
    return {
        "ca": ca, "other": other,
        "server": ca.issue("cloud.test", server=True, file_stem="server"),
        "client": ca.issue("edge.site-a.test", server=False),
        "expired": ca.issue("edge.site-a.test", server=False, expired=True),
        "stranger": other.issue("edge.site-a.test", server=False),
    }


def write_access_file(path: Path, **extra_identities: dict) -> Path:
    import yaml

    identities = [
        {"name": "edge-a", "tokens_sha256": [hash_token(EDGE_A)], "publish": ["site-a/*"], "subscribe": ["site-a/*"],
         "max_streams": 2},
        {"name": "edge-b", "tokens_sha256": [hash_token(EDGE_B)], "publish": ["site-b/*", "shared/*"],
         "subscribe": []},
        {"name": "dashboard", "tokens_sha256": [hash_token(DASHBOARD)], "publish": [], "subscribe": ["*"]},
        *({"name": name, **fields} for name, fields in extra_identities.items()),
    ]
    identities[0]["publish"].append("shared/*")
    path.write_text(yaml.safe_dump({"identities": identities}))
    return path


def token_security(pki, tmp_path: Path, token: str | None, **kwargs) -> ChannelSecurity:
    token_file = None
    if token is not None:
        token_file = tmp_path / f"token-{abs(hash(token))}"
        token_file.write_text(token + "\n")
    return ChannelSecurity(ca_file=pki["ca"].ca, token_file=token_file, **kwargs)


def error_reason(exc: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(exc)
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status else ():
        if detail.Unpack(info):
            return info.reason
    return ""


async def refused(call_coroutine) -> tuple[grpc.StatusCode, str, str]:
    try:
        await call_coroutine
    except grpc.aio.AioRpcError as exc:
        return exc.code(), error_reason(exc), exc.details()
    raise AssertionError("the call was not refused")


async def open_stream(address: str, security: ChannelSecurity, stream_id: str, frames, count: int = 1):
    """Open an Infer stream, send `count` frames and read their results; returns (channel, stream, frame ids)."""
    channel = security.aio_channel(address, channel_options())
    stream = Stream(channel)
    await stream.open(stream_id=stream_id)
    answered = []
    for frame_id in range(count):
        await stream.send(frame_request(frames[frame_id % len(frames)], frame_id))
        answered.append((await stream.receive()).result.frame_id)
    return channel, stream, answered


def tls_cloud(engine, pki, **config):
    return running_cloud(engine, tls_cert=pki["server"].cert, tls_key=pki["server"].key, **config)


# -- transport --------------------------------------------------------------------------------------------


def test_a_tls_cloud_serves_a_client_that_trusts_its_ca(engine, pki, frames, tmp_path) -> None:
    async def scenario():
        async with tls_cloud(engine, pki) as server:
            channel, stream, answered = await open_stream(f"127.0.0.1:{server.port}",
                                                          ChannelSecurity(ca_file=pki["ca"].ca), "cam-1", frames, 2)
            await channel.close()
            return answered

    assert run(scenario()) == [0, 1]


def test_a_client_that_trusts_another_ca_is_refused_with_a_tls_hint(engine, pki) -> None:
    async def scenario():
        async with tls_cloud(engine, pki) as server:
            subscriber = ResultSubscriber(f"127.0.0.1:{server.port}", security=ChannelSecurity(ca_file=pki["other"].ca))
            async with subscriber:
                with pytest.raises(CloudUnavailableError) as raised:
                    await subscriber.wait_subscribed(timeout=10)
            return str(raised.value)

    message = run(scenario())
    assert "TLS handshake failed" in message and "--tls-ca" in message


def test_a_plaintext_client_cannot_talk_to_a_tls_cloud(engine, pki) -> None:
    async def scenario():
        async with tls_cloud(engine, pki) as server:
            with pytest.raises(CloudUnavailableError):
                await asyncio.to_thread(check_health, f"127.0.0.1:{server.port}", timeout=3,
                                        security=ChannelSecurity(plaintext=True))

    run(scenario())


@pytest.mark.parametrize("client", ["none", "expired", "stranger"])
def test_mtls_refuses_clients_without_a_valid_certificate_from_the_client_ca(engine, pki, frames, client) -> None:
    async def scenario():
        async with tls_cloud(engine, pki, tls_client_ca=pki["ca"].ca) as server:
            address = f"127.0.0.1:{server.port}"
            good = ChannelSecurity(ca_file=pki["ca"].ca, cert_file=pki["client"].cert, key_file=pki["client"].key)
            channel, honest, answered = await open_stream(address, good, "cam-honest", frames)
            issued = pki.get(client)
            bad = ChannelSecurity(ca_file=pki["ca"].ca, cert_file=issued.cert if issued else None,
                                  key_file=issued.key if issued else None)
            async with bad.aio_channel(address, channel_options()) as bad_channel:
                code, _, _ = await refused(Stream(bad_channel).open(stream_id="cam-intruder"))
            await honest.send(frame_request(frames[1], 1))  # the honest stream goes on
            answered.append((await honest.receive()).result.frame_id)
            await channel.close()
            return code, answered

    code, answered = run(scenario())
    assert code == grpc.StatusCode.UNAVAILABLE
    assert answered == [0, 1]


def test_the_cloud_serves_a_renewed_certificate_without_a_restart(engine, pki, frames, tmp_path) -> None:
    renewed_ca = Authority(tmp_path, "renewed-ca")

    async def scenario():
        async with tls_cloud(engine, pki) as server:
            address = f"127.0.0.1:{server.port}"
            old_trust, new_trust = ChannelSecurity(ca_file=pki["ca"].ca), ChannelSecurity(ca_file=renewed_ca.ca)
            channel, stream, _ = await open_stream(address, old_trust, "cam-1", frames)
            renewed = renewed_ca.issue("cloud.test", server=True, file_stem="renewed")
            os.replace(renewed.key, pki["server"].key)
            os.replace(renewed.cert, pki["server"].cert)
            await stream.send(frame_request(frames[1], 1))  # the open connection keeps working
            kept = (await stream.receive()).result.frame_id
            status_new = await asyncio.to_thread(check_health, address, security=new_trust)
            with pytest.raises(CloudUnavailableError):
                await asyncio.to_thread(check_health, address, timeout=3, security=old_trust)
            await channel.close()
            return kept, status_new, server.certificates.reloads

    kept, status_new, reloads = run(scenario())
    assert kept == 1 and status_new == "SERVING" and reloads == 1


def test_a_renewal_that_does_not_load_keeps_the_previous_certificate(engine, pki, caplog) -> None:
    async def scenario():
        async with tls_cloud(engine, pki) as server:
            pki["server"].key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
            return await asyncio.to_thread(check_health, f"127.0.0.1:{server.port}",
                                           security=ChannelSecurity(ca_file=pki["ca"].ca))

    assert run(scenario()) == "SERVING"
    assert "do not load" in caplog.text


def test_the_plaintext_health_port_answers_probes_while_the_main_port_speaks_tls(engine, pki) -> None:
    async def scenario():
        async with tls_cloud(engine, pki, health_port=0) as server:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="splitinfer.v1.InferenceService"), timeout=10)
                inference = await refused(Stream(channel).open(stream_id="cam-1"))
            return response.status, inference[0]

    status, inference_code = run(scenario())
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert inference_code == grpc.StatusCode.UNIMPLEMENTED  # only health lives on that port


# -- authorization ----------------------------------------------------------------------------------------


def test_without_a_token_the_cloud_answers_unauthenticated_but_health_stays_open(engine, pki, tmp_path) -> None:
    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=write_access_file(tmp_path / "access.yaml")) as server:
            address = f"127.0.0.1:{server.port}"
            anonymous = ChannelSecurity(ca_file=pki["ca"].ca)
            health = await asyncio.to_thread(check_health, address, security=anonymous)
            async with anonymous.aio_channel(address, channel_options()) as channel:
                infer = await refused(Stream(channel).open(stream_id="site-a/cam-1"))
            async with ResultSubscriber(address, ["site-a/cam-1"], security=anonymous) as subscriber:
                with pytest.raises(ServiceError) as raised:
                    await subscriber.wait_subscribed()
            return health, infer, str(raised.value)

    health, (code, reason, details), subscribe_error = run(scenario())
    assert health == "SERVING"
    assert code == grpc.StatusCode.UNAUTHENTICATED and reason == "MISSING_CREDENTIALS" and "--token-file" in details
    assert "UNAUTHENTICATED" in subscribe_error


def test_every_inference_service_method_refuses_a_caller_without_credentials(engine, pki, tmp_path) -> None:
    from splitinfer.v1 import inference_pb2, inference_pb2_grpc
    from tests.services.test_abuse import metric

    service = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"]

    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=write_access_file(tmp_path / "access.yaml")) as server:
            address = f"127.0.0.1:{server.port}"
            async with ChannelSecurity(ca_file=pki["ca"].ca).aio_channel(address, channel_options()) as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)

                async def first_answer(call):
                    return await call.read()

                async def credits_call():
                    call = stub.SubscribeWithCredits()
                    await call.write(inference_pb2.SubscribeWithCreditsRequest(credits=1))
                    return await call.read()

                calls = {
                    "Infer": first_answer(stub.Infer()),
                    "Subscribe": first_answer(stub.Subscribe(inference_pb2.SubscribeRequest())),
                    "SubscribeWithCredits": credits_call(),
                    "GetServerMetadata": stub.GetServerMetadata(inference_pb2.GetServerMetadataRequest()),
                }
                refusals = {name: await refused(call) for name, call in calls.items()}
            return refusals, metric(server, 'splitinfer_rejected_streams_total{reason="unauthenticated"}')

    refusals, counted = run(scenario())
    assert set(refusals) == {method.name for method in service.methods}  # the interceptor covers them all
    for code, reason, _ in refusals.values():
        assert code == grpc.StatusCode.UNAUTHENTICATED and reason == "MISSING_CREDENTIALS"
    assert counted == 4


def test_a_wrong_token_is_refused_not_ignored(engine, pki, frames, tmp_path) -> None:
    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=write_access_file(tmp_path / "access.yaml")) as server:
            address = f"127.0.0.1:{server.port}"
            channel, honest, answered = await open_stream(address, token_security(pki, tmp_path, EDGE_A),
                                                          "site-a/cam-1", frames)
            async with token_security(pki, tmp_path, "guessed").aio_channel(address, channel_options()) as bad:
                result = await refused(Stream(bad).open(stream_id="site-a/cam-1"))
            await honest.send(frame_request(frames[1], 1))
            answered.append((await honest.receive()).result.frame_id)
            await channel.close()
            return result, answered

    (code, reason, _), answered = run(scenario())
    assert code == grpc.StatusCode.UNAUTHENTICATED and reason == "INVALID_TOKEN"
    assert answered == [0, 1]


def test_an_identity_publishes_and_reads_only_the_streams_its_patterns_allow(engine, pki, frames, tmp_path) -> None:
    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=write_access_file(tmp_path / "access.yaml")) as server:
            address = f"127.0.0.1:{server.port}"
            edge_a, edge_b = token_security(pki, tmp_path, EDGE_A), token_security(pki, tmp_path, EDGE_B)
            async with edge_a.aio_channel(address, channel_options()) as channel:
                publish = await refused(Stream(channel).open(stream_id="site-b/cam-1"))
            async with ResultSubscriber(address, ["site-b/cam-1"], security=edge_a) as wrong_scope:
                with pytest.raises(ServiceError) as subscribe_error:
                    await wrong_scope.wait_subscribed()
            # A subscription to every stream sees only the ones this identity may read.
            async with ResultSubscriber(address, [], security=edge_a) as everything_allowed:
                await everything_allowed.wait_subscribed()
                channel_a, _, _ = await open_stream(address, edge_a, "site-a/cam-1", frames)
                channel_b, _, _ = await open_stream(address, edge_b, "site-b/cam-1", frames)
                seen = await asyncio.wait_for(anext(aiter(everything_allowed)), 30)
                await channel_b.close()
                channel_a2, _, _ = await open_stream(address, edge_a, "site-a/cam-2", frames)
                second = await asyncio.wait_for(anext(aiter(everything_allowed)), 30)
            for c in (channel_a, channel_a2):
                await c.close()
            return publish, str(subscribe_error.value), [seen.result.stream_id, second.result.stream_id]

    (code, reason, details), subscribe_error, seen = run(scenario())
    assert code == grpc.StatusCode.PERMISSION_DENIED and reason == "STREAM_NOT_PERMITTED" and "edge-a" in details
    assert "PERMISSION_DENIED" in subscribe_error
    assert seen == ["site-a/cam-1", "site-a/cam-2"]


def test_another_identity_cannot_take_a_stream_over_but_its_owner_can_resume_it(engine, pki, frames,
                                                                                tmp_path) -> None:
    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=write_access_file(tmp_path / "access.yaml")) as server:
            address = f"127.0.0.1:{server.port}"
            edge_a, edge_b = token_security(pki, tmp_path, EDGE_A), token_security(pki, tmp_path, EDGE_B)
            channel, owner, answered = await open_stream(address, edge_a, "shared/cam-1", frames)
            async with edge_b.aio_channel(address, channel_options()) as intruder_channel:
                takeover = await refused(Stream(intruder_channel).open(stream_id="shared/cam-1"))
            await owner.send(frame_request(frames[1], 1))
            answered.append((await owner.receive()).result.frame_id)
            resumed_channel, _, resumed = await open_stream(address, edge_a, "shared/cam-1", frames)
            old_status = await owner.status()
            for c in (channel, resumed_channel):
                await c.close()
            return takeover, answered, resumed, old_status[0]

    (code, reason, _), answered, resumed, old_status = run(scenario())
    assert code == grpc.StatusCode.PERMISSION_DENIED and reason == "STREAM_OWNED_BY_OTHER"
    assert answered == [0, 1] and resumed == [0]
    assert old_status == grpc.StatusCode.ABORTED  # the owner's own reconnect took over, as before


@pytest.mark.slow
def test_a_thousand_junk_ids_of_a_wide_identity_do_not_evict_another_identitys_ownership(engine, pki, frames,
                                                                                      tmp_path) -> None:
    wide_token = "token-of-a-wide-identity"
    access = write_access_file(tmp_path / "access.yaml", wide={"tokens_sha256": [hash_token(wide_token)],
                                                               "publish": ["*"], "subscribe": []})

    async def open_and_close(channel: grpc.aio.Channel, stream_id: str) -> None:
        stream = Stream(channel)
        await stream.open(stream_id=stream_id)
        await stream.call.done_writing()
        assert (await stream.status())[0] == grpc.StatusCode.OK

    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=access) as server:
            address = f"127.0.0.1:{server.port}"
            edge_a, wide = token_security(pki, tmp_path, EDGE_A), token_security(pki, tmp_path, wide_token)
            channel, victim, _ = await open_stream(address, edge_a, "shared/cam-1", frames)
            await victim.call.done_writing()
            await victim.status()
            await channel.close()
            async with wide.aio_channel(address, channel_options()) as flood:
                for batch in range(0, 1000, 4):  # four at a time: within any per-identity cap
                    await asyncio.gather(*(open_and_close(flood, f"junk/{i}") for i in range(batch, batch + 4)))
                takeover = await refused(Stream(flood).open(stream_id="shared/cam-1"))
            channel, _, resumed = await open_stream(address, edge_a, "shared/cam-1", frames)
            await channel.close()
            return takeover, resumed

    (code, reason, _), resumed = run(scenario(), timeout=600)
    assert code == grpc.StatusCode.PERMISSION_DENIED and reason == "STREAM_OWNED_BY_OTHER"
    assert resumed == [0]


def test_an_identity_is_held_to_its_stream_limit(engine, pki, frames, tmp_path) -> None:
    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=write_access_file(tmp_path / "access.yaml")) as server:
            address = f"127.0.0.1:{server.port}"
            edge_a = token_security(pki, tmp_path, EDGE_A)
            opened = [await open_stream(address, edge_a, f"site-a/cam-{i}", frames) for i in range(2)]
            async with edge_a.aio_channel(address, channel_options()) as channel:
                third = await refused(Stream(channel).open(stream_id="site-a/cam-3"))
            other = await open_stream(address, token_security(pki, tmp_path, EDGE_B), "site-b/cam-1", frames)
            for c, _, _ in (*opened, other):
                await c.close()
            return third, other[2]

    (code, reason, _), other = run(scenario())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason == "IDENTITY_MAX_STREAMS"
    assert other == [0]


def test_a_client_certificate_listed_in_the_access_file_is_an_identity(engine, pki, frames, tmp_path) -> None:
    access = write_access_file(tmp_path / "access.yaml", camera={"client_certificates": ["edge.site-a.test"],
                                                                   "publish": ["site-c/*"]})

    async def scenario():
        async with tls_cloud(engine, pki, tls_client_ca=pki["ca"].ca, auth_tokens=access) as server:
            address = f"127.0.0.1:{server.port}"
            by_cert = ChannelSecurity(ca_file=pki["ca"].ca, cert_file=pki["client"].cert, key_file=pki["client"].key)
            channel, _, answered = await open_stream(address, by_cert, "site-c/cam-1", frames)
            async with by_cert.aio_channel(address, channel_options()) as other_channel:
                outside = await refused(Stream(other_channel).open(stream_id="site-a/cam-1"))
            await channel.close()
            return answered, outside

    answered, (code, reason, _) = run(scenario())
    assert answered == [0]
    assert code == grpc.StatusCode.PERMISSION_DENIED and reason == "STREAM_NOT_PERMITTED"


def test_a_changed_access_file_takes_effect_without_a_restart(engine, pki, frames, tmp_path) -> None:
    access = write_access_file(tmp_path / "access.yaml")

    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=access) as server:
            address = f"127.0.0.1:{server.port}"
            newcomer = token_security(pki, tmp_path, "token-of-a-new-camera")
            async with newcomer.aio_channel(address, channel_options()) as channel:
                before = await refused(Stream(channel).open(stream_id="site-n/cam-1"))
            write_access_file(access, newcomer={"tokens_sha256": [hash_token("token-of-a-new-camera")],
                                                "publish": ["site-n/*"]})
            os.utime(access, ns=(os.stat(access).st_atime_ns, os.stat(access).st_mtime_ns + 1_000_000))
            channel, _, answered = await open_stream(address, newcomer, "site-n/cam-1", frames)
            await channel.close()
            return before[0], answered

    before, answered = run(scenario())
    assert before == grpc.StatusCode.UNAUTHENTICATED and answered == [0]


# -- configuration mistakes -------------------------------------------------------------------------------


def test_client_settings_that_would_leak_a_credential_are_refused(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("secret")
    with pytest.raises(ConfigError, match="--plaintext cannot be combined with --token-file"):
        ChannelSecurity(plaintext=True, token_file=token)
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        ChannelSecurity(cert_file=tmp_path / "cert.pem")
    with pytest.raises(ConfigError, match="cannot be read"):
        ChannelSecurity(ca_file=tmp_path / "missing.pem").credentials()
    (tmp_path / "two").write_text("one two\n")
    with pytest.raises(ConfigError, match="must hold one token"):
        ChannelSecurity(token_file=tmp_path / "two").credentials()


def _cloud(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitinfer.cli", "cloud", "--metrics-port", "-1", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_the_cloud_command_refuses_to_start_without_tls_or_an_explicit_plaintext(tmp_path, pki) -> None:
    no_choice = _cloud()
    assert no_choice.returncode == 2 and "--tls-cert and --tls-key" in no_choice.stderr and "--plaintext" in no_choice.stderr
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("nonsense")
    mismatched = _cloud("--tls-cert", str(pki["server"].cert), "--tls-key", str(bad_key), "--port", "0")
    assert mismatched.returncode == 2 and "do not load as a PEM certificate chain" in mismatched.stderr
    token_in_clear = _cloud("--plaintext", "--auth-tokens", str(tmp_path / "access.yaml"))
    assert token_in_clear.returncode == 2 and "--auth-tokens needs TLS" in token_in_clear.stderr


def test_plaintext_beyond_loopback_is_announced_loudly(caplog) -> None:
    from splitinfer.services.cloud.server import _warn_if_exposed

    _warn_if_exposed("127.0.0.1")
    _warn_if_exposed("[::1]")
    assert "PLAINTEXT" not in caplog.text
    _warn_if_exposed("[::]")
    assert "PLAINTEXT" in caplog.text


def test_a_revoked_client_certificate_is_refused_after_one_reload_and_the_other_edges_go_on(engine, pki, frames,
                                                                                            tmp_path) -> None:
    from cryptography import x509

    second = pki["ca"].issue("edge.site-b.test", server=False)
    access = tmp_path / "access.yaml"
    identities = [{"name": "camera-a", "client_certificates": ["edge.site-a.test"], "publish": ["site-a/*"]},
                  {"name": "camera-b", "client_certificates": ["edge.site-b.test"], "publish": ["site-b/*"]}]
    access.write_text(yaml.safe_dump({"identities": identities}))
    serial = x509.load_pem_x509_certificate(pki["client"].cert.read_bytes()).serial_number

    async def scenario():
        async with tls_cloud(engine, pki, tls_client_ca=pki["ca"].ca, auth_tokens=access) as server:
            address = f"127.0.0.1:{server.port}"
            a = ChannelSecurity(ca_file=pki["ca"].ca, cert_file=pki["client"].cert, key_file=pki["client"].key)
            b = ChannelSecurity(ca_file=pki["ca"].ca, cert_file=second.cert, key_file=second.key)
            channel_b, edge_b, answered_b = await open_stream(address, b, "site-b/cam-1", frames)
            channel_open_a, open_a, _ = await open_stream(address, a, "site-a/cam-0", frames)
            # Revoked by serial number, as `openssl x509 -noout -serial` prints it (colons are allowed too).
            access.write_text(yaml.safe_dump({"identities": identities, "revoked_certificates": [
                {"serial": f"{serial:X}", "note": "stolen"}]}))
            os.utime(access, ns=(os.stat(access).st_atime_ns, os.stat(access).st_mtime_ns + 1_000_000))
            async with a.aio_channel(address, channel_options()) as channel_a:
                revoked = await refused(Stream(channel_a).open(stream_id="site-a/cam-1"))
            await open_a.send(frame_request(frames[1], 1))  # its stream that was open ends at its next frame
            ended_a = await open_a.status()
            await edge_b.send(frame_request(frames[1], 1))  # the other edge's open stream goes on
            answered_b.append((await edge_b.receive()).result.frame_id)
            channel_b2, _, reopened_b = await open_stream(address, b, "site-b/cam-2", frames)  # and it reconnects
            for c in (channel_b, channel_b2, channel_open_a):
                await c.close()
            return revoked, ended_a, answered_b, reopened_b

    (code, reason, details), ended_a, answered_b, reopened_b = run(scenario())
    assert code == grpc.StatusCode.UNAUTHENTICATED and reason == "REVOKED_CERTIFICATE" and "revoked" in details
    assert ended_a[0] == grpc.StatusCode.UNAUTHENTICATED and "changed while this call was open" in ended_a[1]
    assert answered_b == [0, 1] and reopened_b == [0]


def test_metrics_ask_for_the_bearer_token_when_a_token_file_is_given(engine, pki, tmp_path) -> None:
    token = tmp_path / "metrics.token"
    token.write_text("scrape-token-for-the-test\n")

    async def get(port: int, authorization: str | None) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                     + (f"Authorization: {authorization}\r\n".encode() if authorization else b"") + b"\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer.split(b"\r\n", 1)[0]

    async def scenario():
        async with tls_cloud(engine, pki, metrics_port=0, metrics_token_file=token) as server:
            port = server.metrics_port
            return [await get(port, None), await get(port, "Bearer wrong"),
                    await get(port, "Bearer scrape-token-for-the-test")]

    assert run(scenario()) == [b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 200 OK"]


def test_bus_and_metrics_settings_that_cannot_work_are_refused_before_serving(engine, pki, tmp_path) -> None:
    from splitinfer.services.cloud.server import CloudConfig

    with pytest.raises(ServiceError, match="--nats-ca needs --nats"):
        CloudConfig(plaintext=True, nats_ca=pki["ca"].ca)
    with pytest.raises(ServiceError, match="--nats-user and --nats-password-file"):
        _ = CloudConfig(plaintext=True, nats="nats://127.0.0.1:1", nats_user="cloud").bus_connection
    empty = tmp_path / "empty.token"
    empty.write_text("\n")

    async def scenario():
        with pytest.raises(ServiceError, match="--metrics-token-file .* one token"):
            async with tls_cloud(engine, pki, metrics_port=0, metrics_token_file=empty):
                pass

    run(scenario())


def test_an_open_subscription_ends_once_its_token_is_removed_from_the_access_file(engine, pki, frames,
                                                                                  tmp_path) -> None:
    access = write_access_file(tmp_path / "access.yaml")

    async def scenario():
        async with tls_cloud(engine, pki, auth_tokens=access) as server:
            address = f"127.0.0.1:{server.port}"
            dashboard = token_security(pki, tmp_path, DASHBOARD)
            async with ResultSubscriber(address, ["site-a/cam-1"], security=dashboard, reconnect=False) as results:
                await results.wait_subscribed()
                channel, _, _ = await open_stream(address, token_security(pki, tmp_path, EDGE_A), "site-a/cam-1",
                                                  frames)
                first = await asyncio.wait_for(anext(aiter(results)), 30)
                identities = yaml.safe_load(access.read_text())["identities"]
                access.write_text(yaml.safe_dump({"identities": [i for i in identities if i["name"] != "dashboard"]}))
                os.utime(access, ns=(os.stat(access).st_atime_ns, os.stat(access).st_mtime_ns + 1_000_000))
                edge = Stream(channel)
                await edge.open(stream_id="site-a/cam-1")
                await edge.send(frame_request(frames[1], 1))
                await edge.receive()
                with pytest.raises(ServiceError) as ended:
                    await asyncio.wait_for(anext(aiter(results)), 30)
                await channel.close()
            return first.result.frame_id, str(ended.value)

    first, ended = run(scenario())
    assert first == 0
    assert "UNAUTHENTICATED" in ended and "changed while this call was open" in ended
