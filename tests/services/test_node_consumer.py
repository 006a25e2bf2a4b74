"""A non-Python consumer: the Node.js example reads the same results from gRPC Subscribe and from the bus."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services.conftest import REPO, encoded_frames, run, running_cloud
from tests.services.nats_server import nats_server  # noqa: F401 - a fixture
from tests.services.test_subscriptions import send_frames

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "clients" / "examples" / "node-consumer"
STREAM = "site-a/cam-node"
COUNT = 3


@pytest.fixture(scope="module")
def node_example(tmp_path_factory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed (the Node.js consumer example needs Node 18 or newer)")
    folder = tmp_path_factory.mktemp("node-consumer")
    for name in ("package.json", "package-lock.json", "consume.js"):
        shutil.copy(EXAMPLE / name, folder / name)
    installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=folder,
                               capture_output=True, text=True, timeout=300)
    if installed.returncode != 0:
        pytest.skip(f"npm ci could not install the example's packages (no registry?): {installed.stderr[-500:]}")
    return folder


def test_the_node_consumer_reads_the_python_edges_results_from_grpc_and_from_the_bus(
        engine, model, video, nats_server, node_example) -> None:
    frames = encoded_frames(model, video, COUNT)

    async def scenario():
        async with running_cloud(engine, nats=nats_server.url, nats_json=True) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            node = await asyncio.create_subprocess_exec(
                "node", "consume.js", "--grpc", address, "--plaintext", "--nats", nats_server.url, "--stream", STREAM,
                "--count", str(COUNT), "--protos", str(REPO / "protos"), cwd=node_example,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            ready = await asyncio.wait_for(node.stdout.readline(), 60)
            assert json.loads(ready) == {"ready": True}, ready
            answers = await send_frames(address, STREAM, frames)
            out, err = await asyncio.wait_for(node.communicate(), 60)
            assert node.returncode == 0, err.decode()
            return answers, [json.loads(line) for line in out.decode().splitlines()]

    answers, lines = run(scenario())
    by_source = {"grpc": [], "nats": []}
    for line in lines:
        by_source[line["source"]].append(line)
    for answer, from_grpc, from_nats in zip(answers, by_source["grpc"], by_source["nats"], strict=True):
        expected = [(d.class_id, d.label, round(d.score, 4), round(d.x1, 2)) for d in answer.detections]
        grpc_result, bus_result = from_grpc["result"], from_nats["event"]["data"]
        assert grpc_result["frame_id"] == bus_result["frame_id"] == str(answer.frame_id)
        assert grpc_result["stream_id"] == bus_result["stream_id"] == STREAM
        for result in (grpc_result, bus_result):
            assert [(d["class_id"], d["label"], round(d["score"], 4), round(d["x1"], 2))
                    for d in result["detections"]] == expected
        assert from_nats["event"]["specversion"] == "1.0" and from_nats["contentType"].startswith(
            "application/cloudevents+json")


def test_the_node_consumer_reads_results_over_tls_with_a_bearer_token_and_is_refused_without_one(
        engine, model, video, node_example, tmp_path) -> None:
    from splitinfer.channel_security import ChannelSecurity
    from tests.services.certificates import Authority
    from tests.services.test_security import DASHBOARD, EDGE_A, token_security, write_access_file

    frames = encoded_frames(model, video, 1)
    ca = Authority(tmp_path, "node-ca")
    server = ca.issue("cloud.test", server=True, file_stem="server")
    pki = {"ca": ca}
    dashboard = token_security(pki, tmp_path, DASHBOARD)

    async def consume(*flags: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "node", "consume.js", *flags, "--stream", "site-a/cam-tls", "--count", "1", "--protos",
            str(REPO / "protos"), cwd=node_example, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def scenario():
        async with running_cloud(engine, tls_cert=server.cert, tls_key=server.key,
                                 auth_tokens=write_access_file(tmp_path / "access.yaml")) as cloud:
            address = f"127.0.0.1:{cloud.port}"
            refused = await consume("--grpc", address, "--tls-ca", str(ca.ca))
            _, refused_err = await asyncio.wait_for(refused.communicate(), 60)
            node = await consume("--grpc", address, "--tls-ca", str(ca.ca), "--token-file", str(dashboard.token_file))
            ready = await asyncio.wait_for(node.stdout.readline(), 60)
            assert json.loads(ready) == {"ready": True}, ready
            answers = await send_frames(address, "site-a/cam-tls", frames,
                                        security=token_security(pki, tmp_path, EDGE_A))
            out, err = await asyncio.wait_for(node.communicate(), 60)
            assert node.returncode == 0, err.decode()
            return refused.returncode, refused_err.decode(), answers, json.loads(out.decode().splitlines()[0])

    refused_code, refused_err, answers, line = run(scenario())
    assert refused_code != 0 and "UNAUTHENTICATED" in refused_err
    assert line["source"] == "grpc" and line["result"]["frame_id"] == str(answers[0].frame_id)
    assert isinstance(dashboard, ChannelSecurity)
