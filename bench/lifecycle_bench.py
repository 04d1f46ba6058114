"""Benchmark of the `CustomerBilling` lifecycle against the ceiling of a trivial workflow (issue 13).

    python -m bench.lifecycle_bench [--full] [--smoke] [--out DIR] [--label NAME]

A dev server, the Partner Center emulator, an SMTP sink, the real `worker.py` and `bench/trivial_worker.py`
(a workflow that only starts and runs one no-op activity, with the same SDK worker settings) as subprocesses.
Interleaved rounds of `runs` concurrent signal-with-starts each: trivial, *paid on time* (invoice, then, once
the lifecycle waits for the due moment, payment before it is due; the run completes) and *full ladder* (a
policy compressed to seconds: reminders, final notice, suspension, then payment, reinstatement, close the
loop, the run completes). Per round: runs/s,
worker and server CPU per run and per workflow task (/proc/<pid>/stat), Temporal Cloud actions, history
events and workflow tasks per run (from the fetched histories), Partner Center calls and SMTP messages per
run. Then, with M lifecycles open: payment -> reinstatement -> close-the-loop latency and the worker's memory
per cached lifecycle against the trivial workflow's.

Each run saves `DIR/lifecycle-<label>.json` and rewrites `DIR/lifecycle.md` with one column per saved label,
so "before" and "after" sit side by side with the issue's targets. Compare ratios, not times: the machine is
shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from bench.stack import WORKER, DevServerProcess, Mailbox, Workers, cpu_seconds, machine, rss_bytes
from bench.trivial_workflow import TrivialWorkflow
from billing import search_attributes as attributes
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.models import CustomerAccount, Invoice, Payment
from billing.money import Money
from billing.settings import Settings
from cli.customers import issue_invoice
from tests.devserver_fixtures import TEST_DATA_CONVERTER, worker_environment

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
T = TypeVar("T")
SHANGHAI = "Asia/Shanghai"

# The contract's ladder compressed to seconds, quiet hours off: due 6 s after the invoice, a reminder 3 s
# before and 3 s after, the final notice at +6 s, suspension at +9 s (15 s after the invoice: the least a
# full-ladder run takes). Data-deletion warnings come a day after
# the suspension, long after the benchmark has paid.
BENCH_POLICY = """\
currency = "CNY"
minimum_amount_to_suspend = "100.00"
reminders = ["-PT3S", "PT3S"]
final_notice = "PT6S"
suspend_after = "PT9S"
data_deletion_warnings = ["P1D", "P2D"]
[quiet_hours]
enabled = false
"""
LADDER_DUE_IN = timedelta(seconds=6)
PAID_ON_TIME_DUE_IN = timedelta(hours=1)  # paid long before the first reminder could fall due
OPEN_DUE_IN = timedelta(days=1)  # the M open lifecycles wait for a reminder a day away
KINDS = ("trivial", "paid_on_time", "full_ladder")


@dataclass(frozen=True)
class Setting:
    name: str
    runs: int  # runs of each kind started at once in a round
    rounds: int
    open_lifecycles: int  # M: lifecycles open while the latency and the memory are measured
    latency_samples: int  # suspended lifecycles paid one by one with M open
    deadline: float  # seconds any one round or phase may take


SMOKE = Setting("smoke", runs=2, rounds=1, open_lifecycles=3, latency_samples=2, deadline=240)
DEFAULT = Setting("default", runs=50, rounds=3, open_lifecycles=200, latency_samples=10, deadline=600)
FULL = Setting("full", runs=100, rounds=3, open_lifecycles=10_000, latency_samples=50, deadline=7200)


# --- Temporal Cloud actions, counted from a history ------------------------------------------------------------

# What counts, per Temporal Cloud's definition of an action (https://docs.temporal.io/cloud/actions, source
# temporalio/documentation docs/evaluate/temporal-cloud/actions.mdx): workflow started (client start,
# continue-as-new, child start); one action for a signal-with-start whether or not it starts the workflow;
# every signal; every update accepted; every timer started; every UpsertSearchAttributes command (several
# attributes in one command are one action; TemporalChangeVersion alone is exempt); each activity start or
# retry; all local activities of one workflow task together one action; a child workflow two; a workflow
# execution options update one. Queries and activity heartbeats are actions too but are not in a history:
# heartbeats are counted from the server's metrics, the benchmark sends no query.
_LOCAL_ACTIVITY_MARKER = "core_local_activity"
_CHANGE_VERSION = "TemporalChangeVersion"


def cloud_actions(events: Sequence[HistoryEvent]) -> Counter[str]:
    actions: Counter[str] = Counter()
    local_activity_tasks: set[int] = set()
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            actions["workflow started"] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            # A signal-with-start writes its signal right after the start, before the first workflow task is
            # scheduled (event 2): that pair is one action, already counted with the start.
            if event.event_id != 2:
                actions["signal"] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            actions["update"] += 1
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            actions["timer started"] += 1
        elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if set(fields) - {_CHANGE_VERSION}:
                actions["search attributes upserted"] += 1
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            actions["activity started or retried"] += max(event.activity_task_started_event_attributes.attempt, 1)
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == _LOCAL_ACTIVITY_MARKER:
                local_activity_tasks.add(marker.workflow_task_completed_event_id)
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            actions["child workflow"] += 2
        elif kind == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            actions["signal"] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED:
            actions["workflow options updated"] += 1
    if local_activity_tasks:
        actions["local activities (per workflow task)"] += len(local_activity_tasks)
    return actions


def workflow_tasks(events: Sequence[HistoryEvent]) -> int:
    return sum(1 for event in events if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)


def steps(events: Sequence[HistoryEvent]) -> int:
    """What the worker ran for a run: workflow tasks and activity executions, queued or local. A local activity
    does in the workflow task what a queued one does in a task of its own, so CPU per step compares the two
    designs where CPU per workflow task cannot (a task with local activities in it does more)."""
    ran = (EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)
    local = sum(
        1
        for event in events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == _LOCAL_ACTIVITY_MARKER
    )
    return sum(1 for event in events if event.event_type in ran) + local


# --- the harness ---------------------------------------------------------------------------------------------


class NoticeWaiter:
    """Wakes the driver of a customer when a notice of a kind reaches the sink (which runs in its own thread),
    so that no driver polls and the benchmark's own process stays quiet."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[tuple[str, str], asyncio.Future[float]] = {}
        self._arrived: dict[tuple[str, str], float] = {}

    def arrived(self, customer_id: str, kind: str, at: float) -> None:  # the sink's thread
        self._loop.call_soon_threadsafe(self._arrive, (customer_id, kind), at)

    def _arrive(self, key: tuple[str, str], at: float) -> None:
        self._arrived.setdefault(key, at)
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(at)

    async def wait(self, customer_id: str, kind: str) -> float:
        key = (customer_id, kind)
        if key in self._arrived:
            return self._arrived[key]
        future = self._waiting.setdefault(key, self._loop.create_future())
        return await future


