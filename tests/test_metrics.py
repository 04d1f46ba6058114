"""The worker's metrics: the engine's counters go through the SDK's metric meter (read here from the SDK's own
metric buffer), the endpoint's settings, and, on the dev server, `worker.py` serving the SDK's metrics and the
engine's at http://HOST:BILLING_METRICS_PORT/metrics after a lifecycle."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from activities.ledger import LedgerActivities
from activities.mailer import OutboxTransport
from activities.partner_center import PartnerCenterActivities
from billing import metrics
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger import LedgerStore
from billing.ledger_messages import AccountBalance, InvoiceBalance, OwedAccount
from billing.models import BillingStage, BillingStatus, CustomerAccount, Invoice, NoticeKind
from billing.money import Money
from billing.partner_center_messages import SubscriptionsChange, SubscriptionStatusChange
from billing.settings import SettingsError, settings_from_environment
from billing.sweep import STAGES, OwingByStage, merged_owing, owing_by_stage
from tests.builders import SHANGHAI
from tests.conftest import SmtpSink
from tests.devserver_fixtures import (
    REPO,
    TEST_DATA_CONVERTER,
    DevServer,
    eventually,
    free_port,
    run_starter,
    spawn,
    stop_process,
    worker_environment,
)
from tests.temporal_fixtures import EngineFactory
from tests.test_ledger_activities import invoice_request
from tests.test_mailer import mailer
from tests.test_mailer import request as notice_request
from tests.test_partner_center import client_for as pc_client_for
from worker import WORKFLOWS


def _recorded(buffer: MetricBuffer) -> dict[str, list[tuple[int | float, dict[str, object]]]]:
    """Each update of each engine metric: its value and the engine's attributes (the SDK adds namespace, task
    queue, activity or workflow type and service name). Drains the buffer."""
    by_name = {metric.name: metric for metric in metrics.ENGINE_METRICS}
    recorded: dict[str, list[tuple[int | float, dict[str, object]]]] = {}
    for update in buffer.retrieve_updates():
        metric = by_name.get(update.metric.name)
        if metric is not None:
            attributes = {name: update.attributes[name] for name in metric.attributes}
            recorded.setdefault(metric.name, []).append((update.value, attributes))
    return recorded


def _ledger_errors(buffer: MetricBuffer) -> list[tuple[int | float, dict[str, object]]]:
    return _recorded(buffer).get(metrics.LEDGER_ERRORS.name, [])


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


# --- the engine's counters, each where its effect happens ----------------------------------------------------


async def test_a_notice_sent_is_counted_by_kind_and_one_already_sent_is_not(
    tmp_path: Path, sqlite_ledger: LedgerStore, metered: tuple[ActivityEnvironment, MetricBuffer]
) -> None:
    env, buffer = metered
    activities = mailer(OutboxTransport(tmp_path / "outbox"), sqlite_ledger)

    first = await env.run(activities.send_notice, notice_request(NoticeKind.REMINDER, "reminder-1-INV-1"))
    again = await env.run(activities.send_notice, notice_request(NoticeKind.REMINDER, "reminder-1-INV-1"))
    final = await env.run(activities.send_notice, notice_request(NoticeKind.FINAL_NOTICE, "final-notice-INV-1"))

    assert (first.already_sent, again.already_sent, final.already_sent) == (False, True, False)
    assert _recorded(buffer) == {metrics.NOTICES_SENT.name: [(1, {"kind": "reminder"}), (1, {"kind": "final_notice"})]}


async def test_suspensions_reinstatements_and_refusals_are_counted_by_target_and_partner_centers_code(
    partner_center_emulator: PartnerCenterEmulator, metered: tuple[ActivityEnvironment, MetricBuffer]
) -> None:
    """Counted from Partner Center's answers: a subscription already at the target is no suspension."""
    env, buffer = metered
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    partner_center_emulator.seed_tenant(tenant, {"sub-1": "active", "sub-2": "active", "sub-3": "suspended"})
    partner_center_emulator.refuse_status_change(tenant, "sub-2", "800096")

    async with pc_client_for(partner_center_emulator) as client:
        activities = PartnerCenterActivities(client)
        suspended = await env.run(
            activities.change_subscriptions,
            SubscriptionsChange(
                tenant_id=tenant,
                subscription_ids=["sub-1", "sub-2", "sub-3"],
                target="suspended",
                request_key=f"customer-billing-{tenant}/suspension-1",
                correlation_id=f"customer-billing-{tenant}",
            ),
        )
        reinstated = await env.run(
            activities.change_subscription_status,
            SubscriptionStatusChange(
                tenant_id=tenant,
                subscription_id="sub-1",
                target="active",
                request_key=f"customer-billing-{tenant}/reinstatement-1/sub-1",
                correlation_id=f"customer-billing-{tenant}",
            ),
        )

    assert [(r.changed, r.refused) for r in suspended.results] == [(True, False), (False, True), (False, False)]
    assert reinstated.changed
    assert _recorded(buffer) == {
        metrics.SUBSCRIPTIONS_CHANGED.name: [(1, {"target": "suspended"}), (1, {"target": "active"})],
        metrics.PARTNER_CENTER_REFUSALS.name: [(1, {"code": "800096", "target": "suspended"})],
    }


