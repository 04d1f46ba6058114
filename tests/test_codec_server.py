"""The codec server over HTTP, as the Temporal Web UI and the `temporal` CLI call it: proto3-JSON payloads
(bytes in base64), the bearer token, CORS preflights for the UI's origin, and errors as JSON."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from temporalio.api.common.v1 import Payload

from billing.codec_server import CodecServer
from billing.encryption import EncryptionCodec
from billing.settings import parse_encryption_keys
from tests.devserver_fixtures import REPO, clean_environment, free_port

UI = "http://localhost:8233"
TOKEN = "codec-test-token"
KEYS = f"current:{base64.b64encode(os.urandom(32)).decode()}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# What the UI sends: the payload as protobuf JSON, every bytes field (data, each metadata value) in base64.
PLAIN = {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(b'{"name": "Lotus Trading"}')}


@pytest.fixture
def server() -> Iterator[CodecServer]:
    codec = EncryptionCodec(parse_encryption_keys(KEYS))
    with CodecServer(codec, host="127.0.0.1", port=0, token=TOKEN, cors_origins=[UI]) as running:
        yield running


def post(server: CodecServer, path: str, body: object, **headers: str) -> httpx.Response:
    sent = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default", **headers}
    return httpx.post(f"{server.url}{path}", content=json.dumps(body), headers=sent, timeout=10)


def test_encode_then_decode_over_http_gives_back_the_payload_and_the_encoded_one_is_ciphertext(server: CodecServer):
    encoded = post(server, "/encode", {"payloads": [PLAIN]})
    assert encoded.status_code == 200, encoded.text
    assert encoded.headers["content-type"] == "application/json"
    [sealed] = encoded.json()["payloads"]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == b"binary/encrypted"
    assert base64.b64decode(sealed["metadata"]["encryption-key-id"]) == b"current"
    assert b"Lotus" not in base64.b64decode(sealed["data"])
    decoded = post(server, "/decode", {"payloads": [sealed]})
    assert decoded.status_code == 200, decoded.text
    assert decoded.json() == {"payloads": [PLAIN]}


def test_a_plain_payload_decodes_unchanged_and_a_namespace_path_segment_works(server: CodecServer):
    decoded = post(server, "/default/decode", {"payloads": [PLAIN, {}]})
    assert decoded.status_code == 200, decoded.text
    assert decoded.json() == {"payloads": [PLAIN, {}]}
    assert post(server, "/decode", {"payloads": []}).json() == {"payloads": []}
    assert post(server, "/encode", {}).json() == {"payloads": []}  # the CLI's query without arguments


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"], ids=str
)
def test_a_missing_or_wrong_token_is_401_and_nothing_is_decoded(server: CodecServer, authorization: str | None):
    headers = {"X-Namespace": "default"} | ({"Authorization": authorization} if authorization else {})
    sealed = post(server, "/encode", {"payloads": [PLAIN]}).json()
    response = httpx.post(f"{server.url}/decode", content=json.dumps(sealed), headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["error"]
    assert "payloads" not in response.json()


def test_the_uis_preflight_is_answered_for_its_origin_only(server: CodecServer):
    preflight = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    answer = httpx.options(f"{server.url}/decode", headers=preflight, timeout=10)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == UI
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = {header.strip().lower() for header in answer.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-namespace", "authorization"} <= allowed
    assert answer.headers["access-control-allow-credentials"] == "true"

    response = post(server, "/decode", {"payloads": [PLAIN]}, Origin=UI)
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == UI

    elsewhere = httpx.options(f"{server.url}/decode", headers={**preflight, "Origin": "http://evil.example"})
    assert elsewhere.status_code == 403 and "access-control-allow-origin" not in elsewhere.headers
    refused = post(server, "/decode", {"payloads": [PLAIN]}, Origin="http://evil.example")
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


def test_a_payload_of_an_unknown_key_id_is_a_json_error_naming_the_id(server: CodecServer):
    other = EncryptionCodec(parse_encryption_keys(f"retired-2024:{b64(os.urandom(32))}"))
    sealed = other.encrypt(Payload(metadata={"encoding": b"json/plain"}, data=b"{}"))
    body = {"payloads": [{"metadata": {k: b64(v) for k, v in sealed.metadata.items()}, "data": b64(sealed.data)}]}
    response = post(server, "/decode", body)
    assert response.status_code == 422
    assert "key id 'retired-2024'" in response.json()["error"]


@pytest.mark.parametrize(
    "body", [b"not json", b'{"payload": []}', b'{"payloads": [{"date": "eA=="}]}', b'{"payloads": [1]}']
)
def test_a_malformed_body_is_400_with_a_json_error(server: CodecServer, body: bytes):
    response = httpx.post(
        f"{server.url}/decode", content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith('the body is not {"payloads": [...]}')


def test_an_unknown_path_is_404_and_health_answers(server: CodecServer):
    assert post(server, "/elsewhere", {"payloads": []}).status_code == 404
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}


def test_the_module_refuses_to_listen_beyond_loopback_without_a_token():
    env = clean_environment() | {
        "BILLING_ENCRYPTION_KEYS": KEYS,
        "BILLING_CODEC_HOST": "0.0.0.0",
        "BILLING_CODEC_PORT": str(free_port()),
    }
    finished = subprocess.run(
        [sys.executable, "-m", "billing.codec_server"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 2
    assert "BILLING_CODEC_TOKEN is required when BILLING_CODEC_HOST is not loopback" in finished.stderr
    assert KEYS.partition(":")[2] not in finished.stderr + finished.stdout
