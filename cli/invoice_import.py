"""`starter.py import-invoices`: a month's invoices from an Excel workbook, a CSV or a JSON-lines file."""

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
Import invoices from an Excel workbook (.xlsx), a CSV or a JSON-lines file: each good row is booked in the
ledger and signal-with-starts its customer's lifecycle (customer-billing-{customer_id}). Every bad row is
reported as 'row N, column "value": what to write instead', N being the row number the spreadsheet shows
(the header is a row too); a file with a bad row imports nothing unless --skip-bad-rows. Running the same
file again books nothing twice and starts no lifecycle for a settled invoice, so a run that stopped half-way,
or the good rows of a file imported with --skip-bad-rows, are completed by running the fixed file again.
"""

IMPORT_EPILOG = """\
columns (the header row; a title row or two above it is fine; English or Chinese names, any case):
  required  invoice_id   (Invoice No, 发票号, 发票号码, 发票编号)
            customer_id  (Customer No, 客户编号, 客户号, 客户ID)
            amount       (Amount, 金额, 发票金额, 应收金额)
            issued_on    (Issue Date, Invoice Date, 开票日期, 发票日期)
            due_on       (Due Date, 到期日, 到期日期)
            name         (Customer Name, Company, 客户名称, 公司名称)
            email        (E-mail, 邮箱, 电子邮箱)
            currency     (Currency, 币种, 货币) - or beside each amount: CNY 8,800.00
  optional  due_at       (到期时间) the moment payment is due; default: the end of due_on
            description  (描述, 说明, 摘要) shown to the customer; a 备注 (remarks) column is ignored
            locale       (语言) zh-CN (default) or en-US
            time_zone    (时区) IANA, default Asia/Shanghai
            tenant_id    (租户ID) default: the customer id
amounts: a dot marks decimals, commas between thousands are fine (8,800.00, 8,800, ８，８００.００, a number
  cell); CNY, RMB or 人民币 beside the amount states the currency, ¥ or 元 must agree with the currency
  column. Refused, never guessed: a decimal comma (8.800,00, 8,80), dots between thousands, more decimals
  than the currency has (8.800 for CNY).
dates: 2026-11-24, 2026/11/24, 2026.11.24, 2026年11月24日 or a date cell; refused: 11/24/2026 and 24/11/2026
  (the year must come first). due_at: 2026-11-24 18:00 (in the customer's time_zone) or with an offset,
  2026-11-24T18:00:00+08:00; a bare day means its end.
encodings: a CSV is read as UTF-8 (with or without a byte order mark: Excel's "CSV UTF-8"), else as GB18030
  (Excel's "CSV" in a Chinese locale, GBK included); --encoding to say which. JSON lines are UTF-8 with the
  contract's field names; there amount may also be {"amount": "1234.50", "currency": "CNY"}.

examples:
  python starter.py import-invoices invoices-2026-11.xlsx --dry-run
  python starter.py import-invoices invoices-2026-11.xlsx --sheet 十一月
  python starter.py import-invoices invoices-2026-11.csv --skip-bad-rows

exit status: 0 every row imported (or already there); 2 some rows were rejected: nothing was imported, or
with --skip-bad-rows the others were (fix those rows and run the file again); 1 the import could not run, or
some lifecycles did not start (run the file again). Progress goes to standard error once a step takes more
than a second, the summary to standard output.
Ledger: BILLING_LEDGER_URL or --ledger-url; currency: the collections policy's (BILLING_POLICY_FILE).
"""


def add_import_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import-invoices",
        help="import invoices from an .xlsx, CSV or JSON-lines file (--dry-run to check it first)",
        description=IMPORT_DESCRIPTION,
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="the .xlsx, .csv, .jsonl or .ndjson file")
    parser.add_argument("--format", choices=["xlsx", "csv", "jsonl"], default=None, help="default: from the extension")
    parser.add_argument("--sheet", default=None, help="the workbook's sheet to read (default: the first)")
    parser.add_argument("--encoding", default=None, help="a CSV's encoding, e.g. gb18030 (default: see below)")
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="import the good rows of a file that has bad ones (default: a bad row stops the whole file)",
    )
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
        reading = Progress(sys.stderr, what="rows checked")
        parsed = read_invoice_file(
            path, file_format(path, args.format), currency, sheet=args.sheet, encoding=args.encoding, progress=reading
        )
        with _import_ledger(args.ledger_url, args.dry_run) as ledger:
            report = asyncio.run(_import(args, ledger, parsed, currency))
    except (ImportFileError, PolicyError, CommandError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    except SQLAlchemyError as error:
        where = make_url(args.ledger_url).render_as_string(hide_password=True)
        print(f"{name}: the ledger at {where} failed: {error.__class__.__name__}: {error}", file=sys.stderr)
        return 1
    if parsed.encoding == "gb18030":
        print(f"{name}: the file is not UTF-8: read it as GB18030 (--encoding to say otherwise)", file=sys.stderr)
    if parsed.skipped:
        shown = ", ".join(str(number) for number in parsed.skipped)
        print(f"{name}: skipped row(s) {shown} above the header or below the table", file=sys.stderr)
    if report.ignored_columns:
        print(f"{name}: ignored the unknown column(s) {', '.join(report.ignored_columns)}", file=sys.stderr)
    for problem in report.problems():
        print(problem, file=sys.stderr)
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
    progress = Progress(sys.stderr, what="rows imported")
    return await import_invoices(
        parsed,
        source=str(args.file),
        ledger=ledger,
        currency=currency,
        start_lifecycle=starter,
        skip_bad_rows=args.skip_bad_rows,
        progress=progress,
        concurrency=max(args.concurrency, 1),
        ledger_writers=1 if ledger.engine.dialect.name == "sqlite" else max(args.concurrency, 1),
    )
