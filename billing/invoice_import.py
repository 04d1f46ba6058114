"""Importing invoices from an Excel workbook (.xlsx), a CSV or a JSON-lines file: every row is checked with
the contract's models, within the file and against the ledger; by default a file with a bad row books nothing
(`skip_bad_rows` books the good ones). Each bad row is named by the row number a spreadsheet shows (the header
is a row too) and the column as the file names it. Running the same file again changes nothing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import unicodedata
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from billing.due_dates import due_moment
from billing.finance_amounts import AmountError, WrittenAmount, decimal_comma, read_amount
from billing.finance_dates import FinanceDateError, fold_full_width, parse_date, parse_moment
from billing.ledger import LedgerRejection
from billing.ledger_messages import AccountBalance, InvoiceBalance, RecordInvoiceRequest
from billing.models import DEFAULT_TIME_ZONE, CustomerAccount, Invoice
from billing.money import minor_units

FileFormat = Literal["csv", "jsonl", "xlsx"]
FORMAT_BY_SUFFIX: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}

INVOICE_FIELDS = ("invoice_id", "customer_id", "amount", "currency", "issued_on", "due_on", "due_at", "description")
ACCOUNT_FIELDS = ("customer_id", "name", "email", "locale", "time_zone", "tenant_id")
KNOWN_FIELDS = tuple(dict.fromkeys(INVOICE_FIELDS + ACCOUNT_FIELDS))
# The currency may instead stand beside each amount (`CNY 8,800.00`).
REQUIRED_COLUMNS = ("invoice_id", "customer_id", "amount", "issued_on", "due_on", "name", "email")
REQUIRED_FIELDS = (*REQUIRED_COLUMNS, "currency")

# The names a spreadsheet's header may give each field, besides the field's own: compared without case, blanks,
# underscores or hyphens, full-width letters folded. No alias for 备注 (remarks): it often holds notes for the
# finance team, and `description` is sent to the customer.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "invoice_id": ("Invoice", "Invoice No", "Invoice Number", "发票号", "发票号码", "发票编号", "账单号"),
    "customer_id": ("Customer", "Customer No", "Customer Number", "客户编号", "客户号", "客户代码", "客户ID"),
    "amount": ("Amount", "Invoice Amount", "金额", "发票金额", "应收金额", "账单金额"),
    "currency": ("Currency", "币种", "币别", "货币"),
    "issued_on": ("Issued", "Issue Date", "Invoice Date", "开票日期", "发票日期", "开具日期"),
    "due_on": ("Due", "Due Date", "到期日", "到期日期", "付款到期日"),
    "due_at": ("Due Time", "到期时间"),
    "description": ("Description", "描述", "说明", "摘要"),
    "name": ("Customer Name", "Company", "客户名称", "客户名", "公司名称"),
    "email": ("E-mail", "Email Address", "邮箱", "电子邮箱", "电子邮件", "邮件地址"),
    "locale": ("Language", "语言"),
    "time_zone": ("Time Zone", "Timezone", "时区"),
    "tenant_id": ("Tenant", "Tenant ID", "租户ID", "租户编号"),
}

# How far down a spreadsheet the header may start (a title row or two above it is common).
HEADER_SEARCH_ROWS = 10

# Enough concurrent ledger writes and signal-with-starts to hide the round trips, few enough not to crowd the
# ledger's connection pool or the frontend.
DEFAULT_CONCURRENCY = 16


class ImportFileError(ValueError):
    """The file as a whole cannot be read (an unknown encoding, no header, a required column missing)."""


def _column_key(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(char for char in folded if char not in " _-\u3000")


_FIELD_OF_COLUMN = {_column_key(alias): name for name, aliases in COLUMN_ALIASES.items() for alias in aliases} | {
    _column_key(name): name for name in KNOWN_FIELDS
}


def field_of_column(name: str) -> str | None:
    """The field a header cell names, or None for a column the import does not know."""
    return _FIELD_OF_COLUMN.get(_column_key(name)) if name else None


# --- reading and checking rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejected:
    """A row that was not imported, and why, in words that echo no personal data: `reason` follows the row
    number, e.g. `row 7, amount "8.800,00": use a dot for decimals, e.g. 8800.00`."""

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
    rows_read: int = 0  # records in the file, blank rows and the header not counted
    rows: list[InvoiceRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    unit: str = "row"  # how the file counts its records: "row" (a spreadsheet, header included) or "line"
    encoding: str | None = None  # a CSV's, as read
    skipped: list[int] = field(default_factory=list)  # title rows above the header, notes below the table


def file_format(path: Path, requested: FileFormat | None = None) -> FileFormat:
    if requested is not None:
        return requested
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise ImportFileError(f"{path.name} is an old Excel 97-2003 workbook: save it as .xlsx or CSV UTF-8")
    try:
        return FORMAT_BY_SUFFIX[suffix]
    except KeyError:
        raise ImportFileError(
            f"cannot tell the format of {path.name} from its extension: name it .xlsx, .csv, .jsonl or .ndjson, "
            "or give --format"
        ) from None


def read_invoice_file(
    path: Path,
    fmt: FileFormat,
    currency: str,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    progress: Progress | None = None,
) -> ParsedFile:
    """Read every row of the file; rows in another currency than the engine's `currency` are rejected."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImportFileError(f"cannot read {path}: {error.strerror or error}") from None
    return parse_invoices(data, fmt, currency, sheet=sheet, encoding=encoding, progress=progress)


