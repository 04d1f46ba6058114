"""The ledger store on a real SQLite file and the real PostgreSQL server: allocation, idempotency,
refusals, exact amounts, disputes and their escalation, the audit trail, due-date changes and migrations."""

from __future__ import annotations

import socket
import sqlite3
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
from sqlalchemy import JSON, URL, String, column, inspect, select, table, text
from sqlalchemy.exc import OperationalError

from billing.ledger import LedgerRejection, LedgerStore
from billing.ledger.partner_payments import PartnerPaymentBook
from billing.ledger.schema import Amount, UtcDateTime, credit_notes, invoices, metadata
from billing.ledger_messages import (
    AccountBalance,
    AuditEntry,
    CreditNoteRequest,
    DisputeRecordRequest,
    EscalationCase,
    EscalationCaseRequest,
    EscalationChange,
    NoticeLogEntry,
    PartnerPaymentBooking,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    RescheduleInvoiceRequest,
    WriteOffRequest,
)
from billing.models import CustomerAccount, Invoice, NoticeKind, Payment
from billing.money import MAX_AMOUNT, Money
from billing.partner_payable import PartnerPayment
from tests.builders import cny

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


def account(customer_id: str = CUSTOMER) -> CustomerAccount:
    return CustomerAccount(
        customer_id=customer_id,
        name="Example Trading Co.",
        email="ap@example.cn",
        locale="en-US",
        tenant_id=f"tenant-{customer_id}",
    )


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
    description: str | None = None,
) -> AccountBalance:
    invoice = Invoice(
        invoice_id=invoice_id,
        customer_id=customer_id,
        amount=Money.of(amount, currency),
        issued_on=issued_on or due_on - timedelta(days=30),
        due_on=due_on,
        description=description,
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

    rejection = refused("invoice_conflict", lambda: record_invoice(ledger, "INV-1", **{**arguments, **change}))

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


def write_off(ledger: LedgerStore, write_off_id: str, invoice_id: str, amount: str | None = None) -> AccountBalance:
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
    record_invoice(ledger, "INV-3", "999999998765.19", date(2026, 3, 31))  # now owed: the largest amount

    pay(ledger, "PAY-1", "0.10", invoice_id="INV-1")
    balance = pay(ledger, "PAY-2", "0.20", invoice_id="INV-1").balance

    assert outstanding(balance)["INV-1"] == Decimal("0.00")
    by_id = {invoice.invoice_id: invoice for invoice in balance.invoices}
    assert by_id["INV-2"].amount.model_dump(mode="json") == {"amount": "1234.50", "currency": "CNY"}
    assert by_id["INV-3"].amount.amount == Decimal("999999998765.19")
    assert balance.amount_due == cny("999999999999.69")


# --- what the books cannot hold: a rejection, never an outage --------------------------------------------


def unchecked_payment(payment_id: str, amount: str, currency: str = "CNY") -> RecordPaymentRequest:
    """A payment whose amount skipped Money's checks, as a bug or another tool could hand it to the store."""
    payment = Payment.model_construct(
        payment_id=payment_id,
        customer_id=CUSTOMER,
        amount=Money.model_construct(amount=Decimal(amount), currency=currency),
        received_at=datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI),
        invoice_id=None,
    )
    return RecordPaymentRequest.model_construct(payment=payment, known_invoice_ids=[])


def unchecked_invoice(invoice_id: str, amount: str, description: str | None = None) -> RecordInvoiceRequest:
    due_on = date(2026, 2, 28)
    invoice = Invoice.model_construct(
        invoice_id=invoice_id,
        customer_id=CUSTOMER,
        amount=Money.model_construct(amount=Decimal(amount), currency="CNY"),
        issued_on=date(2026, 1, 29),
        due_on=due_on,
        due_at=None,
        description=description,
    )
    due_at = datetime.combine(due_on, datetime.max.time(), SHANGHAI)
    return RecordInvoiceRequest.model_construct(account=account(), invoice=invoice, due_at=due_at, known_invoice_ids=[])


def test_the_largest_amount_fits_the_amount_columns_and_reads_back_exactly(ledger: LedgerStore) -> None:
    column: Any = Amount.impl
    assert Decimal(10) ** (column.precision - column.scale) > MAX_AMOUNT

    balance = record_invoice(ledger, "INV-1", str(MAX_AMOUNT), date(2026, 2, 28))

    assert balance.amount_due == Money(amount=MAX_AMOUNT, currency="CNY")


# The issue's amount (beyond NUMERIC(18, 2) and SQLite's integers), one just beyond the column, one just beyond
# the bound that both columns could hold but Money could not read back.
@pytest.mark.parametrize("amount", ["99999999999999999999.00", "10000000000000000.00", "1000000000000.00"])
def test_an_amount_beyond_the_bound_reaching_the_books_is_refused_and_changes_nothing(
    ledger: LedgerStore, amount: str
) -> None:
    beyond = f"amount {amount} is beyond the largest amount the ledger books (999,999,999,999.99)"

    payment = refused("unstorable", lambda: ledger.record_payment(unchecked_payment("PAY-1", amount)))
    invoice = refused("unstorable", lambda: ledger.record_invoice(unchecked_invoice("INV-1", amount)))

    assert str(payment) == f"the ledger cannot store this in payments: {beyond}"
    assert str(invoice) == f"the ledger cannot store this in invoices: {beyond}"
    assert ledger.balance(CUSTOMER, "USD").amount_due == Money.zero("USD")  # not even the account was opened
    assert pay(ledger, "PAY-1", "10.00").unapplied == cny("10.00")


