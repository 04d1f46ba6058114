"""The worker's metrics: the engine's counters go through the SDK's metric meter (read here from the SDK's own
metric buffer), the endpoint's settings, and, on the dev server, `worker.py` serving the SDK's metrics and the
engine's at http://HOST:BILLING_METRICS_PORT/metrics after a lifecycle."""

from __future__ import annotations

import socket
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment

from activities.ledger import LedgerActivities
from billing import metrics
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger import LedgerStore
from billing.settings import SettingsError, settings_from_environment
from tests.builders import SHANGHAI
from tests.conftest import SmtpSink
from tests.devserver_fixtures import (
    DevServer,
    eventually,
    free_port,
    run_starter,
    spawn,
    stop_process,
    worker_environment,
)
from tests.test_ledger_activities import invoice_request


def _ledger_errors(buffer: MetricBuffer) -> list[tuple[int | float, dict[str, object]]]:
    """Each update of the counter: its value and the engine's attributes (the SDK adds namespace, task queue,
    activity type and service name)."""
    return [
        (update.value, {name: update.attributes[name] for name in metrics.LEDGER_ERRORS.attributes})
        for update in buffer.retrieve_updates()
        if update.metric.name == metrics.LEDGER_ERRORS.name
    ]


@pytest.fixture
def metered() -> tuple[ActivityEnvironment, MetricBuffer]:
    """An activity environment whose meter is a real SDK runtime's, recording into the SDK's metric buffer."""
    buffer = MetricBuffer(1000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = ActivityEnvironment()
    env.metric_meter = runtime.metric_meter
    return env, buffer


def test_a_ledger_refusal_is_counted_by_action_and_code(
    sqlite_ledger: LedgerStore, metered: tuple[ActivityEnvironment, MetricBuffer]
) -> None:
    env, buffer = metered
    activities = LedgerActivities(sqlite_ledger)
    env.run(activities.record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31)))
    other_amount = invoice_request("INV-1", "999.00", date(2026, 1, 31))

    with pytest.raises(ApplicationError) as refused:
        env.run(activities.record_invoice, other_amount)

    [(value, attributes)] = _ledger_errors(buffer)
    assert value == 1
    assert attributes == {"action": "record_invoice", "code": refused.value.details[0]}


def test_a_ledger_outage_is_counted_and_still_raised_for_temporal_to_retry(
    tmp_path: Path, metered: tuple[ActivityEnvironment, MetricBuffer]
) -> None:
    env, buffer = metered
    unreachable = LedgerStore.from_url(f"sqlite:///{tmp_path / 'no-such-folder' / 'ledger.db'}", migrate=False)

    with pytest.raises(Exception) as failed:
        env.run(LedgerActivities(unreachable).record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31)))

    assert not isinstance(failed.value, ApplicationError)
    assert _ledger_errors(buffer) == [(1, {"action": "record_invoice", "code": "outage"})]
    unreachable.close()


def test_a_counter_refuses_attributes_its_definition_does_not_name() -> None:
    with pytest.raises(ValueError, match="billing_ledger_errors"):
        metrics.count(Runtime(telemetry=TelemetryConfig()).metric_meter, metrics.LEDGER_ERRORS, customer_id="C-1")


REQUIRED = {
    "BILLING_PARTNER_CENTER_TOKEN_URL": "http://127.0.0.1:9/token",
    "BILLING_PARTNER_CENTER_CLIENT_ID": "client",
    "BILLING_PARTNER_CENTER_CLIENT_SECRET": "secret",
}


def test_metrics_settings_default_to_no_endpoint_and_a_port_is_checked() -> None:
    assert settings_from_environment(REQUIRED).metrics_port is None
    assert metrics.runtime("0.0.0.0", None) is None
    chosen = settings_from_environment(REQUIRED | {"BILLING_METRICS_PORT": "9464"})
    assert (chosen.metrics_host, chosen.metrics_port) == ("0.0.0.0", 9464)
    with pytest.raises(SettingsError, match="BILLING_METRICS_PORT"):
        settings_from_environment(REQUIRED | {"BILLING_METRICS_PORT": "70000"})


def test_a_taken_metrics_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(metrics.MetricsEndpointError, match=f"cannot serve metrics at 127.0.0.1:{port}: "):
            metrics.runtime("127.0.0.1", port)


# --- the endpoint of a running worker ----------------------------------------------------------------------------


def _samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


@pytest.mark.devserver
async def test_worker_serves_the_sdk_and_engine_metrics_after_a_lifecycle(
    tmp_path: Path, dev_server: DevServer, partner_center_emulator: PartnerCenterEmulator, smtp_sink: SmtpSink
) -> None:
    """A lifecycle paid and closed (a completed workflow), and a second customer whose invoice reuses the
    first one's id, which the ledger refuses: /metrics shows the SDK's `temporal_workflow_completed` and the
    engine's `billing_ledger_errors` for that refusal."""
    port = free_port()
    task_queue = f"billing-metrics-{uuid.uuid4().hex[:8]}"
    env = worker_environment(tmp_path, dev_server.address, partner_center_emulator, smtp_sink, task_queue)
    env |= {"BILLING_METRICS_PORT": str(port), "BILLING_METRICS_HOST": "127.0.0.1"}
    stderr = tmp_path / "worker.stderr.log"
    process = spawn([sys.executable, "worker.py"], stdout=tmp_path / "worker.stdout.log", stderr=stderr, env=env)
    paid, other = f"C-MET-{uuid.uuid4().hex[:8]}", f"C-MET-{uuid.uuid4().hex[:8]}"
    invoice_id = f"INV-{paid}"
    due = (datetime.now(UTC) + timedelta(days=30)).astimezone(SHANGHAI).date().isoformat()
    try:

        async def started() -> bool:
            assert process.poll() is None, f"worker.py exited: {stderr.read_text(errors='replace')}"
            return "worker started" in stderr.read_text(errors="replace")

        await eventually("worker.py starting", started, 30, stderr)

        async def starter(*args: str) -> None:
            finished = await run_starter(dev_server, task_queue, *args)
            assert finished.returncode == 0, finished.stderr

        for customer_id in (paid, other):
            await starter(
                "invoice", "--customer-id", customer_id, "--name", "Metrics Trading", "--email",
                "ap@metrics.example.cn", "--invoice-id", invoice_id, "--amount", "300.00",
                "--issued-on", due, "--due-on", due,
            )  # fmt: skip
        await starter("payment", "--customer-id", paid, "--payment-id", f"PAY-{paid}", "--amount", "300.00")

        async def scraped() -> str | None:
            async with httpx.AsyncClient() as http:
                page = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
            completed = [line for line in _samples(page, "temporal_workflow_completed") if "CustomerBilling" in line]
            refused = [line for line in _samples(page, "billing_ledger_errors") if 'action="record_invoice"' in line]
            return page if completed and refused else None

        page = await eventually("the lifecycle's metrics", scraped, 60, stderr)
    finally:
        stop_process(process)

    [refusal] = [line for line in _samples(page, "billing_ledger_errors") if 'action="record_invoice"' in line]
    assert f'task_queue="{task_queue}"' in refusal and refusal.endswith(" 1")
    assert paid not in page and other not in page and "Metrics Trading" not in page
