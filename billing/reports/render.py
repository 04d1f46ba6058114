"""The reports as a person or a spreadsheet reads them: an aligned text table, CSV, or one self-contained HTML
file (inline CSS, inline SVG charts, a small inline script that sorts the columns; nothing loaded from outside).

Texts come from `templates/<locale>/labels.toml`, notice kinds from the notices' own phrases. Amounts in the
table and the HTML are grouped by thousands with the currency (`¥1,234.50`, `USD 1,234.50`); CSV keeps plain
decimal strings (`1234.50`) beside a currency column, so a spreadsheet reads them as numbers.
"""

from __future__ import annotations

import csv
import io
import tomllib
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from billing.models import STAGE_PRECEDENCE, Locale, NoticeKind
from billing.notices.branding import Branding
from billing.notices.formatting import format_amount_in, format_date, format_datetime
from billing.notices.rendering import template_environment as notice_templates
from billing.reports.aging import BUCKETS, AgingReport, AgingTable, CustomerAging
from billing.reports.collections import MONEY_KINDS, CollectionsReport

TEMPLATE_DIR = Path(__file__).parent / "templates"
FORMATS = ("table", "csv", "html")
# How many customers of each currency an aging report lists by default (the most overdue first; the totals are
# always of every customer): all in a table or CSV, 1,000 in the HTML, a page a person reads and a browser
# opens at once (100,000 customers would be some 80 MB).
DEFAULT_TOP: dict[str, int | None] = {"table": None, "csv": None, "html": 1_000}


@dataclass(frozen=True)
class ReportContext:
    """What a rendering needs besides the report: the reader's language, when it was made, the partner's
    branding, and where the Temporal UI is (each customer links to its lifecycle there)."""

    locale: Locale
    generated_at: datetime
    generated_zone: str = "Asia/Shanghai"
    branding: Branding = field(default_factory=Branding)
    temporal_ui_url: str = "http://localhost:8233"
    namespace: str = "default"


@cache
def labels(locale: Locale) -> dict[str, Any]:
    with (TEMPLATE_DIR / locale / "labels.toml").open("rb") as file:
        return tomllib.load(file)


@cache
def _notice_phrases(locale: Locale) -> Any:
    return notice_templates().get_template(f"{locale}/_phrases.txt").module


@cache
def notice_label(kind: NoticeKind | str, locale: Locale) -> str:
    """How the notices name a kind of notice (`最终付款通知`, `Final notice`)."""
    return str(_notice_phrases(locale).notice_label(str(kind))).strip()


def money_text(amount: Decimal, currency: str, locale: Locale) -> str:
    return format_amount_in(amount, currency, locale)


def workflow_url(context: ReportContext, customer_id: str) -> str:
    base = context.temporal_ui_url.rstrip("/")
    workflow_id = quote(f"customer-billing-{customer_id}", safe="")
    return f"{base}/namespaces/{quote(context.namespace, safe='')}/workflows/{workflow_id}"


def _header(context: ReportContext, title_key: str) -> list[str]:
    text = labels(context.locale)
    title = text[title_key]
    if context.branding.partner_name:
        title = f"{context.branding.partner_name} · {title}"
    moment = format_datetime(context.generated_at, context.locale, context.generated_zone)
    return [title, text["generated"].format(moment=moment)]


def aging_header(report: AgingReport, context: ReportContext) -> list[str]:
    text = labels(context.locale)
    lines = _header(context, "aging_title")
    lines.insert(1, text["as_of"].format(date=format_date(report.as_of, context.locale)))
    lines.insert(2, text["as_of_rule"])
    if report.currency:
        lines.append(text["currency_filter"].format(currency=report.currency))
    return lines


# --- aging: rows as every format shows them --------------------------------------------------------------


def _aging_columns(locale: Locale) -> list[str]:
    text = labels(locale)
    columns = text["columns"]
    return [
        columns["customer"],
        columns["customer_id"],
        columns["stage"],
        *(text["buckets"][bucket.value] for bucket in BUCKETS),
        columns["total"],
        columns["oldest_due_on"],
        columns["last_notice"],
        columns["suspended"],
        columns["open_disputes"],
    ]


