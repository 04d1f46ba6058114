"""The billing worker: builds the ledger, mailer and Partner Center adapters from the environment and runs
the `CustomerBilling` workflow and its activities on the `BILLING_TASK_QUEUE` task queue.

    python worker.py            (settings: see shared/CONTRACT.md and README "Settings")
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import os
import py_compile
import signal
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.collections_policy import PolicyActivities
from activities.ledger import LedgerActivities
from activities.mailer import MailerActivities, OutboxTransport, SmtpTransport
from activities.partner_center import PartnerCenterActivities, PartnerCenterClient
from activities.partner_payables import PartnerPayableActivities
from activities.sweep import SweepActivities
from billing import encryption, metrics, temporal_connection
from billing.business_days import KNOWN_YEARS, unknown_years
from billing.ledger import LedgerStore
from billing.ledger.partner_payments import PartnerPaymentBook
from billing.logging import configure_logging
from billing.models import DEFAULT_TIME_ZONE
from billing.notices import NoticeRenderer
from billing.policy import CollectionsPolicy
from billing.settings import Settings, SettingsError, settings_from_environment
from billing.temporal_connection import TemporalConnectionError, TemporalTarget, temporal_target
from workflows.customer_billing import CustomerBilling
from workflows.daily_sweep import DailySweep
from workflows.inbox import OnePayloadPerMessage
from workflows.partner_payable import PartnerPayable

log = structlog.get_logger(__name__)

WORKFLOWS: list[type] = [CustomerBilling, PartnerPayable, DailySweep]


async def connect(
    target: TemporalTarget,
    *,
    data_converter: DataConverter = pydantic_data_converter,
    runtime: Runtime | None = None,
    attempts: int = 1,
) -> Client:
    """Connect to Temporal, waiting for a server that is still starting (up to `attempts` seconds); then a
    `TemporalConnectionError` with the one line to print."""

    def waiting(attempt: int, reason: str) -> None:
        log.info("temporal not reachable yet", attempt=attempt, error=reason, **target.log_fields())

    return await temporal_connection.connect(
        target, data_converter=data_converter, runtime=runtime, attempts=attempts, on_retry=waiting
    )


def compile_workflow_modules(workflows: list[type]) -> dict[str, str]:
    """Write the bytecode of the workflow modules (and their packages) if it is missing or stale.

    The sandbox imports a workflow's module afresh for every lifecycle it takes up (that is what isolates one
    run from another); without bytecode on disk every such import compiles the source again, which is where a
    worker spends most of a new lifecycle's CPU. Python writes bytecode as it imports, except where
    PYTHONDONTWRITEBYTECODE is set (as on these machines) or the directory is read-only (the Docker image
    compiles at build time instead); reading existing bytecode is never switched off, so writing it here once
    is enough. Returns each file's outcome for the start-up log."""
    outcome: dict[str, str] = {}
    for workflow_class in workflows:
        module = sys.modules[workflow_class.__module__]
        package = sys.modules.get(module.__name__.rpartition(".")[0])
        for source in {module.__file__, getattr(package, "__file__", None)} - {None}:
            path = Path(str(source))
            cached = Path(importlib.util.cache_from_source(str(path)))
            if cached.exists() and cached.stat().st_mtime >= path.stat().st_mtime:
                outcome[path.name] = "present"
                continue
            try:
                py_compile.compile(str(path), cfile=str(cached), doraise=True)
                outcome[path.name] = "compiled"
            except (OSError, py_compile.PyCompileError) as error:
                outcome[path.name] = f"not written: {error}"
    return outcome


def warn_if_china_calendar_runs_out(policy: CollectionsPolicy, today: date) -> None:
    """Say once, as the worker starts, if China's calendar does not know this year or next: in such a year
    business days of China's calendar are Monday to Friday until the package is upgraded.

    Here and not where the fallback happens: that is the decision core, which workflow code runs on every
    replay and every query, so a warning there would repeat for every lifecycle and every replay (and log from
    inside the sandbox). This year and next cover the steps of the lifecycles this worker will run."""
    quiet = policy.quiet_hours
    if not (quiet.enabled and quiet.business_days_only) or quiet.calendar == "weekends":
        return
    years = unknown_years([today.year, today.year + 1])
    if years:
        log.warning(
            "china calendar not known for these years: their business days are Monday to Friday",
            years=years,
            known_through=KNOWN_YEARS[-1],
            package="chinesecalendar",
        )


