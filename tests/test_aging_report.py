"""The aging and collections reports against a seeded book of 1,000 customers (SQLite and PostgreSQL): the report's
totals equal sums computed here from the seeded rows, the edges of the buckets and of the books (due at the
as-of moment, partial payments, credit notes, write-offs, paid invoices, two currencies, another time zone), the
collections counts equal the seeded events, and the aging costs at most two SQL queries."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import URL, event

from billing.due_dates import due_moment
from billing.ledger import LedgerStore
from billing.ledger_messages import (
    AuditEntry,
    CreditNoteRequest,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    WriteOffRequest,
)
from billing.models import BillingStage, CustomerAccount, Invoice, Payment
from billing.money import Money
from billing.reports.aging import AgingReport, Bucket, aging_report
from billing.reports.collections import collections_report
from billing.reports.render import ReportContext, render_aging, render_collections
from tests.aging_book import AS_OF, PERIOD, Seeded, expected_totals, seed_book

REPO = Path(__file__).resolve().parent.parent
SHANGHAI = "Asia/Shanghai"
NEW_YORK = "America/New_York"
GENERATED = datetime(2026, 4, 1, 1, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | URL:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    url: URL = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def ledger(ledger_url: str | URL) -> Iterator[LedgerStore]:
    store = LedgerStore.from_url(ledger_url)
    yield store
    store.close()


# --- edge cases booked through the ledger's own API -------------------------------------------------------


def _book_invoice(
    store: LedgerStore,
    customer_id: str,
    invoice_id: str,
    amount: str,
    due_on: date,
    *,
    zone: str = SHANGHAI,
    currency: str = "CNY",
    due_at: datetime | None = None,
) -> None:
    account = CustomerAccount(
        customer_id=customer_id, name=f"Edge {customer_id}", email="ap@edge.example.cn", time_zone=zone
    )
    invoice = Invoice(
        invoice_id=invoice_id,
        customer_id=customer_id,
        amount=Money.of(amount, currency),
        issued_on=due_on - timedelta(days=30),
        due_on=due_on,
        due_at=due_at,
    )
    store.record_invoice(
        RecordInvoiceRequest(account=account, invoice=invoice, due_at=due_at or due_moment(due_on, ZoneInfo(zone)))
    )


def book_edges(store: LedgerStore) -> None:
    as_of = AS_OF
    # Due exactly at the as-of moment (the end of the as-of date in Shanghai), and one second later.
    _book_invoice(store, "E-EXACT", "E-EXACT-1", "100.00", as_of)
    _book_invoice(
        store,
        "E-EXACT",
        "E-EXACT-2",
        "1.00",
        as_of,
        due_at=due_moment(as_of, ZoneInfo(SHANGHAI)) + timedelta(seconds=1),
    )
    # 45 days overdue, 1,000.00 less a payment of 300.00.
    _book_invoice(store, "E-PARTIAL", "E-PARTIAL-1", "1000.00", as_of - timedelta(days=45))
    received = datetime(2026, 3, 5, 12, tzinfo=UTC)
    store.record_payment(
        RecordPaymentRequest(
            payment=Payment(
                payment_id="E-PAY-1", customer_id="E-PARTIAL", amount=Money.of("300.00", "CNY"), received_at=received
            )
        )
    )
    # 75 days overdue, 500.00 less a credit note of 200.00.
    _book_invoice(store, "E-CREDIT", "E-CREDIT-1", "500.00", as_of - timedelta(days=75))
    store.post_credit_note(
        CreditNoteRequest(
            credit_id="E-CN-1",
            customer_id="E-CREDIT",
            invoice_id="E-CREDIT-1",
            amount=Money.of("200.00", "CNY"),
            reason="service credit",
        )
    )
    # 120 days overdue: 800.00 less a write-off of 50.00; and a second invoice written off whole.
    _book_invoice(store, "E-WRITE", "E-WRITE-1", "800.00", as_of - timedelta(days=120))
    _book_invoice(store, "E-WRITE", "E-WRITE-2", "60.00", as_of - timedelta(days=10))
    store.write_off(
        WriteOffRequest(
            write_off_id="E-WO-1",
            customer_id="E-WRITE",
            invoice_id="E-WRITE-1",
            amount=Money.of("50.00", "CNY"),
            reason="goodwill",
        )
    )
    store.write_off(
        WriteOffRequest(write_off_id="E-WO-2", customer_id="E-WRITE", invoice_id="E-WRITE-2", reason="uncollectable")
    )
    # Paid in full: absent.
    _book_invoice(store, "E-PAID", "E-PAID-1", "250.00", as_of - timedelta(days=40))
    store.record_payment(
        RecordPaymentRequest(
            payment=Payment(
                payment_id="E-PAY-2", customer_id="E-PAID", amount=Money.of("250.00", "CNY"), received_at=received
            )
        )
    )
    # New York: due at 20:00 New York time on the as-of date, which is already the next day in Shanghai. The end of
    # the as-of date in New York is four hours later, so it is overdue (1 day); aged in Shanghai's zone it would not
    # be due yet. Another due 31 days before the as-of date across the US change to summer time (8 March 2026).
    ny_due = datetime(2026, 3, 31, 20, tzinfo=ZoneInfo(NEW_YORK))
    _book_invoice(store, "E-NY", "E-NY-1", "70.00", as_of, zone=NEW_YORK, currency="USD", due_at=ny_due)
    _book_invoice(store, "E-NY", "E-NY-2", "30.00", as_of - timedelta(days=31), zone=NEW_YORK, currency="USD")


EDGE_TOTALS = {
    "CNY": {
        "not_due": Decimal("1.00"),
        "1_30": Decimal("100.00"),
        "31_60": Decimal("700.00"),
        "61_90": Decimal("300.00"),
        "over_90": Decimal("750.00"),
    },
    "USD": {
        "not_due": Decimal(0),
        "1_30": Decimal("70.00"),
        "31_60": Decimal("30.00"),
        "61_90": Decimal(0),
        "over_90": Decimal(0),
    },
}


def _totals(report: AgingReport) -> dict[str, dict[str, Decimal]]:
    return {
        table.currency: {bucket.value: amount for bucket, amount in table.totals.items()} for table in report.tables
    }


def _add(*parts: dict[str, dict[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
    result: dict[str, dict[str, Decimal]] = {}
    for part in parts:
        for currency, buckets in part.items():
            into = result.setdefault(currency, Counter())  # type: ignore[arg-type]
            for bucket, amount in buckets.items():
                into[bucket] = into.get(bucket, Decimal(0)) + amount
    return {currency: dict(buckets) for currency, buckets in result.items()}


@pytest.fixture
def seeded(ledger: LedgerStore) -> Seeded:
    book = seed_book(ledger, 1_000)
    book_edges(ledger)
    return book


# --- aging ------------------------------------------------------------------------------------------------


def test_aging_bucket_totals_equal_independent_sums_of_the_seeded_rows(ledger: LedgerStore, seeded: Seeded) -> None:
    report = aging_report(ledger.engine, AS_OF)

    expected = _add(expected_totals(seeded), EDGE_TOTALS)
    assert _totals(report) == expected
    assert [table.currency for table in report.tables] == ["CNY", "USD"]  # never one table of both
    for table in report.tables:
        assert table.total == sum(expected[table.currency].values())
        assert sum(table.by_stage.values()) == table.total
        assert sum(customer.total for customer in table.customers) == table.total
    # Every bucket holds money in the seeded book, both currencies.
    assert all(amount > 0 for amount in expected["CNY"].values())
    assert all(amount > 0 for amount in expected_totals(seeded)["USD"].values())
    owing = {i.customer_id for i in seeded.invoices if i.outstanding > 0}
    listed = {c.customer_id for table in report.tables for c in table.customers}
    assert listed - owing == {"E-EXACT", "E-PARTIAL", "E-CREDIT", "E-WRITE", "E-NY"}
    assert owing <= listed


def test_aging_edges_per_customer(ledger: LedgerStore, seeded: Seeded) -> None:
    report = aging_report(ledger.engine, AS_OF)
    rows = {c.customer_id: c for table in report.tables for c in table.customers}

    def buckets(customer_id: str) -> dict[str, Decimal]:
        return {bucket.value: amount for bucket, amount in rows[customer_id].buckets.items() if amount}

    assert buckets("E-EXACT") == {"1_30": Decimal("100.00"), "not_due": Decimal("1.00")}
    assert buckets("E-PARTIAL") == {"31_60": Decimal("700.00")}
    assert buckets("E-CREDIT") == {"61_90": Decimal("300.00")}
    assert buckets("E-WRITE") == {"over_90": Decimal("750.00")}
    assert "E-PAID" not in rows
    assert buckets("E-NY") == {"1_30": Decimal("70.00"), "31_60": Decimal("30.00")}
    assert rows["E-NY"].currency == "USD" and rows["E-NY"].time_zone == NEW_YORK
    assert rows["E-EXACT"].stage is BillingStage.OVERDUE
    assert rows["E-PARTIAL"].oldest_due_on == AS_OF - timedelta(days=45)


def test_aging_reads_suspension_disputes_and_notices_from_the_books(ledger: LedgerStore, seeded: Seeded) -> None:
    report = aging_report(ledger.engine, AS_OF)
    rows = {c.customer_id: c for table in report.tables for c in table.customers}

    assert {c for c, row in rows.items() if row.suspended} == seeded.suspended
    assert {c: row.open_disputes for c, row in rows.items() if row.open_disputes} == seeded.open_disputes
    for customer_id in seeded.suspended:
        assert rows[customer_id].stage is BillingStage.SUSPENDED
    # C-000006: final notice sent for its oldest invoice, nothing else going on.
    assert rows["C-000006"].stage is BillingStage.FINAL_NOTICE
    assert rows["C-000006"].last_notice is not None and rows["C-000006"].last_notice.kind == "final_notice"
    # C-000038: disputed and escalated, not suspended (38 % 17 != 0), not resolved (38 % 57 != 0).
    assert rows["C-000038"].stage is BillingStage.ESCALATED
    assert rows["C-000019"].stage is BillingStage.DISPUTED


def test_aging_filters_one_currency(ledger: LedgerStore, seeded: Seeded) -> None:
    report = aging_report(ledger.engine, AS_OF, currency="USD")

    assert [table.currency for table in report.tables] == ["USD"]
    assert _totals(report) == {"USD": _add(expected_totals(seeded), EDGE_TOTALS)["USD"]}


def test_aging_issues_at_most_two_sql_queries(ledger: LedgerStore, seeded: Seeded) -> None:
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(ledger.engine, "before_cursor_execute", count)
    try:
        aging_report(ledger.engine, AS_OF)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", count)
    queries = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "ROLLBACK", "COMMIT"))]
    assert len(queries) <= 2, queries


def test_workers_write_while_a_report_reads_and_the_report_reads_one_state_of_the_books(ledger: LedgerStore) -> None:
    book_edges(ledger)
    written: list[str] = []

    def write_meanwhile(conn: object, cursor: object, statement: str, *args: object) -> None:
        # Right after the report's first query, its read still open: a worker books an invoice. On SQLite a
        # report holding the write lock (BEGIN IMMEDIATE), or a reader blocking commits (no WAL), makes this
        # wait for sqlite3's timeout and fail with "database is locked".
        if not written and statement.lstrip().upper().startswith("SELECT"):
            written.append(statement)
            _book_invoice(ledger, "E-MEANWHILE", "E-MEANWHILE-1", "10.00", AS_OF - timedelta(days=5))

    event.listen(ledger.engine, "after_cursor_execute", write_meanwhile)
    try:
        report = aging_report(ledger.engine, AS_OF)
    finally:
        event.remove(ledger.engine, "after_cursor_execute", write_meanwhile)

    assert written
    # The invoices query came after the write: the report still shows the books as they were when it began.
    assert "E-MEANWHILE" not in {c.customer_id for table in report.tables for c in table.customers}
    again = aging_report(ledger.engine, AS_OF)
    assert "E-MEANWHILE" in {c.customer_id for table in again.tables for c in table.customers}


def test_aging_stage_is_paused_while_an_operators_pause_lasts(ledger: LedgerStore) -> None:
    as_of_moment = due_moment(AS_OF, ZoneInfo(SHANGHAI))
    paused_at = as_of_moment - timedelta(days=3)

    def pause(customer_id: str, action: str, at: datetime, **details: str) -> None:
        _book_invoice(ledger, customer_id, f"{customer_id}-1", "100.00", AS_OF - timedelta(days=20))
        ledger.record_audit(
            AuditEntry(
                action_id=f"{action}-{customer_id}-{at.isoformat()}",
                customer_id=customer_id,
                action=action,
                reason="customer asked for time",
                details=details,
                at=at,
            )
        )

    pause("E-PAUSED", "pause_dunning", paused_at)
    pause("E-PAUSED-LATER", "pause_dunning", paused_at, until=(as_of_moment + timedelta(hours=1)).isoformat())
    pause("E-PAUSE-OVER", "pause_dunning", paused_at, until=as_of_moment.isoformat())
    pause("E-RESUMED", "pause_dunning", paused_at)
    ledger.record_audit(
        AuditEntry(
            action_id="resume-E-RESUMED",
            customer_id="E-RESUMED",
            action="resume_dunning",
            reason="promise broken",
            at=paused_at + timedelta(days=1),
        )
    )
    report = aging_report(ledger.engine, AS_OF)
    stages = {c.customer_id: c.stage for table in report.tables for c in table.customers}

    assert stages == {
        "E-PAUSED": BillingStage.PAUSED,
        "E-PAUSED-LATER": BillingStage.PAUSED,
        # A pause ends at its `until`: at the as-of moment itself it is over.
        "E-PAUSE-OVER": BillingStage.OVERDUE,
        "E-RESUMED": BillingStage.OVERDUE,
    }


# --- collections ------------------------------------------------------------------------------------------


def test_collections_counts_match_the_seeded_events(ledger: LedgerStore, seeded: Seeded) -> None:
    report = collections_report(ledger.engine, *PERIOD)

    in_period = [e for e in seeded.events if seeded.in_period(e)]
    kinds = Counter(e.kind for e in in_period)
    notice_kinds = {"invoice", "reminder", "final_notice", "suspension", "close_the_loop"}
    assert dict(report.notices) == {kind: kinds[kind] for kind in notice_kinds if kinds[kind]}
    assert report.suspensions == kinds["suspension_started"] == kinds["suspension"] > 0
    assert report.reinstatements == kinds["reinstatement"] > 0
    assert report.reinstatements_by_operator == sum(1 for e in in_period if e.kind == "reinstatement" and e.by_operator)
    assert report.disputes_opened == kinds["dispute_opened"] > 0
    assert report.disputes_escalated == kinds["escalated"] > 0
    assert report.disputes_resolved == kinds["resolved"] > 0
    expected_money: dict[str, dict[str, Decimal]] = {}
    for e in in_period:
        if e.kind in ("collected", "written_off", "credited"):
            assert e.currency is not None and e.amount is not None
            by_kind = expected_money.setdefault(
                e.currency, {"collected": Decimal(0), "written_off": Decimal(0), "credited": Decimal(0)}
            )
            by_kind[e.kind] += e.amount
    # The edge customers: the payments of 5 March and the credit note and write-offs booked now (not in March).
    expected_money["CNY"]["collected"] += Decimal("550.00")
    assert report.amounts == expected_money
    # Events outside the period were seeded too, and left out.
    assert len(in_period) < len(seeded.events)


# --- rendering and the command line -----------------------------------------------------------------------


def test_zh_cn_table_starts_with_the_title_the_as_of_rule_and_the_totals(ledger: LedgerStore) -> None:
    book_edges(ledger)
    report = aging_report(ledger.engine, AS_OF)
    text = render_aging(report, ReportContext(locale="zh-CN", generated_at=GENERATED), "table")
    lines = text.splitlines()

    assert lines[0] == "应收账款账龄报告"
    assert lines[1] == "截至2026年3月31日：各客户所在时区当日24:00。"
    assert "恰在该时刻到期的账单计为逾期1天" in lines[2]
    total_line = next(line for line in lines if line.startswith("合计"))
    assert "¥1,851.00" in total_line  # 1.00 + 100.00 + 700.00 + 300.00 + 750.00, with a thousands separator
    assert "USD 100.00" in text


def test_csv_has_plain_amounts_and_a_currency_per_row(ledger: LedgerStore) -> None:
    book_edges(ledger)
    report = aging_report(ledger.engine, AS_OF)
    rows = list(
        csv.DictReader(io.StringIO(render_aging(report, ReportContext(locale="en-US", generated_at=GENERATED), "csv")))
    )

    by_id = {row["Customer ID"]: row for row in rows}
    assert by_id["E-PARTIAL"]["31–60 days"] == "700.00"
    assert by_id["E-NY"]["Currency"] == "USD"
    assert sum(Decimal(row["Total"]) for row in rows if row["Currency"] == "CNY") == Decimal("1851.00")


def test_html_is_one_file_that_loads_nothing_from_outside(ledger: LedgerStore) -> None:
    book_edges(ledger)
    report = aging_report(ledger.engine, AS_OF)
    context = ReportContext(
        locale="en-US", generated_at=GENERATED, temporal_ui_url="http://ui.example:8233", namespace="billing"
    )
    html = render_aging(report, context, "html")

    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert "@import" not in html and "url(" not in html
    assert 'href="http://ui.example:8233/namespaces/billing/workflows/customer-billing-E-NY"' in html
    assert "<svg" in html and "¥1,851.00" in html


def test_a_listing_of_the_most_overdue_keeps_the_totals_of_every_customer(ledger: LedgerStore) -> None:
    book_edges(ledger)
    report = aging_report(ledger.engine, AS_OF)
    context = ReportContext(locale="en-US", generated_at=GENERATED)
    cny = report.table("CNY")
    assert cny is not None and len(cny.customers) == 4

    html = render_aging(report, context, "html", top=2)
    table = render_aging(report, context, "table", top=2)
    rows = list(csv.DictReader(io.StringIO(render_aging(report, context, "csv", top=2))))

    cny_html = html.split('data-currency="CNY"')[1].split("</section>")[0]
    # The two with the most overdue: E-WRITE (750.00) and E-PARTIAL (700.00); not E-CREDIT (300.00), E-EXACT.
    assert re.findall(r'<tr data-customer-id="([^"]+)"', cny_html) == ["E-WRITE", "E-PARTIAL"]
    assert "¥1,851.00" in cny_html.split("<tfoot>")[1] and "4 customers" in cny_html
    assert "Listed: the 2 of 4 customers with the most overdue" in cny_html
    assert "Listed:" not in html.split('data-currency="USD"')[1]  # one USD customer: all listed, no note
    assert "E-CREDIT" not in table and "¥1,851.00" in table and "Listed: the 2 of 4 customers" in table
    assert [row["Customer ID"] for row in rows] == ["E-WRITE", "E-PARTIAL", "E-NY"]
    # The HTML's default lists 1,000 per currency; a table or CSV lists every customer unless told otherwise.
    assert render_aging(report, context, "html") == render_aging(report, context, "html", top=1_000)
    assert render_aging(report, context, "table") == render_aging(report, context, "table", top="all")


def test_report_command_reads_the_ledger_named_by_billing_ledger_url(tmp_path: Path) -> None:
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    book_edges(store)
    store.close()
    out = tmp_path / "aging.html"
    env = {**os.environ, "BILLING_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db", "BILLING_PARTNER_NAME": "Lotus Cloud"}
    starter = [sys.executable, str(REPO / "starter.py")]
    table = subprocess.run(
        [*starter, "report", "aging", "--as-of", "2026-03-31", "--locale", "en-US"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert table.stdout.splitlines()[0] == "Lotus Cloud · Accounts receivable aging"
    subprocess.run(
        [*starter, "report", "aging", "--as-of", "2026-03-31", "--format", "html", "--top", "2", "--out", str(out)],
        env=env,
        check=True,
    )
    assert "Lotus Cloud" in out.read_text(encoding="utf-8")
    assert out.read_text(encoding="utf-8").count('<tr data-customer-id="') == 3  # 2 of 4 in CNY, 1 in USD
    refused = subprocess.run([*starter, "report", "aging", "--top", "none"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "neither a number of customers" in refused.stderr
    collections = subprocess.run(
        [*starter, "report", "collections", "--from", "2026-03-01", "--to", "2026-03-31", "--format", "csv"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "money,collected,CNY,550.00,2" in collections.stdout
    missing = subprocess.run(
        [*starter, "report", "aging"],
        env={**env, "BILLING_LEDGER_URL": f"sqlite:///{tmp_path}/none.db"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "there is no ledger" in missing.stderr
    assert not (tmp_path / "none.db").exists()


def test_collections_renders_in_both_languages(ledger: LedgerStore) -> None:
    book_edges(ledger)
    report = collections_report(ledger.engine, *PERIOD)
    zh = render_collections(report, ReportContext(locale="zh-CN", generated_at=GENERATED), "table")
    en = render_collections(report, ReportContext(locale="en-US", generated_at=GENERATED), "html")

    assert zh.splitlines()[0] == "催收报告" and "¥550.00" in zh
    assert "Collected (payments)" in en and "<script" not in en


def test_as_of_rule_is_the_end_of_the_day_in_the_customers_zone() -> None:
    from billing.reports.aging import as_of_moment, bucket_of, days_overdue

    zone = ZoneInfo(SHANGHAI)
    moment = as_of_moment(date(2026, 3, 31), zone)
    assert moment == datetime(2026, 4, 1, tzinfo=zone)
    assert days_overdue(moment, moment, zone) == 1
    assert bucket_of(True, 30) is Bucket.DAYS_1_30 and bucket_of(True, 31) is Bucket.DAYS_31_60
    assert bucket_of(True, 90) is Bucket.DAYS_61_90 and bucket_of(True, 91) is Bucket.OVER_90
    assert bucket_of(False, 0) is Bucket.NOT_DUE


def test_aging_bench_runs_on_a_tiny_book_with_at_most_two_queries(tmp_path: Path) -> None:
    from bench.aging_bench import main, run

    (result,) = run(30, postgres=False)
    assert result.queries <= 2 and result.listed > 0
    assert main(["--customers", "20", "--out", str(tmp_path / "aging.md")]) == 0
    assert "| SQLite | 20 |" in (tmp_path / "aging.md").read_text(encoding="utf-8")