def _last_notice_text(customer: CustomerAging, locale: Locale) -> str:
    last = customer.last_notice
    if last is None:
        return labels(locale)["none"]
    on = last.at.astimezone(ZoneInfo(customer.time_zone)).date()
    return f"{notice_label(last.kind, locale)} {format_date(on, locale)}"


def _aging_row(customer: CustomerAging, locale: Locale) -> list[str]:
    text = labels(locale)
    money = [money_text(customer.buckets[bucket], customer.currency, locale) for bucket in BUCKETS]
    return [
        customer.name,
        customer.customer_id,
        text["stages"][customer.stage.value],
        *money,
        money_text(customer.total, customer.currency, locale),
        format_date(customer.oldest_due_on, locale),
        _last_notice_text(customer, locale),
        text["yes"] if customer.suspended else text["no"],
        str(customer.open_disputes),
    ]


def listed(table: AgingTable, top: int | None) -> list[CustomerAging]:
    """The customers a rendering lists: the first `top` (the most overdue), or all."""
    return table.customers if top is None else table.customers[:top]


def _listed_note(table: AgingTable, top: int | None, locale: Locale) -> str | None:
    """What a rendering that lists only some customers says under their table, or None when it lists all."""
    if top is None or len(table.customers) <= top:
        return None
    return labels(locale)["listed_top"].format(listed=f"{top:,}", count=f"{len(table.customers):,}")


def _aging_totals(table: AgingTable, locale: Locale) -> list[str]:
    text = labels(locale)
    return [
        text["totals"],
        text["customers_count"].format(count=f"{len(table.customers):,}"),
        "",
        *(money_text(table.totals[bucket], table.currency, locale) for bucket in BUCKETS),
        money_text(table.total, table.currency, locale),
        "",
        "",
        str(sum(customer.suspended for customer in table.customers)),
        str(sum(customer.open_disputes for customer in table.customers)),
    ]


# --- text table -------------------------------------------------------------------------------------------


@cache
def _char_width(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text: str) -> int:
    """Columns a terminal gives `text`: CJK characters take two."""
    if text.isascii():
        return len(text)
    return sum(map(_char_width, text))


def text_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    cell_widths = [[_width(cell) for cell in row] for row in [header, *rows]]
    widths = [max(row[i] for row in cell_widths) for i in range(len(header))]

    def line(row: list[str], row_widths: list[int]) -> str:
        cells = []
        for i, cell in enumerate(row):
            gap = " " * (widths[i] - row_widths[i])
            cells.append(gap + cell if i in right else cell + gap)
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    head = line(header, cell_widths[0])
    body = [line(row, row_widths) for row, row_widths in zip(rows, cell_widths[1:], strict=True)]
    return [head, rule, *body[:-1], rule, body[-1]] if rows else [head, rule]


def aging_as_table(report: AgingReport, context: ReportContext, top: int | None = None) -> str:
    text = labels(context.locale)
    lines = aging_header(report, context)
    if not report.tables:
        lines += ["", text["no_open_invoices"]]
    right = {3, 4, 5, 6, 7, 8, 11, 12}
    for table in report.tables:
        rows = [_aging_row(customer, context.locale) for customer in listed(table, top)]
        rows.append(_aging_totals(table, context.locale))
        lines += ["", text["currency_table"].format(currency=table.currency), ""]
        lines += text_table(_aging_columns(context.locale), rows, right)
        note = _listed_note(table, top, context.locale)
        if note:
            lines += ["", note]
    return "\n".join(lines) + "\n"


# --- CSV --------------------------------------------------------------------------------------------------


def aging_as_csv(report: AgingReport, context: ReportContext, top: int | None = None) -> str:
    """One row per customer listed (all currencies in one file, a currency column); dates ISO, amounts plain."""
    text = labels(context.locale)
    columns = text["columns"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            columns["customer"],
            columns["customer_id"],
            columns["currency"],
            columns["stage"],
            *(text["buckets"][bucket.value] for bucket in BUCKETS),
            columns["total"],
            columns["oldest_due_on"],
            columns["last_notice"],
            columns["last_notice_on"],
            columns["suspended"],
            columns["open_disputes"],
        ]
    )
    for table in report.tables:
        for customer in listed(table, top):
            last = customer.last_notice
            writer.writerow(
                [
                    customer.name,
                    customer.customer_id,
                    customer.currency,
                    customer.stage.value,
                    *(str(customer.buckets[bucket]) for bucket in BUCKETS),
                    str(customer.total),
                    customer.oldest_due_on.isoformat(),
                    last.kind.value if last else "",
                    last.at.astimezone(ZoneInfo(customer.time_zone)).date().isoformat() if last else "",
                    "yes" if customer.suspended else "no",
                    customer.open_disputes,
                ]
            )
    return out.getvalue()


