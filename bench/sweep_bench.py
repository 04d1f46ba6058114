"""Benchmark of the daily sweep: does it scale to 100,000 customers, and does its own task queue keep it from
competing with the lifecycles it starts?

    .venv/bin/python -m bench.sweep_bench [--smoke] [--customers 100000] [--owing 2000] [--label NAME]
                                          [--out bench/results/sweep.md] [--postgres URL]

Three measurements, reported as ratios taken in the same run (the machines are shared and noisy):

1. **Ledger paging.** The same 5,000 owing customers among 10,000 and among `customers` customers: the time
   to read one page of 500 owing customers, with the owed-invoices index (revision 0004) and without it, and
   the memory one page takes. With the index a page costs the same however many customers are paid up.
2. **The sweep itself.** A `DailySweep` on the time-skipping server with the real worker over a ledger of
   `customers` customers of whom `owing` owe and have no lifecycle (so each page starts `page_size` lifecycles
   by signal-with-start), continuing as new every few pages: wall time, customers per second, and the history
   events of its largest run, projected to 100,000 owing customers at the production page size.
3. **The sweep's own task queue.** A dev server with `worker.py` as a subprocess, as operators run them. In
   interleaved rounds, customers booked with no lifecycle and a sweep over them, started either on the sweep's
   own task queue as shipped, or on the lifecycle queue as every sweep ran before it had one (the lifecycle
   worker still serves sweeps there, for schedules made before). Each time: how long the sweep takes and its
   tasks wait on their queue, and meanwhile how long lifecycles already running take from `invoice_issued` to
   the invoice notice. Checked from outside as well: which queues the worker polls (DescribeTaskQueue), which
   queue each workflow and activity ran on (their histories), and that `starter.py sweep schedule` points an
   older schedule at the sweep's queue. The dev server runs in memory (`--queue-server file`: on a SQLite file,
   whose writes every workflow waits for in turn, both ways alike).

Each run puts a block into the results file (replacing the block of the same `--label`, keeping the others)
and saves its figures as `sweep-<label>.json` beside it. `--smoke` is the smallest setting (what the test
runs): every figure, no meaning in the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, make_url, text, update
from temporalio.api.enums.v1 import EventType, TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from bench.lifecycle_bench import _commit, account, bounded, percentile, quiet, within
from bench.stack import DevServerProcess, Mailbox, TimedSink, Workers, cpu_seconds, machine
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger import LedgerStore
from billing.ledger.schema import invoices
from billing.models import Invoice
from billing.money import Money
from billing.settings import Settings
from billing.sweep import DEFAULT_PAGE_SIZE, SWEEP_SCHEDULE_ID, SweepInput, SweepReport
from billing.sweep_schedule import SweepSchedule, ensure_sweep_schedule
from cli.customers import issue_invoice
from tests.devserver_fixtures import REPO, clean_environment, worker_environment
from tests.temporal_fixtures import TEST_POLICY, TEST_SERVER, register_search_attributes
from tests.test_daily_sweep import book
from worker import billing_worker
from workflows.daily_sweep import DailySweep

HISTORY_LIMIT = 51_200  # Temporal's default hard limit of events per run
PRODUCTION_PAGES_PER_RUN = SweepInput().pages_per_run
RESULTS_FILE = REPO / "bench" / "results" / "sweep.md"
SECTIONS = ("paging", "sweep", "queues")  # the three measurements, in the order of the results file
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Setting:
    name: str
    customers: int  # the books of the paging measurement and of the time-skipping sweep
    paging_owing: int  # owing customers in both ledgers of the paging measurement
    owing: int  # owing customers with no lifecycle for the time-skipping sweep
    queue_owing: int  # per sweep of the queue comparison: customers booked with no lifecycle
    queue_page_size: int
    rounds: int  # of the queue comparison, each sweeping once on either queue
    probes: int  # running lifecycles sent invoices while each of those sweeps runs
    deadline: float  # seconds any one sweep (with its lifecycles' first notices) may take


SMOKE = Setting(
    "smoke",
    customers=4_000,
    paging_owing=1_000,
    owing=100,
    queue_owing=20,
    queue_page_size=10,
    rounds=1,
    probes=2,
    deadline=240,
)
DEFAULT = Setting(
    "default",
    customers=100_000,
    paging_owing=5_000,
    owing=1_000,
    queue_owing=60,
    queue_page_size=10,
    rounds=3,
    probes=4,
    deadline=900,
)


# --- 1. ledger paging ---------------------------------------------------------------------------------------


def build_ledger(path: Path, owing: int, paid: int) -> LedgerStore:
    """`owing` customers who owe an invoice and `paid` who paid theirs, mixed evenly in customer-id order."""
    store = LedgerStore.from_url(f"sqlite:///{path}")
    every = max((owing + paid) // owing, 1)
    ids = [f"C-{n:07}" for n in range(owing + paid)]
    owing_ids = set(ids[::every][:owing])
    issued = datetime.now(UTC).date()
    for start in range(0, len(ids), 20_000):
        chunk = ids[start : start + 20_000]
        book(
            store,
            owed=[c for c in chunk if c in owing_ids],
            paid=[c for c in chunk if c not in owing_ids],
            issued_on=issued,
        )
    return store


def page_times(store: LedgerStore, pages: int = 10) -> list[float]:
    """Milliseconds per page of `DEFAULT_PAGE_SIZE` owing customers, from the first page on."""
    after: str | None = None
    times = []
    for _ in range(pages):
        started = time.perf_counter()
        page = store.owed_accounts(after, DEFAULT_PAGE_SIZE)
        times.append((time.perf_counter() - started) * 1000)
        after = page[-1].customer_id
    return times


def page_memory(store: LedgerStore) -> float:
    """Peak KiB Python allocates to read one page."""
    tracemalloc.start()
    store.owed_accounts(None, DEFAULT_PAGE_SIZE)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024


def measure_paging(customers: int, owing: int, folder: Path) -> tuple[list[str], dict[str, Any]]:
    """The same `owing` customers among twice as many and among `customers` customers in all."""
    pages = min(10, max(1, owing // DEFAULT_PAGE_SIZE))
    small = build_ledger(folder / "small.db", owing, owing)
    large = build_ledger(folder / "large.db", owing, customers - owing)
    small_ms = statistics.median(page_times(small, pages))
    large_ms = statistics.median(page_times(large, pages))
    memory = page_memory(large)
    with large.engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_invoices_owed_by_customer"))
    unindexed_ms = statistics.median(page_times(large, pages))
    small.close()
    large.close()
    figures = {
        "owing": owing,
        "customers": customers,
        "page_size": DEFAULT_PAGE_SIZE,
        "small_books_ms_per_page": small_ms,
        "large_books_ms_per_page": large_ms,
        "large_books_unindexed_ms_per_page": unindexed_ms,
        "page_kib": memory,
    }
    lines = [
        "### Ledger paging (SQLite)",
        "",
        f"Pages of {DEFAULT_PAGE_SIZE} owing customers; the same {owing:,} customers owe in both ledgers, the rest "
        "paid (most customers are paid up on any day).",
        "",
        "| books | median ms per page |",
        "| --- | --- |",
        f"| {2 * owing:,} customers, owed-invoices index | {small_ms:.1f} |",
        f"| {customers:,} customers, owed-invoices index | {large_ms:.1f} |",
        f"| {customers:,} customers, without it (customer-id index only) | {unindexed_ms:.1f} |",
        "",
        f"- {customers // (2 * owing)}× the books, same page: **{large_ms / small_ms:.2f}×** the time "
        "(1.0 = independent of how many customers are paid up)",
        f"- the owed-invoices index makes a page **{unindexed_ms / large_ms:.1f}×** cheaper at {customers:,} customers",
        f"- one page allocates at most **{memory:,.0f} KiB** in Python; most of a page's time is building its models",
        "",
    ]
    return lines, figures


# --- 2. the sweep on the time-skipping server ---------------------------------------------------------------


async def run_events(client: Client, workflow_id: str, first_run_id: str) -> tuple[list[int], list[float]]:
    """History events of each run of a continued-as-new chain, first to last, and how long each page's
    `reconcile_owed_customers` activity ran (seconds, from the server's event times)."""
    counts: list[int] = []
    page_seconds: list[float] = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        counts.append(len(history.events))
        scheduled: dict[int, str] = {}
        started: dict[int, float] = {}
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.HasField("activity_task_started_event_attributes"):
                started[event.activity_task_started_event_attributes.scheduled_event_id] = (
                    event.event_time.ToDatetime().timestamp()
                )
            elif event.HasField("activity_task_completed_event_attributes"):
                attributes = event.activity_task_completed_event_attributes
                if scheduled.get(attributes.scheduled_event_id) == "reconcile_owed_customers":
                    page_seconds.append(
                        event.event_time.ToDatetime().timestamp() - started[attributes.scheduled_event_id]
                    )
        last = history.events[-1]
        continued = last.HasField("workflow_execution_continued_as_new_event_attributes")
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else None
    return counts, page_seconds


@contextmanager
def sweep_ledger(folder: Path, postgres: str | None) -> Iterator[tuple[LedgerStore, str]]:
    """A fresh ledger for the sweep: a SQLite file, or a schema of its own in `postgres` (dropped after)."""
    if postgres is None:
        store = LedgerStore.from_url(f"sqlite:///{folder / 'sweep.db'}")
        yield store, "SQLite"
        store.close()
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        store = LedgerStore.from_url(make_url(postgres).update_query_dict({"options": f"-csearch_path={schema}"}))
        yield store, "PostgreSQL"
        store.close()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


async def measure_sweep(
    customers: int, owing: int, folder: Path, postgres: str | None, queue: str = "sweep"
) -> tuple[list[str], dict[str, Any]]:
    """`queue`: the sweep runs on its own task queue (`sweep`, where the schedule sends it) or on the lifecycle
    queue (`lifecycle`, as before it had one; the lifecycle worker still serves it there)."""
    page_size, pages_per_run = 100, 5
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    policy = folder / "policy.toml"
    policy.write_text(TEST_POLICY, encoding="utf-8")
    with sweep_ledger(folder, postgres) as (store, backend):
        issued = datetime.now(UTC).date()
        owed = [f"O-{n:07}" for n in range(owing)]
        for start in range(0, customers - owing, 20_000):
            paid = [f"P-{n:07}" for n in range(start, min(start + 20_000, customers - owing))]
            book(store, owed=owed if start == 0 else [], paid=paid, issued_on=issued)
        try:
            with PartnerCenterEmulator() as emulator:
                emulator.seed_invoices([])
                settings = Settings(
                    task_queue=f"bench-{uuid.uuid4().hex[:6]}",
                    ledger_url=store.engine.url.render_as_string(hide_password=False),
                    outbox_dir=folder / "outbox",
                    mail_from="billing@partner.example.cn",
                    partner_center_url=emulator.base_url,
                    partner_center_token_url=emulator.token_url,
                    partner_center_client_id=emulator.client_id,
                    partner_center_client_secret=emulator.client_secret,
                    policy_file=policy,
                )
                async with billing_worker(env.client, settings) as worker, worker:
                    with env.auto_time_skipping_disabled():
                        started = time.perf_counter()
                        handle = await env.client.start_workflow(
                            DailySweep.run,
                            SweepInput(page_size=page_size, pages_per_run=pages_per_run),
                            id="bench-sweep",
                            task_queue=settings.sweep_queue if queue == "sweep" else settings.task_queue,
                        )
                        report: SweepReport = await handle.result()
                        elapsed = time.perf_counter() - started
                        first_run = handle.first_execution_run_id or handle.result_run_id or ""
                        events, page_seconds = await run_events(env.client, "bench-sweep", first_run)
        finally:
            await env.shutdown()
    largest = max(events)
    per_page = (largest - 10) / pages_per_run
    pages_at_scale = -(-100_000 // DEFAULT_PAGE_SIZE)
    projected = round(10 + per_page * min(pages_at_scale, PRODUCTION_PAGES_PER_RUN))
    figures = {
        "backend": backend,
        "queue": queue,
        "customers": customers,
        "owing": owing,
        "page_size": page_size,
        "pages_per_run": pages_per_run,
        "lifecycles_started": report.lifecycles_started,
        "seconds": elapsed,
        "customers_per_s": report.customers_owing / elapsed,
        "page_median_s": statistics.median(page_seconds),
        "page_max_s": max(page_seconds),
        "runs": report.runs,
        "pages": report.pages,
        "events_per_run": events,
        "events_per_page": per_page,
        "projected_events_at_100k": projected,
    }
    lines = [
        f"### The sweep (time-skipping server, real worker, {backend} ledger, on the "
        + ("sweep's own task queue)" if queue == "sweep" else "lifecycle queue, as before the sweep had its own)"),
        "",
        f"{customers:,} customers, {owing:,} of them owing with no lifecycle; pages of {page_size}, "
        f"continue-as-new every {pages_per_run} pages.",
        "",
        f"- started {report.lifecycles_started:,} lifecycles in {elapsed:.1f} s: "
        f"**{report.customers_owing / elapsed:.0f} customers/s** (signal-with-start, 32 at a time, while the same "
        "worker process runs the lifecycles it starts)",
        f"- the sweep's own share: a page of {page_size} took **{statistics.median(page_seconds):.2f} s** "
        f"(median of {len(page_seconds)} pages, slowest {max(page_seconds):.2f} s) to read the books, check "
        "each customer and signal-with-start; the rest is the new lifecycles doing their first steps",
        f"- {report.runs} runs, {report.pages} pages; history events per run: {events}",
        f"- about **{per_page:.1f} events per page**; at 100,000 owing customers ({pages_at_scale} pages of "
        f"{DEFAULT_PAGE_SIZE}, {PRODUCTION_PAGES_PER_RUN} pages per run) the largest run holds about "
        f"**{projected:,} events**, {projected / HISTORY_LIMIT:.1%} of Temporal's {HISTORY_LIMIT:,}-event limit",
        "",
    ]
    return lines, figures


# --- 3. the sweep's own task queue, against the lifecycle queue --------------------------------------------

QUEUE_CONFIGS = ("own", "shared")
PROBE_GAP = 0.5  # seconds between a probe's notice and its next invoice
LIFECYCLES_CHECKED = 10  # of those a sweep started, evenly spread: the task queue they run on


class NoticeLog:
    """Every notice reaching the sink (which runs in its own thread), per customer and kind, counted once per
    Message-ID (a retried delivery is the same notice), so that a driver can wait for the n-th one without
    polling."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: TimedSink) -> None:
        self._loop = loop
        self._sink = sink
        self._seen: set[str] = set()
        self._arrivals: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._waiting: dict[tuple[str, str], list[tuple[int, asyncio.Future[float]]]] = defaultdict(list)
        sink.listener = self._heard

    def _heard(self, customer_id: str, kind: str, at: float) -> None:  # the sink's thread, right after it kept it
        message_id = str(self._sink.deliveries[-1].message["Message-ID"])
        self._loop.call_soon_threadsafe(self._arrive, (customer_id, kind), message_id, at)

    def _arrive(self, key: tuple[str, str], message_id: str, at: float) -> None:
        if message_id in self._seen:
            return
        self._seen.add(message_id)
        arrivals = self._arrivals[key]
        arrivals.append(at)
        waiting = []
        for n, future in self._waiting.pop(key, []):
            if n <= len(arrivals):
                if not future.done():
                    future.set_result(arrivals[n - 1])
            else:
                waiting.append((n, future))
        if waiting:
            self._waiting[key] = waiting

    async def nth(self, customer_id: str, kind: str, n: int) -> float:
        """When the n-th (from 1) `kind` notice to `customer_id` arrived (time.monotonic())."""
        key = (customer_id, kind)
        if n <= len(self._arrivals[key]):
            return self._arrivals[key][n - 1]
        future = self._loop.create_future()
        self._waiting[key].append((n, future))
        return await future


@dataclass
class QueueStack:
    server: DevServerProcess
    client: Client
    workers: Workers
    notices: NoticeLog
    store: LedgerStore
    lifecycle_queue: str
    sweep_queue: str
    announced: dict[str, Any]  # the worker's "worker started" log line

    @property
    def worker_pid(self) -> int:
        return self.workers.running[0].pid

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid


def announcement(log: Path) -> dict[str, Any]:
    """The worker's start-up line (JSON, structlog): the task queues it says it serves."""
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == "worker started":
                return entry
    raise RuntimeError(f"no 'worker started' line in {log}")


@asynccontextmanager
async def queue_stack(folder: Path, server_db: str) -> AsyncIterator[QueueStack]:
    """A dev server (in memory, or on a SQLite file), the Partner Center emulator (no partner invoices), an SMTP
    sink and `worker.py` on a fresh lifecycle queue, its sweep queue as the worker derives it
    (BILLING_SWEEP_TASK_QUEUE unset)."""
    mailbox = Mailbox()
    notices = NoticeLog(asyncio.get_running_loop(), mailbox.sink)
    emulator = PartnerCenterEmulator().start()
    emulator.seed_invoices([])
    server = DevServerProcess(folder, in_memory=server_db == "memory")
    workers: Workers | None = None
    store: LedgerStore | None = None
    try:
        client = await server.start()
        lifecycle_queue = f"bench-{uuid.uuid4().hex[:8]}"
        env = worker_environment(folder, server.address, emulator, mailbox.sink, lifecycle_queue, TEST_POLICY)
        env.pop("BILLING_ENCRYPTION_KEYS", None)  # plain payloads, as the lifecycle benchmark runs by default
        workers = Workers(folder, env)
        await workers.start()
        announced = announcement(folder / f"worker-{workers.started}.stderr.log")
        store = LedgerStore.from_url(env["BILLING_LEDGER_URL"])
        yield QueueStack(
            server, client, workers, notices, store, lifecycle_queue, str(announced["sweep_task_queue"]), announced
        )
    finally:
        if store is not None:
            store.close()
        if workers is not None:
            workers.stop()
        server.stop()
        emulator.stop()
        mailbox.down()


async def pollers(client: Client, queue: str) -> dict[str, list[str]]:
    """The identities polling `queue` for workflow and for activity tasks, as the server reports them."""
    found = {}
    for kind, queue_type in (
        ("workflow", TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        ("activity", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ):
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=queue_type,
            )
        )
        found[kind] = sorted({poller.identity for poller in described.pollers})
    return found


async def check_pollers(stack: QueueStack) -> dict[str, Any]:
    """Both queues polled, for workflow and activity tasks, by the worker process (the SDK's default identity
    is `pid@host`); the server learns of a poller when it first polls, so wait a little for it."""
    identity_prefix = f"{stack.worker_pid}@"
    deadline = time.monotonic() + 30
    while True:
        found = {queue: await pollers(stack.client, queue) for queue in (stack.lifecycle_queue, stack.sweep_queue)}
        polled = all(
            any(identity.startswith(identity_prefix) for identity in identities)
            for by_kind in found.values()
            for identities in by_kind.values()
        )
        if polled:
            return {"worker_pid": stack.worker_pid, "pollers": found}
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker pid {stack.worker_pid} does not poll both queues: {found}")
        await asyncio.sleep(0.5)


async def check_schedule(stack: QueueStack) -> dict[str, Any]:
    """A schedule as deployments made it before the sweep had its own queue (its sweeps went to the lifecycle
    queue), then `starter.py sweep schedule` as a deployment runs it: the schedule must now start sweeps on the
    queue the worker announced."""
    client = stack.client
    await ensure_sweep_schedule(client, SweepSchedule(time_of_day(6, 0), "Asia/Shanghai", stack.lifecycle_queue))
    handle = client.get_schedule_handle(SWEEP_SCHEDULE_ID)

    async def queue_of_schedule() -> str:
        action = (await handle.describe()).schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        return action.task_queue

    before = await queue_of_schedule()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        "--address",
        stack.server.address,
        "--task-queue",
        stack.lifecycle_queue,
        "sweep",
        "schedule",
        cwd=REPO,
        env=clean_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(60, "starter.py sweep schedule", process.communicate())
    if process.returncode != 0:
        raise RuntimeError(f"starter.py sweep schedule failed: {err.decode()[-2000:]}")
    after = await queue_of_schedule()
    # 06:00 in Shanghai: it must not fire a sweep of its own into the measurements.
    await handle.delete()
    if after != stack.sweep_queue:
        raise RuntimeError(
            f"the schedule starts sweeps on {after!r}, the worker's sweep queue is {stack.sweep_queue!r}"
        )
    return {"before": before, "starter_output": out.decode().strip(), "after": after}


def probe_invoice(customer_id: str, n: int) -> Invoice:
    """The n-th invoice of a probe: 100.00 due in 30 days, so no ladder step falls due during the benchmark."""
    issued = datetime.now(SHANGHAI).date()
    return Invoice(
        invoice_id=f"INV-{customer_id}-{n}",
        customer_id=customer_id,
        amount=Money.of("100.00", "CNY"),
        issued_on=issued,
        due_on=issued + timedelta(days=30),
    )


async def open_probe(stack: QueueStack, customer_id: str) -> None:
    await issue_invoice(stack.client, stack.lifecycle_queue, account(customer_id), probe_invoice(customer_id, 1))
    await stack.notices.nth(customer_id, "invoice", 1)


async def probe(stack: QueueStack, customer_id: str, over: asyncio.Event, samples: list[float]) -> None:
    """One invoice after another to a running lifecycle, as other services send them (signal-with-start): the
    seconds from sending each to its invoice notice reaching the sink, until `over` is set."""
    n = 1
    while not over.is_set():
        n += 1
        sent = time.monotonic()
        await issue_invoice(stack.client, stack.lifecycle_queue, account(customer_id), probe_invoice(customer_id, n))
        samples.append(await stack.notices.nth(customer_id, "invoice", n) - sent)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(over.wait(), PROBE_GAP)


def _at(event: Any) -> float:
    return float(event.event_time.ToDatetime().timestamp())


async def sweep_history(client: Client, workflow_id: str, first_run_id: str) -> dict[str, Any]:
    """From the sweep's histories (every run of a continued-as-new chain): the queue it was started on, the
    queues its activities were scheduled on, how long its workflow and activity tasks waited to be picked up
    (scheduled -> started, server time), and how long its owed-customers pages took, first scheduled to last
    completed."""
    run_id: str | None = first_run_id
    workflow_queue = ""
    activity_queues: Counter[str] = Counter()
    workflow_waits: list[float] = []
    activity_waits: list[float] = []
    owed_from = owed_to = None
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        scheduled: dict[int, tuple[float, str]] = {}
        for event in history.events:
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED and not workflow_queue:
                workflow_queue = event.workflow_execution_started_event_attributes.task_queue.name
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled[event.event_id] = (_at(event), "workflow task")
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                since = scheduled[event.workflow_task_started_event_attributes.scheduled_event_id][0]
                workflow_waits.append(_at(event) - since)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attributes = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = (_at(event), attributes.activity_type.name)
                activity_queues[attributes.task_queue.name] += 1
                if attributes.activity_type.name == "reconcile_owed_customers" and owed_from is None:
                    owed_from = _at(event)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                since = scheduled[event.activity_task_started_event_attributes.scheduled_event_id][0]
                activity_waits.append(_at(event) - since)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                activity = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id][1]
                if activity == "reconcile_owed_customers":
                    owed_to = _at(event)
        last = history.events[-1]
        continued = last.HasField("workflow_execution_continued_as_new_event_attributes")
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else None
    return {
        "workflow_queue": workflow_queue,
        "activity_queues": dict(activity_queues),
        "workflow_task_waits_s": workflow_waits,
        "activity_task_waits_s": activity_waits,
        "owed_phase_s": (owed_to - owed_from) if owed_from is not None and owed_to is not None else None,
    }


async def lifecycle_queues(stack: QueueStack, customer_ids: list[str]) -> dict[str, int]:
    """The task queue each customer's lifecycle runs on, counted (from DescribeWorkflowExecution)."""

    async def queue_of(customer_id: str) -> str:
        return (await stack.client.get_workflow_handle(f"customer-billing-{customer_id}").describe()).task_queue

    return dict(Counter(await bounded((lambda c=c: queue_of(c)) for c in customer_ids)))


async def clear(stack: QueueStack, prefix: str, customer_ids: list[str]) -> None:
    """End the measurement's lifecycles and write their invoices off in the books, so that the next sweep has the
    same work to do as this one had."""

    async def end(customer_id: str) -> None:
        with contextlib.suppress(RPCError):  # already closed
            await stack.client.get_workflow_handle(f"customer-billing-{customer_id}").terminate(
                reason="benchmark measurement finished"
            )

    await bounded((lambda c=c: end(c)) for c in customer_ids)

    def write_off() -> None:
        with stack.store.engine.begin() as connection:
            connection.execute(
                update(invoices)
                .where(invoices.c.customer_id.startswith(prefix), invoices.c.outstanding > 0)
                .values(written_off=invoices.c.written_off + invoices.c.outstanding, outstanding=0)
            )

    await asyncio.to_thread(write_off)


async def measure_queue(stack: QueueStack, config: str, round_no: int, setting: Setting, owing: int) -> dict[str, Any]:
    """One sweep over `owing` customers with no lifecycle, on the sweep's own queue (`own`) or the lifecycle
    queue (`shared`), with the probes sending invoices to running lifecycles until the sweep is done and every
    lifecycle it started has sent its invoice notice."""
    tag = uuid.uuid4().hex[:6].upper()
    prefix = f"Q{tag}-"
    owed = [f"{prefix}{n:05}" for n in range(owing)]
    probes = [f"{prefix}PROBE-{n}" for n in range(setting.probes)]
    issued = datetime.now(SHANGHAI).date()
    await asyncio.to_thread(book, stack.store, owed, [], issued)
    await within(setting.deadline, "opening the probes", asyncio.gather(*(open_probe(stack, p) for p in probes)))
    await quiet(stack.worker_pid)
    loadavg = float(machine()["loadavg"].split()[0])
    worker_cpu, server_cpu = cpu_seconds(stack.worker_pid), cpu_seconds(stack.server_pid)

    started = time.monotonic()
    handle = await stack.client.start_workflow(
        DailySweep.run,
        SweepInput(page_size=setting.queue_page_size),
        id=f"bench-sweep-{tag}",
        task_queue=stack.sweep_queue if config == "own" else stack.lifecycle_queue,
        result_type=SweepReport,
    )
    over = asyncio.Event()
    samples: list[float] = []
    probing = [asyncio.create_task(probe(stack, p, over, samples)) for p in probes]
    try:
        report = await within(setting.deadline, f"the {config} sweep of round {round_no}", handle.result())
        sweep_s = time.monotonic() - started
        first_notices = await within(
            setting.deadline,
            "every started lifecycle's invoice notice",
            asyncio.gather(*(stack.notices.nth(c, "invoice", 1) for c in owed)),
        )
        window_s = time.monotonic() - started
        worker_cpu = cpu_seconds(stack.worker_pid) - worker_cpu
        server_cpu = cpu_seconds(stack.server_pid) - server_cpu
        over.set()
        await within(setting.deadline, "the probes' last invoices", asyncio.gather(*probing))
    finally:
        for task in probing:
            task.cancel()
    history = await sweep_history(stack.client, handle.id, handle.first_execution_run_id or handle.result_run_id or "")
    queues = await lifecycle_queues(stack, owed[:: max(1, len(owed) // LIFECYCLES_CHECKED)])
    await quiet(stack.worker_pid)
    await clear(stack, prefix, [*owed, *probes])
    print(
        f"{config} sweep: {sweep_s:.1f} s, workflow tasks waited {sum(history['workflow_task_waits_s']):.2f} s, "
        f"probe p50 {percentile(samples, 50):.2f} s, load {loadavg:.1f}",
        file=sys.stderr,
    )
    if report.lifecycles_started != owing:
        raise RuntimeError(f"the {config} sweep started {report.lifecycles_started} lifecycles, not {owing}")
    waits, task_waits = history["activity_task_waits_s"], history["workflow_task_waits_s"]
    return {
        "config": config,
        "round": round_no,
        "loadavg_1min": loadavg,
        "sweep_s": sweep_s,
        "owed_phase_s": history["owed_phase_s"],
        "burst_s": max(first_notices) - started,
        "window_s": window_s,
        "customers_owing": report.customers_owing,
        "lifecycles_started": report.lifecycles_started,
        "running_lifecycles_checked": report.running_lifecycles_checked,
        "pages": report.pages,
        "sweep_activity_tasks": len(waits),
        "sweep_activity_wait_total_ms": 1000 * sum(waits),
        "sweep_activity_wait_max_ms": 1000 * max(waits),
        "sweep_workflow_tasks": len(task_waits),
        "sweep_workflow_task_wait_total_s": sum(task_waits),
        "sweep_workflow_task_wait_max_s": max(task_waits),
        "probe_samples": len(samples),
        "probe_p50_s": percentile(samples, 50),
        "probe_p90_s": percentile(samples, 90),
        "probe_max_s": max(samples),
        "worker_cpu_s": worker_cpu,
        "server_cpu_s": server_cpu,
        "sweep_workflow_queue": history["workflow_queue"],
        "sweep_activity_queues": history["activity_queues"],
        "lifecycle_queues": queues,
    }


def check_queues(stack: QueueStack, measured: dict[str, Any]) -> None:
    """Each sweep ran, with every one of its activities, where it was sent; every lifecycle on the lifecycle queue."""
    config = measured["config"]
    expected = stack.sweep_queue if config == "own" else stack.lifecycle_queue
    if measured["sweep_workflow_queue"] != expected or set(measured["sweep_activity_queues"]) != {expected}:
        raise RuntimeError(f"the {config} sweep did not run on {expected}: {measured}")
    if set(measured["lifecycle_queues"]) != {stack.lifecycle_queue}:
        raise RuntimeError(f"lifecycles off the lifecycle queue: {measured['lifecycle_queues']}")


QUEUE_FIGURES = (
    # (key, title, format, a ratio means something)
    ("sweep_s", "sweep, start to report, s", "{:.1f}", True),
    ("owed_phase_s", "its owed-customers pages (where it starts the lifecycles), s", "{:.1f}", True),
    ("sweep_workflow_task_wait_total_s", "its workflow tasks' wait to be picked up, s in all", "{:.2f}", True),
    ("sweep_workflow_task_wait_max_s", "its workflow tasks' longest wait, s", "{:.2f}", True),
    # Eager activity execution: the server hands a page's activity to the worker in its reply to the workflow
    # task that scheduled it, so it never waits on a queue, shared or not (and a ratio of two zeros is noise).
    ("sweep_activity_wait_total_ms", "its activity tasks' wait to be picked up, ms in all", "{:.1f}", False),
    ("burst_s", "last started lifecycle's invoice notice, s after the sweep's start", "{:.1f}", True),
    ("probe_p50_s", "running lifecycles meanwhile: invoice_issued → invoice notice, p50 s", "{:.2f}", True),
    ("probe_p90_s", "the same, p90 s", "{:.2f}", True),
    ("probe_max_s", "the same, longest s", "{:.2f}", True),
    ("worker_cpu_s", "worker CPU s, sweep start to last notice", "{:.1f}", True),
    ("server_cpu_s", "dev server CPU s, same window", "{:.1f}", True),
    ("probe_samples", "probe samples", "{:.0f}", False),
    ("lifecycles_started", "lifecycles the sweep started", "{:.0f}", False),
    ("running_lifecycles_checked", "running lifecycles it then checked", "{:.0f}", False),
    ("sweep_activity_tasks", "its activity tasks", "{:.0f}", False),
    ("sweep_workflow_tasks", "its workflow tasks", "{:.0f}", False),
    ("loadavg_1min", "load average (1 min) before the sweep", "{:.1f}", False),
)


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarise_queues(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per figure: each configuration's min/median/max over the rounds, and the ratio shared ÷ own of each round."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for key, _, _, ratio in QUEUE_FIGURES:
        summary[key] = {config: _spread([r[config][key] for r in rounds]) for config in QUEUE_CONFIGS}
        if ratio and all(r["own"][key] > 0 for r in rounds):
            summary[key]["ratio"] = _spread([r["shared"][key] / r["own"][key] for r in rounds])
    return summary


async def measure_queues(setting: Setting, folder: Path, server_db: str) -> tuple[list[str], dict[str, Any]]:
    async with queue_stack(folder, server_db) as stack:
        checks = {
            "announced": {
                name: stack.announced.get(name)
                for name in ("task_queue", "sweep_task_queue", "partner_center_task_queue")
            },
            **await check_pollers(stack),
            "schedule": await check_schedule(stack),
        }
        # Unmeasured, once either way: imports, connections, the sweep in each worker's cache.
        for config in QUEUE_CONFIGS:
            check_queues(stack, await measure_queue(stack, config, 0, setting, setting.queue_page_size))
        rounds: list[dict[str, dict[str, Any]]] = []
        for round_no in range(1, setting.rounds + 1):
            order = QUEUE_CONFIGS if round_no % 2 else tuple(reversed(QUEUE_CONFIGS))
            measured = {}
            for config in order:
                measured[config] = await measure_queue(stack, config, round_no, setting, setting.queue_owing)
                check_queues(stack, measured[config])
            rounds.append(measured)
            print(
                f"queues round {round_no}: "
                + ", ".join(f"{c} sweep {measured[c]['sweep_s']:.1f} s" for c in QUEUE_CONFIGS),
                file=sys.stderr,
            )
        if stack.workers.exited or stack.workers.running[0].poll() is not None:
            raise RuntimeError("the worker exited during the benchmark")
    summary = summarise_queues(rounds)
    figures = {
        "owing": setting.queue_owing,
        "page_size": setting.queue_page_size,
        "probes": setting.probes,
        "probe_gap_s": PROBE_GAP,
        "server_db": server_db,
        "rounds": rounds,
        "summary": summary,
        "checks": checks,
    }
    return render_queues(figures), figures


def _cell(values: dict[str, float], fmt: str) -> str:
    median = fmt.format(values["median"])
    if values["min"] == values["max"]:
        return median
    return f"{median} ({fmt.format(values['min'])}–{fmt.format(values['max'])})"


def render_queues(figures: dict[str, Any]) -> list[str]:
    summary, checks, rounds = figures["summary"], figures["checks"], figures["rounds"]
    announced, schedule = checks["announced"], checks["schedule"]
    lifecycle_queue, sweep_queue = announced["task_queue"], announced["sweep_task_queue"]
    lines = [
        "### The sweep's own task queue (dev server "
        + ("in memory" if figures["server_db"] == "memory" else "on a SQLite file")
        + ", `worker.py`, SQLite ledger)",
        "",
        f"{len(rounds)} interleaved rounds (the order alternates), each sweeping both ways: {figures['owing']} "
        f"customers booked with no lifecycle, then a `DailySweep` over them (pages of {figures['page_size']}; it "
        "starts their lifecycles by signal-with-start) started **on its own queue** as shipped "
        f"(`{sweep_queue}`, `BILLING_SWEEP_TASK_QUEUE` unset) or **on the lifecycle queue** (`{lifecycle_queue}`), "
        "as every sweep ran before the split: the lifecycle worker still serves sweeps there (for schedules made "
        "before), so that is the code as it was, with an idle sweep worker beside it. (Setting "
        "`BILLING_SWEEP_TASK_QUEUE` to `BILLING_TASK_QUEUE` cannot stand for it: the SDK refuses two workers of "
        "one process on one queue, and the settings refuse it.) Meanwhile "
        f"{figures['probes']} lifecycles already running are each sent one `invoice_issued` after another "
        f"(signal-with-start, the next {figures['probe_gap_s']} s after the last one's notice), until the sweep "
        "has reported and every lifecycle it started has sent its invoice notice. Then the measurement's "
        "lifecycles are terminated and their invoices written off, so every sweep has the same work. A cell: the "
        "median over the rounds (lowest–highest); ÷: shared ÷ own within each round.",
        "",
        "Where a sweep can wait behind the lifecycles: its first workflow task waits on the queue it was started "
        "on, every later one on the sticky queue of the SDK worker running it (shared: the lifecycle worker's, "
        "with the tasks of every lifecycle that worker holds). Its page activities do not wait on a queue: the "
        "server hands each to the worker in its reply to the workflow task that scheduled it (eager activity "
        "execution: the SDK asks for it by default, and this server grants it, as the waits in milliseconds "
        "show). The three SDK workers share one process, so the split takes away waiting at the server, not "
        "the competition for the process's CPU.",
        "",
        (
            "The dev server runs in memory (`--queue-server file`: on its SQLite file, where every workflow's writes "
            "wait their turn for the one file on disk, both ways alike)."
            if figures["server_db"] == "memory"
            else "The dev server runs on its SQLite file, where every workflow's writes wait their turn for the one "
            "file on disk, both ways alike (by default the benchmark runs it in memory)."
        ),
        "",
        "| figure | own queue (as shipped) | lifecycle queue (before) | shared ÷ own |",
        "| --- | --- | --- | --- |",
    ]
    for key, title, fmt, _ in QUEUE_FIGURES:
        values = summary[key]
        ratio = _cell(values["ratio"], "{:.2f}") if "ratio" in values else "—"
        lines.append(f"| {title} | {_cell(values['own'], fmt)} | {_cell(values['shared'], fmt)} | {ratio} |")
    pid = checks["worker_pid"]
    polled = checks["pollers"]
    lines += [
        "",
        "Checked from outside, in this run:",
        "",
        f"- the worker (pid {pid}) announced lifecycle queue `{lifecycle_queue}`, sweep queue `{sweep_queue}` and "
        f"Partner Center queue `{announced['partner_center_task_queue']}` in its start-up log",
        f"- DescribeTaskQueue: `{sweep_queue}` polled for workflow tasks by {polled[sweep_queue]['workflow']} and "
        f"for activity tasks by {polled[sweep_queue]['activity']}; `{lifecycle_queue}` by "
        f"{polled[lifecycle_queue]['workflow']} and {polled[lifecycle_queue]['activity']}",
        f"- a schedule made for `{schedule['before']}` (as before the split), then `starter.py sweep schedule`: "
        f'"{schedule["starter_output"]}"; it starts its sweeps on `{schedule["after"]}`',
        "- every sweep's history: started on the queue it was sent to, every activity scheduled there (own: "
        f"`{sweep_queue}`, shared: `{lifecycle_queue}`); the lifecycles a sweep started run on "
        f"`{lifecycle_queue}` (DescribeWorkflowExecution of {LIFECYCLES_CHECKED} of each sweep's, evenly spread)",
        "",
    ]
    return lines


# --- the results file ---------------------------------------------------------------------------------------

HEADER = """\
# Daily sweep benchmark

`python -m bench.sweep_bench`: ledger paging, the sweep at scale, and the sweep's own task queue against the
lifecycle queue. One block per run, newest first (`--label` names a block; a run replaces the block of its
label and keeps the others). Compare ratios measured in one run, not times across runs: the 2 cores are shared
with other work (each run gives its load)."""
BLOCK = re.compile(r"^## Run `([^`]*)`", re.MULTILINE)


def render_block(result: dict[str, Any]) -> str:
    machine_at_start = result["machine"]
    lines = [
        f"## Run `{result['label']}`: {result['date']}",
        "",
        f"- command: `{result['command']}`, commit `{result['commit']}`",
        f"- machine: {machine_at_start['cpu']}, nproc {machine_at_start['nproc']}, load average at start "
        f"{machine_at_start['loadavg']}, at the end {result['loadavg_at_end']}",
        f"- setting: {result['setting']}",
        "",
    ]
    if result.get("note"):
        lines += [result["note"], ""]
    for section in SECTIONS:
        lines += result["lines"].get(section, [])
    return "\n".join(lines).rstrip() + "\n"


def write_results(result: dict[str, Any], out: Path) -> str:
    """The results file with this run's block first and every other label's block as it was."""
    earlier = out.read_text(encoding="utf-8") if out.exists() else ""
    starts = [match.start() for match in BLOCK.finditer(earlier)]
    blocks = [earlier[a:b].rstrip() + "\n" for a, b in zip(starts, [*starts[1:], len(earlier)], strict=False)]
    kept = [block for block in blocks if (match := BLOCK.match(block)) and match.group(1) != result["label"]]
    markdown = "\n".join([HEADER + "\n", render_block(result), *kept])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown, encoding="utf-8")
    (out.parent / f"sweep-{result['label']}.json").write_text(
        json.dumps({key: value for key, value in result.items() if key != "lines"}, indent=2), encoding="utf-8"
    )
    return markdown


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (what the test runs)")
    parser.add_argument("--customers", type=int, default=None, help="books of the paging and sweep measurements")
    parser.add_argument("--owing", type=int, default=None, help="owing customers the time-skipping sweep starts")
    parser.add_argument("--queue-owing", type=int, default=None, help="customers per sweep of the queue comparison")
    parser.add_argument("--queue-page-size", type=int, default=None, help="page size of those sweeps")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the queue comparison")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE, help="the results file (default %(default)s)")
    parser.add_argument("--label", default="latest", help="this run's block; figures saved as sweep-<label>.json")
    parser.add_argument("--note", default="", help="a sentence shown under this run in the results file")
    parser.add_argument("--postgres", default=None, help="run the sweep on this PostgreSQL (a schema of its own)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the logs")
    parser.add_argument(
        "--queue-server",
        choices=("memory", "file"),
        default="memory",
        help="the queue comparison's dev server: in memory (default), or on a SQLite file, where every workflow's "
        "writes wait their turn for the one file on disk",
    )
    parser.add_argument(
        "--at-scale-queue",
        choices=("sweep", "lifecycle"),
        default="sweep",
        help="the time-skipping sweep on its own task queue (default, where the schedule sends it) or on the "
        "lifecycle queue (as before it had one)",
    )
    parser.add_argument(
        "--sections",
        type=lambda value: [part for part in value.split(",") if part],
        default=list(SECTIONS),
        help=f"which measurements, comma-separated (default: {','.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))} (choose from {', '.join(SECTIONS)})")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # asyncio.run cancels the benchmark, whose cleanup stops every process it started


async def run_bench(setting: Setting, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The figures of each section asked for, and its lines of the results file."""
    measured: dict[str, Any] = {"lines": {}}
    for section in args.sections:
        if section == "paging":
            lines, figures = measure_paging(setting.customers, setting.paging_owing, folder)
        elif section == "sweep":
            lines, figures = await measure_sweep(
                setting.customers, setting.owing, folder, args.postgres, args.at_scale_queue
            )
        else:
            (folder / section).mkdir()
            lines, figures = await measure_queues(setting, folder / section, args.queue_server)
        measured[section], measured["lines"][section] = figures, lines
    return measured


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Also when started in the background, where a shell leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setting = SMOKE if args.smoke else DEFAULT
    overrides = {
        "customers": args.customers,
        "owing": args.owing,
        "queue_owing": args.queue_owing,
        "queue_page_size": args.queue_page_size,
        "rounds": args.rounds,
    }
    setting = dataclasses.replace(setting, **{name: value for name, value in overrides.items() if value is not None})
    began, at_start, commit = datetime.now(UTC), machine(), _commit()  # before the run: the tree may change
    folder = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        measured = asyncio.run(run_bench(setting, args, folder))
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    result = {
        "label": args.label,
        "date": f"{began:%Y-%m-%d %H:%M} UTC",
        "commit": commit,
        "command": "python -m bench.sweep_bench " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "machine": at_start,
        "loadavg_at_end": machine()["loadavg"],
        "setting": dataclasses.asdict(setting),
        "note": args.note,
        **measured,
    }
    print(write_results(result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