@dataclass
class Stack:
    folder: Path
    server: DevServerProcess
    client: Client
    emulator: PartnerCenterEmulator
    mailbox: Mailbox
    billing: Workers
    trivial: Workers
    billing_queue: str
    trivial_queue: str
    waiter: NoticeWaiter
    env: dict[str, str]

    @property
    def billing_pid(self) -> int:
        return self.billing.running[0].pid

    @property
    def trivial_pid(self) -> int:
        return self.trivial.running[0].pid

    @property
    def server_pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    @property
    def max_cached_workflows(self) -> int:
        return int(self.env["BILLING_MAX_CACHED_WORKFLOWS"])


def account(customer_id: str) -> CustomerAccount:
    return CustomerAccount(customer_id=customer_id, name=f"Bench {customer_id}", email=f"ap-{customer_id}@bench.cn")


def invoice(customer_id: str, due_in: timedelta) -> Invoice:
    zone = ZoneInfo(SHANGHAI)
    due_at = (datetime.now(UTC) + due_in).astimezone(zone)
    return Invoice(
        invoice_id=f"INV-{customer_id}",
        customer_id=customer_id,
        amount=Money.of("1234.50", "CNY"),
        issued_on=datetime.now(zone).date(),
        due_on=due_at.date(),
        due_at=due_at,
    )


def payment(customer_id: str) -> Payment:
    return Payment(
        payment_id=f"PAY-{customer_id}",
        customer_id=customer_id,
        amount=Money.of("1234.50", "CNY"),
        received_at=datetime.now(UTC),
        invoice_id=f"INV-{customer_id}",
    )


class Driver:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def handle(self, customer_id: str) -> WorkflowHandle[Any, Any]:
        return self.stack.client.get_workflow_handle(f"customer-billing-{customer_id}")

    async def issue(self, customer_id: str, due_in: timedelta) -> None:
        await issue_invoice(
            self.stack.client, self.stack.billing_queue, account(customer_id), invoice(customer_id, due_in)
        )

    async def pay(self, customer_id: str) -> float:
        paid_at = time.monotonic()
        await self.handle(customer_id).signal("payment_received", payment(customer_id))
        return paid_at

    async def trivial(self, workflow_id: str, hold: bool = False) -> None:
        handle = await self.stack.client.start_workflow(
            TrivialWorkflow.run, hold, id=workflow_id, task_queue=self.stack.trivial_queue
        )
        if not hold:
            await handle.result()

    async def paid_on_time(self, customer_id: str) -> None:
        await self.issue(customer_id, PAID_ON_TIME_DUE_IN)
        await self.stack.waiter.wait(customer_id, "invoice")
        await self.waiting(customer_id)
        await self.pay(customer_id)
        await self.handle(customer_id).result()

    async def waiting(self, customer_id: str) -> None:
        """Until the lifecycle waits for the due moment, as a payment made days after the invoice finds it: its
        first search-attribute upsert. Read with describe (no action), not a query (an action)."""
        handle = self.handle(customer_id)
        while attributes.BILLING_STAGE not in (await handle.describe()).typed_search_attributes:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # nothing to wait on but the server's answer

    async def suspended(self, customer_id: str) -> None:
        await self.issue(customer_id, LADDER_DUE_IN)
        await self.stack.waiter.wait(customer_id, "suspension")

    async def full_ladder(self, customer_id: str) -> float:
        await self.suspended(customer_id)
        paid_at = await self.pay(customer_id)
        await self.handle(customer_id).result()
        return paid_at

    async def open_lifecycle(self, customer_id: str) -> None:
        await self.issue(customer_id, OPEN_DUE_IN)
        await self.stack.waiter.wait(customer_id, "invoice")