def test_a_total_beyond_the_bound_is_refused_and_changes_nothing(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "600000000000.00", date(2026, 1, 31))
    pay(ledger, "PAY-1", "600000000000.00", customer_id="cust-002")

    invoice = refused("amount_too_large", lambda: record_invoice(ledger, "INV-2", "400000000000.00", date(2026, 2, 28)))
    credit = refused("amount_too_large", lambda: pay(ledger, "PAY-2", "400000000000.00", customer_id="cust-002"))

    assert str(invoice) == (
        "customer cust-001's amount due: the sum 1,000,000,000,000.00 CNY is larger than the largest amount "
        "this engine books (999,999,999,999.99 CNY)"
    )
    assert str(credit).startswith("customer cust-002's unapplied credit: the sum 1,000,000,000,000.00 CNY")
    assert [i.invoice_id for i in ledger.balance(CUSTOMER, "CNY").invoices] == ["INV-1"]
    assert ledger.balance("cust-002", "CNY").unapplied_credit == cny("600000000000.00")
    assert record_invoice(ledger, "INV-2", "399999999999.99", date(2026, 2, 28)).amount_due == Money(
        amount=MAX_AMOUNT, currency="CNY"
    )


def test_partner_payments_beyond_the_bound_together_are_refused_before_they_are_booked(ledger: LedgerStore) -> None:
    book = PartnerPaymentBook(ledger.engine)

    def booking(payment_id: str, amount: str) -> PartnerPaymentBooking:
        payment = PartnerPayment(payment_id=payment_id, amount=cny(amount), paid_on=date(2026, 3, 2))
        return PartnerPaymentBooking(invoice_id="VI-1", payment=payment, recorded_by="partner-payable-VI-1")

    book.record(booking("PP-1", "600000000000.00"))
    rejection = refused("amount_too_large", lambda: book.record(booking("PP-2", "400000000000.00")))

    assert str(rejection).startswith("the payments against 21Vianet invoice VI-1: the sum 1,000,000,000,000.00 CNY")
    assert [payment.payment_id for payment in book.payments("VI-1")] == ["PP-1"]  # so a retry is refused again
    refused("amount_too_large", lambda: book.record(booking("PP-2", "400000000000.00")))


def test_a_rule_the_database_enforces_is_a_rejection_naming_it(ledger: LedgerStore) -> None:
    rejection = refused("unstorable", lambda: ledger.record_payment(unchecked_payment("PAY-1", "-5.00")))

    assert str(rejection).startswith("the ledger cannot store this in payments: ")
    assert "amount_positive" in str(rejection)  # the CHECK constraint's name
    assert ledger.balance(CUSTOMER, "CNY").unapplied_credit == cny("0")


def test_a_number_the_database_itself_cannot_hold_is_a_rejection_on_either_database(ledger: LedgerStore) -> None:
    # Around Money and the Amount column: what PostgreSQL (NUMERIC(18, 2) overflows) and SQLite (a 64-bit
    # integer overflows, in sqlite3 itself) say about the issue's amount, written as it is.
    sqlite = ledger.engine.dialect.name == "sqlite"
    amount = 9999999999999999999900 if sqlite else Decimal("99999999999999999999.00")
    insert = text(
        "INSERT INTO partner_payments (payment_id, invoice_id, currency, amount, paid_on, recorded_by, recorded_at) "
        "VALUES ('PP-1', 'VI-1', 'CNY', :amount, '2026-03-02', 'payable', '2026-03-02 10:00:00')"
    )

    with pytest.raises(LedgerRejection) as caught, ledger.engine.begin() as connection:
        connection.execute(insert, {"amount": amount})

    assert caught.value.code == "unstorable"
    assert str(caught.value) == "the ledger cannot store this in partner_payments: " + (
        "a number too large for the database" if sqlite else "numeric value out of range"
    )


def test_text_postgresql_cannot_hold_is_refused_there_and_booked_on_sqlite(ledger: LedgerStore) -> None:
    request = unchecked_invoice("INV-1", "100.00", description="Microsoft 365 E3\x00, November")

    if ledger.engine.dialect.name == "sqlite":
        assert ledger.record_invoice(request).amount_due == cny("100.00")
        return
    rejection = refused("unstorable", lambda: ledger.record_invoice(request))
    assert str(rejection) == (
        "the ledger cannot store this in invoices: PostgreSQL text fields cannot contain NUL (0x00) bytes"
    )
    assert ledger.balance(CUSTOMER, "CNY").invoices == []


@pytest.mark.postgres
def test_a_postgresql_server_that_cannot_be_reached_stays_an_outage(postgres_url: URL) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    store = LedgerStore.from_url(postgres_url.set(port=closed_port), migrate=False)
    try:
        with pytest.raises(OperationalError) as caught:
            store.record_payment(unchecked_payment("PAY-1", "10.00"))
    finally:
        store.close()
    assert not isinstance(caught.value, LedgerRejection)
    assert "Connection refused" in str(caught.value)


