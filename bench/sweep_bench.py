"""Benchmark of the daily sweep: does it scale to 100,000 customers?

    .venv/bin/python -m bench.sweep_bench [--customers 100000] [--owing 2000] [--out bench/results/sweep.md]

Two measurements, reported as ratios taken in the same run (the machines are shared and noisy):

1. **Ledger paging.** The same 5,000 owing customers among 10,000 and among `customers` customers: the time
   to read one page of 500 owing customers, with the owed-invoices index (revision 0004) and without it, and
   the memory one page takes. With the index a page costs the same however many customers are paid up.
2. **The sweep itself.** A `DailySweep` on the time-skipping server with the real worker over a ledger of
   `customers` customers of whom `owing` owe and have no lifecycle (so each page starts `page_size` lifecycles
   by signal-with-start), continuing as new every few pages: wall time, customers per second, and the history
   events of its largest run, projected to 100,000 owing customers at the production page size.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger import LedgerStore
from billing.settings import Settings
from billing.sweep import DEFAULT_PAGE_SIZE, SweepInput, SweepReport
from tests.temporal_fixtures import TEST_POLICY, TEST_SERVER, register_search_attributes
from tests.test_daily_sweep import book
from worker import billing_worker
from workflows.daily_sweep import DailySweep

HISTORY_LIMIT = 51_200  # Temporal's default hard limit of events per run
PRODUCTION_PAGES_PER_RUN = SweepInput().pages_per_run


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


def measure_paging(customers: int, folder: Path) -> list[str]:
    """The same 5,000 owing customers among 10,000 and among `customers` customers in all."""
    owing = 5_000
    small = build_ledger(folder / "small.db", owing, owing)
    large = build_ledger(folder / "large.db", owing, customers - owing)
    small_ms = statistics.median(page_times(small))
    large_ms = statistics.median(page_times(large))
    memory = page_memory(large)
    with large.engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_invoices_owed_by_customer"))
    unindexed_ms = statistics.median(page_times(large))
    small.close()
    large.close()
    return [
        "## Ledger paging (SQLite)",
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


async def measure_sweep(customers: int, owing: int, folder: Path, postgres: str | None) -> list[str]:
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
                            task_queue=settings.task_queue,
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
    return [
        f"## The sweep (time-skipping server, real worker, {backend} ledger)",
        "",
        f"{customers:,} customers, {owing:,} of them owing with no lifecycle; pages of {page_size}, "
        f"continue-as-new every {pages_per_run} pages.",
        "",
        f"- started {report.lifecycles_started:,} lifecycles in {elapsed:.1f} s: "
        f"**{report.customers_owing / elapsed:.0f} customers/s** (signal-with-start, 32 at a time, while the same "
        "worker runs the lifecycles it starts)",
        f"- the sweep's own share: a page of {page_size} took **{statistics.median(page_seconds):.2f} s** "
        f"(median of {len(page_seconds)} pages, slowest {max(page_seconds):.2f} s) to read the books, check "
        "each customer and signal-with-start; the rest is the new lifecycles doing their first steps",
        f"- {report.runs} runs, {report.pages} pages; history events per run: {events}",
        f"- about **{per_page:.1f} events per page**; at 100,000 owing customers ({pages_at_scale} pages of "
        f"{DEFAULT_PAGE_SIZE}, {PRODUCTION_PAGES_PER_RUN} pages per run) the largest run holds about "
        f"**{projected:,} events**, {projected / HISTORY_LIMIT:.1%} of Temporal's {HISTORY_LIMIT:,}-event limit",
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_bench", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--owing", type=int, default=2_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sweep.md"))
    parser.add_argument("--postgres", default=None, help="run the sweep on this PostgreSQL (a schema of its own)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        lines = [
            "# Daily sweep benchmark",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on a shared 2-core machine; compare ratios, not times.",
            "",
            *measure_paging(args.customers, Path(folder)),
            *asyncio.run(measure_sweep(args.customers, args.owing, Path(folder), args.postgres)),
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