async def within(seconds: float, what: str, work: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(work, timeout=seconds)
    except TimeoutError:
        raise RuntimeError(f"{what} did not finish within {seconds:.0f} s") from None


async def bounded(jobs: Iterable[Callable[[], Awaitable[T]]], at_once: int = 50) -> list[T]:
    gate = asyncio.Semaphore(at_once)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


async def quiet(pid: int, within_s: float = 120, idle_cpu: float = 0.03, window: float = 0.5) -> None:
    """Wait until the process used under `idle_cpu` of a core for two windows in a row."""
    deadline = time.monotonic() + within_s
    calm = 0
    while calm < 2 and time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        calm = calm + 1 if cpu_seconds(pid) - before < idle_cpu * window else 0


# Every rung of BENCH_POLICY's ladder, then reinstatement's notice: a run that got fewer had rungs run late
# enough to fall together (a burst the worker could not keep up with), and its counts are not a full ladder's.
FULL_LADDER_NOTICES = Counter(invoice=1, reminder=2, final_notice=1, suspension=1, close_the_loop=1)


@dataclass
class RunCounts:
    """What one run cost, from its history, the sink and the emulator."""

    actions: Counter[str]
    events: int
    tasks: int
    steps: int
    notices: Counter[str]
    partner_center_calls: Counter[str]  # by HTTP method, the tenant's subscription calls

    def complete(self, kind: str) -> bool:
        return kind != "full_ladder" or all(self.notices[n] >= c for n, c in FULL_LADDER_NOTICES.items())


def _mean(values: Iterable[float], n: int) -> float:
    return sum(values) / n


async def measure_round(stack: Stack, driver: Driver, kind: str, round_no: int, setting: Setting) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6].upper()
    ids = [f"B{tag}-{kind[:4].upper()}-{n}" for n in range(setting.runs)]
    worker_pid = stack.trivial_pid if kind == "trivial" else stack.billing_pid
    loadavg = machine()["loadavg"].split()[0]
    pc_before = len(stack.emulator.requests)
    heartbeats_before = stack.server.requests_served("RecordActivityTaskHeartbeat")
    worker_cpu, server_cpu = cpu_seconds(worker_pid), cpu_seconds(stack.server_pid)
    started = time.monotonic()
    if kind == "trivial":
        work = asyncio.gather(*(driver.trivial(f"trivial-{i}") for i in ids))
    else:
        work = asyncio.gather(*(getattr(driver, kind)(i) for i in ids))
    await within(setting.deadline, f"round {round_no} of {kind}", work)
    elapsed = time.monotonic() - started
    worker_cpu = cpu_seconds(worker_pid) - worker_cpu
    server_cpu = cpu_seconds(stack.server_pid) - server_cpu
    heartbeats = stack.server.requests_served("RecordActivityTaskHeartbeat") - heartbeats_before
    calls = stack.emulator.requests[pc_before:]
    workflow_ids = [f"trivial-{i}" if kind == "trivial" else f"customer-billing-{i}" for i in ids]
    counts = await count_runs(stack, kind, ids, workflow_ids, calls)
    n = setting.runs
    tasks = counts.pop("tasks")
    ran = counts.pop("steps")
    return {
        "round": round_no,
        "loadavg_1min": float(loadavg),
        "runs": n,
        "seconds": elapsed,
        "runs_per_s": n / elapsed,
        "workflow_tasks_per_s": tasks / elapsed,
        "worker_cpu_ms_per_run": 1000 * worker_cpu / n,
        "worker_cpu_ms_per_task": 1000 * worker_cpu / tasks,
        "worker_cpu_ms_per_step": 1000 * worker_cpu / ran,
        "server_cpu_ms_per_run": 1000 * server_cpu / n,
        "server_cpu_ms_per_task": 1000 * server_cpu / tasks,
        "heartbeats_per_run": heartbeats / n,
        **counts,
    }


