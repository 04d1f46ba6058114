"""The codec server: decrypts (and encrypts) payloads over HTTP for the Temporal Web UI and the `temporal` CLI
(`--codec-endpoint`), so an operator reads what the Temporal server stores only as ciphertext.

    python -m billing.codec_server      (settings: BILLING_ENCRYPTION_KEYS or _FILE, BILLING_CODEC_HOST,
                                         BILLING_CODEC_PORT, BILLING_CODEC_TOKEN, BILLING_CODEC_CORS_ORIGINS)

Temporal's remote codec protocol (https://docs.temporal.io/codec-server and "Codec Server setup" in
https://docs.temporal.io/production-deployment/data-encryption): `POST /encode` and `POST /decode`, each with a
JSON body `{"payloads": [...]}` in protobuf's JSON form (every bytes field, data and each metadata value, in
base64) and answered in the same shape; the caller names its namespace in the `X-Namespace` header. The Web UI
calls it from the browser, so it answers CORS preflights for the configured origins; with the UI's "pass access
token" option it sends `Authorization: Bearer <token>`, which this server checks when it has a token.
"""

from __future__ import annotations

import hmac
import json
import signal
import sys
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

import structlog
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from billing.encryption import EncryptionCodec, PayloadDecryptionError
from billing.logging import configure_logging
from billing.settings import CodecServerSettings, SettingsError, codec_server_settings_from_environment

log = structlog.get_logger(__name__)

# A Temporal payload is at most 2 MB by default; the UI sends a few at a time. Larger bodies are refused.
MAX_BODY_BYTES = 16 * 1024 * 1024
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"


class CodecServer:
    """A `ThreadingHTTPServer` around the codec, started and stopped as a context manager or with `serve`."""

    def __init__(
        self, codec: EncryptionCodec, *, host: str, port: int, token: str | None, cors_origins: Sequence[str]
    ) -> None:
        settings = {"codec": codec, "token": token, "origins": frozenset(cors_origins)}
        handler = type("Handler", (_CodecHandler,), settings)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: CodecServerSettings) -> CodecServer:
        return cls(
            EncryptionCodec(settings.encryption_keys),
            host=settings.host,
            port=settings.port,
            token=settings.token.get_secret_value() if settings.token else None,
            cors_origins=settings.cors_origins,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CodecServer:
        self._thread = threading.Thread(target=self.serve, name="codec-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        if self._thread:
            self._thread.join(timeout=5)


class _CodecHandler(BaseHTTPRequestHandler):
    codec: EncryptionCodec
    token: str | None
    origins: frozenset[str]
    server_version = "billing-codec-server"
    protocol_version = "HTTP/1.1"

    def do_OPTIONS(self) -> None:
        """A CORS preflight: the browser asks before the UI's POST with JSON and the X-Namespace header."""
        if self._operation() is None:
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint: POST /encode or /decode")
        if not self._origin_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "this origin is not among BILLING_CODEC_CORS_ORIGINS")
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors_headers()
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path == "/health":
            return self._json(HTTPStatus.OK, {"status": "ok"})
        self._error(HTTPStatus.NOT_FOUND, "no such endpoint: POST /encode or /decode")

    def do_POST(self) -> None:
        operation = self._operation()
        if operation is None:
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint: POST /encode or /decode")
        if not self._origin_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "this origin is not among BILLING_CODEC_CORS_ORIGINS")
        if not self._authorized():
            return self._error(HTTPStatus.UNAUTHORIZED, "a valid 'Authorization: Bearer <token>' header is required")
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if int(length) > MAX_BODY_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            payloads = _payloads(self.rfile.read(int(length)))
        except ValueError as error:
            return self._error(HTTPStatus.BAD_REQUEST, f'the body is not {{"payloads": [...]}}: {error}')
        try:
            if operation == "encode":
                result = [self.codec.encrypt(payload) for payload in payloads]
            else:
                result = [self.codec.decrypt(payload) for payload in payloads]
        except PayloadDecryptionError as error:
            return self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(error))
        self._json(HTTPStatus.OK, {"payloads": [json_format.MessageToDict(payload) for payload in result]})

    def _operation(self) -> str | None:
        # The last path segment, so an endpoint with a namespace segment (`.../{namespace}/decode`) works too.
        operation = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return operation if operation in ("encode", "decode") else None

    def _origin_allowed(self) -> bool:
        origin = self.headers.get("Origin")
        return origin is None or origin in self.origins  # no Origin: not a browser page (the CLI, a script)

    def _authorized(self) -> bool:
        if not self.token:
            return True
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def _cors_headers(self) -> None:
        origin = self.headers.get("Origin")
        if origin and origin in self.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
            # The UI's "include cross-origin credentials" option makes the browser demand this.
            self.send_header("Access-Control-Allow-Credentials", "true")
        self.send_header("Vary", "Origin")

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self._cors_headers()
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="billing-codec"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self.close_connection = True  # a refused request's body may be unread: do not read it as the next request
        self._json(status, {"error": message})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path, status and namespace only: never a header's value or a payload.
        log.info(
            "codec request",
            method=self.command,
            path=self.path.split("?", 1)[0],
            status=int(code) if str(code).isdigit() else code,
            namespace=self.headers.get("X-Namespace") if self.headers else None,
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.warning("codec server", detail=format % args)


def _payloads(body: bytes) -> list[Payload]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON ({error.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    try:
        # Protobuf's JSON form: an empty list may be left out (the CLI sends `{}` for a query without arguments).
        return list(json_format.ParseDict(document, Payloads()).payloads)
    except (json_format.ParseError, TypeError, AttributeError) as error:
        raise ValueError(str(error)) from None


def main() -> int:
    configure_logging()
    try:
        settings = codec_server_settings_from_environment()
    except SettingsError as error:
        print(f"python -m billing.codec_server: {error}", file=sys.stderr)
        return 2
    try:
        server = CodecServer.from_settings(settings)
    except OSError as error:
        where = f"{settings.host}:{settings.port}"
        print(f"python -m billing.codec_server: cannot listen on {where}: {error}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown).start()  # shutdown() waits for serve(): not on its thread

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "codec server started",
        url=server.url,
        key_ids=settings.encryption_keys.ids,
        token_required=settings.token is not None,
        cors_origins=list(settings.cors_origins),
    )
    server.serve()
    log.info("codec server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