def parse_invoices(
    data: bytes,
    fmt: FileFormat,
    currency: str,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    progress: Progress | None = None,
) -> ParsedFile:
    if fmt == "jsonl":
        text, _ = _decode(data, encoding, jsonl=True)
        return _check_rows(_parse_jsonl(text), currency, progress)
    if fmt == "xlsx":
        table = _read_xlsx(data, sheet)
        chosen = None
    else:
        if sheet is not None:
            raise ImportFileError("--sheet is for an .xlsx workbook; a CSV file has one table")
        text, chosen = _decode(data, encoding)
        table = _read_csv(text)
    parsed = _check_rows(_records_of_table(table), currency, progress)
    parsed.encoding = chosen
    return parsed


def _check_rows(records: _Records, currency: str, progress: Progress | None) -> ParsedFile:
    result = ParsedFile(
        rows_read=len(records.records) + len(records.rejected),
        rejected=list(records.rejected),
        ignored_columns=records.ignored_columns,
        unit=records.unit,
        skipped=records.skipped,
    )
    if progress is not None:
        progress.start(result.rows_read)
    comma_decimal_rows = [
        line
        for line, cells in records.records
        if isinstance(cells.get("amount"), _Cell)
        and isinstance(cells["amount"].value, str)
        and decimal_comma(cells["amount"].value)
    ]
    for line, fields in records.records:
        try:
            if records.unit == "row":
                row = row_from_cells(line, fields, comma_decimal_rows)
            else:
                row = row_from_fields(line, fields)
        except RowRejected as rejection:
            result.rejected.append(Rejected(line, str(rejection)))
            continue
        finally:
            if progress is not None:
                progress.advance()
        if row.invoice.amount.currency != currency:
            result.rejected.append(
                Rejected(line, f"amount is in {row.invoice.amount.currency}; the engine bills in {currency}")
            )
            continue
        result.rows.append(row)
    if progress is not None:
        progress.close()
    result.rejected.sort(key=lambda rejected: rejected.line)
    return result


