"""Connecting to Temporal through the SDK's environment configuration: the settings it reads, the one-line
error of `worker.py` and `starter.py` when no server answers, and TLS, mTLS and an API key for real, through a
TLS-terminating proxy in front of the dev server (`tests/tls_proxy.py`)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.temporal_connection import TemporalConnectionError, temporal_target
from tests.builders import SHANGHAI
from tests.conftest import SmtpSink
from tests.devserver_fixtures import (
    REPO,
    TEST_ENCRYPTION_KEYS,
    DevServer,
    Finished,
    clean_environment,
    eventually,
    free_port,
    spawn,
    stop_process,
    worker_environment,
)
from tests.tls_proxy import Certificates, RequestHeaders, make_certificates, tls_proxy

# --- what the environment configuration gives -------------------------------------------------------------------


def test_without_settings_the_contract_defaults_apply() -> None:
    target = temporal_target({})

    assert (target.address, target.namespace, target.tls, target.api_key) == ("localhost:7233", "default", False, False)


def test_command_line_options_win_over_the_environment() -> None:
    environ = {"TEMPORAL_ADDRESS": "temporal.example.cn:7233", "TEMPORAL_NAMESPACE": "billing-prod"}

    assert (temporal_target(environ).address, temporal_target(environ).namespace) == (
        "temporal.example.cn:7233",
        "billing-prod",
    )
    overridden = temporal_target(environ, address="127.0.0.1:1", namespace="staging")
    assert (overridden.address, overridden.namespace) == ("127.0.0.1:1", "staging")


def test_an_api_key_turns_tls_on_unless_tls_is_switched_off() -> None:
    """The SDK's rule (temporalio/envconfig.py `to_client_connect_config`): an API key alone means TLS with the
    system's roots; `TEMPORAL_TLS=false` sends the key over plain TCP."""
    with_key = temporal_target({"TEMPORAL_API_KEY": "key-1"})
    in_clear = temporal_target({"TEMPORAL_API_KEY": "key-1", "TEMPORAL_TLS": "false"})

    assert (with_key.api_key, with_key.tls) == (True, True)
    assert with_key.connect_config["api_key"] == "key-1"
    assert (in_clear.api_key, in_clear.tls) == (True, False)
    assert "key-1" not in json.dumps(with_key.log_fields())


