"""Benchmark of the aging report: how long it takes on a large book, and how many SQL queries it issues.

    .venv/bin/python -m bench.aging_bench [--customers 100000] [--postgres] [--out bench/results/aging.md]

Seeds `customers` customers (three invoices each across every bucket, with the notices, disputes and operator
actions of tests/aging_book.py) by bulk insert, then times `aging_report` and the rendering of its table and
HTML, and counts the SQL statements the report sends (SQLAlchemy's `before_cursor_execute` event). With
`--postgres` the same on the PostgreSQL test server (BILLING_TEST_POSTGRES_URL), in a schema of its own.
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
from billing.reports.render import ReportContext, render_aging
from tests.aging_book import AS_OF, seed_book

POSTGRES_URL = os.environ.get("BILLING_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Run:
    database: str
    customers: int
    seed_seconds: float
    report_seconds: float
    queries: int
    table_seconds: float
    html_seconds: float
    html_bytes: int
    listed: int


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
    started = time.perf_counter()
    report = aging_report(store.engine, AS_OF)
    report_seconds = time.perf_counter() - started
    event.remove(store.engine, "before_cursor_execute", hook)
    context = ReportContext(locale="zh-CN", generated_at=datetime.now(UTC))
    started = time.perf_counter()
    render_aging(report, context, "table")
    table_seconds = time.perf_counter() - started
    started = time.perf_counter()
    html = render_aging(report, context, "html")
    html_seconds = time.perf_counter() - started
    return Run(
        database=database,
        customers=customers,
        seed_seconds=seeded,
        report_seconds=report_seconds,
        queries=len(statements),
        table_seconds=table_seconds,
        html_seconds=html_seconds,
        html_bytes=len(html.encode()),
        listed=sum(len(table.customers) for table in report.tables),
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
        "| database | customers | listed | SQL queries | report s | table s | HTML s | HTML MB | seed s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r.database} | {r.customers:,} | {r.listed:,} | {r.queries} | {r.report_seconds:.2f} | "
            f"{r.table_seconds:.2f} | {r.html_seconds:.2f} | {r.html_bytes / 1e6:.1f} | {r.seed_seconds:.1f} |"
        )
    lines += [
        "",
        "`report s` is `aging_report` alone: its two queries and building each customer's lifecycle state from the "
        "books for the engine's own overdue and stage rules. The SQL query count does not grow with the book.",
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
