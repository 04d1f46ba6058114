"""Benchmark of the aging report: how long it takes on a large book, and how many SQL queries it issues.

    .venv/bin/python -m bench.aging_bench [--customers 100000] [--postgres] [--out bench/results/aging.md]

Seeds `customers` customers (three invoices each across every bucket, with the notices, disputes and operator
actions of tests/aging_book.py) by bulk insert, then times `aging_report` (wall clock and this process's CPU) and
the rendering of its table, CSV and HTML (the HTML as `starter.py report aging --format html` makes it, the
1,000 most overdue customers per currency, and with `--top all`), and counts the SQL statements the report sends
(SQLAlchemy's `before_cursor_execute` event). With `--postgres` the same on the PostgreSQL test server
(BILLING_TEST_POSTGRES_URL), in a schema of its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import URL, create_engine, event, make_url, text

from billing.ledger import LedgerStore
from billing.reports.aging import aging_report
from billing.reports.render import DEFAULT_TOP, ReportContext, render_aging
from tests.aging_book import AS_OF, seed_book

POSTGRES_URL = os.environ.get("BILLING_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Run:
    database: str
    customers: int
    seed_seconds: float
    report_seconds: float
    report_cpu_seconds: float
    queries: int
    table_seconds: float
    csv_seconds: float
    html_seconds: float
    html_bytes: int
    html_all_seconds: float
    html_all_bytes: int
    listed: int  # customers in the report
    html_listed: int  # customers the default HTML lists


def count_queries(store: LedgerStore) -> tuple[list[str], object]:
    statements: list[str] = []

    def hook(conn: object, cursor: object, statement: str, *args: object) -> None:
        # Transaction control is not a query (the SQLite engine begins each transaction with BEGIN IMMEDIATE).
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", hook)
    return statements, hook


def measure(store: LedgerStore, database: str, customers: int) -> Run:
    started = time.perf_counter()
    seed_book(store, customers)
    seeded = time.perf_counter() - started
    statements, hook = count_queries(store)
    started, cpu = time.perf_counter(), time.process_time()
    report = aging_report(store.engine, AS_OF)
    report_seconds, report_cpu = time.perf_counter() - started, time.process_time() - cpu
    event.remove(store.engine, "before_cursor_execute", hook)
    context = ReportContext(locale="zh-CN", generated_at=datetime.now(UTC))
    timings: dict[str, tuple[float, int]] = {}
    for name, output_format, top in (
        ("table", "table", "default"),
        ("csv", "csv", "default"),
        ("html", "html", "default"),
        ("html_all", "html", "all"),
    ):
        started = time.perf_counter()
        text = render_aging(report, context, output_format, top)
        timings[name] = (time.perf_counter() - started, len(text.encode()))
    html_top = DEFAULT_TOP["html"] or 0
    return Run(
        database=database,
        customers=customers,
        seed_seconds=seeded,
        report_seconds=report_seconds,
        report_cpu_seconds=report_cpu,
        queries=len(statements),
        table_seconds=timings["table"][0],
        csv_seconds=timings["csv"][0],
        html_seconds=timings["html"][0],
        html_bytes=timings["html"][1],
        html_all_seconds=timings["html_all"][0],
        html_all_bytes=timings["html_all"][1],
        listed=sum(len(table.customers) for table in report.tables),
        html_listed=sum(min(len(table.customers), html_top) for table in report.tables),
    )


@contextmanager
def postgres_schema() -> Iterator[URL]:
    url = make_url(POSTGRES_URL)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url.update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run(customers: int, postgres: bool) -> list[Run]:
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        store = LedgerStore.from_url(f"sqlite:///{Path(folder) / 'ledger.db'}")
        try:
            runs.append(measure(store, "SQLite", customers))
        finally:
            store.close()
    if postgres:
        with postgres_schema() as url:
            store = LedgerStore.from_url(url)
            try:
                runs.append(measure(store, "PostgreSQL", customers))
            finally:
                store.close()
    return runs


def markdown(runs: list[Run], command: str) -> str:
    lines = [
        "# Aging report benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
        "(shared with other work: figures are indicative)",
        "- book: tests/aging_book.py, three invoices per customer across every bucket, with notices, disputes, "
        "escalations and operator actions; as of " + AS_OF.isoformat(),
        "",
        "| database | customers | listed | SQL queries | report s | report CPU s | table s | CSV s | HTML s "
        "(listed) | HTML MB | HTML all s | HTML all MB | seed s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r.database} | {r.customers:,} | {r.listed:,} | {r.queries} | {r.report_seconds:.2f} | "
            f"{r.report_cpu_seconds:.2f} | {r.table_seconds:.2f} | {r.csv_seconds:.2f} | "
            f"{r.html_seconds:.2f} ({r.html_listed:,}) | {r.html_bytes / 1e6:.1f} | {r.html_all_seconds:.2f} | "
            f"{r.html_all_bytes / 1e6:.1f} | {r.seed_seconds:.1f} |"
        )
    lines += [
        "",
        "`report s` is `aging_report` alone, wall clock: its two queries, read in one transaction that takes no "
        "write lock, and the report built from their rows with the engine's own overdue and stage rules "
        "(`stage_of`, no lifecycle state per customer); `report CPU s` is this process's CPU time in it. `HTML` "
        "is what `starter.py report aging --format html` writes (the most overdue customers of each currency, "
        "the totals of all), `HTML all` the same with `--top all`. The SQL query count does not grow with the book.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aging_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL (BILLING_TEST_POSTGRES_URL)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/aging.md"))
    args = parser.parse_args(argv)
    runs = run(args.customers, args.postgres)
    command = "python -m bench.aging_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    result = markdown(runs, command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(result, encoding="utf-8")
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