def test_tls_files_and_server_name_come_from_the_environment(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")

    target = temporal_target({"TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(ca), "TEMPORAL_TLS_SERVER_NAME": "temporal.lan"})

    tls = target.connect_config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.server_root_ca_cert, tls.domain) == (b"-----BEGIN CERTIFICATE-----\n", "temporal.lan")


def test_a_profile_of_the_config_file_is_used_and_the_environment_overrides_it(tmp_path: Path) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.prod]\naddress = "billing.tmprl.cloud:7233"\nnamespace = "billing.acct"\napi_key = "from-file"\n',
        encoding="utf-8",
    )
    environ = {"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "prod"}

    target = temporal_target(environ)
    overridden = temporal_target(environ | {"TEMPORAL_NAMESPACE": "billing-staging.acct"})

    assert (target.address, target.namespace, target.api_key, target.tls) == (
        "billing.tmprl.cloud:7233",
        "billing.acct",
        True,
        True,
    )
    assert overridden.namespace == "billing-staging.acct"


@pytest.mark.parametrize(
    "environ",
    [{"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "/nonexistent/ca.pem"}, {"TEMPORAL_PROFILE": "nonexistent"}],
    ids=["missing-ca-file", "unknown-profile"],
)
def test_unusable_connection_settings_are_one_line_errors(environ: dict[str, str]) -> None:
    with pytest.raises(TemporalConnectionError) as raised:
        temporal_target(environ)

    assert str(raised.value).startswith("invalid Temporal connection settings")
    assert "\n" not in str(raised.value)


# --- no server --------------------------------------------------------------------------------------------------


def _message_lines(stderr: str) -> list[str]:
    """What a person reads on standard error: the lines that are not structlog's JSON."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


async def _run(command: list[str], env: dict[str, str], within: float = 60) -> Finished:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


def _worker_settings(tmp_path: Path) -> dict[str, str]:
    """Enough settings for worker.py to get as far as connecting."""
    return {
        "BILLING_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "BILLING_PARTNER_CENTER_TOKEN_URL": "http://127.0.0.1:9/token",
        "BILLING_PARTNER_CENTER_CLIENT_ID": "client",
        "BILLING_PARTNER_CENTER_CLIENT_SECRET": "secret",
    }


async def test_worker_waits_for_the_server_then_exits_with_one_line_and_status_2(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = clean_environment() | _worker_settings(tmp_path) | {"TEMPORAL_ADDRESS": address}
    env |= {"TEMPORAL_NAMESPACE": "billing-test", "BILLING_CONNECT_ATTEMPTS": "2"}

    finished = await _run([sys.executable, "worker.py"], env)

    assert finished.returncode == 2
    assert "Traceback" not in finished.stderr
    [line] = _message_lines(finished.stderr)
    assert line.startswith(f"worker.py: cannot reach Temporal at {address} (namespace billing-test): ")
    assert "Connection refused" in line and "set TEMPORAL_ADDRESS" in line
    waited = [json.loads(line) for line in finished.stderr.splitlines() if line.startswith("{")]
    assert [entry["attempt"] for entry in waited if entry["event"] == "temporal not reachable yet"] == [1]


async def test_starter_fails_at_once_with_one_line_when_no_server_answers() -> None:
    address = f"127.0.0.1:{free_port()}"
    env = clean_environment() | {"TEMPORAL_ADDRESS": address}

    finished = await _run([sys.executable, "starter.py", "status", "--customer-id", "C-1"], env, within=30)

    assert finished.returncode == 1
    [line] = _message_lines(finished.stderr)
    assert line.startswith(f"starter.py status: cannot reach Temporal at {address} (namespace default): ")
    assert "set TEMPORAL_ADDRESS" in line


async def test_worker_refuses_unusable_tls_settings_with_one_line(tmp_path: Path) -> None:
    env = clean_environment() | _worker_settings(tmp_path) | {"TEMPORAL_TLS_CLIENT_CERT_PATH": "/nonexistent.pem"}

    finished = await _run([sys.executable, "worker.py"], env)

    assert finished.returncode == 2
    assert _message_lines(finished.stderr) == [
        "worker.py: invalid Temporal connection settings (TEMPORAL_TLS_*, TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE): "
        "[Errno 2] No such file or directory: '/nonexistent.pem'"
    ]


# --- TLS, mTLS and an API key through a TLS proxy in front of the dev server ------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _tls(certificates: Certificates, address: str, *, client_cert: bool = False) -> dict[str, str]:
    env = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(certificates.ca)}
    if client_cert:
        env |= {
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(certificates.client_cert),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(certificates.client_key),
        }
    return env


async def _starter(env: dict[str, str], *args: str) -> Finished:
    return await _run([sys.executable, "starter.py", *args], clean_environment() | env, within=30)


@asynccontextmanager
async def _worker(env: dict[str, str], tmp_path: Path) -> AsyncIterator[Path]:
    stderr = tmp_path / "worker.stderr.log"
    process = spawn([sys.executable, "worker.py"], stdout=tmp_path / "worker.stdout.log", stderr=stderr, env=env)
    try:

        async def started() -> bool:
            assert process.poll() is None, f"worker.py exited: {stderr.read_text(errors='replace')}"
            return "worker started" in stderr.read_text(errors="replace")

        await eventually("worker.py starting", started, 30, stderr)
        yield stderr
    finally:
        stop_process(process)


def _invoice_args(customer_id: str, task_queue: str) -> list[str]:
    due = (datetime.now(UTC) + timedelta(days=30)).astimezone(SHANGHAI).date()
    return [
        "--task-queue",
        task_queue,
        "invoice",
        "--customer-id",
        customer_id,
        "--name",
        "TLS Trading",
        "--email",
        "ap@tls.example.cn",
        "--invoice-id",
        f"INV-{customer_id}",
        "--amount",
        "500.00",
        "--issued-on",
        due.isoformat(),
        "--due-on",
        due.isoformat(),
    ]


@pytest.mark.devserver
async def test_worker_and_starter_connect_over_mutual_tls(
    tmp_path: Path,
    dev_server: DevServer,
    certificates: Certificates,
    partner_center_emulator: PartnerCenterEmulator,
    smtp_sink: SmtpSink,
) -> None:
    """The proxy asks for a client certificate from the test CA: the worker and `starter.py` with the CA and
    the client certificate in TEMPORAL_TLS_* run a lifecycle through it; without the client certificate, or
    without the CA, or without TLS, `starter.py` cannot connect and says so in one line."""
    task_queue = f"billing-tls-{uuid.uuid4().hex[:8]}"
    customer_id = f"C-TLS-{uuid.uuid4().hex[:8]}"
    async with tls_proxy(certificates, dev_server.address, require_client_cert=True) as proxy:
        # The commands carry the worker's key: the status it answers is encrypted.
        mtls = _tls(certificates, proxy.address, client_cert=True) | {"BILLING_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEYS}
        env = worker_environment(tmp_path, proxy.address, partner_center_emulator, smtp_sink, task_queue) | mtls
        async with _worker(env, tmp_path) as worker_log:
            started = next(json.loads(line) for line in worker_log.read_text().splitlines() if "worker started" in line)
            assert (started["temporal_address"], started["tls"]) == (proxy.address, True)

            issued = await _starter(mtls, *_invoice_args(customer_id, task_queue))
            assert issued.returncode == 0, issued.stderr

            async def stage() -> str | None:
                shown = await _starter(mtls, "status", "--customer-id", customer_id, "--json")
                return json.loads(shown.stdout)["stage"] if shown.returncode == 0 else None

            # The status query is answered by the worker, which reaches the server only through the proxy.
            assert await eventually("the lifecycle's status over mTLS", stage, 30, worker_log) == "Current"
            assert await eventually("the invoice notice", lambda: _notice(smtp_sink, customer_id), 30, worker_log)

        refused = {
            "no client certificate": _tls(certificates, proxy.address),
            "no CA": {"TEMPORAL_ADDRESS": proxy.address, "TEMPORAL_TLS": "true"},
            "no TLS": {"TEMPORAL_ADDRESS": proxy.address},
        }
        for why, settings in refused.items():
            failed = await _starter(settings, "status", "--customer-id", customer_id)
            assert failed.returncode == 1, why
            [line] = _message_lines(failed.stderr)
            assert line.startswith(f"starter.py status: cannot reach Temporal at {proxy.address}"), why
        assert proxy.handshakes and set(proxy.handshakes) == {"billing-worker"}


async def _notice(sink: SmtpSink, customer_id: str) -> bool:
    return any(message["X-Billing-Customer"] == customer_id for message in sink.messages)


@pytest.mark.devserver
async def test_an_api_key_goes_to_the_server_as_bearer_authorization_over_tls(
    dev_server: DevServer, certificates: Certificates
) -> None:
    """`TEMPORAL_API_KEY` with the CA: the proxy, which holds the TLS session's plaintext, reads the key in the
    `authorization` header of the gRPC requests. The dev server checks no key; a cloud or an authorizer would."""
    headers = RequestHeaders()
    key = f"test-api-key-{uuid.uuid4().hex}"
    customer_id = f"C-KEY-{uuid.uuid4().hex[:8]}"
    async with tls_proxy(certificates, dev_server.address, tap=headers) as proxy:
        env = _tls(certificates, proxy.address) | {"TEMPORAL_API_KEY": key}
        issued = await _starter(env, *_invoice_args(customer_id, "billing-no-worker"))

    assert issued.returncode == 0, issued.stderr
    assert f"Bearer {key}" in headers.values("authorization")
    assert "temporal.api.workflowservice.v1.WorkflowService/SignalWithStartWorkflowExecution" in "".join(
        headers.values(":path")
    )


@pytest.mark.devserver
async def test_an_api_key_alone_means_tls_and_tls_false_sends_it_in_clear(dev_server: DevServer) -> None:
    """The dev server speaks plain gRPC: an API key turns TLS on, so the connection fails; only with
    TEMPORAL_TLS=false does the key go out, unencrypted."""
    key_only = await _starter(
        {"TEMPORAL_ADDRESS": dev_server.address, "TEMPORAL_API_KEY": "k"}, "status", "--customer-id", "C-1"
    )
    in_clear = await _starter(
        {"TEMPORAL_ADDRESS": dev_server.address, "TEMPORAL_API_KEY": "k", "TEMPORAL_TLS": "false"},
        "status",
        "--customer-id",
        "C-NONE",
    )

    assert key_only.returncode == 1
    [line] = _message_lines(key_only.stderr)
    assert line.startswith(f"starter.py status: cannot reach Temporal at {dev_server.address} (namespace default, TLS")
    assert "cannot reach Temporal" not in in_clear.stderr


@pytest.mark.devserver
async def test_worker_on_a_namespace_the_server_lacks_exits_with_one_line(
    tmp_path: Path, dev_server: DevServer
) -> None:
    env = clean_environment() | _worker_settings(tmp_path)
    env |= {"TEMPORAL_ADDRESS": dev_server.address, "TEMPORAL_NAMESPACE": "no-such-namespace"}

    finished = await _run([sys.executable, "worker.py"], env)

    assert finished.returncode == 2
    assert "Traceback" not in finished.stderr
    [line] = _message_lines(finished.stderr)
    assert line.startswith(f"worker.py: Temporal at {dev_server.address} (namespace no-such-namespace) refused ")
    assert "Namespace no-such-namespace is not found" in line