def _owed(customer_id: str, currency: str, *invoices: tuple[str, datetime]) -> OwedAccount:
    """A customer owing `invoices` (outstanding amount, due moment), as `owed_accounts` reads them."""
    money = [Money(amount=Decimal(amount), currency=currency) for amount, _ in invoices]
    zero = Money.zero(currency)
    balance = AccountBalance(
        customer_id=customer_id,
        currency=currency,
        invoices=[
            InvoiceBalance(
                invoice_id=f"INV-{customer_id}-{number}",
                amount=amount,
                paid=zero,
                credited=zero,
                written_off=zero,
                outstanding=amount,
                issued_on=(due_at - timedelta(days=30)).date(),
                due_on=due_at.astimezone(SHANGHAI).date(),
                due_at=due_at,
            )
            for number, (amount, (_, due_at)) in enumerate(zip(money, invoices, strict=True))
        ],
        unapplied_credit=zero,
        amount_due=Money(amount=sum((m.amount for m in money), Decimal(0)), currency=currency),
    )
    account = CustomerAccount(customer_id=customer_id, name="Owing Trading", email="ap@owing.example.cn")
    return OwedAccount(customer_id=customer_id, account=account, balance=balance)


def test_the_sweeps_owing_is_tallied_by_stage_and_currency_with_overdue_as_the_lifecycle_reckons_it() -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI)
    past, future = now - timedelta(days=3), now + timedelta(days=3)
    owed = [
        (_owed("C-1", "CNY", ("100.00", past), ("50.00", future)), "Overdue"),
        (_owed("C-2", "CNY", ("20.50", now)), "Overdue"),  # due this very moment: overdue, as the lifecycle says
        (_owed("C-3", "CNY", ("70.00", past)), "Untracked"),
        (_owed("C-4", "USD", ("9.99", future)), "Current"),
        (_owed("C-5", "CNY", ("1.00", past)), "NotAStage"),
    ]

    tallies = owing_by_stage(owed, now)

    assert [(t.currency, t.stage, t.customers, t.overdue) for t in tallies] == [
        ("CNY", "Overdue", 2, Decimal("120.50")),
        ("CNY", "Untracked", 2, Decimal("71.00")),
        ("USD", "Current", 1, Decimal("0")),
    ]
    # A sweep's pages add up.
    assert merged_owing(tallies, owing_by_stage(owed[:1], now))[0].customers == 3


def test_the_sweeps_gauges_give_every_stage_of_every_currency_and_when_it_finished() -> None:
    buffer = MetricBuffer(1000)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    finished = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)

    metrics.publish_owing(
        meter,
        [
            OwingByStage(stage="Suspended", currency="CNY", customers=2, overdue=Decimal("1234.50")),
            OwingByStage(stage="Current", currency="USD", customers=1, overdue=Decimal("0")),
        ],
        finished,
    )

    recorded = _recorded(buffer)
    owing = {(a["currency"], a["stage"]): v for v, a in recorded[metrics.SWEEP_CUSTOMERS_OWING.name]}
    overdue = {(a["currency"], a["stage"]): v for v, a in recorded[metrics.SWEEP_AMOUNT_OVERDUE.name]}
    assert set(owing) == set(overdue) == {(currency, stage) for currency in ("CNY", "USD") for stage in STAGES}
    assert owing[("CNY", "Suspended")] == 2 and owing[("USD", "Current")] == 1 and owing[("CNY", "Current")] == 0
    assert overdue[("CNY", "Suspended")] == 1234.5 and overdue[("CNY", "Overdue")] == 0.0
    assert recorded[metrics.SWEEP_FINISHED.name] == [(finished.timestamp(), {})]


