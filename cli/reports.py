"""`starter.py report`: the receivables aging and the collections report, read straight from the ledger
(BILLING_LEDGER_URL); no Temporal needed."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from billing.ledger import LedgerStore
from billing.models import DEFAULT_TIME_ZONE
from billing.reports.aging import aging_report
from billing.reports.collections import collections_report
from billing.reports.render import (
    DEFAULT_TOP,
    FORMATS,
    Listing,
    ReportContext,
    default_as_of,
    render_aging,
    render_collections,
)
from billing.settings import (
    DEFAULT_TEMPORAL_UI_URL,
    Settings,
    SettingsError,
    document_settings_from_environment,
)
from cli.common import CommandError, parse_date

AS_OF_HELP = (
    "the date the open invoices are aged to: the END of that day (24:00) in each customer's own time zone "
    f"(default {DEFAULT_TIME_ZONE}), so an invoice due on that date counts as 1 day overdue; "
    f"default: today in {DEFAULT_TIME_ZONE}. Amounts are what the books hold outstanding now"
)
PERIOD_HELP = "from the start of --from to the end of --to, in each customer's own time zone"
TOP_HELP = (
    "list only the N customers of each currency with the most overdue (then the most outstanding), or 'all'; the "
    "totals, counts and charts are always of every customer, and the table and the HTML say how many they list. "
    f"Default: every customer in table and csv, the top {DEFAULT_TOP['html']:,} in html (an HTML file of 100,000 "
    "customers would be some 80 MB)"
)


def parse_top(text: str) -> Listing:
    if text.strip().lower() == "all":
        return "all"
    try:
        count = int(text.replace(",", ""))
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of customers (1 or more) nor 'all'")
    return count


def add_report_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="finance reports from the ledger (BILLING_LEDGER_URL): receivables aging, collections",
    )
    reports = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    aging = reports.add_parser(
        "aging",
        help="accounts receivable by days overdue: not yet due, 1-30, 31-60, 61-90, over 90, per customer",
        description="Accounts-receivable aging from the ledger: one table per currency, per customer the amount "
        "in each bucket, stage, oldest due date, last notice, suspended or not, open disputes, with totals.",
        epilog="example: python starter.py report aging --as-of 2026-03-31 --format html --out aging.html",
    )
    aging.add_argument("--as-of", type=parse_date, metavar="YYYY-MM-DD", help=AS_OF_HELP)
    aging.add_argument("--top", type=parse_top, metavar="N|all", help=TOP_HELP)
    collections = reports.add_parser(
        "collections",
        help="what collections did in a period: notices, suspensions, reinstatements, money, disputes",
        description="Collections activity from the ledger for a period, " + PERIOD_HELP + ".",
        epilog="example: python starter.py report collections --from 2026-03-01 --to 2026-03-31",
    )
    collections.add_argument(
        "--from", dest="period_from", type=parse_date, required=True, metavar="YYYY-MM-DD", help=PERIOD_HELP
    )
    collections.add_argument("--to", dest="period_to", type=parse_date, required=True, metavar="YYYY-MM-DD")
    for parser in (aging, collections):
        parser.add_argument(
            "--currency", type=str.upper, metavar="CODE", help="only this currency (ISO 4217, e.g. CNY)"
        )
        parser.add_argument(
            "--format",
            dest="output_format",
            choices=FORMATS,
            default="table",
            help="table (default), csv (plain decimal amounts, a currency column) or html (one self-contained file)",
        )
        parser.add_argument("--out", type=Path, metavar="FILE", help="write to FILE instead of standard output")
        parser.add_argument("--locale", choices=("zh-CN", "en-US"), default="zh-CN", help="language (default zh-CN)")


def ledger_url() -> str:
    return os.environ.get("BILLING_LEDGER_URL") or Settings.model_fields["ledger_url"].default


def report_context(args: argparse.Namespace, now: datetime) -> ReportContext:
    try:
        branding = document_settings_from_environment().branding()
    except SettingsError as error:
        raise CommandError(str(error)) from None
    return ReportContext(
        locale=args.locale,
        generated_at=now,
        generated_zone=DEFAULT_TIME_ZONE,
        branding=branding,
        temporal_ui_url=os.environ.get("BILLING_TEMPORAL_UI_URL") or DEFAULT_TEMPORAL_UI_URL,
        namespace=args.namespace or os.environ.get("TEMPORAL_NAMESPACE") or "default",
    )


def _require_sqlite_file(url: str) -> None:
    """A report reads the books; it does not create an empty SQLite file where none is."""
    parsed = make_url(url)
    database = parsed.database or ""
    on_disk = database not in ("", ":memory:") and not database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and on_disk and not Path(database).exists():
        raise CommandError(f"there is no ledger at {url} (set BILLING_LEDGER_URL to the engine's ledger)")


def report_command(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        context = report_context(args, now)
        url = ledger_url()
        _require_sqlite_file(url)
        store = LedgerStore.from_url(url, migrate=False)
        try:
            if args.report == "aging":
                as_of = args.as_of or default_as_of(now, DEFAULT_TIME_ZONE)
                report = aging_report(store.engine, as_of, args.currency)
                text = render_aging(report, context, args.output_format, args.top or "default")
            else:
                if args.period_to < args.period_from:
                    raise CommandError(f"--to {args.period_to} is before --from {args.period_from}")
                report = collections_report(store.engine, args.period_from, args.period_to, args.currency)
                text = render_collections(report, context, args.output_format)
        except SQLAlchemyError as error:
            shown = make_url(url).render_as_string(hide_password=True)
            raise CommandError(
                f"cannot read the ledger at {shown}: {type(error).__name__}: {getattr(error, 'orig', None) or error}"
            ) from None
        finally:
            store.close()
    except CommandError as error:
        print(f"starter.py report {args.report}: {error}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
        return 0
    # A BOM lets Excel open a UTF-8 CSV with Chinese names correctly; other formats need none.
    args.out.write_text(text, encoding="utf-8-sig" if args.output_format == "csv" else "utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
