"""The worker's metrics: the SDK runtime's Prometheus endpoint (`BILLING_METRICS_PORT`) and the engine's own
counters and gauges, recorded through the SDK's metric meter so they are served beside the SDK's.

Record them with the meter of where the code runs: `activity.metric_meter()` in an activity,
`workflow.metric_meter()` in workflow code (it records nothing while replaying), `runtime.metric_meter`
elsewhere. The SDK adds `namespace`, `task_queue` and `activity_type` (or `workflow_type`) to each.
No attribute may carry personal data (a customer's name or email) or a customer id: one series per customer
would swamp Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from temporalio import activity, workflow
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from billing.settings import Settings
from billing.sweep import STAGES, OwingByStage

DEFAULT_METRICS_HOST = Settings.model_fields["metrics_host"].default


class MetricsEndpointError(Exception):
    """The metrics endpoint cannot be served (the port is taken, the host is not this machine's)."""


@dataclass(frozen=True)
class EngineMetric:
    """One of the engine's own metrics: its Prometheus name, kind, meaning and the attributes it carries."""

    name: str
    kind: Literal["counter", "gauge", "float_gauge"]
    description: str
    attributes: tuple[str, ...] = ()


LEDGER_ERRORS = EngineMetric(
    "billing_ledger_errors",
    "counter",
    "Ledger requests that failed: refused by the books (code = the refusal's code) or an outage (code = outage)",
    ("action", "code"),
)

NOTICES_SENT = EngineMetric(
    "billing_notices_sent",
    "counter",
    "Notices handed to the mail server or the outbox, by kind (a notice already sent and logged is not counted)",
    ("kind",),
)
SUBSCRIPTIONS_CHANGED = EngineMetric(
    "billing_subscriptions_changed",
    "counter",
    "Subscriptions Partner Center changed to the target: suspended (suspensions) or active (reinstatements)",
    ("target",),
)
PARTNER_CENTER_REFUSALS = EngineMetric(
    "billing_partner_center_refusals",
    "counter",
    "Subscription changes Partner Center refused, by its error code (unknown: none given) and the target asked",
    ("code", "target"),
)
SIGNALS_REJECTED = EngineMetric(
    "billing_signals_rejected",
    "counter",
    "Signals a workflow could not apply (invalid or contradicting the books), recorded in its status's rejected",
    ("signal",),
)
UPDATES_REFUSED = EngineMetric(
    "billing_updates_refused",
    "counter",
    "Operator updates the engine refused, by its validator or when the workflow came to apply them",
    ("update",),
)
SWEEP_CUSTOMERS_OWING = EngineMetric(
    "billing_sweep_customers_owing",
    "gauge",
    "Customers the ledger says owe something, at the daily sweep's last pass, by the stage their lifecycle "
    "published (Untracked: none yet) and the account's currency",
    ("stage", "currency"),
)
SWEEP_AMOUNT_OVERDUE = EngineMetric(
    "billing_sweep_amount_overdue",
    "float_gauge",
    "Money past its due moment at the daily sweep's last pass, by lifecycle stage and currency (display only: "
    "the books stay Decimal)",
    ("stage", "currency"),
)
SWEEP_FINISHED = EngineMetric(
    "billing_sweep_finished_timestamp_seconds",
    "float_gauge",
    "When the daily sweep last finished going through the customers owing (Unix time, seconds)",
)

ENGINE_METRICS: tuple[EngineMetric, ...] = (
    LEDGER_ERRORS,
    NOTICES_SENT,
    SUBSCRIPTIONS_CHANGED,
    PARTNER_CENTER_REFUSALS,
    SIGNALS_REJECTED,
    UPDATES_REFUSED,
    SWEEP_CUSTOMERS_OWING,
    SWEEP_AMOUNT_OVERDUE,
    SWEEP_FINISHED,
)


def runtime(metrics_host: str, metrics_port: int | None) -> Runtime | None:
    """A runtime serving http://HOST:PORT/metrics for the worker's client and worker; None without a port (the
    SDK's default runtime, no metrics). Built once per process: the SDK binds the port when it is created."""
    if metrics_port is None:
        return None
    bind_address = f"[{metrics_host}]:{metrics_port}" if ":" in metrics_host else f"{metrics_host}:{metrics_port}"
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))
    except ValueError as error:  # the SDK's "Failed starting Prometheus exporter: Address already in use"
        raise MetricsEndpointError(
            f"cannot serve metrics at {bind_address}: {error}; set BILLING_METRICS_PORT (and BILLING_METRICS_HOST)"
        ) from None


def _check(metric: EngineMetric, kinds: tuple[str, ...], attributes: dict[str, str]) -> None:
    if metric.kind not in kinds or set(attributes) != set(metric.attributes):
        raise ValueError(f"{metric.name} is a {metric.kind} with attributes {metric.attributes}, not {attributes}")


def count(meter: MetricMeter, metric: EngineMetric, value: int = 1, **attributes: str) -> None:
    """Add `value` to a counter of `ENGINE_METRICS`; `attributes` must be those the metric names."""
    _check(metric, ("counter",), attributes)
    meter.create_counter(metric.name, metric.description).add(value, dict(attributes))


def set_gauge(meter: MetricMeter, metric: EngineMetric, value: float, **attributes: str) -> None:
    """Set a gauge of `ENGINE_METRICS` (an integer one takes `int(value)`); `attributes` as the metric names."""
    _check(metric, ("gauge", "float_gauge"), attributes)
    if metric.kind == "gauge":
        meter.create_gauge(metric.name, metric.description).set(int(value), dict(attributes))
    else:
        meter.create_gauge_float(metric.name, metric.description).set(float(value), dict(attributes))


def count_in_activity(metric: EngineMetric, value: int = 1, **attributes: str) -> None:
    """`count` on the running activity's meter (in a test's `ActivityEnvironment`, its meter: noop by default).
    Called outside any activity (an activity method called directly), it only checks the attributes."""
    if activity.in_activity():
        count(activity.metric_meter(), metric, value, **attributes)
    else:
        _check(metric, ("counter",), attributes)


def count_in_workflow(metric: EngineMetric, value: int = 1, **attributes: str) -> None:
    """`count` on the running workflow's meter. The SDK's workflow meter records nothing while the workflow
    replays (temporalio/worker/_workflow_instance.py, `_ReplaySafeMetricCounter`), so a message rejected once
    counts once however often its history is replayed, and recording is no command: no patch is needed."""
    count(workflow.metric_meter(), metric, value, **attributes)


def publish_owing(meter: MetricMeter, owing: Sequence[OwingByStage], finished_at: datetime) -> None:
    """The sweep's customers owing and amounts overdue as gauges: every stage of every currency owed in, so a
    stage the customers left reads 0 instead of yesterday's figure; and when the sweep got through them all."""
    tallies = {(tally.currency, tally.stage): tally for tally in owing}
    for currency in sorted({tally.currency for tally in owing}):
        for stage in STAGES:
            tally = tallies.get((currency, stage))
            customers, overdue = (tally.customers, float(tally.overdue)) if tally else (0, 0.0)
            set_gauge(meter, SWEEP_CUSTOMERS_OWING, customers, stage=stage, currency=currency)
            set_gauge(meter, SWEEP_AMOUNT_OVERDUE, overdue, stage=stage, currency=currency)
    set_gauge(meter, SWEEP_FINISHED, finished_at.timestamp())