def partner_center_client(settings: Settings) -> PartnerCenterClient:
    """The worker's one Partner Center client (its token cache and rate limit are shared by every activity)."""
    return PartnerCenterClient(
        settings.partner_center_url,
        settings.partner_center_token_url or "",
        settings.partner_center_client_id or "",
        settings.partner_center_client_secret or "",
        resource=settings.partner_center_resource,
        # Beside the task-queue-wide limit of the Temporal server: no one process exceeds it either.
        max_calls_per_second=max(1, math.ceil(settings.partner_center_calls_per_second)),
    )


class BillingWorkers:
    """The worker process's three task queues, run and stopped together: the lifecycles and their ledger and mail
    activities; Partner Center's calls, rate-limited by the Temporal server for every worker of the partner at
    once; the daily sweep, which never competes with the lifecycles it wakes."""

    def __init__(self, lifecycles: Worker, partner_center: Worker, sweep: Worker) -> None:
        self.lifecycles = lifecycles
        self.partner_center = partner_center
        self.sweep = sweep
        self._all = [lifecycles, partner_center, sweep]
        self._stack = contextlib.AsyncExitStack()

    async def run(self) -> None:
        await asyncio.gather(*(worker.run() for worker in self._all))

    async def shutdown(self) -> None:
        await asyncio.gather(*(worker.shutdown() for worker in self._all))

    async def __aenter__(self) -> BillingWorkers:
        for worker in self._all:
            await self._stack.enter_async_context(worker)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()


def workflow_runner(settings: Settings) -> SandboxedWorkflowRunner:
    """The sandbox the workflows run in, as `workflow_sandbox` says.

    "shared": the workflow modules themselves are passed through, like `billing` and the SDK already are, so
    each is imported once per worker instead of executed again in the sandbox of every run the worker takes up
    (a cached lifecycle held its own copy of the module's code and classes: 279 KiB against 133 KiB shared,
    bench/results/profiles/worker-memory*.txt). What that gives up is the sandbox's check of those modules'
    own code (a clock read, randomness, I/O): the suite runs "strict", and so do the replays of the
    recorded histories, so such a call fails a test before it reaches a worker."""
    if settings.workflow_sandbox == "strict":
        return SandboxedWorkflowRunner()
    modules = sorted({workflow_class.__module__ for workflow_class in WORKFLOWS})
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))


def tuning(settings: Settings) -> dict[str, Any]:
    """The SDK worker options the settings tune (None: the SDK's default), as printed at start."""
    options: dict[str, Any] = {"max_cached_workflows": settings.max_cached_workflows}
    if settings.max_concurrent_workflow_tasks is not None:
        options["max_concurrent_workflow_tasks"] = settings.max_concurrent_workflow_tasks
    if settings.max_concurrent_activities is not None:
        options["max_concurrent_activities"] = settings.max_concurrent_activities
    return options