# --- HTML -------------------------------------------------------------------------------------------------


@cache
def _html_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        # Customer names reach the page: escaped unless a template says otherwise.
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


class HtmlCell(NamedTuple):
    text: str
    sort: str  # what the column sorts by (see `_aging_sort_keys`)
    numeric: bool


class HtmlRow(NamedTuple):
    customer_id: str
    url: str  # the customer's lifecycle in the Temporal UI
    cells: list[HtmlCell]


@dataclass(frozen=True)
class Bar:
    label: str
    amount: str
    share: float  # of the largest bar, 0..1, for the chart's geometry only


def bars(items: list[tuple[str, Decimal]], currency: str, locale: Locale) -> list[Bar]:
    largest = max((amount for _, amount in items), default=Decimal(0))
    return [
        Bar(label, money_text(amount, currency, locale), float(amount / largest) if largest else 0.0)
        for label, amount in items
    ]


# The aging columns an HTML table aligns right and sorts as numbers.
HTML_NUMERIC = frozenset({3, 4, 5, 6, 7, 8, 12})


def aging_as_html(report: AgingReport, context: ReportContext, top: int | None = DEFAULT_TOP["html"]) -> str:
    locale = context.locale
    text = labels(locale)
    tables = []
    for table in report.tables:
        bucket_bars = bars(
            [(text["buckets"][bucket.value], table.totals[bucket]) for bucket in BUCKETS], table.currency, locale
        )
        stage_bars = bars(
            [(text["stages"][s.value], table.by_stage[s]) for s in STAGE_PRECEDENCE if s in table.by_stage],
            table.currency,
            locale,
        )
        rows = [
            HtmlRow(
                customer.customer_id,
                workflow_url(context, customer.customer_id),
                [
                    HtmlCell(cell, sort, index in HTML_NUMERIC)
                    for index, (cell, sort) in enumerate(
                        zip(_aging_row(customer, locale), _aging_sort_keys(customer), strict=True)
                    )
                ],
            )
            for customer in listed(table, top)
        ]
        tables.append(
            {
                "currency": table.currency,
                "rows": rows,
                "listed_note": _listed_note(table, top, locale),
                "totals": _aging_totals(table, locale),
                "bucket_bars": bucket_bars,
                "stage_bars": stage_bars,
                "total": money_text(table.total, table.currency, locale),
            }
        )
    return (
        _html_environment()
        .get_template("aging.html")
        .render(
            lang=locale,
            text=text,
            header=aging_header(report, context),
            columns=_aging_columns(locale),
            numeric=HTML_NUMERIC,
            tables=tables,
            branding=context.branding,
        )
    )


def _aging_sort_keys(customer: CustomerAging) -> list[str]:
    """What a column sorts by: amounts and counts as numbers, dates ISO, texts as shown."""
    last = customer.last_notice
    return [
        customer.name,
        customer.customer_id,
        str(STAGE_PRECEDENCE.index(customer.stage)),
        *(str(customer.buckets[bucket]) for bucket in BUCKETS),
        str(customer.total),
        customer.oldest_due_on.isoformat(),
        last.at.isoformat() if last else "",
        "1" if customer.suspended else "0",
        str(customer.open_disputes),
    ]


Listing = int | Literal["all", "default"]


def render_aging(report: AgingReport, context: ReportContext, output_format: str, top: Listing = "default") -> str:
    """The report in `output_format`, listing the `top` most overdue customers of each currency ("all", or
    "default": the format's `DEFAULT_TOP`); the totals and charts are of every customer whatever it lists."""
    listed_top = DEFAULT_TOP[output_format] if top == "default" else None if top == "all" else top
    if output_format == "csv":
        return aging_as_csv(report, context, listed_top)
    if output_format == "html":
        return aging_as_html(report, context, listed_top)
    return aging_as_table(report, context, listed_top)


# --- collections ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionsSection:
    title: str
    header: list[str]
    rows: list[list[str]]