def test_a_locked_sqlite_database_stays_an_outage(tmp_path: Path) -> None:
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db?timeout=0.1")
    other_worker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other_worker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            store.record_payment(unchecked_payment("PAY-1", "10.00"))
    finally:
        other_worker.execute("ROLLBACK")
        other_worker.close()
    assert store.record_payment(unchecked_payment("PAY-1", "10.00")).unapplied == cny("10.00")  # the retry
    store.close()


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
    other_customer = ledger.log_notice(entry.model_copy(update={"customer_id": "cust-002", "message_id": "<c@b>"}))

    assert stored == again == entry == ledger.find_notice(CUSTOMER, entry.key)
    assert stored.sent_at.tzinfo is not None
    assert other_customer.message_id == "<c@b>"


# --- construction and migrations --------------------------------------------------------------------------


def test_migrating_again_changes_nothing_and_matches_the_store_tables(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    ledger.migrate()

    with ledger.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
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


def test_database_at_the_second_revision_upgrades_in_place_with_its_books(ledger_url: str | URL) -> None:
    store = LedgerStore.from_url(ledger_url, migrate=False)
    try:
        store.migrate("0002")
        record_invoice(store, "INV-1", "1000.00", date(2026, 2, 28))
        record_invoice(store, "INV-2", "100.00", date(2026, 1, 31))
        pay(store, "PAY-1", "1200.00")  # both paid, 100.00 kept as credit
        record_invoice(store, "INV-3", "500.00", date(2026, 3, 31))
        write_off(store, "WO-1", "INV-3", "50.00")
        store.log_notice(notice("invoice:INV-3", NoticeKind.INVOICE, datetime(2026, 3, 1, 9, 0, tzinfo=SHANGHAI)))
        with store.engine.begin() as connection:
            # A credit note as revision 0002 booked it: today's code would also read the column 0003 adds.
            connection.execute(
                credit_notes.insert().values(
                    credit_id="CR-OLD",
                    customer_id=CUSTOMER,
                    invoice_id="INV-3",
                    currency="CNY",
                    amount=Decimal("30.00"),
                    reason="goodwill",
                    posted_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
                )
            )
            connection.execute(
                invoices.update()
                .where(invoices.c.invoice_id == "INV-3")
                .values(credited=invoices.c.credited + Decimal("30.00"), outstanding=invoices.c.outstanding - 30)
            )
        before = store.balance(CUSTOMER, "CNY", ["INV-1", "INV-2"])
        assert "disputes" not in inspect(store.engine).get_table_names()

        store.migrate()

        assert store.balance(CUSTOMER, "CNY", ["INV-1", "INV-2"]) == before
        assert before.amount_due == cny("320.00")  # 500.00 - 100.00 credit - 50.00 written off - 30.00 credited
        with store.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata) == []
            old_credit = connection.execute(select(credit_notes).where(credit_notes.c.credit_id == "CR-OLD")).one()
        assert (old_credit.amount, old_credit.reason, old_credit.dispute_id) == (Decimal("30.00"), "goodwill", None)
        # The new books work on the old data, and the copied credit_notes table still enforces its rules.
        dispute(store, "D-1", "INV-3", "200.00")
        dispute_credit(store, "CR-NEW", "INV-3", "200.00", "D-1")
        refused("over_outstanding", lambda: credit(store, "CR-BIG", "INV-3", "120.01"))
        case = store.escalation_case(case_request("D-1", "INV-3"))
        assert [(c.credit_id, c.dispute_id) for c in case.credits] == [("CR-OLD", None), ("CR-NEW", "D-1")]
        assert [p.payment_id for p in case.payments] == ["PAY-1"]
        assert [n.key for n in case.notices] == ["invoice:INV-3"]
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


# --- disputes ---------------------------------------------------------------------------------------------

OPENED_AT = datetime(2026, 3, 5, 9, 30, tzinfo=SHANGHAI)


def dispute(
    ledger: LedgerStore,
    dispute_id: str,
    invoice_id: str,
    amount: str,
    *,
    customer_id: str = CUSTOMER,
    currency: str = "CNY",
    reason: str = "licence count does not match the order",
) -> None:
    ledger.record_dispute(
        DisputeRecordRequest(
            dispute_id=dispute_id,
            customer_id=customer_id,
            invoice_id=invoice_id,
            amount=Money.of(amount, currency),
            reason=reason,
            opened_at=OPENED_AT,
        )
    )


def dispute_credit(
    ledger: LedgerStore, credit_id: str, invoice_id: str, amount: str, dispute_id: str, customer_id: str = CUSTOMER
) -> AccountBalance:
    return ledger.post_credit_note(
        CreditNoteRequest(
            credit_id=credit_id,
            customer_id=customer_id,
            invoice_id=invoice_id,
            amount=cny(amount),
            reason="dispute settled by credit",
            dispute_id=dispute_id,
        )
    )


def test_dispute_is_kept_once_per_dispute_id(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "1000.00", date(2026, 2, 28))

    dispute(ledger, "D-1", "INV-1", "300.00")
    dispute(ledger, "D-1", "INV-1", "300.00")
    pay(ledger, "PAY-1", "900.00")  # a repeat is not re-checked against what is outstanding now
    dispute(ledger, "D-1", "INV-1", "300.00")

    rejection = refused("dispute_conflict", lambda: dispute(ledger, "D-1", "INV-1", "250.00"))
    assert "D-1" in str(rejection) and "300.00 CNY" in str(rejection)
    refused("dispute_conflict", lambda: dispute(ledger, "D-1", "INV-1", "300.00", reason="another reason"))
    case = ledger.escalation_case(EscalationCaseRequest(customer_id=CUSTOMER, dispute_id="D-1", invoice_id="INV-1"))
    assert (case.disputed_amount, case.dispute_opened_at) == (cny("300.00"), OPENED_AT)