async def test_a_rejected_signal_and_a_refused_update_count_by_name_once_and_never_on_replay(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
) -> None:
    """Through the real `CustomerBilling` on a worker whose runtime records into a metric buffer; then its
    history replayed on a runtime of its own, which records no engine metric at all."""
    buffer = MetricBuffer(10000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = time_skipping_env
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace=env.client.namespace,
        data_converter=TEST_DATA_CONVERTER,
        runtime=runtime,
    )
    customer_id = f"C-MET-{uuid.uuid4().hex[:6]}"
    now = await env.get_current_time()
    async with engine_factory(client) as engine:
        handle = await engine.issue(
            CustomerAccount(customer_id=customer_id, name="Lotus Trading", email="ap@lotus.example.cn"),
            Invoice(
                invoice_id=f"INV-{customer_id}",
                customer_id=customer_id,
                amount=Money(amount=Decimal("500.00"), currency="CNY"),
                issued_on=(now - timedelta(days=1)).date(),
                due_on=(now + timedelta(days=9)).astimezone(SHANGHAI).date(),
            ),
        )
        await handle.signal("payment_received", {"payment_id": "PAY-1", "customer_id": "someone-else"})

        async def rejected() -> bool:
            return len((await engine.status(customer_id)).rejected) == 1

        await eventually("the rejection", rejected, 15)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("extend_due_date", {"not": "an extension"}, result_type=BillingStatus)
        history = await handle.fetch_history()

    recorded = _recorded(buffer)
    assert recorded[metrics.SIGNALS_REJECTED.name] == [(1, {"signal": "payment_received"})]
    assert recorded[metrics.UPDATES_REFUSED.name] == [(1, {"update": "extend_due_date"})]

    replay_buffer = MetricBuffer(10000)
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=TEST_DATA_CONVERTER,
        runtime=Runtime(telemetry=TelemetryConfig(metrics=replay_buffer)),
    )
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None
    assert _recorded(replay_buffer) == {}


# --- the Grafana dashboard ---------------------------------------------------------------------------------------

DASHBOARD = REPO / "deploy" / "grafana" / "billing-dashboard.json"
# The Core SDK's metrics the dashboard charts, as the Prometheus exporter names them (histograms by their
# `_bucket` series): https://docs.temporal.io/references/sdk-metrics. The devserver test below finds each on a
# real worker's page, except those made only by what its story never does (a workflow task failing, a workflow
# missing from the sticky cache).
SDK_METRICS = frozenset(
    {
        "temporal_request",
        "temporal_workflow_task_execution_latency_bucket",
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        "temporal_workflow_task_execution_failed",
        "temporal_activity_execution_failed",
        "temporal_sticky_cache_size",
        "temporal_sticky_cache_hit",
        "temporal_sticky_cache_miss",
        "temporal_worker_task_slots_available",
    }
)
SDK_METRICS_NOT_ALWAYS_MADE = frozenset({"temporal_workflow_task_execution_failed", "temporal_sticky_cache_miss"})
# What Grafana puts in place of its variables before Prometheus sees a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$task_queue": ".*"}


def _dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD.read_text(encoding="utf-8")))


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard: each panel's targets and each query variable's."""
    dashboard = _dashboard()
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def dashboard_metric_names() -> set[str]:
    """The metrics the dashboard's queries name: the engine's are `billing_...`, the SDK's `temporal_...`."""
    return {name for query in dashboard_queries() for name in re.findall(r"\b(?:billing|temporal)_\w+", query)}


def test_the_dashboard_charts_only_metrics_the_engine_or_the_sdk_emits_and_every_engine_metric() -> None:
    engine = {metric.name for metric in metrics.ENGINE_METRICS}
    named = dashboard_metric_names()
    assert named - engine - SDK_METRICS == set()
    assert engine - named == set()


def test_every_dashboard_panel_reads_the_prometheus_datasource_variable() -> None:
    dashboard = _dashboard()
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    charts = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in charts:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    return promtool


