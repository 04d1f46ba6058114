"""Importing invoices from a CSV or JSON-lines file: every row is checked with the contract's models, within the
file and against the ledger; good rows are booked and start or join the customer's lifecycle, bad rows are
reported by line number and do not stop the good ones. Running the same file again changes nothing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from pydantic import ValidationError

from billing import refusals
from billing.due_dates import due_moment
from billing.ledger import LedgerRejection
from billing.ledger_messages import AccountBalance, InvoiceBalance, RecordInvoiceRequest
from billing.models import CustomerAccount, Invoice

FileFormat = Literal["csv", "jsonl"]
FORMAT_BY_SUFFIX: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

INVOICE_FIELDS = ("invoice_id", "customer_id", "amount", "currency", "issued_on", "due_on", "due_at", "description")
ACCOUNT_FIELDS = ("customer_id", "name", "email", "locale", "time_zone", "tenant_id")
KNOWN_FIELDS = tuple(dict.fromkeys(INVOICE_FIELDS + ACCOUNT_FIELDS))
REQUIRED_COLUMNS = ("invoice_id", "customer_id", "amount", "currency", "issued_on", "due_on", "name", "email")

# Enough concurrent ledger writes and signal-with-starts to hide the round trips, few enough not to crowd the
# ledger's connection pool or the frontend.
DEFAULT_CONCURRENCY = 16


class ImportFileError(ValueError):
    """The file as a whole cannot be read (not UTF-8, no header, a required column missing)."""


# --- reading and checking rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """A row that was not imported, and why, in words that echo no personal data."""

    line: int
    reason: str


@dataclass(frozen=True)
class InvoiceRow:
    """A row that passed the contract's models: the invoice and the account of the customer it is for."""

    line: int
    account: CustomerAccount
    invoice: Invoice

    @property
    def due_at(self) -> datetime:
        """When payment is due, as the workflow books it: `due_at`, or the end of `due_on` in the customer's zone."""
        return due_moment(self.invoice.due_on, self.account.zone, self.invoice.due_at)


