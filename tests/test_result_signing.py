"""Result signatures: what a key file accepts and refuses (with the place and the fix), and what verifies."""

from __future__ import annotations

import base64
import os

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.cli import main
from splitinfer.result_signing import (
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    ResultKeyError,
    ResultKeys,
    UnverifiedResultError,
    generate_key,
    result_key_file,
)

PRIVATE_A, PUBLIC_A = generate_key()
PRIVATE_B, PUBLIC_B = generate_key()
CLOUDS = {"keys": {"a": PUBLIC_A, "b": PUBLIC_B}, "signing_key": {"id": "a", "private": PRIVATE_A}}
SUBJECT, MSG_ID, PAYLOAD = "splitinfer.results.cam-1", "cam-1/0@1", b"\x08\x01result bytes"


def signed(keys: ResultKeys, subject: str = SUBJECT, msg_id: str = MSG_ID, payload: bytes = PAYLOAD) -> dict:
    return {"Nats-Msg-Id": msg_id, **keys.sign(subject, msg_id, payload)}


def test_a_signature_verifies_with_the_public_key_only_and_binds_subject_id_and_payload() -> None:
    clouds, readers = ResultKeys.parse(CLOUDS), ResultKeys.parse({"keys": {"a": PUBLIC_A}})
    headers = signed(clouds)
    assert readers.verify(SUBJECT, headers, PAYLOAD) == "a" and not readers.can_sign
    for subject, msg_id, payload in ((SUBJECT + "x", MSG_ID, PAYLOAD), (SUBJECT, MSG_ID + "x", PAYLOAD),
                                     (SUBJECT, MSG_ID, PAYLOAD + b"x")):
        with pytest.raises(UnverifiedResultError) as raised:
            readers.verify(subject, {**headers, "Nats-Msg-Id": msg_id}, payload)
        assert raised.value.reason == "bad_signature"
    with pytest.raises(ResultKeyError, match="no signing_key"):
        readers.sign(SUBJECT, MSG_ID, PAYLOAD)


@pytest.mark.parametrize("headers, reason", [
    (None, "missing_signature"),
    ({"Nats-Msg-Id": MSG_ID}, "missing_signature"),
    ({KEY_ID_HEADER: "a"}, "missing_signature"),
    ({KEY_ID_HEADER: "z", SIGNATURE_HEADER: base64.b64encode(bytes(64)).decode()}, "unknown_key"),
    ({KEY_ID_HEADER: "a", SIGNATURE_HEADER: "not base64!"}, "malformed_signature"),
    ({KEY_ID_HEADER: "a", SIGNATURE_HEADER: base64.b64encode(bytes(10)).decode()}, "malformed_signature"),
    ({KEY_ID_HEADER: "a", SIGNATURE_HEADER: base64.b64encode(bytes(64)).decode()}, "bad_signature"),
    ({KEY_ID_HEADER: "b", SIGNATURE_HEADER: None}, "missing_signature"),
])
def test_unsigned_or_wrongly_signed_messages_are_refused_with_a_reason(headers, reason) -> None:
    if headers and headers.get(SIGNATURE_HEADER, "") is None:
        headers = {KEY_ID_HEADER: "b", SIGNATURE_HEADER: signed(ResultKeys.parse(CLOUDS))[SIGNATURE_HEADER]}
        reason = "bad_signature"  # a real signature by key a, claimed to be by key b
    with pytest.raises(UnverifiedResultError) as raised:
        ResultKeys.parse(CLOUDS).verify(SUBJECT, headers, PAYLOAD)
    assert raised.value.reason == reason


@pytest.mark.parametrize("document, message", [
    (None, "at least one entry under 'keys'"),
    ({"keys": {}}, "at least one entry under 'keys'"),
    ({"keys": {"a": PUBLIC_A}, "extra": 1}, "unknown keys"),
    ({"keys": {"a": "not base64"}}, "32-byte Ed25519 public key"),
    ({"keys": {"a": base64.b64encode(bytes(16)).decode()}}, "32-byte Ed25519 public key"),
    ({"keys": {"bad id!": PUBLIC_A}}, "key id"),
    ({"keys": {"a": PUBLIC_A}, "signing_key": {"id": "a"}}, "exactly 'id' and 'private'"),
    ({"keys": {"a": PUBLIC_A}, "signing_key": {"id": "a", "private": "xx"}}, "32-byte Ed25519 private key"),
    ({"keys": {"a": PUBLIC_A}, "signing_key": {"id": "b", "private": PRIVATE_B}}, "not listed under 'keys'"),
    ({"keys": {"a": PUBLIC_B}, "signing_key": {"id": "a", "private": PRIVATE_A}}, "does not belong"),
])
def test_malformed_key_files_are_refused_with_the_place_and_the_fix(document, message) -> None:
    with pytest.raises(ResultKeyError, match=message):
        ResultKeys.parse(document)


def test_a_key_file_that_is_missing_or_not_yaml_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ResultKeyError, match="cannot be read"):
        ResultKeys.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("keys: [unclosed")
    with pytest.raises(ResultKeyError, match="not valid YAML"):
        ResultKeys.load(tmp_path / "bad.yaml")


def test_a_changed_key_file_is_re_read_and_one_that_does_not_load_keeps_the_previous_keys(tmp_path, caplog) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": {"a": PUBLIC_A}}))
    keys = result_key_file(path)

    def touch() -> None:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    path.write_text(yaml.safe_dump({"keys": {"a": PUBLIC_A, "b": PUBLIC_B}}))
    touch()
    assert set(keys.current().public_keys) == {"a", "b"}
    path.write_text("keys: {a: broken}")
    touch()
    assert set(keys.current().public_keys) == {"a", "b"}
    assert "keeping the previous keys" in caplog.text


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([KEY_ID_HEADER, SIGNATURE_HEADER, "Nats-Msg-Id"]), st.text(max_size=100)),
       st.binary(max_size=64))
def test_any_headers_either_verify_or_raise_unverified_result_error(headers, payload) -> None:
    try:
        ResultKeys.parse(CLOUDS).verify(SUBJECT, headers, payload)
    except UnverifiedResultError:
        return
    raise AssertionError("made-up headers verified")


def test_the_bus_key_command_writes_a_clouds_file_that_signs_and_prints_the_readers_line(tmp_path, capsys) -> None:
    out = tmp_path / "clouds.yaml"
    assert main(["bus-key", "--key-id", "2027-01", "--key-out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    clouds = ResultKeys.load(out)
    readers = ResultKeys.parse(yaml.safe_load(capsys.readouterr().out))
    assert readers.verify(SUBJECT, signed(clouds), PAYLOAD) == "2027-01"
    assert main(["bus-key", "--key-out", str(out)]) == 2  # never overwrites a key
    assert main(["bus-key", "--key-id", "no spaces"]) == 2


def test_the_clouds_key_file_must_keep_a_signing_key_at_start_and_on_reload(tmp_path, caplog) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": {"a": PUBLIC_A}}))
    with pytest.raises(ResultKeyError, match="no signing_key"):
        result_key_file(path, signing=True)
    path.write_text(yaml.safe_dump(CLOUDS))
    keys = result_key_file(path, signing=True)
    path.write_text(yaml.safe_dump({"keys": {"a": PUBLIC_A, "b": PUBLIC_B}}))  # a readers' file by mistake
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert keys.current().signing_key_id == "a" and "keeping the previous keys" in caplog.text