async def count_runs(
    stack: Stack, kind: str, customer_ids: list[str], workflow_ids: list[str], calls: list[Any]
) -> dict[str, Any]:
    """Per-run counts from the histories, the sink and the emulator's requests (`calls`), over the runs that
    went through every step (all of them, if none did); `tasks` is the workflow tasks of every run."""
    histories = await bounded(
        (lambda wid=wid: stack.client.get_workflow_handle(wid).fetch_history()) for wid in workflow_ids
    )
    tokens = sum(1 for call in calls if not call.path.startswith("/v1/"))
    runs = []
    for customer_id, history in zip(customer_ids, histories, strict=True):
        runs.append(
            RunCounts(
                actions=cloud_actions(history.events),
                events=len(history.events),
                tasks=workflow_tasks(history.events),
                steps=steps(history.events),
                notices=Counter(notice for notice, _ in stack.mailbox.sink.by_customer.get(customer_id, ())),
                partner_center_calls=Counter(
                    call.method for call in calls if f"/customers/{customer_id}/" in call.path
                ),
            )
        )
    n = len(runs)
    complete = [run for run in runs if run.complete(kind)]
    counted = complete or runs
    c = len(counted)
    actions = sum((run.actions for run in counted), Counter())
    notices = sum((run.notices for run in counted), Counter())
    methods = sum((run.partner_center_calls for run in counted), Counter())
    return {
        "tasks": sum(run.tasks for run in runs),
        "steps": sum(run.steps for run in runs),
        "complete_runs": len(complete),
        "complete_share": len(complete) / n,
        "actions_per_run": sum(actions.values()) / c,
        "actions_by_type_per_run": {name: count / c for name, count in sorted(actions.items())},
        "history_events_per_run": _mean((run.events for run in counted), c),
        "workflow_tasks_per_run": _mean((run.tasks for run in counted), c),
        # The OAuth token requests are the worker's, not a run's: shared out over the runs.
        "partner_center_calls_per_run": sum(methods.values()) / c + tokens / n,
        "partner_center_calls_by_method_per_run": {m: count / c for m, count in sorted(methods.items())}
        | {"token": tokens / n},
        "smtp_messages_per_run": sum(notices.values()) / c,
        "notices_by_kind_per_run": {name: count / c for name, count in sorted(notices.items())},
    }