@asynccontextmanager
async def billing_worker(client: Client, settings: Settings) -> AsyncIterator[BillingWorkers]:
    """The workers wired to real adapters from `settings`; the adapters close when the context ends."""
    log.info("workflow bytecode", files=compile_workflow_modules(WORKFLOWS))
    store = LedgerStore.from_url(settings.ledger_url)
    partner_center = partner_center_client(settings)
    transport: SmtpTransport | OutboxTransport
    if settings.smtp_host:
        transport = SmtpTransport(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
    else:
        transport = OutboxTransport(settings.outbox_dir)
    mailer = MailerActivities(
        transport,
        store,
        mail_from=settings.mail_from,
        escalation_email=settings.escalation_email,
        finance_email=settings.finance_email,
        renderer=NoticeRenderer(settings.template_dirs, links=settings.notice_links()),
        branding=settings.branding(),
        collections_policy=settings.policy(),
    )
    ledger = LedgerActivities(store)
    policy = PolicyActivities(settings.policy(), settings.history_event_limit, settings.partner_center_queue)
    warn_if_china_calendar_runs_out(settings.policy(), datetime.now(ZoneInfo(DEFAULT_TIME_ZONE)).date())
    payables = PartnerPayableActivities(partner_center, client, settings.task_queue, PartnerPaymentBook(store.engine))
    sweep = SweepActivities(store, client, settings.task_queue)
    subscriptions = PartnerCenterActivities(partner_center)
    partner_center_calls: list[Callable[..., Any]] = [
        subscriptions.list_active_subscriptions,
        subscriptions.change_subscriptions,
        subscriptions.change_subscription_status,  # runs recorded before change_subscriptions
    ]
    activities: list[Callable[..., Any]] = [
        policy.load_lifecycle_settings,
        ledger.record_invoice,
        ledger.record_payment,
        ledger.get_balance,
        ledger.post_credit_note,
        ledger.write_off_invoice,
        ledger.record_audit,
        ledger.reschedule_invoice,
        ledger.record_dispute,
        ledger.record_escalation,
        ledger.build_escalation_case,
        mailer.send_notice,
        payables.track_partner_invoices,
        payables.record_partner_payment,
        # Runs that started before Partner Center had its own task queue still call it on this one.
        *partner_center_calls,
        # A schedule created before the sweep had its own task queue still starts sweeps on this one.
        sweep.reconcile_owed_customers,
        sweep.reconcile_running_lifecycles,
    ]
    options = tuning(settings)
    runner = workflow_runner(settings)
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="ledger") as ledger_threads:
        workers = BillingWorkers(
            Worker(
                client,
                task_queue=settings.task_queue,
                workflows=WORKFLOWS,
                activities=activities,
                interceptors=[OnePayloadPerMessage()],
                activity_executor=ledger_threads,
                graceful_shutdown_timeout=timedelta(seconds=10),
                workflow_runner=runner,
                **options,
            ),
            Worker(
                client,
                task_queue=settings.partner_center_queue,
                activities=partner_center_calls,
                max_task_queue_activities_per_second=settings.partner_center_calls_per_second,
                graceful_shutdown_timeout=timedelta(seconds=10),
            ),
            Worker(
                client,
                task_queue=settings.sweep_queue,
                workflows=[DailySweep],
                workflow_runner=runner,
                activities=[
                    sweep.reconcile_owed_customers,
                    sweep.reconcile_running_lifecycles,
                    payables.track_partner_invoices,
                ],
                interceptors=[OnePayloadPerMessage()],
                activity_executor=ledger_threads,
                graceful_shutdown_timeout=timedelta(seconds=10),
            ),
        )
        try:
            yield workers
        finally:
            await partner_center.aclose()
            if isinstance(transport, SmtpTransport):
                await transport.aclose()  # QUIT on the connections the mailer kept open
            store.close()


async def run(settings: Settings, target: TemporalTarget, runtime: Runtime | None = None) -> None:
    client = await connect(
        target,
        data_converter=encryption.data_converter(settings.encryption_keys),
        runtime=runtime,
        attempts=settings.connect_attempts,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with billing_worker(client, settings) as worker:
        log.info(
            "worker started",
            task_queue=settings.task_queue,
            partner_center_task_queue=settings.partner_center_queue,
            partner_center_calls_per_second=settings.partner_center_calls_per_second,
            sweep_task_queue=settings.sweep_queue,
            **tuning(settings),
            workflow_sandbox=settings.workflow_sandbox,
            mail="smtp" if settings.smtp_host else "outbox",
            metrics_port=settings.metrics_port,
            **target.log_fields(),
        )
        running = asyncio.create_task(worker.run())
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if running in done:
            try:
                running.result()
            except RuntimeError as error:
                # The SDK checks the namespace as the worker starts ("Worker validation failed: Namespace ... was
                # not found"): a setting to fix, said in one line like an unreachable server.
                if not str(error).startswith("Worker validation failed"):
                    raise
                raise TemporalConnectionError(
                    f"Temporal at {target.describe()} refused the worker: {' '.join(str(error).split())}; "
                    + temporal_connection.HINT
                ) from None
            return
        log.info("stopping worker: finishing running activities")
        await worker.shutdown()
        await running
    log.info("worker stopped")


def main() -> int:
    configure_logging()
    try:
        settings = settings_from_environment()
        target = temporal_target()
        runtime = metrics.runtime(settings.metrics_host, settings.metrics_port)
    except (SettingsError, TemporalConnectionError, metrics.MetricsEndpointError) as error:
        print(f"worker.py: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(settings, target, runtime))
    except TemporalConnectionError as error:
        print(f"worker.py: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    status = main()
    # As starter.py: skip interpreter finalization, which the Temporal runtime's Rust threads can abort with
    # SIGABRT ("PyGILState_Release ... finalizing", temporalio/sdk-python#300; seen here after a failed
    # connection), so the exit status is the one main() chose.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
