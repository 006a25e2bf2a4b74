"""The access file: what it accepts, what it refuses (with the place and the fix), and how calls map to identities."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from splitinfer.cli import main
from splitinfer.services.cloud.access import (
    ANONYMOUS,
    AccessConfigError,
    AccessFile,
    AccessPolicy,
    AuthenticationError,
    hash_token,
)

GOOD = {"identities": [
    {"name": "edge", "tokens_sha256": [hash_token("t1"), hash_token("t1-next")], "publish": ["site-a/*"],
     "subscribe": ["site-a/*"], "max_streams": 3},
    {"name": "camera", "client_certificates": ["cam.example"], "publish": ["cams/?"]},
]}


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_a_token_and_its_rotation_successor_map_to_the_same_identity() -> None:
    policy = AccessPolicy.parse(GOOD)
    assert policy.authenticate(bearer("t1"), []).name == "edge"
    assert policy.authenticate(bearer("t1-next"), []).name == "edge"
    identity = policy.authenticate(bearer("t1"), [])
    assert identity.may_publish("site-a/cam-1") and not identity.may_publish("site-b/cam-1")
    assert identity.max_streams == 3


def test_a_certificate_name_maps_to_its_identity_and_patterns_are_shell_style() -> None:
    camera = AccessPolicy.parse(GOOD).authenticate([], ["cam.example"])
    assert camera.name == "camera" and camera.may_publish("cams/1") and not camera.may_publish("cams/12")
    assert not camera.may_subscribe("cams/1")  # no subscribe patterns: reads nothing


@pytest.mark.parametrize("metadata, peer, reason", [
    ([], [], "MISSING_CREDENTIALS"),
    (bearer("wrong"), [], "INVALID_TOKEN"),
    (bearer("wrong"), ["cam.example"], "INVALID_TOKEN"),  # a wrong token is never ignored in favour of a certificate
    ([("authorization", "Basic dXNlcjpwYXNz")], [], "MALFORMED_TOKEN"),
    ([], ["stranger.example"], "UNKNOWN_CERTIFICATE"),
])
def test_calls_without_a_valid_credential_are_refused_with_a_reason(metadata, peer, reason) -> None:
    with pytest.raises(AuthenticationError) as raised:
        AccessPolicy.parse(GOOD).authenticate(metadata, peer)
    assert raised.value.reason == reason


def test_without_an_access_file_every_caller_may_do_everything_and_certificates_tell_callers_apart() -> None:
    policy = AccessPolicy()
    assert policy.authenticate([], []) == ANONYMOUS
    assert policy.authenticate([], ["a.example"]).name == "x509:a.example"
    assert policy.authenticate([], ["a.example"]).may_publish("any/stream")


@pytest.mark.parametrize("document, message", [
    ([], "a list under 'identities'"),
    ({"identities": [{"name": "x", "tokens_sha256": ["t1"]}]}, "not a SHA-256 hex digest"),
    ({"identities": [{"name": "x", "publish": ["*"]}]}, "give tokens_sha256 or client_certificates"),
    ({"identities": [{"name": "x", "tokens_sha256": [hash_token("a")], "publsh": []}]}, "unknown keys ['publsh']"),
    ({"identities": [{"name": "x", "tokens_sha256": [hash_token("a")], "max_streams": 0}]}, "max_streams"),
    ({"identities": [{"name": "x", "tokens_sha256": [hash_token("a")]},
                     {"name": "x", "tokens_sha256": [hash_token("b")]}]}, "used twice"),
    ({"identities": [{"name": "x", "tokens_sha256": [hash_token("a")]},
                     {"name": "y", "tokens_sha256": [hash_token("a")]}]}, "also listed under another identity"),
    ({"identities": [{"name": "x", "tokens_sha256": [hash_token("a")], "publish": "site-a/*"}]}, "list of non-empty"),
])
def test_malformed_access_files_are_refused_with_the_place_and_the_fix(document, message) -> None:
    with pytest.raises(AccessConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AccessPolicy.parse(document)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["identities", "name", "tokens_sha256", "client_certificates", "publish", "subscribe",
                         "max_streams", "revoked_certificates", "serial", "sha256", "note", "other"]) | st.text(max_size=5), children, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(yaml_values)
def test_any_document_either_loads_or_raises_access_config_error(document) -> None:
    try:
        policy = AccessPolicy.parse(document)
    except AccessConfigError:
        return
    with pytest.raises(AuthenticationError):
        policy.authenticate(bearer("not-listed-anywhere"), [])


def test_an_access_file_change_that_does_not_load_keeps_the_previous_policy(tmp_path, caplog) -> None:
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    access = AccessFile(path)
    path.write_text("identities: [ {name: broken")
    assert access.current().authenticate(bearer("t1"), []).name == "edge"
    assert "keeping the previous policy" in caplog.text


def test_the_token_command_prints_a_hash_the_access_file_accepts(capsys) -> None:
    assert main(["token"]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    token, hashes = lines["token"].strip(), yaml.safe_load(lines["tokens_sha256"])
    policy = AccessPolicy.parse({"identities": [{"name": "new", "tokens_sha256": hashes}]})
    assert policy.authenticate(bearer(token), []).name == "new"


def issued_pem(tmp_path, name: str) -> bytes:
    from tests.services.certificates import Authority

    return Authority(tmp_path, f"ca-{name}").issue(name, server=False).cert.read_bytes()


def test_a_revoked_certificate_is_refused_by_serial_or_fingerprint_whatever_else_the_call_presents(tmp_path) -> None:
    import hashlib
    import ssl

    from cryptography import x509

    revoked_pem, fingerprinted_pem, good_pem = (issued_pem(tmp_path, n) for n in ("cam.example", "b", "c"))
    serial = x509.load_pem_x509_certificate(revoked_pem).serial_number
    fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(fingerprinted_pem.decode())).hexdigest().upper()
    colons = ":".join(f"{serial:040x}"[i:i + 2] for i in range(0, 40, 2))
    policy = AccessPolicy.parse({**GOOD, "revoked_certificates": [
        {"serial": colons, "note": "stolen"}, {"sha256": ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2))}]})
    for pem, metadata in ((revoked_pem, []), (revoked_pem, bearer("t1")), (fingerprinted_pem, [])):
        with pytest.raises(AuthenticationError) as raised:
            policy.authenticate(metadata, ["cam.example"], pem)
        assert raised.value.reason == "REVOKED_CERTIFICATE"
    assert policy.authenticate([], ["cam.example"], good_pem).name == "camera"


@pytest.mark.parametrize("entries, message", [
    ("0123", "must be a list"),
    ([{"note": "no serial"}], "serial and/or sha256"),
    ([{"serial": "12", "reason": "x"}], "serial and/or sha256"),
    ([{"serial": 1234}], "quote it in YAML"),
    ([{"serial": "not hex"}], "not a hexadecimal serial"),
    ([{"sha256": "abc"}], "64 hex digits"),
])
def test_malformed_revocation_entries_are_refused_with_the_place_and_the_fix(entries, message) -> None:
    with pytest.raises(AccessConfigError, match=message) as raised:
        AccessPolicy.parse({**GOOD, "revoked_certificates": entries})
    assert "revoked_certificates" in str(raised.value)


def test_a_revocation_list_that_does_not_load_keeps_the_previous_policy_and_its_revocations(tmp_path, caplog) -> None:
    from cryptography import x509

    pem = issued_pem(tmp_path, "cam.example")
    serial = x509.load_pem_x509_certificate(pem).serial_number
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "revoked_certificates": [{"serial": f"{serial:x}"}]}))
    access = AccessFile(path)
    path.write_text(yaml.safe_dump({**GOOD, "revoked_certificates": [{"serial": "zz"}]}))
    with pytest.raises(AuthenticationError):
        access.current().authenticate([], ["cam.example"], pem)
    assert "keeping the previous policy" in caplog.text