async def measure_memory_and_latency(stack: Stack, driver: Driver, setting: Setting) -> dict[str, Any]:
    """M open runs of each workflow: the worker's RSS per cached run, trivial and lifecycle; then, with the M
    lifecycles open, suspended lifecycles paid one at a time: payment -> reinstatement -> close the loop."""
    m, k = setting.open_lifecycles, setting.latency_samples
    tag = uuid.uuid4().hex[:6].upper()

    await quiet(stack.trivial_pid)
    trivial_before = rss_bytes(stack.trivial_pid)
    holders = [f"trivial-hold-{tag}-{n}" for n in range(m + k)]
    await within(
        setting.deadline,
        "starting the open trivial workflows",
        bounded((lambda wid=wid: driver.trivial(wid, hold=True)) for wid in holders),
    )
    await quiet(stack.trivial_pid)
    trivial_after = rss_bytes(stack.trivial_pid)

    samples = [f"B{tag}-LAT-{n}" for n in range(k)]
    pc_from = len(stack.emulator.requests)
    opened = [f"B{tag}-OPEN-{n}" for n in range(m)]
    await quiet(stack.billing_pid)
    billing_before = rss_bytes(stack.billing_pid)
    # The samples first, so that with more open runs than the cache holds they are the ones evicted.
    await within(setting.deadline, "suspending the latency samples", asyncio.gather(*map(driver.suspended, samples)))
    await within(
        setting.deadline,
        "opening the M lifecycles",
        bounded((lambda cid=cid: driver.open_lifecycle(cid)) for cid in opened),
    )
    await quiet(stack.billing_pid)
    billing_after = rss_bytes(stack.billing_pid)

    reinstated, closed = [], []
    for customer_id in samples:
        paid_at = await driver.pay(customer_id)
        await within(60, f"the lifecycle of {customer_id} after payment", driver.handle(customer_id).result())
        patch = next(
            call.at
            for call in stack.emulator.requests
            if call.method == "PATCH"
            and f"/customers/{customer_id}/" in call.path
            and isinstance(call.body, dict)
            and call.body.get("status") == "active"
            and call.at >= paid_at
        )
        close = await stack.waiter.wait(customer_id, "close_the_loop")
        reinstated.append(patch - paid_at)
        closed.append(close - paid_at)
        await asyncio.sleep(0.2)

    # The full ladder's counts: these runs were started a few at a time, so every rung came on its own.
    ladder_counts = await count_runs(
        stack, "full_ladder", samples, [f"customer-billing-{c}" for c in samples], stack.emulator.requests[pc_from:]
    )
    ladder_counts.pop("tasks")
    ladder_counts.pop("steps")

    async def end(workflow_id: str) -> None:
        with contextlib.suppress(RPCError):  # already closed
            await stack.client.get_workflow_handle(workflow_id).terminate(reason="benchmark finished")

    await bounded((lambda wid=wid: end(wid)) for wid in [*holders, *(f"customer-billing-{c}" for c in opened)])
    cached = min(m + k, stack.max_cached_workflows)
    trivial_kib = (trivial_after - trivial_before) / 1024 / cached
    lifecycle_kib = (billing_after - billing_before) / 1024 / cached
    return {
        "open_lifecycles": m,
        "latency_samples": k,
        "cached_runs": cached,
        "payment_to_reinstatement_s": {"p50": percentile(reinstated, 50), "p99": percentile(reinstated, 99)},
        "payment_to_close_the_loop_s": {"p50": percentile(closed, 50), "p99": percentile(closed, 99)},
        "rss_kib_per_cached_trivial": trivial_kib,
        "rss_kib_per_cached_lifecycle": lifecycle_kib,
        "rss_ratio": lifecycle_kib / trivial_kib if trivial_kib > 0 else None,
        "full_ladder_counts": ladder_counts,
    }


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (with few samples p99 is the largest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


RATIO_FIGURES = (
    "runs_per_s",
    "workflow_tasks_per_s",
    "worker_cpu_ms_per_run",
    "worker_cpu_ms_per_task",
    "worker_cpu_ms_per_step",
    "server_cpu_ms_per_run",
    "server_cpu_ms_per_task",
)
PLAIN_FIGURES = (
    "complete_share",
    "actions_per_run",
    "heartbeats_per_run",
    "history_events_per_run",
    "workflow_tasks_per_run",
    "partner_center_calls_per_run",
    "smtp_messages_per_run",
)


LADDER_COUNT_FIGURES = (
    "complete_share",
    "actions_per_run",
    "history_events_per_run",
    "workflow_tasks_per_run",
    "partner_center_calls_per_run",
    "smtp_messages_per_run",
)


def summarise(
    rounds: list[dict[str, dict[str, Any]]], ladder_counts: dict[str, Any] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Per figure and kind, min and median over the rounds; ratios to the trivial ceiling of the same round."""
    summary: dict[str, dict[str, dict[str, float]]] = {}

    def add(name: str, kind: str, values: list[float]) -> None:
        summary.setdefault(name, {})[kind] = {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
        }

    for figure in (*RATIO_FIGURES, *PLAIN_FIGURES):
        for kind in KINDS:
            add(figure, kind, [r[kind][figure] for r in rounds])
    for figure in RATIO_FIGURES:
        for kind in KINDS[1:]:
            add(f"{figure}_ratio", kind, [r[kind][figure] / r["trivial"][figure] for r in rounds])
    if ladder_counts is not None:
        # A round's 50 ladders at once can fall behind their rungs (late rungs go out as one catch-up): the
        # full ladder's counts are those of the latency samples, which got every rung.
        for figure in LADDER_COUNT_FIGURES:
            add(figure, "full_ladder", [ladder_counts[figure]])
    return summary


TRIVIAL_WORKER = [sys.executable, "-m", "bench.trivial_worker"]


def worker_tuning_from_environment() -> dict[str, str]:
    """The worker settings the lead gives a run (BILLING_MAX_CACHED_WORKFLOWS, ..., BILLING_WORKFLOW_SANDBOX):
    passed to both workers and recorded with the run, one list for both."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith("BILLING_MAX_") or name == "BILLING_WORKFLOW_SANDBOX"
    }


async def start_stack(
    folder: Path,
    encrypt: bool = False,
    billing_command: list[str] = WORKER,
    trivial_command: list[str] = TRIVIAL_WORKER,
    extra_env: dict[str, str] | None = None,
    server_db: str = "file",
) -> Stack:
    """The benchmark's engine; bench/profile_worker.py starts the workers under a profiler (`*_command`,
    `extra_env`). `server_db` "memory": the dev server keeps no SQLite file, which at M = 10,000 was the bound
    (opening 2.9 lifecycles/s), not the worker."""
    loop = asyncio.get_running_loop()
    waiter = NoticeWaiter(loop)
    mailbox = Mailbox()
    mailbox.sink.listener = waiter.arrived
    emulator = PartnerCenterEmulator().start()
    server = DevServerProcess(
        folder, TEST_DATA_CONVERTER if encrypt else pydantic_data_converter, in_memory=server_db == "memory"
    )
    client = await server.start()
    billing_queue, trivial_queue = f"bench-{uuid.uuid4().hex[:8]}", f"bench-trivial-{uuid.uuid4().hex[:8]}"
    env = worker_environment(folder, server.address, emulator, mailbox.sink, billing_queue, BENCH_POLICY)
    # Plain payloads unless --encrypt: the columns recorded before encryption existed stay comparable.
    if not encrypt:
        env.pop("BILLING_ENCRYPTION_KEYS", None)
    # Tuning the lead sets for a run (BILLING_MAX_CACHED_WORKFLOWS, ...) reaches both workers alike. The cache
    # size is always given: unset, worker.py caches its own default (2,000) and the trivial worker the SDK's
    # (1,000), and with more open runs than 1,000 the RSS per cached run would divide by the wrong number.
    env["BILLING_MAX_CACHED_WORKFLOWS"] = str(Settings.model_fields["max_cached_workflows"].default)
    env |= worker_tuning_from_environment()
    env |= extra_env or {}
    billing = Workers(folder, env, billing_command)
    trivial_env = env | {"BILLING_TASK_QUEUE": trivial_queue}
    trivial = Workers(folder, trivial_env, trivial_command, "trivial-worker")
    stack = Stack(
        folder, server, client, emulator, mailbox, billing, trivial, billing_queue, trivial_queue, waiter, env
    )
    try:
        await billing.start()
        await trivial.start()
    except BaseException:
        stop_stack(stack)  # the server and the workers that did start, which the caller has no stack to stop
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    stack.billing.stop()
    stack.trivial.stop()
    stack.server.stop()
    stack.emulator.stop()
    stack.mailbox.down()


async def run_bench(setting: Setting, keep: bool, encrypt: bool = False, server_db: str = "file") -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="lifecycle-bench-"))
    stack: Stack | None = None
    try:
        stack = await start_stack(folder, encrypt, server_db=server_db)
        driver = Driver(stack)
        # A first lifecycle and trivial run of each kind, unmeasured: imports, connections, template caches.
        warm = Setting("warm-up", 2, 1, 0, 0, setting.deadline)
        for kind in KINDS:
            await measure_round(stack, driver, kind, 0, warm)
        memory = await measure_memory_and_latency(stack, driver, setting)
        rounds: list[dict[str, dict[str, Any]]] = []
        for round_no in range(1, setting.rounds + 1):
            rounds.append({kind: await measure_round(stack, driver, kind, round_no, setting) for kind in KINDS})
            print(f"round {round_no}: " + ", ".join(f"{k} {rounds[-1][k]['runs_per_s']:.2f} runs/s" for k in KINDS))
        exits = stack.billing.exited + stack.trivial.exited
        if any(process.poll() is not None for process in stack.billing.running + stack.trivial.running) or exits:
            raise RuntimeError("a worker exited during the benchmark")
        summary = summarise(rounds, memory["full_ladder_counts"])
        return {"rounds": rounds, "summary": summary, "memory_and_latency": memory}
    finally:
        if stack is not None:
            stop_stack(stack)
        if keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