def _grafana_substituted(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{number}", "expr": _grafana_substituted(query)}
                    for number, query in enumerate(q for q in dashboard_queries() if not q.startswith("label_values"))
                ],
            }
        ]
    }
    (tmp_path / "rules.json").write_text(json.dumps(rules), encoding="utf-8")  # YAML is a superset of JSON
    checked = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.json")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_owing_panels_show_the_worker_that_finished_the_latest_sweep(tmp_path: Path) -> None:
    """With two workers, one still holding an older sweep's gauges, the panel shows the newer sweep's."""
    promtool = _promtool()
    [owing] = [
        q for q in dashboard_queries() if q.startswith("max by (stage, currency) (billing_sweep_customers_owing")
    ]
    labels = 'namespace="default", task_queue="billing"'
    series = [
        (f'billing_sweep_customers_owing{{instance="old", stage="Suspended", currency="CNY", {labels}}}', "5x5"),
        (f'billing_sweep_customers_owing{{instance="new", stage="Suspended", currency="CNY", {labels}}}', "2x5"),
        (f'billing_sweep_finished_timestamp_seconds{{instance="old", {labels}}}', "100x5"),
        (f'billing_sweep_finished_timestamp_seconds{{instance="new", {labels}}}', "200x5"),
    ]
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series],
                "promql_expr_test": [
                    {
                        "expr": _grafana_substituted(owing),
                        "eval_time": "2m",
                        "exp_samples": [{"labels": '{stage="Suspended", currency="CNY"}', "value": 2}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.json").write_text(json.dumps(test), encoding="utf-8")
    tested = subprocess.run([promtool, "test", "rules", "test.json"], capture_output=True, text=True, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


# --- the endpoint of a running worker ----------------------------------------------------------------------------


def _samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


# Engine series a full ladder with a suspension, a refusal of each kind and a sweep shows on /metrics.
LADDER_SERIES = (
    ("billing_notices_sent", 'kind="invoice"'),
    ("billing_notices_sent", 'kind="reminder"'),
    ("billing_notices_sent", 'kind="final_notice"'),
    ("billing_notices_sent", 'kind="suspension"'),
    ("billing_notices_sent", 'kind="close_the_loop"'),
    ("billing_subscriptions_changed", 'target="suspended"'),
    ("billing_subscriptions_changed", 'target="active"'),
    ("billing_partner_center_refusals", 'code="800096"'),
    ("billing_signals_rejected", 'signal="payment_received"'),
    ("billing_updates_refused", 'update="extend_due_date"'),
    ("billing_ledger_errors", 'action="record_invoice"'),
    ("billing_sweep_customers_owing", 'stage="Suspended"'),
    ("billing_sweep_amount_overdue", 'stage="Suspended"'),
    ("billing_sweep_finished_timestamp_seconds", ""),
)


def _series(page: str, name: str, attribute: str) -> list[str]:
    return [line for line in _samples(page, name) if attribute in line]


def _value(line: str) -> float:
    return float(line.rsplit(" ", 1)[1])


def metric_names(page: str) -> set[str]:
    """The metric names a Prometheus text page holds (histograms by their base name and their series')."""
    names: set[str] = set()
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


@pytest.mark.devserver
@pytest.mark.timeout(240)
async def test_worker_serves_the_sdk_and_engine_metrics_after_a_ladder_with_a_suspension(
    tmp_path: Path, dev_server: DevServer, partner_center_emulator: PartnerCenterEmulator, smtp_sink: SmtpSink
) -> None:
    """`worker.py` with BILLING_METRICS_PORT on a ladder of seconds (FAST_POLICY): one customer is reminded,
    given a final notice and suspended (Partner Center refusing one of the two subscriptions), sent a signal
    it rejects and an update it refuses, swept while suspended, then pays and is reinstated; another pays at
    once; a third's invoice reuses the first's id, which the ledger refuses. /metrics shows the SDK's series and
    every engine series of that story, each with its count, and no customer id or name."""
    port = free_port()
    task_queue = f"billing-metrics-{uuid.uuid4().hex[:8]}"
    env = worker_environment(tmp_path, dev_server.address, partner_center_emulator, smtp_sink, task_queue)
    env |= {"BILLING_METRICS_PORT": str(port), "BILLING_METRICS_HOST": "127.0.0.1"}
    stderr = tmp_path / "worker.stderr.log"
    process = spawn([sys.executable, "worker.py"], stdout=tmp_path / "worker.stdout.log", stderr=stderr, env=env)
    run = uuid.uuid4().hex[:8]
    laddered, paid, other = f"C-MET-L-{run}", f"C-MET-P-{run}", f"C-MET-O-{run}"
    partner_center_emulator.seed_tenant(laddered, {"sub-office": "active", "sub-azure": "active"})
    partner_center_emulator.refuse_status_change(laddered, "sub-azure", "800096")
    later = (datetime.now(UTC) + timedelta(days=30)).astimezone(SHANGHAI).date().isoformat()
    try:

        async def started() -> bool:
            assert process.poll() is None, f"worker.py exited: {stderr.read_text(errors='replace')}"
            return "worker started" in stderr.read_text(errors="replace")

        await eventually("worker.py starting", started, 30, stderr)

        async def starter(*args: str) -> str:
            finished = await run_starter(dev_server, task_queue, *args)
            assert finished.returncode == 0, finished.stderr
            return finished.stdout

        customer = ("--name", "Metrics Trading", "--email", "ap@metrics.example.cn")
        # Due 10 s from now, once the worker has started (which takes seconds on a loaded machine): FAST_POLICY's
        # first reminder, 2 s before the due moment, is still ahead when the invoice arrives.
        due_at = (datetime.now(UTC) + timedelta(seconds=10)).astimezone(SHANGHAI).replace(microsecond=0)
        await starter(
            "invoice", "--customer-id", laddered, *customer, "--invoice-id", f"INV-{laddered}",
            "--amount", "1234.50", "--due-on", due_at.date().isoformat(), "--due-at", due_at.isoformat(),
        )  # fmt: skip
        for customer_id in (paid, other):
            await starter(
                "invoice", "--customer-id", customer_id, *customer, "--invoice-id", f"INV-{paid}",
                "--amount", "300.00", "--issued-on", later, "--due-on", later,
            )  # fmt: skip
        await starter("payment", "--customer-id", paid, "--payment-id", f"PAY-{paid}", "--amount", "300.00")

        handle = dev_server.client.get_workflow_handle(f"customer-billing-{laddered}", result_type=BillingStatus)
        await handle.signal("payment_received", {"payment_id": f"PAY-{run}", "customer_id": "someone-else"})
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("extend_due_date", {"not": "an extension"}, result_type=BillingStatus)

        async def suspended() -> bool:
            status = await handle.query("status", result_type=BillingStatus)
            return status.stage is BillingStage.SUSPENDED and status.suspended_subscription_ids == ["sub-office"]

        await eventually("the suspension", suspended, 60, stderr)
        swept = await starter("sweep", "run")
        assert "Customers owing: 1" in swept, swept
        await starter("payment", "--customer-id", laddered, "--payment-id", f"PAY-{laddered}", "--amount", "1234.50")
        final = await asyncio.wait_for(handle.result(), timeout=60)

        async def scraped() -> str | None:
            async with httpx.AsyncClient() as http:
                page = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
            completed = [line for line in _samples(page, "temporal_workflow_completed") if "CustomerBilling" in line]
            missing = [series for series in LADDER_SERIES if not _series(page, *series)]
            return page if completed and not missing else None

        page = await eventually("the ladder's metrics", scraped, 60, stderr)
    finally:
        stop_process(process)

    counted = {series: sum(_value(line) for line in _series(page, *series)) for series in LADDER_SERIES}
    # FAST_POLICY's two reminders, or one: on a loaded machine rungs seconds apart go out as one catch-up. The
    # count is the lifecycle's own record of what it sent.
    reminders = [notice for notice in final.notices_sent if notice.kind is NoticeKind.REMINDER]
    assert reminders, final.notices_sent
    assert counted[("billing_notices_sent", 'kind="reminder"')] == len(reminders)
    assert counted[("billing_notices_sent", 'kind="suspension"')] == 1
    assert counted[("billing_subscriptions_changed", 'target="suspended"')] == 1  # sub-office; sub-azure refused
    assert counted[("billing_subscriptions_changed", 'target="active"')] == 1
    assert counted[("billing_partner_center_refusals", 'code="800096"')] == 1
    assert counted[("billing_signals_rejected", 'signal="payment_received"')] == 1
    assert counted[("billing_updates_refused", 'update="extend_due_date"')] == 1
    assert counted[("billing_ledger_errors", 'action="record_invoice"')] == 1
    [owing] = _series(page, "billing_sweep_customers_owing", 'stage="Suspended"')
    [overdue] = _series(page, "billing_sweep_amount_overdue", 'stage="Suspended"')
    assert 'currency="CNY"' in owing and _value(owing) == 1 and _value(overdue) == 1234.5
    assert f'task_queue="{task_queue}"' in _series(page, "billing_ledger_errors", 'action="record_invoice"')[0]
    for secret in (laddered, paid, other, "Metrics Trading", "ap@metrics.example.cn"):
        assert secret not in page
    assert set(dashboard_metric_names()) <= metric_names(page) | SDK_METRICS_NOT_ALWAYS_MADE
