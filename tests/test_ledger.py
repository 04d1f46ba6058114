"""The ledger store on a real SQLite file and the real PostgreSQL server: allocation, idempotency,
refusals, exact amounts and migrations."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import URL, inspect

from billing.ledger import LedgerRejection, LedgerStore
from billing.ledger.schema import metadata
from billing.models import CustomerAccount, Invoice, NoticeKind, Payment
from billing.money import Money
from billing.ports import (
    AccountBalance,
    CreditNoteRequest,
    NoticeLogEntry,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    WriteOffRequest,
)

SHANGHAI = timezone(timedelta(hours=8))
CUSTOMER = "cust-001"


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


def cny(amount: str) -> Money:
    return Money.of(amount, "CNY")


def account(customer_id: str = CUSTOMER) -> CustomerAccount:
    return CustomerAccount(customer_id=customer_id, name="Example Trading Co.", email="ap@example.cn")


def record_invoice(
    ledger: LedgerStore,
    invoice_id: str,
    amount: str,
    due_on: date,
    *,
    customer_id: str = CUSTOMER,
    currency: str = "CNY",
    issued_on: date | None = None,
    known: list[str] | None = None,
) -> AccountBalance:
    invoice = Invoice(
        invoice_id=invoice_id,
        customer_id=customer_id,
        amount=Money.of(amount, currency),
        issued_on=issued_on or due_on - timedelta(days=30),
        due_on=due_on,
    )
    due_at = datetime.combine(due_on, datetime.max.time(), SHANGHAI)
    return ledger.record_invoice(
        RecordInvoiceRequest(
            account=account(customer_id), invoice=invoice, due_at=due_at, known_invoice_ids=known or []
        )
    )


def pay(
    ledger: LedgerStore,
    payment_id: str,
    amount: str,
    *,
    invoice_id: str | None = None,
    customer_id: str = CUSTOMER,
    currency: str = "CNY",
    known: list[str] | None = None,
) -> Any:
    payment = Payment(
        payment_id=payment_id,
        customer_id=customer_id,
        amount=Money.of(amount, currency),
        received_at=datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI),
        invoice_id=invoice_id,
    )
    return ledger.record_payment(RecordPaymentRequest(payment=payment, known_invoice_ids=known or []))


def outstanding(balance: AccountBalance) -> dict[str, Decimal]:
    return {invoice.invoice_id: invoice.outstanding.amount for invoice in balance.invoices}


def refused(code: str, action: Callable[[], object]) -> LedgerRejection:
    with pytest.raises(LedgerRejection) as caught:
        action()
    assert caught.value.code == code, str(caught.value)
    return caught.value


# --- allocation -------------------------------------------------------------------------------------------


def test_payment_without_an_invoice_pays_open_invoices_oldest_due_first(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-MAR", "300.00", date(2026, 3, 31))
    record_invoice(ledger, "INV-JAN", "100.00", date(2026, 1, 31))
    record_invoice(ledger, "INV-FEB", "200.00", date(2026, 2, 28))

    recorded = pay(ledger, "PAY-1", "250.00")

    assert [(a.invoice_id, a.amount) for a in recorded.allocations] == [
        ("INV-JAN", cny("100.00")),
        ("INV-FEB", cny("150.00")),
    ]
    # INV-JAN is settled, but listed because this payment paid it.
    assert outstanding(recorded.balance) == {
        "INV-JAN": Decimal("0.00"),
        "INV-FEB": Decimal("50.00"),
        "INV-MAR": Decimal("300.00"),
    }
    assert recorded.balance.amount_due == cny("350.00")
    assert recorded.unapplied == cny("0.00")


def test_invoices_due_at_the_same_moment_are_paid_by_issue_date_then_invoice_id(ledger: LedgerStore) -> None:
    due = date(2026, 2, 28)
    record_invoice(ledger, "INV-B", "10.00", due, issued_on=date(2026, 1, 1))
    record_invoice(ledger, "INV-A", "10.00", due, issued_on=date(2026, 1, 1))
    record_invoice(ledger, "INV-0", "10.00", due, issued_on=date(2026, 1, 5))

    recorded = pay(ledger, "PAY-1", "25.00")

    assert [(a.invoice_id, a.amount.amount) for a in recorded.allocations] == [
        ("INV-A", Decimal("10.00")),
        ("INV-B", Decimal("10.00")),
        ("INV-0", Decimal("5.00")),
    ]


def test_payment_naming_an_invoice_pays_it_first_and_the_rest_oldest_first(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-JAN", "100.00", date(2026, 1, 31))
    record_invoice(ledger, "INV-FEB", "200.00", date(2026, 2, 28))
    record_invoice(ledger, "INV-MAR", "300.00", date(2026, 3, 31))

    recorded = pay(ledger, "PAY-1", "350.00", invoice_id="INV-MAR")

    assert [(a.invoice_id, a.amount.amount) for a in recorded.allocations] == [
        ("INV-MAR", Decimal("300.00")),
        ("INV-JAN", Decimal("50.00")),
    ]
    assert outstanding(recorded.balance) == {
        "INV-JAN": Decimal("50.00"),
        "INV-FEB": Decimal("200.00"),
        "INV-MAR": Decimal("0.00"),
    }


def test_partial_payment_leaves_the_rest_of_the_invoice_outstanding(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "1000.00", date(2026, 2, 28))

    recorded = pay(ledger, "PAY-1", "400.00")

    [invoice] = recorded.balance.invoices
    assert (invoice.paid, invoice.outstanding) == (cny("400.00"), cny("600.00"))
    assert recorded.balance.amount_due == cny("600.00")
    assert recorded.balance.unapplied_credit == cny("0.00")


def test_overpayment_is_kept_as_credit_and_applied_to_the_next_invoice(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    recorded = pay(ledger, "PAY-1", "180.00")
    assert recorded.unapplied == cny("80.00")
    assert recorded.balance.unapplied_credit == cny("80.00")
    assert recorded.balance.amount_due == cny("0.00")
    assert recorded.balance.invoices[0].invoice_id == "INV-1"  # paid by this payment, so listed

    after_next = record_invoice(ledger, "INV-2", "50.00", date(2026, 2, 28))
    assert after_next.amount_due == cny("0.00")
    assert after_next.unapplied_credit == cny("30.00")
    [second] = after_next.invoices
    assert (second.invoice_id, second.paid, second.outstanding) == ("INV-2", cny("50.00"), cny("0.00"))

    after_third = record_invoice(ledger, "INV-3", "70.00", date(2026, 3, 31))
    assert after_third.amount_due == cny("40.00")
    assert after_third.unapplied_credit == cny("0.00")


def test_payment_before_any_invoice_waits_as_credit_for_the_first_invoice(ledger: LedgerStore) -> None:
    recorded = pay(ledger, "PAY-EARLY", "60.00")
    assert recorded.allocations == []
    assert recorded.balance.unapplied_credit == cny("60.00")

    balance = record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    assert outstanding(balance) == {"INV-1": Decimal("40.00")}
    assert balance.unapplied_credit == cny("0.00")


def test_repeated_payment_id_is_counted_once(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    record_invoice(ledger, "INV-2", "100.00", date(2026, 2, 28))
    first = pay(ledger, "PAY-1", "150.00")

    again = pay(ledger, "PAY-1", "150.00")

    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.allocations == first.allocations
    assert again.unapplied == first.unapplied
    assert again.balance == first.balance
    assert again.balance.amount_due == cny("50.00")


def test_payment_id_reused_with_another_amount_is_refused(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    pay(ledger, "PAY-1", "40.00")

    rejection = refused("payment_conflict", lambda: pay(ledger, "PAY-1", "45.00"))

    assert "PAY-1" in str(rejection)
    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("60.00")


def test_racing_workers_book_a_payment_once(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    start = threading.Barrier(6)

    def racer(_: int) -> bool:
        start.wait()
        return bool(pay(ledger, "PAY-1", "30.00").duplicate)

    with ThreadPoolExecutor(max_workers=6) as pool:
        duplicates = list(pool.map(racer, range(6)))

    assert sorted(duplicates) == [False] + [True] * 5
    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("70.00")


def test_racing_payments_of_one_customer_never_overpay_an_invoice(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    start = threading.Barrier(5)

    def racer(number: int) -> None:
        start.wait()
        pay(ledger, f"PAY-{number}", "30.00")

    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(racer, range(5)))

    balance = ledger.balance(CUSTOMER, "CNY", ["INV-1"])
    assert (balance.invoices[0].paid, balance.amount_due) == (cny("100.00"), cny("0.00"))
    assert balance.unapplied_credit == cny("50.00")


# --- invoices ---------------------------------------------------------------------------------------------


def test_invoice_recorded_again_unchanged_changes_nothing(ledger: LedgerStore) -> None:
    first = record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    pay(ledger, "PAY-1", "30.00")

    again = record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    assert again.amount_due == cny("70.00")
    assert [i.invoice_id for i in again.invoices] == [i.invoice_id for i in first.invoices] == ["INV-1"]


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"amount": "120.00"}, "amount"),
        ({"due_on": date(2026, 2, 15)}, "due date"),
        ({"customer_id": "cust-002"}, "customer"),
    ],
)
def test_invoice_id_reused_with_other_content_is_refused(
    ledger: LedgerStore, change: dict[str, Any], what: str
) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31), issued_on=date(2026, 1, 1))
    arguments: dict[str, Any] = {
        "amount": "100.00",
        "due_on": date(2026, 1, 31),
        "issued_on": date(2026, 1, 1),
    }

    rejection = refused(
        "invoice_conflict", lambda: record_invoice(ledger, "INV-1", **{**arguments, **change})
    )

    assert what in str(rejection)
    assert ledger.balance(CUSTOMER, "CNY").invoices[0].amount == cny("100.00")
    assert ledger.balance("cust-002", "CNY").invoices == []


def test_yen_invoice_recorded_again_is_the_same_invoice(ledger: LedgerStore) -> None:
    first = record_invoice(ledger, "INV-JP", "1200", date(2026, 1, 31), customer_id="cust-jp", currency="JPY")

    again = record_invoice(ledger, "INV-JP", "1200", date(2026, 1, 31), customer_id="cust-jp", currency="JPY")

    assert again == first
    assert again.amount_due.model_dump(mode="json") == {"amount": "1200", "currency": "JPY"}


def test_invoice_in_another_currency_than_the_account_is_refused(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    refused(
        "currency_mismatch",
        lambda: record_invoice(ledger, "INV-2", "100.00", date(2026, 2, 28), currency="USD"),
    )

    assert [i.invoice_id for i in ledger.balance(CUSTOMER, "CNY").invoices] == ["INV-1"]


# --- refused payments -------------------------------------------------------------------------------------


def test_payment_naming_an_unknown_invoice_is_refused_and_changes_nothing(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    rejection = refused("unknown_invoice", lambda: pay(ledger, "PAY-1", "100.00", invoice_id="INV-404"))

    assert "INV-404" in str(rejection)
    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("100.00")
    assert pay(ledger, "PAY-1", "100.00").duplicate is False  # the refused id was not booked


def test_payment_naming_another_customers_invoice_is_refused(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-OTHER", "100.00", date(2026, 1, 31), customer_id="cust-002")
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    refused("wrong_customer", lambda: pay(ledger, "PAY-1", "100.00", invoice_id="INV-OTHER"))

    assert ledger.balance("cust-002", "CNY").amount_due == cny("100.00")
    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("100.00")


def test_payment_in_another_currency_is_refused(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    rejection = refused("currency_mismatch", lambda: pay(ledger, "PAY-1", "100.00", currency="USD"))

    assert "CNY" in str(rejection) and "USD" in str(rejection)
    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("100.00")


# --- credit notes and write-offs --------------------------------------------------------------------------


def credit(ledger: LedgerStore, credit_id: str, invoice_id: str, amount: str) -> AccountBalance:
    return ledger.post_credit_note(
        CreditNoteRequest(
            credit_id=credit_id,
            customer_id=CUSTOMER,
            invoice_id=invoice_id,
            amount=cny(amount),
            reason="dispute",
        )
    )


def write_off(
    ledger: LedgerStore, write_off_id: str, invoice_id: str, amount: str | None = None
) -> AccountBalance:
    return ledger.write_off(
        WriteOffRequest(
            write_off_id=write_off_id,
            customer_id=CUSTOMER,
            invoice_id=invoice_id,
            amount=None if amount is None else cny(amount),
            reason="uncollectable",
        )
    )


def test_credit_note_reduces_outstanding_once_per_credit_id(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    credit(ledger, "CR-1", "INV-1", "30.00")
    balance = credit(ledger, "CR-1", "INV-1", "30.00")

    [invoice] = balance.invoices
    assert (invoice.credited, invoice.outstanding) == (cny("30.00"), cny("70.00"))
    refused("credit_conflict", lambda: credit(ledger, "CR-1", "INV-1", "35.00"))


def test_credit_note_above_outstanding_is_refused(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    pay(ledger, "PAY-1", "80.00")

    refused("over_outstanding", lambda: credit(ledger, "CR-1", "INV-1", "20.01"))
    balance = credit(ledger, "CR-1", "INV-1", "20.00")

    assert balance.amount_due == cny("0.00")
    assert outstanding(balance) == {"INV-1": Decimal("0.00")}  # no longer open, but the one credited


def test_credit_note_for_an_unknown_invoice_is_refused(ledger: LedgerStore) -> None:
    refused("unknown_invoice", lambda: credit(ledger, "CR-1", "INV-404", "10.00"))


def test_write_off_without_an_amount_writes_off_everything_outstanding(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    pay(ledger, "PAY-1", "35.50")

    balance = write_off(ledger, "WO-1", "INV-1")
    again = write_off(ledger, "WO-1", "INV-1")

    [invoice] = again.invoices
    assert (invoice.written_off, invoice.outstanding) == (cny("64.50"), cny("0.00"))
    assert again == balance
    refused("nothing_outstanding", lambda: write_off(ledger, "WO-2", "INV-1"))


def test_partial_write_off_and_refusal_above_outstanding(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    refused("over_outstanding", lambda: write_off(ledger, "WO-1", "INV-1", "100.01"))
    balance = write_off(ledger, "WO-1", "INV-1", "25.00")

    assert balance.amount_due == cny("75.00")
    refused("write_off_conflict", lambda: write_off(ledger, "WO-1", "INV-1", "30.00"))
    refused("over_outstanding", lambda: write_off(ledger, "WO-2", "INV-1", "75.01"))


# --- balances ---------------------------------------------------------------------------------------------


def test_customer_without_books_has_a_zero_balance_in_the_given_currency(ledger: LedgerStore) -> None:
    balance = ledger.balance("cust-new", "HKD", ["INV-1"])

    assert balance == AccountBalance(
        customer_id="cust-new",
        currency="HKD",
        unapplied_credit=Money.zero("HKD"),
        amount_due=Money.zero("HKD"),
    )


def test_balance_lists_open_invoices_and_known_settled_ones_oldest_first(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-2", "200.00", date(2026, 2, 28))
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    record_invoice(ledger, "INV-3", "300.00", date(2026, 3, 31))
    pay(ledger, "PAY-1", "300.00")

    assert [i.invoice_id for i in ledger.balance(CUSTOMER, "CNY").invoices] == ["INV-3"]
    known = ledger.balance(CUSTOMER, "CNY", ["INV-2", "INV-404"])
    assert [i.invoice_id for i in known.invoices] == ["INV-2", "INV-3"]
    assert known.amount_due == cny("300.00")


def test_due_moment_is_returned_aware_in_utc(ledger: LedgerStore) -> None:
    balance = record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    due_at = balance.invoices[0].due_at
    assert due_at.utcoffset() == timedelta(0)
    assert due_at == datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=SHANGHAI)
    assert balance.invoices[0].due_on == date(2026, 1, 31)


def test_amounts_are_exact_decimals(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "0.30", date(2026, 1, 31))
    record_invoice(ledger, "INV-2", "1234.50", date(2026, 2, 28))
    record_invoice(ledger, "INV-3", "99999999999999.99", date(2026, 3, 31))

    pay(ledger, "PAY-1", "0.10", invoice_id="INV-1")
    balance = pay(ledger, "PAY-2", "0.20", invoice_id="INV-1").balance

    assert outstanding(balance)["INV-1"] == Decimal("0.00")
    by_id = {invoice.invoice_id: invoice for invoice in balance.invoices}
    assert by_id["INV-2"].amount.model_dump(mode="json") == {"amount": "1234.50", "currency": "CNY"}
    assert by_id["INV-3"].amount.amount == Decimal("99999999999999.99")
    assert balance.amount_due == cny("100000000001234.49")


# --- the notice log ---------------------------------------------------------------------------------------


def test_notice_log_keeps_the_first_entry_per_customer_and_key(ledger: LedgerStore) -> None:
    sent_at = datetime(2026, 2, 3, 9, 0, tzinfo=SHANGHAI)
    entry = NoticeLogEntry(
        customer_id=CUSTOMER,
        key="reminder:INV-1:P1D",
        kind=NoticeKind.REMINDER,
        message_id="<a@b>",
        sent_at=sent_at,
    )
    assert ledger.find_notice(CUSTOMER, entry.key) is None

    stored = ledger.log_notice(entry)
    again = ledger.log_notice(entry.model_copy(update={"message_id": "<retry@b>"}))
    other_customer = ledger.log_notice(
        entry.model_copy(update={"customer_id": "cust-002", "message_id": "<c@b>"})
    )

    assert stored == again == entry == ledger.find_notice(CUSTOMER, entry.key)
    assert stored.sent_at.tzinfo is not None
    assert other_customer.message_id == "<c@b>"


# --- construction and migrations --------------------------------------------------------------------------


def test_migrating_again_changes_nothing_and_matches_the_store_tables(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    ledger.migrate()

    with ledger.engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), metadata
        )
    assert differences == []
    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("100.00")


def test_database_at_the_first_revision_upgrades_in_place(ledger_url: str | URL) -> None:
    store = LedgerStore.from_url(ledger_url, migrate=False)
    try:
        store.migrate("0001")
        sent_at = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
        entry = NoticeLogEntry(
            customer_id=CUSTOMER,
            key="invoice:INV-1",
            kind=NoticeKind.INVOICE,
            message_id="<m@b>",
            sent_at=sent_at,
        )
        store.log_notice(entry)
        assert "invoices" not in inspect(store.engine).get_table_names()

        store.migrate()

        assert store.find_notice(CUSTOMER, entry.key) == entry
        assert record_invoice(store, "INV-1", "100.00", date(2026, 1, 31)).amount_due == cny("100.00")
    finally:
        store.close()


def test_sqlite_ledger_creates_its_folder(tmp_path: Path) -> None:
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/var/ledger.db")
    try:
        assert (tmp_path / "var" / "ledger.db").is_file()
        assert store.balance(CUSTOMER, "CNY").amount_due == cny("0.00")
    finally:
        store.close()


@pytest.mark.postgres
def test_plain_postgresql_url_uses_psycopg(postgres_schema_url: URL) -> None:
    store = LedgerStore.from_url(postgres_schema_url.set(drivername="postgresql").render_as_string(False))
    try:
        assert store.engine.dialect.driver == "psycopg"
        assert store.find_notice(CUSTOMER, "nothing") is None
    finally:
        store.close()