# --- the results file ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    title: str
    figure: str
    kind: str
    fmt: str = "{:.2f}"
    target: str = ""
    meets: Callable[[float], bool] | None = None


ROWS = (
    Row("share of the full-ladder samples that got every notice", "complete_share", "full_ladder"),
    Row("runs/s, trivial ceiling", "runs_per_s", "trivial", "{:.1f}"),
    Row("runs/s, paid on time", "runs_per_s", "paid_on_time", "{:.2f}"),
    Row("runs/s, full ladder", "runs_per_s", "full_ladder", "{:.2f}"),
    Row("runs/s ÷ ceiling, paid on time", "runs_per_s_ratio", "paid_on_time", "{:.3f}"),
    Row("runs/s ÷ ceiling, full ladder", "runs_per_s_ratio", "full_ladder", "{:.3f}"),
    Row(
        "runs/s per workflow task (workflow tasks/s) ÷ ceiling, full ladder",
        "workflow_tasks_per_s_ratio",
        "full_ladder",
        "{:.2f}",
        "≥ 0.8",
        lambda v: v >= 0.8,
    ),
    Row("runs/s per workflow task ÷ ceiling, paid on time", "workflow_tasks_per_s_ratio", "paid_on_time", "{:.2f}"),
    Row("worker CPU ms per run, trivial", "worker_cpu_ms_per_run", "trivial", "{:.1f}"),
    Row("worker CPU ms per run, paid on time", "worker_cpu_ms_per_run", "paid_on_time", "{:.0f}"),
    Row("worker CPU ms per run, full ladder", "worker_cpu_ms_per_run", "full_ladder", "{:.0f}"),
    Row("worker CPU ms per workflow task, trivial", "worker_cpu_ms_per_task", "trivial", "{:.1f}"),
    Row("worker CPU ms per workflow task, paid on time", "worker_cpu_ms_per_task", "paid_on_time", "{:.1f}"),
    Row("worker CPU ms per workflow task, full ladder", "worker_cpu_ms_per_task", "full_ladder", "{:.1f}"),
    Row(
        "worker CPU per workflow task ÷ ceiling, paid on time",
        "worker_cpu_ms_per_task_ratio",
        "paid_on_time",
        "{:.2f}",
        "≤ 1.5",
        lambda v: v <= 1.5,
    ),
    Row(
        "worker CPU per workflow task ÷ ceiling, full ladder",
        "worker_cpu_ms_per_task_ratio",
        "full_ladder",
        "{:.2f}",
        "≤ 1.5",
        lambda v: v <= 1.5,
    ),
    Row(
        "worker CPU per step (workflow task or activity, local or queued) ÷ ceiling, paid on time",
        "worker_cpu_ms_per_step_ratio",
        "paid_on_time",
    ),
    Row("worker CPU per step ÷ ceiling, full ladder", "worker_cpu_ms_per_step_ratio", "full_ladder"),
    Row("server CPU ms per run, trivial", "server_cpu_ms_per_run", "trivial", "{:.1f}"),
    Row("server CPU ms per run, paid on time", "server_cpu_ms_per_run", "paid_on_time", "{:.0f}"),
    Row("server CPU ms per run, full ladder", "server_cpu_ms_per_run", "full_ladder", "{:.0f}"),
    Row("server CPU per workflow task ÷ ceiling, paid on time", "server_cpu_ms_per_task_ratio", "paid_on_time"),
    Row("server CPU per workflow task ÷ ceiling, full ladder", "server_cpu_ms_per_task_ratio", "full_ladder"),
    Row("Temporal Cloud actions per run, trivial", "actions_per_run", "trivial", "{:.1f}"),
    Row(
        "Temporal Cloud actions per run, paid on time",
        "actions_per_run",
        "paid_on_time",
        "{:.1f}",
        "≤ 8",
        lambda v: v <= 8,
    ),
    Row(
        "Temporal Cloud actions per run, full ladder",
        "actions_per_run",
        "full_ladder",
        "{:.1f}",
        "≤ 20",
        lambda v: v <= 20,
    ),
    Row("+ activity heartbeats per run (actions too), paid on time", "heartbeats_per_run", "paid_on_time", "{:.1f}"),
    Row("+ activity heartbeats per run (actions too), full ladder", "heartbeats_per_run", "full_ladder", "{:.1f}"),
    Row("history events per run, trivial", "history_events_per_run", "trivial", "{:.0f}"),
    Row("history events per run, paid on time", "history_events_per_run", "paid_on_time", "{:.0f}"),
    Row("history events per run, full ladder", "history_events_per_run", "full_ladder", "{:.0f}"),
    Row("workflow tasks per run, trivial", "workflow_tasks_per_run", "trivial", "{:.1f}"),
    Row("workflow tasks per run, paid on time", "workflow_tasks_per_run", "paid_on_time", "{:.1f}"),
    Row("workflow tasks per run, full ladder", "workflow_tasks_per_run", "full_ladder", "{:.1f}"),
    Row("Partner Center calls per run, paid on time", "partner_center_calls_per_run", "paid_on_time", "{:.1f}"),
    Row("Partner Center calls per run, full ladder", "partner_center_calls_per_run", "full_ladder", "{:.1f}"),
    Row("SMTP messages per run, paid on time", "smtp_messages_per_run", "paid_on_time", "{:.1f}"),
    Row("SMTP messages per run, full ladder", "smtp_messages_per_run", "full_ladder", "{:.1f}"),
)


