"""A TLS-terminating TCP proxy in front of a plain Temporal dev server, and the certificates for it, so the
TLS, mTLS and API-key connections of `worker.py` and `starter.py` run for real offline.

`temporal server start-dev` takes no TLS options (temporal CLI 1.9.1: `temporal server start-dev --help`), so
TLS ends here and the proxy passes the HTTP/2 bytes of gRPC through to the server unchanged. The certificates
come from the `openssl` command line (OpenSSL 3)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import hpack


@dataclass(frozen=True)
class Certificates:
    """A test CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all from it."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> Certificates:
    """Generate the certificates in `folder`. EC P-256 keys (quick to make); the extensions are the ones
    rustls (the SDK's TLS) checks: a CA with `CA:TRUE`, leaves with a subjectAltName and their key usage."""
    assert shutil.which("openssl"), "the TLS tests need the openssl command (Debian package openssl)"
    folder.mkdir(parents=True, exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        "req", "-x509", *key, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=billing test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip

    def leaf(name: str, extensions: str) -> tuple[Path, Path]:
        cert, leaf_key, request, ext = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
        ext.write_text(extensions, encoding="ascii")
        _openssl("req", *key, "-keyout", leaf_key, "-out", request, "-subj", f"/CN={name}")
        _openssl(
            "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
            "-days", "2", "-extfile", ext,
        )  # fmt: skip
        return cert, leaf_key

    server_cert, server_key = leaf(
        "server",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    client_cert, client_key = leaf(
        "billing-worker",
        "subjectAltName=DNS:billing-worker\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    return Certificates(ca, server_cert, server_key, client_cert, client_key)


@dataclass
class TlsProxy:
    """Where the proxy listens, and one entry per connection whose TLS handshake succeeded: the client
    certificate's common name, or None without one."""

    address: str
    handshakes: list[str | None] = field(default_factory=list)


@asynccontextmanager
async def tls_proxy(
    certificates: Certificates,
    upstream: str,
    *,
    require_client_cert: bool = False,
    tap: Callable[[int, bytes], None] | None = None,
) -> AsyncIterator[TlsProxy]:
    """TLS on a free loopback port, forwarding to `upstream` (host:port) in plain TCP. With
    `require_client_cert`, a client without a certificate from the test CA is refused in the handshake.
    `tap(connection_number, data)` sees what each client sent, decrypted."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.server_cert, certificates.server_key)
    context.set_alpn_protocols(["h2"])  # gRPC is HTTP/2; tonic offers h2 in ALPN
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certificates.ca)
    host, port = upstream.rsplit(":", 1)
    connections = 0
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Callable[[bytes], None]) -> None:
        try:
            while data := await reader.read(65536):
                seen(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        peer = client_writer.get_extra_info("peercert")
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        proxy.handshakes.append(subject.get("commonName"))
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        upward = pipe(client_reader, server_writer, lambda data: tap(number, data) if tap else None)
        await asyncio.gather(upward, pipe(server_reader, client_writer, lambda data: None))

    def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=context)
    proxy = TlsProxy(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield proxy
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await server.wait_closed()


class RequestHeaders:
    """A `tap` that reads the HTTP/2 request headers clients send (RFC 9113 framing, HPACK by the `hpack`
    package), so a test sees the `authorization` metadata that went over TLS."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    HEADERS, CONTINUATION = 0x1, 0x9
    END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._buffers: dict[int, bytes] = {}
        self._decoders: dict[int, hpack.Decoder] = {}
        self._blocks: dict[int, bytes] = {}

    def values(self, name: str) -> list[str]:
        return [value for header, value in self.seen if header == name]

    def __call__(self, connection: int, data: bytes) -> None:
        buffer = self._buffers.get(connection, b"") + data
        if connection not in self._decoders:
            if len(buffer) < len(self.PREFACE):
                self._buffers[connection] = buffer
                return
            assert buffer.startswith(self.PREFACE), "not HTTP/2"
            buffer = buffer[len(self.PREFACE) :]
            self._decoders[connection] = hpack.Decoder()
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags, payload = buffer[3], buffer[4], buffer[9 : 9 + length]
            buffer = buffer[9 + length :]
            if kind == self.HEADERS:
                if flags & self.PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & self.PRIORITY:
                    payload = payload[5:]
                self._blocks[connection] = payload
            elif kind == self.CONTINUATION:
                self._blocks[connection] += payload
            else:
                continue
            if flags & self.END_HEADERS:
                decoded = self._decoders[connection].decode(self._blocks.pop(connection))
                self.seen.extend((str(name), str(value)) for name, value in decoded)
        self._buffers[connection] = buffer