def collections_sections(report: CollectionsReport, locale: Locale) -> list[CollectionsSection]:
    text = labels(locale)
    notices = [[notice_label(kind, locale), f"{report.notices.get(kind.value, 0):,}"] for kind in NoticeKind]
    accounts = [
        [text["suspensions"], f"{report.suspensions:,}"],
        [text["suspensions_by_operator"], f"{report.suspensions_by_operator:,}"],
        [text["reinstatements"], f"{report.reinstatements:,}"],
        [text["reinstatements_by_operator"], f"{report.reinstatements_by_operator:,}"],
    ]
    money = [
        [
            text["money"][kind],
            currency,
            money_text(report.amounts[currency][kind], currency, locale),
            f"{report.entries[currency][kind]:,}",
        ]
        for currency in sorted(report.amounts)
        for kind in MONEY_KINDS
    ]
    disputes = [
        [text["disputes_opened"], f"{report.disputes_opened:,}"],
        [text["disputes_escalated"], f"{report.disputes_escalated:,}"],
        [text["disputes_resolved"], f"{report.disputes_resolved:,}"],
    ]
    columns = text["columns"]
    return [
        CollectionsSection(text["section_notices"], [columns["kind"], text["count"]], notices),
        CollectionsSection(text["section_accounts"], ["", text["count"]], accounts),
        CollectionsSection(text["section_money"], ["", columns["currency"], text["amount"], text["entries"]], money),
        CollectionsSection(text["section_disputes"], ["", text["count"]], disputes),
    ]


def collections_header(report: CollectionsReport, context: ReportContext) -> list[str]:
    text = labels(context.locale)
    lines = _header(context, "collections_title")
    start, end = (format_date(day, context.locale) for day in (report.period_from, report.period_to))
    lines.insert(1, text["period"].format(start=start, end=end))
    if report.currency:
        lines.append(text["currency_filter"].format(currency=report.currency))
    return lines


def collections_as_table(report: CollectionsReport, context: ReportContext) -> str:
    text = labels(context.locale)
    lines = collections_header(report, context)
    for section in collections_sections(report, context.locale):
        lines += ["", section.title, ""]
        if not section.rows:
            lines.append(text["no_money"])
            continue
        right = set(range(1, len(section.header))) - ({1} if len(section.header) == 4 else set())
        table = text_table(section.header, section.rows, right)
        # No totals row in these tables: drop the rule before the last row.
        lines += [row for index, row in enumerate(table) if index != len(table) - 2 or len(table) <= 2]
    return "\n".join(lines) + "\n"


def collections_as_csv(report: CollectionsReport, context: ReportContext) -> str:
    """`section,item,currency,amount,count` rows with stable keys (`notices,final_notice,,,3`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "item", "currency", "amount", "count"])
    for kind in NoticeKind:
        writer.writerow(["notices", kind.value, "", "", report.notices.get(kind.value, 0)])
    for item, count in (
        ("suspensions", report.suspensions),
        ("suspensions_by_operator", report.suspensions_by_operator),
        ("reinstatements", report.reinstatements),
        ("reinstatements_by_operator", report.reinstatements_by_operator),
    ):
        writer.writerow(["accounts", item, "", "", count])
    for currency in sorted(report.amounts):
        for kind in MONEY_KINDS:
            writer.writerow(
                ["money", kind, currency, str(report.amounts[currency][kind]), report.entries[currency][kind]]
            )
    for item, count in (
        ("opened", report.disputes_opened),
        ("escalated", report.disputes_escalated),
        ("resolved", report.disputes_resolved),
    ):
        writer.writerow(["disputes", item, "", "", count])
    return out.getvalue()


def collections_as_html(report: CollectionsReport, context: ReportContext) -> str:
    text = labels(context.locale)
    return (
        _html_environment()
        .get_template("collections.html")
        .render(
            lang=context.locale,
            text=text,
            header=collections_header(report, context),
            sections=collections_sections(report, context.locale),
            branding=context.branding,
        )
    )


def render_collections(report: CollectionsReport, context: ReportContext, output_format: str) -> str:
    if output_format == "csv":
        return collections_as_csv(report, context)
    if output_format == "html":
        return collections_as_html(report, context)
    return collections_as_table(report, context)


def default_as_of(now: datetime, zone: str) -> date:
    return now.astimezone(ZoneInfo(zone)).date()