def _cell(summary: dict[str, Any], row: Row) -> str:
    values = summary.get(row.figure, {}).get(row.kind)
    if values is None:
        return "—"
    median, low = values["median"], values["min"]
    text = row.fmt.format(median)
    if values["max"] != low:
        text += f" (min {row.fmt.format(low)})"
    if row.meets is not None:
        text += " ✓" if row.meets(median) else " ✗"
    return text


def _latency_cells(result: dict[str, Any]) -> list[str]:
    memory = result["memory_and_latency"]
    m = memory["open_lifecycles"]
    reinstated, closed = memory["payment_to_reinstatement_s"], memory["payment_to_close_the_loop_s"]
    at_scale = m >= 10_000
    mark = (" ✓" if closed["p99"] < 1 else " ✗") if at_scale else " (needs --full)"
    ratio = memory["rss_ratio"]
    return [
        f"{m:,}",
        f"{reinstated['p50']:.2f} / {reinstated['p99']:.2f}",
        f"{closed['p50']:.2f} / {closed['p99']:.2f}{mark}",
        f"{memory['rss_kib_per_cached_trivial']:.0f}",
        f"{memory['rss_kib_per_cached_lifecycle']:.0f}",
        "—" if ratio is None else f"{ratio:.1f}" + (" ✓" if ratio <= 2 else " ✗"),
    ]


LATENCY_ROWS = (
    ("M, lifecycles open while measuring", ""),
    ("payment → reinstatement s, p50 / p99", ""),
    ("payment → close-the-loop s, p50 / p99", "p99 < 1 at M = 10,000"),
    ("worker RSS KiB per cached run, trivial", ""),
    ("worker RSS KiB per cached lifecycle", ""),
    ("worker RSS per cached lifecycle ÷ trivial", "≤ 2"),
)