@pytest.mark.parametrize(
    ("arguments", "code", "named"),
    [
        ({"invoice_id": "INV-404"}, "unknown_invoice", "INV-404"),
        ({"invoice_id": "INV-OTHER"}, "wrong_customer", "INV-OTHER"),
        ({"amount": "600.01"}, "over_outstanding", "600.00 CNY"),
        ({"currency": "USD"}, "currency_mismatch", "USD"),
        ({"amount": "0"}, "invalid_amount", "zero"),
    ],
)
def test_dispute_the_books_cannot_hold_is_refused_and_changes_nothing(
    ledger: LedgerStore, arguments: dict[str, str], code: str, named: str
) -> None:
    record_invoice(ledger, "INV-OTHER", "100.00", date(2026, 2, 28), customer_id="cust-002")
    record_invoice(ledger, "INV-1", "1000.00", date(2026, 2, 28))
    pay(ledger, "PAY-1", "400.00", invoice_id="INV-1")
    given = {"invoice_id": "INV-1", "amount": "300.00"} | arguments
    invoice_id, amount = given.pop("invoice_id"), given.pop("amount")

    rejection = refused(code, lambda: dispute(ledger, "D-1", invoice_id, amount, **given))

    assert named in str(rejection)
    refused("unknown_dispute", lambda: dispute_credit(ledger, "CR-1", "INV-1", "10.00", "D-1"))
    dispute(ledger, "D-1", "INV-1", "600.00")  # the refused id was not booked: the whole outstanding may be


# --- credit notes settling a dispute ----------------------------------------------------------------------


def test_credits_settling_a_dispute_never_exceed_the_disputed_amount(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "1000.00", date(2026, 2, 28))
    dispute(ledger, "D-1", "INV-1", "300.00")

    dispute_credit(ledger, "CR-1", "INV-1", "200.00", "D-1")
    rejection = refused("over_disputed", lambda: dispute_credit(ledger, "CR-2", "INV-1", "100.01", "D-1"))
    balance = dispute_credit(ledger, "CR-2", "INV-1", "100.00", "D-1")
    again = dispute_credit(ledger, "CR-2", "INV-1", "100.00", "D-1")

    assert "100.00 CNY of dispute D-1 not yet credited" in str(rejection)
    [invoice] = again.invoices
    assert (invoice.credited, invoice.outstanding) == (cny("300.00"), cny("700.00"))
    assert again == balance
    # A credit outside the dispute is bound only by what is outstanding.
    assert credit(ledger, "CR-3", "INV-1", "50.00").amount_due == cny("650.00")


def test_credit_note_reused_for_another_dispute_or_none_is_refused(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "1000.00", date(2026, 2, 28))
    dispute(ledger, "D-1", "INV-1", "300.00")
    dispute(ledger, "D-2", "INV-1", "300.00")
    dispute_credit(ledger, "CR-1", "INV-1", "100.00", "D-1")

    rejection = refused("credit_conflict", lambda: dispute_credit(ledger, "CR-1", "INV-1", "100.00", "D-2"))
    refused("credit_conflict", lambda: credit(ledger, "CR-1", "INV-1", "100.00"))

    assert "settling dispute D-1" in str(rejection)
    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("900.00")


def test_credit_settling_a_dispute_of_another_invoice_or_customer_is_refused(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "1000.00", date(2026, 2, 28))
    record_invoice(ledger, "INV-2", "500.00", date(2026, 3, 31))
    record_invoice(ledger, "INV-OTHER", "100.00", date(2026, 2, 28), customer_id="cust-002")
    dispute(ledger, "D-1", "INV-1", "300.00")
    dispute(ledger, "D-OTHER", "INV-OTHER", "100.00", customer_id="cust-002")

    refused("wrong_invoice", lambda: dispute_credit(ledger, "CR-1", "INV-2", "10.00", "D-1"))
    refused("wrong_customer", lambda: dispute_credit(ledger, "CR-1", "INV-1", "10.00", "D-OTHER"))
    refused("unknown_dispute", lambda: dispute_credit(ledger, "CR-1", "INV-1", "10.00", "D-404"))

    assert ledger.balance(CUSTOMER, "CNY").amount_due == cny("1500.00")


# --- the escalation case ----------------------------------------------------------------------------------


def notice(key: str, kind: NoticeKind, sent_at: datetime, invoice_id: str | None = "INV-1") -> NoticeLogEntry:
    return NoticeLogEntry(
        customer_id=CUSTOMER,
        key=key,
        kind=kind,
        message_id=f"<{key}@billing>",
        sent_at=sent_at,
        invoice_id=invoice_id,
    )