def _decode(data: bytes, encoding: str | None, *, jsonl: bool = False) -> tuple[str, str]:
    """The text and the encoding it was read in: the one asked for; UTF-8 after a byte order mark; else UTF-8
    if every byte fits it; else GB18030 (what Excel in a Chinese locale saves a "CSV" in), which includes GBK."""
    if encoding is not None:
        try:
            return data.decode(encoding), encoding
        except LookupError:
            raise ImportFileError(f"unknown encoding {encoding!r}: give e.g. utf-8 or gb18030") from None
        except UnicodeDecodeError as error:
            raise ImportFileError(f"row {_row_at(data, error.start)} is not {encoding}: {error.reason}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError('the file is UTF-16 (Excel\'s "Unicode Text"): save it as "CSV UTF-8" instead')
    if data.startswith(b"\xef\xbb\xbf"):
        return data.decode("utf-8-sig", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as error:
        if jsonl:  # JSON text is UTF-8 (RFC 8259, section 8.1)
            line = data[: error.start].count(b"\n") + 1
            raise ImportFileError(f"line {line} is not UTF-8: JSON lines are UTF-8") from None
        utf8_error = error
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise ImportFileError(
            f"row {_row_at(data, utf8_error.start)} is neither UTF-8 nor GB18030: save the file as "
            '"CSV UTF-8", or give --encoding'
        ) from None


def _row_at(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


class RowRejected(ValueError):
    pass


@dataclass(frozen=True)
class _Cell:
    """A value as the file holds it, with the name its column has in the header."""

    label: str
    value: object


@dataclass
class _Records:
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    unit: str = "row"
    skipped: list[int] = field(default_factory=list)


@dataclass
class _Table:
    """A sheet's rows, each with the number a spreadsheet shows for it, and the rows the reader refused."""

    rows: list[tuple[int, list[object]]]
    rejected: list[Rejected] = field(default_factory=list)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _read_csv(text: str) -> _Table:
    # A row is a record, as a spreadsheet counts them: a quoted line break does not start a new row.
    table = _Table(rows=[])
    reader = csv.reader(io.StringIO(text, newline=""))
    number = 0
    while True:
        number += 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            table.rejected.append(Rejected(number, f"not a CSV row: {error}"))
            break  # the reader cannot find the next row after a broken one
        table.rows.append((number, list(values)))
    return table


def _read_xlsx(data: bytes, sheet: str | None) -> _Table:
    # openpyxl (https://openpyxl.readthedocs.io/en/stable/optimized.html): read-only mode streams the rows;
    # data_only gives a formula's value as Excel last saved it; cells with a date format come as datetime.
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError):
        raise ImportFileError("not an Excel .xlsx workbook (an .xls or a CSV renamed?): save it as .xlsx") from None
    try:
        if sheet is None:
            worksheet = workbook.worksheets[0]
        elif sheet in workbook.sheetnames:
            worksheet = workbook[sheet]
        else:
            raise ImportFileError(f"no sheet {sheet!r}; the workbook has {', '.join(map(repr, workbook.sheetnames))}")
        width = worksheet.max_column or 0
        # A sheet's rows are as wide as its widest; a short one (openpyxl reads no cells past the last) is padded.
        rows = [
            (number, [*values, *([None] * (width - len(values)))])
            for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1)
        ]
    finally:
        workbook.close()
    return _Table(rows=rows)


def _header_fields(values: Sequence[object]) -> list[str | None]:
    return [field_of_column(str(value).strip()) if not _blank(value) else None for value in values]


def _records_of_table(table: _Table) -> _Records:
    result = _Records(rejected=list(table.rejected), unit="row")
    rows = [(number, values) for number, values in table.rows if not all(_blank(value) for value in values)]
    if not rows:
        raise ImportFileError(
            "the file is empty: its first row must be the header, e.g. " + ",".join(REQUIRED_FIELDS)
        ) from None
    at = next(
        (
            index
            for index, (_, values) in enumerate(rows[:HEADER_SEARCH_ROWS])
            if set(REQUIRED_COLUMNS) <= set(_header_fields(values))
        ),
        None,
    )
    if at is None:
        # Name what is missing from the row that looks most like a header.
        index = max(range(min(len(rows), HEADER_SEARCH_ROWS)), key=lambda i: len(set(_header_fields(rows[i][1]))))
        number, values = rows[index]
        found = set(_header_fields(values))
        missing = [name for name in REQUIRED_COLUMNS if name not in found]
        raise ImportFileError(
            f"row {number}: the header lacks the column(s) {', '.join(missing)}; columns are "
            f"{', '.join(KNOWN_FIELDS)} (or their names in English or Chinese, see --help)"
        )
    header_number, header = rows[at]
    result.skipped = [number for number, _ in rows[:at]]
    labels = [str(value).strip() if not _blank(value) else "" for value in header]
    fields = _header_fields(header)
    for name in dict.fromkeys(name for name in fields if name):
        columns = [label for label, known in zip(labels, fields, strict=True) if known == name]
        if len(columns) > 1:
            same = "appears more than once" if len(set(columns)) == 1 else f"and {columns[1]} both mean {name}"
            raise ImportFileError(f"row {header_number}: column {columns[0]} {same}")
    result.ignored_columns = [label for label, known in zip(labels, fields, strict=True) if label and not known]
    body = rows[at + 1 :]
    # Notes below the table (a merged "prepared by" line, a total): rows at the end with one value only.
    while body and sum(not _blank(value) for value in body[-1][1]) <= 1:
        result.skipped.append(body.pop()[0])
    result.skipped.sort()
    width = len(header)
    for number, values in body:
        # A CSV row with values missing has them in the wrong columns too; blank cells after the last column
        # (trailing commas, a sheet's formatted but empty cells) are nothing.
        if len(values) < width or any(not _blank(value) for value in values[width:]):
            result.rejected.append(Rejected(number, f"{len(values)} values for the {width} columns of the header"))
            continue
        cells = {
            name: _Cell(label, None if _blank(value) else value)
            for label, name, value in zip(labels, fields, values[:width], strict=True)
            if name is not None
        }
        result.records.append((number, cells))
    return result


def _parse_jsonl(text: str) -> _Records:
    result = _Records(unit="line")
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
    return _models(
        line, {**{name: fields[name] for name in ACCOUNT_FIELDS if name in fields}, **invoice_fields}, _FIELD_NAMES
    )


_FIELD_NAMES = {"amount.amount": "amount", "amount.currency": "currency"}


def row_from_cells(line: int, cells: dict[str, _Cell], comma_decimal_rows: Sequence[int] = ()) -> InvoiceRow:
    """Build the contract's models from a spreadsheet row, reading its amounts and dates as finance files write
    them; `RowRejected` names every problem by the file's column name. `comma_decimal_rows` are the rows of the
    file that write decimals with a comma: there, `8,800` may mean 8.8 and is refused."""
    problems: list[str] = []
    present = {name: cell.value for name, cell in cells.items() if cell.value is not None}

    def label(name: str) -> str:
        return cells[name].label if name in cells else name

    def problem(name: str, message: str, *, echo: bool = True) -> None:
        if echo and name in present:
            problems.append(f'{label(name)} "{_shown(present[name])}": {message}')
        else:
            problems.append(f"{label(name)}: {message}")

    problems.extend(f"{label(name)}: empty" for name in REQUIRED_COLUMNS if name not in present)
    values: dict[str, Any] = {
        name: _text(present[name])
        for name in ("invoice_id", "customer_id", "name", "email", "tenant_id", "description")
        if name in present
    }
    if "locale" in present:
        locale = _LOCALES.get(_column_key(_text(present["locale"])))
        if locale is None:
            problem("locale", "zh-CN or en-US")
        else:
            values["locale"] = locale
    zone = ZoneInfo(DEFAULT_TIME_ZONE)
    if "time_zone" in present:
        values["time_zone"] = _text(present["time_zone"])
        try:
            zone = ZoneInfo(values["time_zone"])
        except (ZoneInfoNotFoundError, ValueError):
            problem("time_zone", "not an IANA time zone such as Asia/Shanghai")
            del values["time_zone"]

    currency = None
    if "currency" in present:
        code = fold_full_width(_text(present["currency"])).upper()
        code = _CURRENCY_NAMES.get(code, code)
        if len(code) == 3 and code.isalpha() and code.isascii():
            currency = code
        else:
            problem("currency", "not an ISO 4217 code such as CNY")
    if "amount" in present:
        money = _money(present["amount"], currency, "currency" in present, line, comma_decimal_rows)
        if isinstance(money, str):
            problem("amount", money)
        elif money is not None:  # None: the currency column's problem says it
            values["amount"] = money
    for name in ("issued_on", "due_on"):
        if name in present:
            try:
                values[name] = parse_date(present[name])
            except FinanceDateError as error:
                problem(name, str(error))
    if "due_at" in present:
        try:
            values["due_at"] = parse_moment(present["due_at"], zone, bare_day="end")
        except FinanceDateError as error:
            problem("due_at", str(error))
    if problems:
        raise RowRejected("; ".join(problems))
    names = {name: cell.label for name, cell in cells.items()} | {
        "amount.amount": label("amount"),
        "amount.currency": label("currency") if "currency" in cells else label("amount"),
    }
    return _models(line, values, names)


_LOCALES = {_column_key(name): locale for name, locale in (("zh-CN", "zh-CN"), ("zh_CN", "zh-CN"), ("en-US", "en-US"))}
_CURRENCY_NAMES = {"RMB": "CNY", "人民币": "CNY"}


def _money(value: object, currency: str | None, column: bool, line: int, comma_decimal_rows: Sequence[int]) -> Any:
    """The amount and currency for `Money`, or what is wrong with the cell."""
    try:
        written = read_amount(value)
    except AmountError as error:
        return str(error)
    if written.currency is not None and currency is not None and written.currency != currency:
        return f"says {written.currency}, the currency column says {currency}"
    stated = currency or written.currency
    if stated is None and column:
        return None
    if stated is None:
        if written.symbol is not None:
            may_be = " or ".join(sorted(_symbol_currencies(written)))
            return f"{written.symbol} may be {may_be}: state the currency, e.g. CNY {written.amount}"
        return f"no currency: add a currency column, or write it with the amount, e.g. CNY {written.amount}"
    if not written.allows(stated):
        return f"{written.symbol} is not {stated}"
    places = minor_units(stated)
    if written.decimals > places:
        if isinstance(value, str) and written.decimals == 3 and "," not in value:
            return (
                f"3 decimals, {stated} has {places}: a dot marks decimals; write {written.amount * 1000:.0f} "
                f"if you mean {written.amount * 1000:,.0f}"
            )
        return f"more than {places} decimals for {stated}"
    if written.comma_grouped_whole and comma_decimal_rows:
        first = next((row for row in comma_decimal_rows if row != line), comma_decimal_rows[0])
        return (
            f"row {first} writes decimals with a comma, so this may be {written.amount} or "
            f"{written.amount / 1000}: write it without the comma"
        )
    return {"amount": written.amount, "currency": stated}


def _symbol_currencies(written: WrittenAmount) -> list[str]:
    return sorted(code for code in ("CNY", "HKD", "JPY", "TWD") if written.allows(code))


def _models(line: int, values: dict[str, Any], names: dict[str, str]) -> InvoiceRow:
    problems: list[str] = []
    account = invoice = None
    try:
        account = CustomerAccount.model_validate({name: values[name] for name in ACCOUNT_FIELDS if name in values})
    except ValidationError as error:
        # customer_id problems are reported once, by the invoice
        problems.extend(_problems(error, names, skip={"customer_id"}))
    try:
        invoice = Invoice.model_validate({name: values[name] for name in INVOICE_FIELDS if name in values})
    except ValidationError as error:
        problems.extend(_problems(error, names))
    if problems or account is None or invoice is None:
        raise RowRejected("; ".join(dict.fromkeys(problems)))
    return InvoiceRow(line, account, invoice)


# Pydantic's own words for a value of the wrong type, in the operator's.
_TYPE_PROBLEMS = {
    "date": "not a date: write it as 2026-11-24",
    "datetime": "not a date and time: write it as 2026-11-24T18:00:00+08:00",
    "literal": "not one of the accepted values",
    "string": "must be text",
    "decimal": 'not an amount: write it as "8800.00"',
}


def _problems(error: ValidationError, names: dict[str, str], skip: Iterable[str] = ()) -> list[str]:
    """`refusals.problems`, with pydantic's sentences for a wrongly typed value replaced by ours."""
    found = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"])
        if where in skip:
            continue
        shown = names.get(where, where)
        kind = next((text for prefix, text in _TYPE_PROBLEMS.items() if detail["type"].startswith(prefix)), None)
        if detail["type"] == "missing":
            message = "missing"
        elif kind is not None:
            message = kind
        else:
            message = detail["msg"].removeprefix("Value error, ")
            for name in (shown, str(detail["loc"][-1]) if detail["loc"] else ""):
                message = message.removeprefix(f"{name} ") if name else message
        found.append(f"{shown}: {message}" if where else message)
    return found


def _text(value: object) -> str:
    """A cell as text: a spreadsheet may hold an id such as 1001 as a number."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return format(value, ".15g")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


def _shown(value: object) -> str:
    """A cell's value for a message (amounts, dates and codes only: never a name or an address)."""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}" if value.time() != datetime.min.time() else f"{value:%Y-%m-%d}"
    text = _text(value)
    return text if len(text) <= 40 else text[:40] + "…"


def check_within_file(
    rows: Sequence[InvoiceRow], unit: str = "row"
) -> tuple[list[InvoiceRow], list[InvoiceRow], list[Rejected]]:
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
                    f"customer {row.account.customer_id}'s details differ from {unit} {first.line} "
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
                    f"invoice {row.invoice.invoice_id} is also on {unit}(s) {others} with different content; "
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
    unit: str = "row"
    held: bool = False  # rows were rejected and `skip_bad_rows` was not given: nothing was (or would be) booked

    def count(self, outcome: Outcome) -> int:
        """Rows with this outcome, leaving out those that recording then refused or could not start."""
        if self.held:
            return 0
        dropped = {rejection.line for rejection in self.rejected} | {failure.line for failure in self.failed}
        return sum(1 for item in self.planned if item.outcome == outcome and item.row.line not in dropped)

    @property
    def exit_status(self) -> int:
        """0 all done; 2 rows were rejected (fix them and run again); 1 some lifecycles did not start (run again)."""
        if self.rejected:
            return 2
        return 1 if self.failed else 0

    def problems(self) -> list[str]:
        """One line per row that needs attention, e.g. `row 7, amount "8.800,00": use a dot for decimals, ...`."""
        found = sorted([*self.rejected, *self.failed], key=lambda problem: problem.line)
        return [f"{self.unit} {problem.line}, {problem.reason}" for problem in found]

    def render(self) -> str:
        """The summary for people: counts, and the row numbers of the rows that need attention."""
        would = "would be " if self.dry_run else ""
        lines = [
            f"{self.source}: {self.rows_read} {self.unit}s read"
            + (" (dry run: nothing was written or signalled)" if self.dry_run else "")
        ]

        def add(label: str, count: int, note: str = "") -> None:
            lines.append(f"  {label:<32}{count:>6}{note}")

        add(f"{would}recorded", self.count(Outcome.RECORDED))
        add("already recorded, still owed", self.count(Outcome.ALREADY_RECORDED))
        add("already settled, left alone", self.count(Outcome.SETTLED))
        add("repeated in the file", len(self.repeats))
        to_signal = (
            []
            if self.held
            else [item for item in self.planned if item.outcome in (Outcome.RECORDED, Outcome.ALREADY_RECORDED)]
        )
        if self.dry_run:
            customers = {item.row.account.customer_id for item in to_signal}
            add("invoices to signal", len(to_signal), f"   (starting or joining {len(customers)} lifecycles)")
        else:
            signalled = set(self.signalled)
            customers = {item.row.account.customer_id for item in to_signal if item.row.invoice.invoice_id in signalled}
            add("invoices signalled", len(signalled), f"   (starting or joining {len(customers)} lifecycles)")
        add("rejected", len(self.rejected), self._numbers(rejected.line for rejected in self.rejected))
        if self.held:
            good = sum(1 for item in self.planned if item.outcome != Outcome.SETTLED)
            add(
                "good rows, held back",
                good,
                "   (a file with a rejected row imports nothing: fix those rows and run it again, "
                "or give --skip-bad-rows to import the others now)",
            )
        if self.failed:
            add(
                "not finished",
                len(self.failed),
                self._numbers(failure.line for failure in self.failed) + " (run the import again)",
            )
        return "\n".join(lines)

    def _numbers(self, lines: Iterable[int]) -> str:
        numbers = sorted(lines)
        if not numbers:
            return ""
        more = f", … ({len(numbers) - 20} more)" if len(numbers) > 20 else ""
        return f"   {self.unit} " + ", ".join(str(n) for n in numbers[:20]) + more


class Progress:
    """Rows done, on stderr, once a step has taken longer than `quiet_for` seconds (a quick one shows
    nothing): a bar redrawn in place on a terminal, else a line at every tenth (so a CI log gets at most ten).
    Standard output, where the summary goes, is never touched, so piping the summary works as before."""

    def __init__(
        self,
        stream: TextIO,
        total: int = 0,
        what: str = "rows",
        *,
        quiet_for: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._what = what
        self._tty = stream.isatty()
        self._quiet_for = quiet_for
        self._clock = clock
        self.start(total)

    def start(self, total: int) -> None:
        """Count a step of `total` rows from now."""
        self._total = total
        self._done = 0
        self._shown = -1
        self._drawn = False
        self._started_at = self._clock()
        self._drawn_at = self._started_at - 1.0

    def advance(self, count: int = 1) -> None:
        self._done += count
        if self._total == 0:
            return
        now = self._clock()
        if now - self._started_at < self._quiet_for and self._done < self._total:
            return
        if not self._drawn and self._done >= self._total and now - self._started_at < self._quiet_for:
            return  # done within the quiet time: nothing to show
        if self._tty:
            if now - self._drawn_at >= 0.1 or self._done >= self._total:
                self._drawn_at = now
                self._drawn = True
                filled = 30 * self._done // self._total
                self._stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self._done}/{self._total} {self._what}")
                self._stream.flush()
        else:
            tenth = 10 * self._done // self._total
            if tenth > self._shown:
                self._shown = tenth
                self._drawn = True
                self._stream.write(f"{self._done}/{self._total} {self._what} ({10 * tenth}%)\n")
                self._stream.flush()

    def close(self) -> None:
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
        self._drawn = False


async def import_invoices(
    parsed: ParsedFile,
    *,
    source: str,
    ledger: LedgerBooks,
    currency: str,
    start_lifecycle: LifecycleStarter | None,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    ledger_writers: int = DEFAULT_CONCURRENCY,
) -> ImportReport:
    """Check the rows within the file and against the ledger, then (unless `start_lifecycle` is None: a dry
    run) book each invoice and signal-with-start its customer's lifecycle, `concurrency` rows at a time and at
    most `ledger_writers` of them writing to the ledger (1 for SQLite, which has one writer at a time anyway:
    more only queue on its lock, past its timeout on a slow disk).

    A file with a rejected row books nothing unless `skip_bad_rows`: the operator fixes the file and imports
    it whole. Booking comes first, so an invoice whose start failed is on the books, and the next run (or the
    daily sweep of the ledger) starts its lifecycle. An invoice already on the books as in the file is
    signalled again while money is owed on it (the lifecycle takes a known invoice once); a settled one is
    left alone.
    """
    rows, repeats, file_rejected = check_within_file(parsed.rows, parsed.unit)
    planned, ledger_rejected = await asyncio.to_thread(check_against_ledger, rows, ledger, currency)
    rejected = sorted([*parsed.rejected, *file_rejected, *ledger_rejected], key=lambda rejected: rejected.line)
    report = ImportReport(
        source=source,
        dry_run=start_lifecycle is None,
        rows_read=parsed.rows_read,
        planned=planned,
        repeats=repeats,
        rejected=rejected,
        ignored_columns=parsed.ignored_columns,
        unit=parsed.unit,
        held=bool(rejected) and not skip_bad_rows,
    )
    if start_lifecycle is None or report.held:
        return report

    to_do = [item for item in planned if item.outcome in (Outcome.RECORDED, Outcome.ALREADY_RECORDED)]
    if progress is not None:
        progress.start(len(to_do))
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