@dataclass
class ParsedFile:
    rows_read: int = 0  # records in the file, blank lines not counted
    rows: list[InvoiceRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def file_format(path: Path, requested: FileFormat | None = None) -> FileFormat:
    if requested is not None:
        return requested
    try:
        return FORMAT_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise ImportFileError(
            f"cannot tell the format of {path.name} from its extension: name it .csv, .jsonl or .ndjson, "
            "or give --format"
        ) from None


def read_invoice_file(path: Path, fmt: FileFormat, currency: str) -> ParsedFile:
    """Read every row of the file; rows in another currency than the engine's `currency` are rejected."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImportFileError(f"cannot read {path}: {error.strerror or error}") from None
    return parse_invoices(data, fmt, currency)


def parse_invoices(data: bytes, fmt: FileFormat, currency: str) -> ParsedFile:
    text = _decode(data)
    parsed = _parse_csv(text) if fmt == "csv" else _parse_jsonl(text)
    result = ParsedFile(
        rows_read=len(parsed.records) + len(parsed.rejected),
        rejected=list(parsed.rejected),
        ignored_columns=parsed.ignored_columns,
    )
    for line, fields in parsed.records:
        try:
            row = row_from_fields(line, fields)
        except RowRejected as rejection:
            result.rejected.append(Rejected(line, str(rejection)))
            continue
        if row.invoice.amount.currency != currency:
            result.rejected.append(
                Rejected(line, f"amount is in {row.invoice.amount.currency}; the engine bills in {currency}")
            )
            continue
        result.rows.append(row)
    result.rejected.sort(key=lambda rejected: rejected.line)
    return result


def _decode(data: bytes) -> str:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ImportFileError(
            f'line {line} is not UTF-8: save the file as UTF-8 (in Excel: "CSV UTF-8"); a GBK export is not read'
        ) from None


class RowRejected(ValueError):
    pass


@dataclass
class _Records:
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def _parse_csv(text: str) -> _Records:
    result = _Records()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise ImportFileError("the file is empty: line 1 must be the header, e.g. " + ",".join(KNOWN_FIELDS)) from None
    except csv.Error as error:
        raise ImportFileError(f"line 1: not a CSV header ({error})") from None
    repeated = sorted({name for name in header if header.count(name) > 1 and name})
    if repeated:
        raise ImportFileError(f"line 1: column {', '.join(repeated)} appears more than once")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ImportFileError(
            f"line 1: the header lacks the column(s) {', '.join(missing)}; columns are "
            f"{', '.join(KNOWN_FIELDS)} (the contract's field names)"
        )
    result.ignored_columns = [name for name in header if name not in KNOWN_FIELDS]
    end = 1
    while True:
        start = end + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            result.rejected.append(Rejected(start, f"not a CSV row: {error}"))
            break  # the reader cannot find the next row after a broken one
        end = reader.line_num
        if not values or all(not value.strip() for value in values):
            continue
        if len(values) != len(header):
            result.rejected.append(Rejected(start, f"{len(values)} values for the {len(header)} columns of the header"))
            continue
        fields = {name: value.strip() for name, value in zip(header, values, strict=True) if name in KNOWN_FIELDS}
        result.records.append((start, {name: value for name, value in fields.items() if value}))
    return result


def _parse_jsonl(text: str) -> _Records:
    result = _Records()
    # Not splitlines(): it also splits at U+2028 and friends, which JSON allows inside strings.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            # parse_float: a JSON number amount keeps the digits the sender wrote.
            record = json.loads(line, parse_float=Decimal)
        except json.JSONDecodeError as error:
            result.rejected.append(Rejected(number, f"not JSON: {error.msg} at column {error.colno}"))
            continue
        if not isinstance(record, dict):
            result.rejected.append(Rejected(number, "not a JSON object"))
            continue
        result.records.append((number, {name: value for name, value in record.items() if value is not None}))
    return result


def row_from_fields(line: int, fields: dict[str, Any]) -> InvoiceRow:
    """Build the contract's models from a row's fields; `RowRejected` names every problem by field."""
    amount = fields.get("amount")
    if isinstance(amount, dict):
        money = amount
        if "currency" in fields and str(fields["currency"]).strip().upper() != str(amount.get("currency")).upper():
            raise RowRejected("currency differs from amount.currency")
    else:
        money = {name: value for name, value in (("amount", amount), ("currency", fields.get("currency"))) if value}
    invoice_fields = {name: fields[name] for name in INVOICE_FIELDS if name in fields and name != "currency"}
    if amount is not None:
        invoice_fields["amount"] = money
    problems: list[str] = []
    account = invoice = None
    try:
        account = CustomerAccount.model_validate({name: fields[name] for name in ACCOUNT_FIELDS if name in fields})
    except ValidationError as error:
        # customer_id problems are reported once, by the invoice
        problems.extend(refusals.problems(error, _FIELD_NAMES, skip={"customer_id"}))
    try:
        invoice = Invoice.model_validate(invoice_fields)
    except ValidationError as error:
        problems.extend(refusals.problems(error, _FIELD_NAMES))
    if problems or account is None or invoice is None:
        raise RowRejected("; ".join(dict.fromkeys(problems)))
    return InvoiceRow(line, account, invoice)


_FIELD_NAMES = {"amount.amount": "amount", "amount.currency": "currency"}


def check_within_file(rows: Sequence[InvoiceRow]) -> tuple[list[InvoiceRow], list[InvoiceRow], list[Rejected]]:
    """Reject rows that contradict each other: one invoice id with different content (every line of it, since
    the file does not say which is right), or one customer with different account details (the later lines).

    Returns the rows to import, the exact repeats of earlier rows (left alone), and the rejected rows.
    """
    rejected: list[Rejected] = []
    first_account: dict[str, InvoiceRow] = {}
    consistent: list[InvoiceRow] = []
    for row in rows:
        first = first_account.setdefault(row.account.customer_id, row)
        if row.account != first.account:
            differing = [name for name in ACCOUNT_FIELDS if getattr(row.account, name) != getattr(first.account, name)]
            rejected.append(
                Rejected(
                    row.line,
                    f"customer {row.account.customer_id}'s details differ from line {first.line} "
                    f"({', '.join(differing)}); give each customer one set of details in a file",
                )
            )
            continue
        consistent.append(row)

    lines_of: dict[str, list[InvoiceRow]] = {}
    for row in consistent:
        lines_of.setdefault(row.invoice.invoice_id, []).append(row)
    unique: list[InvoiceRow] = []
    repeats: list[InvoiceRow] = []
    for rows in lines_of.values():
        first = rows[0]
        if all(row.invoice == first.invoice for row in rows):
            unique.append(first)
            repeats.extend(rows[1:])
            continue
        for row in rows:
            others = ", ".join(str(other.line) for other in rows if other is not row)
            rejected.append(
                Rejected(
                    row.line,
                    f"invoice {row.invoice.invoice_id} is also on line(s) {others} with different content; "
                    "none of them is imported",
                )
            )
    unique.sort(key=lambda row: row.line)
    return unique, repeats, rejected


# --- against the ledger ------------------------------------------------------------------------------------


class LedgerBooks(Protocol):
    """The part of `LedgerStore` the import uses."""

    def balance(self, customer_id: str, currency: str, known_invoice_ids: Iterable[str] = ()) -> AccountBalance: ...

    def record_invoice(self, request: RecordInvoiceRequest) -> AccountBalance: ...

    def invoice_owners(self, invoice_ids: Iterable[str]) -> dict[str, str]: ...


class Outcome(StrEnum):
    RECORDED = "recorded"  # new on the books
    ALREADY_RECORDED = "already recorded"  # on the books as in the file, money still owed
    SETTLED = "already settled"  # on the books as in the file and settled: no lifecycle for it
    REPEATED = "repeated in the file"  # an exact repeat of an earlier line


@dataclass(frozen=True)
class Planned:
    row: InvoiceRow
    outcome: Outcome


def _conflicts(booked: InvoiceBalance, row: InvoiceRow) -> list[str]:
    """How the file's invoice differs from the booked one. Due dates only ever move later (`extend_due_date`),
    so a booked due date later than the file's may be an extension: recording decides, against the date the
    invoice was issued with."""
    invoice = row.invoice
    checks: list[tuple[str, object, object, bool]] = [
        ("amount", booked.amount, invoice.amount, booked.amount != invoice.amount),
        ("issued_on", booked.issued_on, invoice.issued_on, booked.issued_on != invoice.issued_on),
        ("due_on", booked.due_on, invoice.due_on, invoice.due_on > booked.due_on),
        (
            "due_at",
            booked.due_at.astimezone(row.due_at.tzinfo).isoformat(),
            row.due_at.isoformat(),
            row.due_at > booked.due_at,
        ),
    ]
    return [f"{name} {was} (file: {now})" for name, was, now, differs in checks if differs]


def check_against_ledger(
    rows: Sequence[InvoiceRow], ledger: LedgerBooks, currency: str
) -> tuple[list[Planned], list[Rejected]]:
    """What would happen to each row: recorded, already recorded (still owed), already settled, or refused
    because the books hold the invoice differently or keep the customer's account in another currency."""
    by_customer: dict[str, list[InvoiceRow]] = {}
    for row in rows:
        by_customer.setdefault(row.account.customer_id, []).append(row)
    planned: list[Planned] = []
    rejected: list[Rejected] = []
    owners = ledger.invoice_owners(row.invoice.invoice_id for row in rows)
    for customer_id, customer_rows in by_customer.items():
        try:
            balance = ledger.balance(customer_id, currency, [row.invoice.invoice_id for row in customer_rows])
        except LedgerRejection as rejection:
            rejected.extend(Rejected(row.line, str(rejection)) for row in customer_rows)
            continue
        booked = {invoice.invoice_id: invoice for invoice in balance.invoices}
        for row in customer_rows:
            existing = booked.get(row.invoice.invoice_id)
            owner = owners.get(row.invoice.invoice_id, customer_id)
            if owner != customer_id:
                # Worded as the ledger words it when recording, so a dry run and a real run say the same.
                rejected.append(
                    Rejected(
                        row.line,
                        f"invoice {row.invoice.invoice_id} is already on the books with a different customer "
                        f"{owner} (now {customer_id}); a corrected invoice needs a new invoice id",
                    )
                )
                continue
            if existing is None:
                planned.append(Planned(row, Outcome.RECORDED))
                continue
            differences = _conflicts(existing, row)
            if differences:
                rejected.append(
                    Rejected(
                        row.line,
                        f"invoice {row.invoice.invoice_id} is already on the books with a different "
                        f"{', '.join(differences)}; a corrected invoice needs a new invoice id",
                    )
                )
            elif existing.outstanding.is_positive:
                planned.append(Planned(row, Outcome.ALREADY_RECORDED))
            else:
                planned.append(Planned(row, Outcome.SETTLED))
    planned.sort(key=lambda item: item.row.line)
    return planned, rejected


# --- doing it ---------------------------------------------------------------------------------------------

# Signal-with-start `invoice_issued` to `customer-billing-{customer_id}`: starts the lifecycle or joins the open
# run. (Which of the two happened is not told reliably: the time-skipping server never says it started a run.)
LifecycleStarter = Callable[[CustomerAccount, Invoice], Awaitable[object]]


@dataclass(frozen=True)
class Failed:
    """A row the ledger could not book, or booked without starting its lifecycle: running the import again does it."""

    line: int
    reason: str


@dataclass
class ImportReport:
    source: str
    dry_run: bool
    rows_read: int = 0
    planned: list[Planned] = field(default_factory=list)
    repeats: list[InvoiceRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    signalled: list[str] = field(default_factory=list)  # invoice ids sent to their lifecycle by signal-with-start
    ignored_columns: list[str] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        """Rows with this outcome, leaving out those that recording then refused or could not start."""
        dropped = {rejection.line for rejection in self.rejected} | {failure.line for failure in self.failed}
        return sum(1 for item in self.planned if item.outcome == outcome and item.row.line not in dropped)

    @property
    def exit_status(self) -> int:
        """0 all done; 2 rows were rejected (fix them and run again); 1 some lifecycles did not start (run again)."""
        if self.rejected:
            return 2
        return 1 if self.failed else 0

    def render(self) -> str:
        """The summary for people: counts, and the line numbers of the rows that need attention."""
        would = "would be " if self.dry_run else ""
        lines = [
            f"{self.source}: {self.rows_read} rows read"
            + (" (dry run: nothing was written or signalled)" if self.dry_run else "")
        ]

        def add(label: str, count: int, note: str = "") -> None:
            lines.append(f"  {label:<32}{count:>6}{note}")

        add(f"{would}recorded", self.count(Outcome.RECORDED))
        add("already recorded, still owed", self.count(Outcome.ALREADY_RECORDED))
        add("already settled, left alone", self.count(Outcome.SETTLED))
        add("repeated in the file", len(self.repeats))
        to_signal = [item for item in self.planned if item.outcome in (Outcome.RECORDED, Outcome.ALREADY_RECORDED)]
        if self.dry_run:
            customers = {item.row.account.customer_id for item in to_signal}
            add("invoices to signal", len(to_signal), f"   (starting or joining {len(customers)} lifecycles)")
        else:
            signalled = set(self.signalled)
            customers = {item.row.account.customer_id for item in to_signal if item.row.invoice.invoice_id in signalled}
            add("invoices signalled", len(signalled), f"   (starting or joining {len(customers)} lifecycles)")
        add("rejected", len(self.rejected), _line_list(rejected.line for rejected in self.rejected))
        if self.failed:
            add(
                "not finished",
                len(self.failed),
                _line_list(failure.line for failure in self.failed) + " (run the import again)",
            )
        return "\n".join(lines)


def _line_list(lines: Iterable[int]) -> str:
    numbers = sorted(lines)
    if not numbers:
        return ""
    shown = ", ".join(str(n) for n in numbers[:20]) + (f", … ({len(numbers) - 20} more)" if len(numbers) > 20 else "")
    return f"   line {shown}"


class Progress:
    """Rows done, on stderr: a bar redrawn in place on a terminal, else a line at every tenth of a long file
    (so a CI log gets at most ten)."""

    LONG_FILE = 500  # rows; a shorter file gets no progress lines when not on a terminal

    def __init__(self, stream: TextIO, total: int, what: str = "rows") -> None:
        self._stream = stream
        self._total = total
        self._what = what
        self._done = 0
        self._tty = stream.isatty()
        self._shown = -1
        self._drawn_at = 0.0

    def advance(self, count: int = 1) -> None:
        self._done += count
        if self._total == 0:
            return
        if self._tty:
            now = time.monotonic()
            if now - self._drawn_at >= 0.1 or self._done == self._total:
                self._drawn_at = now
                filled = 30 * self._done // self._total
                self._stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self._done}/{self._total} {self._what}")
                self._stream.flush()
        elif self._total >= self.LONG_FILE:
            tenth = 10 * self._done // self._total
            if tenth > self._shown:
                self._shown = tenth
                self._stream.write(f"{self._done}/{self._total} {self._what} ({10 * tenth}%)\n")
                self._stream.flush()

    def close(self) -> None:
        if self._tty and self._total:
            self._stream.write("\n")
            self._stream.flush()


async def import_invoices(
    parsed: ParsedFile,
    *,
    source: str,
    ledger: LedgerBooks,
    currency: str,
    start_lifecycle: LifecycleStarter | None,
    progress: Progress | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    ledger_writers: int = DEFAULT_CONCURRENCY,
) -> ImportReport:
    """Check the rows within the file and against the ledger, then (unless `start_lifecycle` is None: a dry
    run) book each invoice and signal-with-start its customer's lifecycle, `concurrency` rows at a time and at
    most `ledger_writers` of them writing to the ledger (1 for SQLite, which has one writer at a time anyway:
    more only queue on its lock, past its timeout on a slow disk).

    Booking comes first, so an invoice whose start failed is on the books, and the next run (or the daily
    sweep of the ledger) starts its lifecycle. An invoice already on the books as in the file is signalled
    again while money is owed on it (the lifecycle takes a known invoice once); a settled one is left alone.
    """
    rows, repeats, file_rejected = check_within_file(parsed.rows)
    planned, ledger_rejected = await asyncio.to_thread(check_against_ledger, rows, ledger, currency)
    report = ImportReport(
        source=source,
        dry_run=start_lifecycle is None,
        rows_read=parsed.rows_read,
        planned=planned,
        repeats=repeats,
        rejected=sorted([*parsed.rejected, *file_rejected, *ledger_rejected], key=lambda rejected: rejected.line),
        ignored_columns=parsed.ignored_columns,
    )
    if start_lifecycle is None:
        return report

    to_do = [item for item in planned if item.outcome in (Outcome.RECORDED, Outcome.ALREADY_RECORDED)]
    if progress is not None:
        progress.advance(len(planned) - len(to_do) + len(repeats) + len(report.rejected))
    slots = asyncio.Semaphore(concurrency)
    writers = asyncio.Semaphore(ledger_writers)

    async def one(item: Planned) -> None:
        row = item.row
        async with slots:
            try:
                await _book_and_start(row, ledger, writers, start_lifecycle, report)
            finally:
                if progress is not None:
                    progress.advance()

    try:
        await asyncio.gather(*(one(item) for item in to_do))
    finally:
        if progress is not None:
            progress.close()
    report.rejected.sort(key=lambda rejected: rejected.line)
    report.failed.sort(key=lambda failure: failure.line)
    return report


async def _book_and_start(
    row: InvoiceRow,
    ledger: LedgerBooks,
    writers: asyncio.Semaphore,
    start_lifecycle: LifecycleStarter,
    report: ImportReport,
) -> None:
    request = RecordInvoiceRequest(account=row.account, invoice=row.invoice, due_at=row.due_at)
    try:
        async with writers:
            await asyncio.to_thread(ledger.record_invoice, request)
    except LedgerRejection as rejection:
        report.rejected.append(Rejected(row.line, str(rejection)))
        return
    except Exception as error:  # the database busy or gone: nothing was booked, the next run books it
        report.failed.append(Failed(row.line, f"not booked, the ledger failed: {_first_line(error)}"))
        return
    try:
        await start_lifecycle(row.account, row.invoice)
    except Exception as error:  # Temporal unreachable or refusing: booked already, so the next run starts it
        report.failed.append(Failed(row.line, f"booked, but the lifecycle did not start: {_first_line(error)}"))
        return
    report.signalled.append(row.invoice.invoice_id)


def _first_line(error: Exception) -> str:
    # SQLAlchemy appends the statement and a link on further lines; the first one says what went wrong.
    return f"{error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}"