def disputed_account(ledger: LedgerStore) -> None:
    """INV-1 (two lines) disputed in part, partly paid, credited and written off; INV-2 paid; notices sent."""
    record_invoice(
        ledger,
        "INV-1",
        "1000.00",
        date(2026, 2, 28),
        description="Microsoft 365 E3 × 10, February\n\n  Azure consumption, February  \n",
    )
    record_invoice(ledger, "INV-2", "100.00", date(2026, 1, 31))
    pay(ledger, "PAY-1", "400.00")  # 100.00 to INV-2, 300.00 to INV-1
    dispute(ledger, "D-1", "INV-1", "500.00")
    credit(ledger, "CR-1", "INV-1", "50.00")
    dispute_credit(ledger, "CR-2", "INV-1", "100.00", "D-1")
    write_off(ledger, "WO-1", "INV-1", "20.00")
    ledger.log_notice(notice("reminder:INV-1:P1D", NoticeKind.REMINDER, datetime(2026, 3, 1, 9, 0, tzinfo=SHANGHAI)))
    ledger.log_notice(notice("invoice:INV-1", NoticeKind.INVOICE, datetime(2026, 2, 1, 9, 0, tzinfo=SHANGHAI)))
    ledger.log_notice(
        notice("dispute_received:D-1", NoticeKind.DISPUTE_RECEIVED, datetime(2026, 3, 5, 10, 0, tzinfo=SHANGHAI))
    )


def case_request(dispute_id: str = "D-1", invoice_id: str = "INV-1", customer_id: str = CUSTOMER) -> Any:
    return EscalationCaseRequest(customer_id=customer_id, dispute_id=dispute_id, invoice_id=invoice_id)


def test_escalation_case_holds_what_21vianet_needs_from_the_books(ledger: LedgerStore) -> None:
    disputed_account(ledger)
    record_invoice(ledger, "INV-3", "80.00", date(2026, 3, 31))
    pay(ledger, "PAY-2", "200.00")  # all to INV-1, due before INV-3

    case = ledger.escalation_case(case_request())

    assert case.customer.model_dump() == {
        "customer_id": CUSTOMER,
        "name": "Example Trading Co.",
        "email": "ap@example.cn",
        "locale": "en-US",
        "time_zone": "Asia/Shanghai",
        "tenant_id": "tenant-cust-001",
    }
    assert (case.invoice.invoice_id, case.invoice.amount, case.invoice.paid) == ("INV-1", cny("1000.00"), cny("500.00"))
    assert (case.invoice.credited, case.invoice.written_off) == (cny("150.00"), cny("20.00"))
    assert case.invoice.outstanding == cny("330.00")
    assert case.invoice_lines == ["Microsoft 365 E3 × 10, February", "Azure consumption, February"]
    assert [(p.payment_id, [(a.invoice_id, a.amount.amount) for a in p.allocations]) for p in case.payments] == [
        ("PAY-1", [("INV-2", Decimal("100.00")), ("INV-1", Decimal("300.00"))]),
        ("PAY-2", [("INV-1", Decimal("200.00"))]),
    ]
    assert [(c.credit_id, c.amount, c.dispute_id) for c in case.credits] == [
        ("CR-1", cny("50.00"), None),
        ("CR-2", cny("100.00"), "D-1"),
    ]
    assert [(w.credit_id, w.amount, w.reason) for w in case.write_offs] == [("WO-1", cny("20.00"), "uncollectable")]
    assert (case.dispute_id, case.disputed_amount, case.dispute_reason) == (
        "D-1",
        cny("500.00"),
        "licence count does not match the order",
    )
    assert case.dispute_opened_at == OPENED_AT
    assert [entry.key for entry in case.notices] == ["invoice:INV-1", "reminder:INV-1:P1D", "dispute_received:D-1"]


def test_escalation_case_of_an_invoice_without_description_has_no_lines(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 2, 28))
    dispute(ledger, "D-1", "INV-1", "100.00")

    case = ledger.escalation_case(case_request())

    assert (case.invoice_lines, case.payments, case.credits, case.write_offs, case.notices) == ([], [], [], [], [])


def test_escalation_case_for_an_unknown_or_mismatched_dispute_is_refused(ledger: LedgerStore) -> None:
    disputed_account(ledger)
    record_invoice(ledger, "INV-OTHER", "100.00", date(2026, 2, 28), customer_id="cust-002")

    refused("unknown_dispute", lambda: ledger.escalation_case(case_request("D-404")))
    refused("wrong_customer", lambda: ledger.escalation_case(case_request(customer_id="cust-002")))
    rejection = refused("wrong_invoice", lambda: ledger.escalation_case(case_request(invoice_id="INV-2")))

    assert "INV-1" in str(rejection) and "INV-2" in str(rejection)


# --- escalations ------------------------------------------------------------------------------------------


def change(
    change_id: str,
    status: str,
    at: datetime,
    *,
    reference: str | None = None,
    note: str | None = None,
    case: EscalationCase | None = None,
    dispute_id: str = "D-1",
    customer_id: str = CUSTOMER,
) -> EscalationChange:
    return EscalationChange.model_validate(
        {
            "change_id": change_id,
            "customer_id": customer_id,
            "dispute_id": dispute_id,
            "status": status,
            "reference": reference,
            "note": note,
            "at": at,
            "case": case,
        }
    )


def case_sent(case: EscalationCase) -> EscalationChange:
    return change(
        "D-1:case", "case_sent", datetime(2026, 3, 6, 10, 0, tzinfo=SHANGHAI), note="partner cannot verify", case=case
    )


