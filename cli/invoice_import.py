"""`starter.py import-invoices`: a month's invoices from a CSV or JSON-lines file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from billing.invoice_import import (
    DEFAULT_CONCURRENCY,
    ImportFileError,
    ImportReport,
    LifecycleStarter,
    ParsedFile,
    Progress,
    file_format,
    import_invoices,
    read_invoice_file,
)
from billing.ledger import LedgerStore
from billing.policy import CollectionsPolicy, PolicyError, load_policy
from billing.settings import Settings
from cli.common import CommandError, connect
from cli.customers import issue_invoice

IMPORT_DESCRIPTION = """\
Import invoices from a CSV or JSON-lines file: each good row is booked in the ledger and signal-with-starts
its customer's lifecycle (customer-billing-{customer_id}); a bad row is reported as "line N: reason" and the
others go on. Running the same file again books nothing twice and starts no lifecycle for a settled invoice,
so a run that stopped half-way is completed by running it again.
"""

IMPORT_EPILOG = """\
file format: UTF-8 (Excel's "CSV UTF-8"; a byte order mark is fine), the contract's field names:
  invoice_id, customer_id, amount, currency, issued_on (YYYY-MM-DD), due_on, and the customer's name and
  email are required; due_at (ISO 8601 with offset), description, locale (zh-CN or en-US; default zh-CN),
  time_zone (IANA; default Asia/Shanghai) and tenant_id (default: the customer id) are optional.
  CSV: line 1 is the header, e.g.
    invoice_id,customer_id,amount,currency,issued_on,due_on,name,email,description
    INV-2026-0001,C-1001,1234.50,CNY,2026-11-24,2026-12-24,莲花贸易有限公司,ap@lotus.example.cn,Azure 11/2026
  JSON lines (.jsonl, .ndjson): one object a line; amount may also be {"amount": "1234.50", "currency": "CNY"}.

examples:
  python starter.py import-invoices invoices-2026-11.csv --dry-run
  python starter.py import-invoices invoices-2026-11.csv

exit status: 0 every row imported (or already there); 2 some rows were rejected, the others were imported
(fix those rows and run the file again); 1 the import could not run, or some lifecycles did not start (run
the file again).
Ledger: BILLING_LEDGER_URL or --ledger-url; currency: the collections policy's (BILLING_POLICY_FILE).
"""


def add_import_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import-invoices",
        help="import invoices from a CSV or JSON-lines file (--dry-run to check it first)",
        description=IMPORT_DESCRIPTION,
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="the .csv, .jsonl or .ndjson file")
    parser.add_argument("--format", choices=["csv", "jsonl"], default=None, help="default: from the extension")
    parser.add_argument(
        "--dry-run", action="store_true", help="check every row, also against the ledger; write and signal nothing"
    )
    parser.add_argument(
        "--ledger-url",
        default=os.environ.get("BILLING_LEDGER_URL") or Settings.model_fields["ledger_url"].default,
        help="the ledger's SQLAlchemy URL (default: BILLING_LEDGER_URL, or the worker's default)",
    )
    parser.add_argument("--policy", default=None, help="policy TOML (default: BILLING_POLICY_FILE or built-in)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="rows in flight at once")


def import_command(args: argparse.Namespace) -> int:
    name = "starter.py import-invoices"
    path = Path(args.file)
    try:
        policy_file = args.policy or os.environ.get("BILLING_POLICY_FILE") or None
        currency = (load_policy(policy_file) if policy_file else CollectionsPolicy()).currency
        parsed = read_invoice_file(path, file_format(path, args.format), currency)
        with _import_ledger(args.ledger_url, args.dry_run) as ledger:
            report = asyncio.run(_import(args, ledger, parsed, currency))
    except (ImportFileError, PolicyError, CommandError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    except SQLAlchemyError as error:
        where = make_url(args.ledger_url).render_as_string(hide_password=True)
        print(f"{name}: the ledger at {where} failed: {error.__class__.__name__}: {error}", file=sys.stderr)
        return 1
    if report.ignored_columns:
        print(f"{name}: ignored the unknown column(s) {', '.join(report.ignored_columns)}", file=sys.stderr)
    for problem in sorted([*report.rejected, *report.failed], key=lambda problem: problem.line):
        print(f"line {problem.line}: {problem.reason}", file=sys.stderr)
    print(report.render())
    return report.exit_status


@contextlib.contextmanager
def _import_ledger(url: str, dry_run: bool) -> Iterator[LedgerStore]:
    """The ledger to book in. A dry run only reads: it neither migrates the ledger nor creates a SQLite file
    that is not there yet, but checks against empty books instead."""
    parsed = make_url(url)
    database = parsed.database or ""
    missing = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists()
    with tempfile.TemporaryDirectory() as scratch:
        if dry_run and missing:
            print(f"no ledger at {database} yet: checking against empty books", file=sys.stderr)
            url = f"sqlite:///{scratch}/ledger.db"
        store = LedgerStore.from_url(url, migrate=not dry_run or missing)
        try:
            yield store
        finally:
            store.close()


async def _import(args: argparse.Namespace, ledger: LedgerStore, parsed: ParsedFile, currency: str) -> ImportReport:
    starter: LifecycleStarter | None = None
    if not args.dry_run:
        client = await connect(args)
        starter = functools.partial(issue_invoice, client, args.task_queue)
    progress = Progress(sys.stderr, parsed.rows_read)
    return await import_invoices(
        parsed,
        source=str(args.file),
        ledger=ledger,
        currency=currency,
        start_lifecycle=starter,
        progress=progress,
        concurrency=max(args.concurrency, 1),
        ledger_writers=1 if ledger.engine.dialect.name == "sqlite" else max(args.concurrency, 1),
    )
