"""The worker's metrics: the SDK runtime's Prometheus endpoint (`BILLING_METRICS_PORT`) and the engine's own
counters and gauges, recorded through the SDK's metric meter so they are served beside the SDK's.

Record them with the meter of where the code runs: `activity.metric_meter()` in an activity,
`workflow.metric_meter()` in workflow code (it records nothing while replaying), `runtime.metric_meter`
elsewhere. The SDK adds `namespace`, `task_queue` and `activity_type` (or `workflow_type`) to each.
No attribute may carry personal data (a customer's name or email) or a customer id: one series per customer
would swamp Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from billing.settings import Settings

DEFAULT_METRICS_HOST = Settings.model_fields["metrics_host"].default


class MetricsEndpointError(Exception):
    """The metrics endpoint cannot be served (the port is taken, the host is not this machine's)."""


@dataclass(frozen=True)
class EngineMetric:
    """One of the engine's own metrics: its Prometheus name, kind, meaning and the attributes it carries."""

    name: str
    kind: Literal["counter", "gauge"]
    description: str
    attributes: tuple[str, ...] = ()


LEDGER_ERRORS = EngineMetric(
    "billing_ledger_errors",
    "counter",
    "Ledger requests that failed: refused by the books (code = the refusal's code) or an outage (code = outage)",
    ("action", "code"),
)

ENGINE_METRICS: tuple[EngineMetric, ...] = (LEDGER_ERRORS,)


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


def count(meter: MetricMeter, metric: EngineMetric, value: int = 1, **attributes: str) -> None:
    """Add `value` to a counter of `ENGINE_METRICS`; `attributes` must be those the metric names."""
    if metric.kind != "counter" or set(attributes) != set(metric.attributes):
        raise ValueError(f"{metric.name} is a {metric.kind} with attributes {metric.attributes}, not {attributes}")
    meter.create_counter(metric.name, metric.description).add(value, dict(attributes))


def count_in_activity(metric: EngineMetric, value: int = 1, **attributes: str) -> None:
    """`count` on the running activity's meter (in a test's `ActivityEnvironment`, its meter: noop by default)."""
    count(activity.metric_meter(), metric, value, **attributes)