def escalated(ledger: LedgerStore) -> EscalationCase:
    """INV-1 disputed as D-1, and its case sent to the desk on 6 March."""
    disputed_account(ledger)
    case = ledger.escalation_case(case_request())
    ledger.record_escalation(case_sent(case))
    return case


def test_escalation_goes_from_case_sent_to_filed_to_resolved_keeping_its_history(ledger: LedgerStore) -> None:
    case = escalated(ledger)
    sent = ledger.escalation("D-1")
    assert sent is not None
    assert (sent.status, sent.reference, sent.case) == ("case_sent", None, case)

    ledger.record_escalation(
        change("D-1:filed", "filed", datetime(2026, 3, 6, 15, 0, tzinfo=SHANGHAI), reference="SR-2026-0042")
    )
    filed = ledger.escalation("D-1")
    assert filed is not None and (filed.status, filed.reference) == ("filed", "SR-2026-0042")

    resolved_at = datetime(2026, 3, 12, 11, 0, tzinfo=SHANGHAI)
    ledger.record_escalation(change("D-1:resolved", "resolved", resolved_at, note="21Vianet credited 2 licences"))
    resolved = ledger.escalation("D-1")

    assert resolved is not None
    assert (resolved.dispute_id, resolved.customer_id, resolved.status) == ("D-1", CUSTOMER, "resolved")
    assert resolved.reference == "SR-2026-0042"  # the answer carried none: the filed reference stays
    assert resolved.case == case
    assert (resolved.opened_at, resolved.updated_at) == (datetime(2026, 3, 6, 10, 0, tzinfo=SHANGHAI), resolved_at)
    assert [(h.change_id, h.status, h.reference, h.note) for h in resolved.history] == [
        ("D-1:case", "case_sent", None, "partner cannot verify"),
        ("D-1:filed", "filed", "SR-2026-0042", None),
        ("D-1:resolved", "resolved", None, "21Vianet credited 2 licences"),
    ]
    assert ledger.escalation("D-404") is None


def test_repeated_escalation_changes_count_once(ledger: LedgerStore) -> None:
    case = escalated(ledger)
    filed = change("D-1:filed", "filed", datetime(2026, 3, 6, 15, 0, tzinfo=SHANGHAI), reference="SR-1")
    ledger.record_escalation(filed)

    ledger.record_escalation(filed)
    ledger.record_escalation(case_sent(case))

    record = ledger.escalation("D-1")
    assert record is not None
    assert [h.change_id for h in record.history] == ["D-1:case", "D-1:filed"]
    assert (record.status, record.reference) == ("filed", "SR-1")
    rejection = refused(
        "escalation_conflict", lambda: ledger.record_escalation(filed.model_copy(update={"reference": "SR-2"}))
    )
    assert "D-1:filed" in str(rejection)
    other_case = case.model_copy(update={"dispute_reason": "edited"})
    refused(
        "escalation_conflict",
        lambda: ledger.record_escalation(case_sent(other_case)),
    )


def test_filing_again_corrects_the_reference(ledger: LedgerStore) -> None:
    escalated(ledger)
    ledger.record_escalation(
        change("D-1:filed-1", "filed", datetime(2026, 3, 6, 15, 0, tzinfo=SHANGHAI), reference="SR-1")
    )

    ledger.record_escalation(
        change("D-1:filed-2", "filed", datetime(2026, 3, 6, 16, 0, tzinfo=SHANGHAI), reference="SR-11", note="typo")
    )

    record = ledger.escalation("D-1")
    assert record is not None
    assert (record.status, record.reference) == ("filed", "SR-11")
    assert [h.reference for h in record.history] == [None, "SR-1", "SR-11"]


@pytest.mark.parametrize("status", ["filed", "resolved"])
def test_escalation_step_for_a_dispute_never_escalated_is_refused(ledger: LedgerStore, status: str) -> None:
    disputed_account(ledger)

    rejection = refused(
        "not_escalated",
        lambda: ledger.record_escalation(
            change("D-1:x", status, datetime(2026, 3, 6, 15, 0, tzinfo=SHANGHAI), reference="SR-1")
        ),
    )

    assert "D-1 was never escalated" in str(rejection)
    assert ledger.escalation("D-1") is None


def test_escalation_changes_out_of_turn_are_refused_and_change_nothing(ledger: LedgerStore) -> None:
    case = escalated(ledger)
    at = datetime(2026, 3, 7, 9, 0, tzinfo=SHANGHAI)
    record_invoice(ledger, "INV-OTHER", "100.00", date(2026, 2, 28), customer_id="cust-002")
    dispute(ledger, "D-OTHER", "INV-OTHER", "100.00", customer_id="cust-002")

    refused("already_escalated", lambda: ledger.record_escalation(change("D-1:case-2", "case_sent", at, case=case)))
    refused("invalid_escalation", lambda: ledger.record_escalation(change("D-1:filed", "filed", at)))
    refused(
        "invalid_escalation",
        lambda: ledger.record_escalation(change("D-1:filed", "filed", at, reference="SR-1", case=case)),
    )
    refused(
        "unknown_dispute",
        lambda: ledger.record_escalation(change("D-404:case", "case_sent", at, dispute_id="D-404", case=case)),
    )
    refused(
        "wrong_customer",
        lambda: ledger.record_escalation(change("D-O:case", "case_sent", at, dispute_id="D-OTHER", case=case)),
    )
    refused(
        "invalid_escalation",
        lambda: ledger.record_escalation(
            change("D-O:case", "case_sent", at, dispute_id="D-OTHER", customer_id="cust-002", case=case)
        ),
    )
    refused(
        "invalid_escalation",
        lambda: ledger.record_escalation(
            change("D-O:case", "case_sent", at, dispute_id="D-OTHER", customer_id="cust-002")
        ),
    )

    ledger.record_escalation(change("D-1:resolved", "resolved", at, reference="SR-1"))
    refused(
        "escalation_closed",
        lambda: ledger.record_escalation(change("D-1:late", "filed", at + timedelta(days=1), reference="SR-2")),
    )
    record = ledger.escalation("D-1")
    assert record is not None
    assert (record.status, record.reference) == ("resolved", "SR-1")
    assert [h.change_id for h in record.history] == ["D-1:case", "D-1:resolved"]
    assert ledger.escalation("D-OTHER") is None