def render(results: dict[str, dict[str, Any]], targets: str = "") -> str:
    """The results file: the table of every saved run, then `targets` (the hand-written account of each target
    not met: how far and why, `lifecycle-targets.md` beside the results), then each run's particulars."""
    labels = sorted(results, key=lambda label: results[label]["date"])
    header = ["figure", "issue 13 target", *labels]
    lines = [
        "# Lifecycle benchmark (issue 13)",
        "",
        "`CustomerBilling` on a dev server with `worker.py`, the Partner Center emulator and an SMTP sink, against "
        "a trivial workflow (start + one no-op activity, `bench/trivial_worker.py`, same SDK worker settings) "
        "measured in the same rounds. One column per saved run (`--label`); a cell is the median over the "
        "rounds, with the lowest round's value when they differ; ÷ ceiling is the ratio to the trivial workflow "
        "in the same round. ✓/✗: the issue's target met or not. Compare ratios, not times: the 2 cores are "
        "shared with other work (the load average of each run is below).",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for row in ROWS:
        cells = [_cell(results[label]["summary"], row) for label in labels]
        lines.append(f"| {row.title} | {row.target} | " + " | ".join(cells) + " |")
    latency = {label: _latency_cells(results[label]) for label in labels}
    for n, (title, target) in enumerate(LATENCY_ROWS):
        lines.append(f"| {title} | {target} | " + " | ".join(latency[label][n] for label in labels) + " |")
    lines += [
        "",
        "Temporal Cloud actions are counted from each run's history by Temporal Cloud's definition "
        "(https://docs.temporal.io/cloud/actions): workflow started, signal-with-start as one action, signals, "
        "updates, timers, search-attribute upserts (TemporalChangeVersion alone exempt), each activity start or "
        "retry, all local activities of a workflow task as one. Activity heartbeats that reach the server are "
        "actions as well but are not in a history, as Temporal Cloud's own estimate from histories leaves them "
        "out; they are counted from the dev server's `service_requests` metric and shown on their own row. "
        "The benchmark sends no query.",
        "",
        "Paid on time pays once the lifecycle waits for the due moment (its first upsert, read with describe), "
        "as a payment days after the invoice finds it; columns before `local-books` paid as soon as the "
        "invoice notice arrived, often before the run had waited, and so counted no timer and one upsert fewer "
        "than a real run.",
        "",
        "A full-ladder run takes at least 15 s (the compressed policy: suspension 9 s after the invoice falls due "
        "6 s after it is issued), so its runs/s has that floor at any speed. When the worker falls behind (50 "
        "ladders at once on a loaded machine), rungs due close together go out as one catch-up, with fewer "
        "notices: so the full ladder's per-run counts (actions, events, workflow tasks, Partner Center calls, "
        "SMTP messages) are those of the latency samples (started together but few, each getting every notice; "
        "the first row says how many did), and CPU per run and per workflow task are over every run of the "
        "rounds. The rounds' own counts are in the JSON file.",
        "",
        *([targets.strip(), ""] if targets.strip() else []),
        "## Runs",
        "",
    ]
    for label in labels:
        result = results[label]
        lines += [
            f"### {label}",
            "",
            f"- date: {result['date']}, commit `{result['commit']}`",
            f"- command: `{result['command']}`",
            f"- machine: {result['machine']['cpu']}, nproc {result['machine']['nproc']}, "
            f"load average at start {result['machine']['loadavg']}; per round (1 min): "
            + ", ".join(
                f"{r[kind]['loadavg_1min']:.1f}" for r in result["rounds"] for kind in KINDS if kind == "trivial"
            ),
            f"- setting: {result['setting']}; the dev server's database: {result.get('server_db', 'file')}",
            f"- PYTHONDONTWRITEBYTECODE: {result['pythondontwritebytecode'] or 'unset'}; worker tuning from "
            f"the environment: {result['worker_tuning'] or 'none (defaults)'}; runs cached: "
            f"{result['memory_and_latency'].get('cached_runs')}",
            f"- notices per run: {_notices(result)}",
            f"- actions per run by type: {_actions(result)}",
            "",
        ]
        if result.get("note"):
            lines += [result["note"], ""]
    return "\n".join(lines)


def _notices(result: dict[str, Any]) -> str:
    last = result["rounds"][-1]
    return "; ".join(f"{kind}: {last[kind]['notices_by_kind_per_run']}" for kind in KINDS[1:])


def _actions(result: dict[str, Any]) -> str:
    last = result["rounds"][-1]
    return "; ".join(f"{kind}: {last[kind]['actions_by_type_per_run']}" for kind in KINDS)


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        path.stem.removeprefix("lifecycle-"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("lifecycle-*.json"))
    }


def _commit() -> str:
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return described.stdout.strip()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle_bench", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="100 runs per round, M = 10,000 open lifecycles")
    size.add_argument("--smoke", action="store_true", help="the smallest setting (what the test runs)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results (default bench/results)")
    parser.add_argument("--label", default="latest", help="the column name: saved as lifecycle-<label>.json")
    parser.add_argument("--note", default="", help="a sentence shown under this run in the results file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the logs")
    parser.add_argument(
        "--encrypt", action="store_true", help="payload encryption on (BILLING_ENCRYPTION_KEYS), as ./dev run has it"
    )
    parser.add_argument(
        "--server-db",
        choices=["file", "memory"],
        default="file",
        help="the dev server's database: a SQLite file (default) or in memory (for --full: the file bounds it)",
    )
    parser.add_argument("--open", type=int, metavar="M", help="M, the lifecycles open while measuring latency")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # asyncio.run cancels the benchmark, whose cleanup stops every process it started


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Also when started in the background, where a shell leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    setting = FULL if args.full else SMOKE if args.smoke else DEFAULT
    if args.open is not None:
        if args.open < 0:
            raise SystemExit("--open: M must be 0 or more")
        setting = replace(setting, name=f"{setting.name}, M={args.open}", open_lifecycles=args.open)
    began = datetime.now(UTC)
    at_start, commit = machine(), _commit()  # before the run: the tree may change while it runs
    measured = asyncio.run(run_bench(setting, args.keep, args.encrypt, args.server_db))
    result = {
        "label": args.label,
        "date": f"{began:%Y-%m-%d %H:%M} UTC",
        "commit": commit,
        "command": "python -m bench.lifecycle_bench " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "machine": at_start,
        "setting": asdict(setting),
        "server_db": args.server_db,
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        "worker_tuning": worker_tuning_from_environment(),
        "note": args.note,
        **measured,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"lifecycle-{args.label}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    targets = args.out / "lifecycle-targets.md"
    markdown = render(load_results(args.out), targets.read_text(encoding="utf-8") if targets.exists() else "")
    (args.out / "lifecycle.md").write_text(markdown + "\n", encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