# --- the audit trail --------------------------------------------------------------------------------------


def audit(action_id: str, action: str, at: datetime, customer_id: str = CUSTOMER, **details: str) -> AuditEntry:
    return AuditEntry(
        action_id=action_id,
        customer_id=customer_id,
        action=action,
        reason=f"{action} by finance",
        details=details,
        at=at,
    )


def test_audit_trail_lists_each_operator_action_once_oldest_first(ledger: LedgerStore) -> None:
    paused = audit("wf:upd-2", "pause_dunning", datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI), until="2026-03-09")
    written_off = audit("wf:upd-1", "write_off", datetime(2026, 3, 1, 17, 0, tzinfo=SHANGHAI), invoice_id="INV-1")
    resumed = audit("wf:upd-3", "resume_dunning", datetime(2026, 3, 2, 9, 0, 1, tzinfo=UTC))

    # Before the customer has any books: operators can act on a run whose first invoice is not booked yet.
    ledger.record_audit(paused)
    ledger.record_audit(written_off)
    ledger.record_audit(resumed)
    ledger.record_audit(paused)
    ledger.record_audit(audit("wf2:upd-1", "reinstate", datetime(2026, 3, 1, tzinfo=UTC), customer_id="cust-002"))

    assert ledger.audit_trail(CUSTOMER) == [written_off, paused, resumed]
    assert ledger.audit_trail(CUSTOMER)[1].details == {"until": "2026-03-09"}
    rejection = refused(
        "audit_conflict", lambda: ledger.record_audit(paused.model_copy(update={"reason": "something else"}))
    )
    assert "wf:upd-2" in str(rejection) and "pause_dunning" in str(rejection)
    assert [entry.action_id for entry in ledger.audit_trail("cust-002")] == ["wf2:upd-1"]


def test_audit_trail_names_who_acted_and_a_different_operator_is_another_action(ledger: LedgerStore) -> None:
    at = datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI)
    by_li = audit("wf:upd-9", "write_off", at, invoice_id="INV-1").model_copy(update={"operator": "li.wei"})
    nobody = audit("wf:upd-10", "reinstate", at)

    ledger.record_audit(by_li)
    ledger.record_audit(by_li)
    ledger.record_audit(nobody)

    assert [(entry.action_id, entry.operator) for entry in ledger.audit_trail(CUSTOMER)] == [
        ("wf:upd-9", "li.wei"),
        ("wf:upd-10", None),
    ]
    assert ledger.audit_trail(CUSTOMER)[0].details == {"invoice_id": "INV-1"}  # the operator is not a detail
    refused("audit_conflict", lambda: ledger.record_audit(by_li.model_copy(update={"operator": "zhang.min"})))


def test_database_at_revision_0006_upgrades_and_book_credit_keeps_its_operator(ledger_url: str | URL) -> None:
    """book-credit kept the operator in the details before the column: the upgrade moves it into the column,
    where every other row has it."""
    store = LedgerStore.from_url(ledger_url, migrate=False)
    try:
        store.migrate("0006")
        at = datetime(2026, 3, 2, 9, 0, tzinfo=SHANGHAI)
        details = {"payment_id": "PAY-C", "amount": "300.00 CNY", "received_at": at.isoformat()}
        # The table as revision 0006 has it (today's `audit_trail` has the new column).
        old_audit_trail = table(
            "audit_trail",
            *(column(name, String) for name in ("action_id", "customer_id", "action", "reason")),
            column("details", JSON),
            column("at", UtcDateTime),
            column("recorded_at", UtcDateTime),
        )
        with store.engine.begin() as connection:
            connection.execute(
                old_audit_trail.insert().values(
                    action_id="book-credit-PAY-C",
                    customer_id=CUSTOMER,
                    action="book_credit",
                    reason="no invoice",
                    details={**details, "operator": "li.wei"},
                    at=at,
                    recorded_at=at,
                )
            )
        assert "operator" not in {column["name"] for column in inspect(store.engine).get_columns("audit_trail")}

        store.migrate()

        [entry] = store.audit_trail(CUSTOMER)
        assert (entry.operator, entry.details) == ("li.wei", details)
        store.record_audit(entry)  # as read, the row is the same action: no conflict
        with store.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata) == []
    finally:
        store.close()


# --- extending a due date ---------------------------------------------------------------------------------


def reschedule(
    ledger: LedgerStore, change_id: str, invoice_id: str, due_on: date, customer_id: str = CUSTOMER
) -> AccountBalance:
    return ledger.reschedule_invoice(
        RescheduleInvoiceRequest(
            change_id=change_id,
            customer_id=customer_id,
            invoice_id=invoice_id,
            due_on=due_on,
            due_at=datetime.combine(due_on, datetime.max.time(), SHANGHAI),
            reason="customer's finance closes late this month",
        )
    )


def test_extending_a_due_date_moves_the_invoice_once_per_change(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    record_invoice(ledger, "INV-2", "100.00", date(2026, 2, 28))

    balance = reschedule(ledger, "CH-1", "INV-1", date(2026, 3, 15))
    again = reschedule(ledger, "CH-1", "INV-1", date(2026, 3, 15))

    assert again == balance
    assert [(i.invoice_id, i.due_on) for i in balance.invoices] == [
        ("INV-2", date(2026, 2, 28)),
        ("INV-1", date(2026, 3, 15)),
    ]
    assert balance.invoices[1].due_at == datetime.combine(date(2026, 3, 15), datetime.max.time(), SHANGHAI)
    # Now due last, INV-1 is paid last.
    assert [a.invoice_id for a in pay(ledger, "PAY-1", "150.00").allocations] == ["INV-2", "INV-1"]
    refused("reschedule_conflict", lambda: reschedule(ledger, "CH-1", "INV-1", date(2026, 3, 20)))
    later = reschedule(ledger, "CH-2", "INV-1", date(2026, 3, 31))
    assert [(i.invoice_id, i.due_on) for i in later.invoices] == [("INV-1", date(2026, 3, 31))]


def test_invoice_recorded_again_after_its_due_date_moved_is_the_same_invoice(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))
    reschedule(ledger, "CH-1", "INV-1", date(2026, 2, 15))
    reschedule(ledger, "CH-2", "INV-1", date(2026, 2, 28))

    again = record_invoice(ledger, "INV-1", "100.00", date(2026, 1, 31))

    assert [(i.invoice_id, i.due_on) for i in again.invoices] == [("INV-1", date(2026, 2, 28))]
    refused("invoice_conflict", lambda: record_invoice(ledger, "INV-1", "100.00", date(2026, 2, 28)))


def test_due_date_change_the_books_cannot_make_is_refused_and_changes_nothing(ledger: LedgerStore) -> None:
    record_invoice(ledger, "INV-1", "100.00", date(2026, 2, 28))
    record_invoice(ledger, "INV-PAID", "50.00", date(2026, 1, 31))
    record_invoice(ledger, "INV-OTHER", "100.00", date(2026, 2, 28), customer_id="cust-002")
    pay(ledger, "PAY-1", "50.00", invoice_id="INV-PAID")

    refused("unknown_invoice", lambda: reschedule(ledger, "CH-1", "INV-404", date(2026, 3, 31)))
    refused("wrong_customer", lambda: reschedule(ledger, "CH-1", "INV-OTHER", date(2026, 3, 31)))
    settled = refused("nothing_outstanding", lambda: reschedule(ledger, "CH-1", "INV-PAID", date(2026, 3, 31)))
    earlier = refused("earlier_due_date", lambda: reschedule(ledger, "CH-1", "INV-1", date(2026, 2, 27)))

    assert "INV-PAID is settled" in str(settled)
    assert "2026-02-28" in str(earlier) and "2026-02-27" in str(earlier)
    assert ledger.balance(CUSTOMER, "CNY").invoices[0].due_on == date(2026, 2, 28)
    assert ledger.balance("cust-002", "CNY").invoices[0].due_on == date(2026, 2, 28)
    assert reschedule(ledger, "CH-1", "INV-1", date(2026, 3, 31)).invoices[0].due_on == date(2026, 3, 31)


# --- what a booking costs ---------------------------------------------------------------------------------


def test_a_lifecycles_bookings_build_no_select_statement_per_call(
    ledger: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a SELECT and its cache key took SQLAlchemy longer than running it: the statements every
    invoice, payment and notice runs are built once, with bound parameters."""
    record_invoice(ledger, "INV-0", "100.00", date(2026, 1, 31))  # the first of the customer: not counted
    built: list[str] = []
    for module in ("billing.ledger.books", "billing.ledger.rows", "billing.ledger.notice_log"):
        original = __import__(module, fromlist=["select"]).select

        def counting(*args: Any, _original: Any = original, _module: str = module) -> Any:
            built.append(_module)
            return _original(*args)

        monkeypatch.setattr(f"{module}.select", counting)

    balance = record_invoice(ledger, "INV-1", "1234.50", date(2026, 2, 28))
    recorded = pay(ledger, "PAY-1", "1234.50", invoice_id="INV-1")
    entry = notice("invoice-INV-1", NoticeKind.INVOICE, datetime(2026, 2, 1, 9, 0, tzinfo=SHANGHAI))
    assert ledger.find_notice(CUSTOMER, entry.key) is None
    assert ledger.log_notice(entry) == entry == ledger.find_notice(CUSTOMER, entry.key)

    assert [i.invoice_id for i in balance.invoices] == ["INV-0", "INV-1"]
    assert [a.invoice_id for a in recorded.allocations] == ["INV-1"]
    assert recorded.balance.amount_due == cny("100.00")
    assert built == []
