"""The ledger activities on a real SQLite ledger, run as Temporal runs them (`ActivityEnvironment`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import URL, text
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ledger import LedgerActivities
from billing.ledger import LedgerStore
from billing.ledger_messages import (
    AuditEntry,
    BalanceRequest,
    CreditNoteRequest,
    DisputeRecordRequest,
    EscalationCaseRequest,
    EscalationChange,
    RecordInvoiceRequest,
    RecordPaymentRequest,
    RescheduleInvoiceRequest,
    WriteOffRequest,
)
from billing.models import CustomerAccount, Invoice, Payment
from billing.money import Money

SHANGHAI = timezone(timedelta(hours=8))
ACCOUNT = CustomerAccount(customer_id="cust-001", name="Example Trading Co.", email="ap@example.cn")


def invoice_request(invoice_id: str, amount: str, due_on: date) -> RecordInvoiceRequest:
    invoice = Invoice(
        invoice_id=invoice_id,
        customer_id=ACCOUNT.customer_id,
        amount=Money.of(amount, "CNY"),
        issued_on=due_on - timedelta(days=30),
        due_on=due_on,
    )
    return RecordInvoiceRequest(
        account=ACCOUNT, invoice=invoice, due_at=datetime.combine(due_on, datetime.max.time(), SHANGHAI)
    )


def payment_request(payment_id: str, amount: str, invoice_id: str | None = None) -> RecordPaymentRequest:
    payment = Payment(
        payment_id=payment_id,
        customer_id=ACCOUNT.customer_id,
        amount=Money.of(amount, "CNY"),
        received_at=datetime(2026, 2, 1, 10, 0, tzinfo=SHANGHAI),
        invoice_id=invoice_id,
    )
    return RecordPaymentRequest(payment=payment)


@pytest.fixture
def ledger_activities(sqlite_ledger: LedgerStore) -> LedgerActivities:
    return LedgerActivities(sqlite_ledger)


def test_activities_keep_the_books_of_a_customer(ledger_activities: LedgerActivities) -> None:
    env = ActivityEnvironment()

    env.run(ledger_activities.record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31)))
    env.run(ledger_activities.record_invoice, invoice_request("INV-2", "200.00", date(2026, 2, 28)))
    recorded = env.run(ledger_activities.record_payment, payment_request("PAY-1", "120.00"))
    env.run(
        ledger_activities.post_credit_note,
        CreditNoteRequest(
            credit_id="CR-1",
            customer_id="cust-001",
            invoice_id="INV-2",
            amount=Money.of("30.00", "CNY"),
            reason="dispute settled",
        ),
    )
    env.run(
        ledger_activities.write_off_invoice,
        WriteOffRequest(
            write_off_id="WO-1",
            customer_id="cust-001",
            invoice_id="INV-2",
            amount=Money.of("10.00", "CNY"),
            reason="x",
        ),
    )
    balance = env.run(
        ledger_activities.get_balance,
        BalanceRequest(customer_id="cust-001", currency="CNY", known_invoice_ids=["INV-1"]),
    )

    assert [(a.invoice_id, str(a.amount)) for a in recorded.allocations] == [
        ("INV-1", "100.00 CNY"),
        ("INV-2", "20.00 CNY"),
    ]
    assert [(i.invoice_id, str(i.outstanding)) for i in balance.invoices] == [
        ("INV-1", "0.00 CNY"),
        ("INV-2", "140.00 CNY"),
    ]
    assert balance.amount_due == Money.of("140.00", "CNY")


def test_ledger_rejection_becomes_a_non_retryable_application_error(
    ledger_activities: LedgerActivities,
) -> None:
    env = ActivityEnvironment()
    env.run(ledger_activities.record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31)))

    with pytest.raises(ApplicationError) as caught:
        env.run(ledger_activities.record_payment, payment_request("PAY-1", "50.00", invoice_id="INV-404"))

    error = caught.value
    assert (error.type, error.non_retryable, error.details) == ("LedgerRejection", True, ("unknown_invoice",))
    assert "INV-404" in error.message
    balance = env.run(ledger_activities.get_balance, BalanceRequest(customer_id="cust-001", currency="CNY"))
    assert balance.amount_due == Money.of("100.00", "CNY")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    """The ledger on SQLite and on PostgreSQL: what each database refuses, and how, differs."""
    url: str | URL = f"sqlite:///{tmp_path}/ledger.db"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_schema_url")
    store = LedgerStore.from_url(url)
    yield store
    store.close()


def test_a_value_the_books_cannot_store_is_a_non_retryable_rejection_without_the_row(any_ledger: LedgerStore) -> None:
    # A negative amount (past Money, as a bug could pass it) breaks the invoice's CHECK constraint; PostgreSQL's
    # error then quotes the whole row, description and all, which must not reach Temporal's history.
    request = invoice_request("INV-1", "100.00", date(2026, 1, 31))
    negative = Money.model_construct(amount=Decimal("-1.00"), currency="CNY")
    invoice = Invoice.model_construct(
        **(dict(request.invoice) | {"amount": negative, "description": "call 张伟 on 13800138000"})
    )
    env = ActivityEnvironment()

    with pytest.raises(ApplicationError) as caught:
        env.run(LedgerActivities(any_ledger).record_invoice, request.model_copy(update={"invoice": invoice}))

    error = caught.value
    assert (error.type, error.non_retryable, error.details) == ("LedgerRejection", True, ("unstorable",))
    assert error.message.startswith("the ledger cannot store this in invoices: ") and "amount_positive" in error.message
    failure = Failure()
    pydantic_data_converter.failure_converter.to_failure(error, pydantic_data_converter.payload_converter, failure)
    assert "13800138000" not in str(failure) and ACCOUNT.email not in str(failure)


def test_an_over_large_amount_reaching_the_activity_is_refused_not_retried(any_ledger: LedgerStore) -> None:
    request = payment_request("PAY-1", "1.00")
    payment = Payment.model_construct(
        **(dict(request.payment) | {"amount": Money.model_construct(amount=Decimal("1e20"), currency="CNY")})
    )

    with pytest.raises(ApplicationError) as caught:
        ActivityEnvironment().run(
            LedgerActivities(any_ledger).record_payment, RecordPaymentRequest.model_construct(payment=payment)
        )

    assert (caught.value.type, caught.value.non_retryable) == ("LedgerRejection", True)
    assert caught.value.message == (
        "the ledger cannot store this in payments: amount 1E+20 is beyond the largest amount the ledger books "
        "(999,999,999,999.99)"
    )


@pytest.mark.postgres
def test_a_lost_database_is_retried_by_temporal(postgres_url: URL) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    store = LedgerStore.from_url(postgres_url.set(port=closed_port), migrate=False)

    with pytest.raises(OperationalError) as caught:
        ActivityEnvironment().run(LedgerActivities(store).record_payment, payment_request("PAY-1", "10.00"))

    # Raised as it is: Temporal retries it under the workflow's LEDGER_RETRY, as it does any outage.
    assert not isinstance(caught.value, ApplicationError)
    store.close()


@pytest.mark.postgres
def test_a_lock_timeout_is_retried_and_its_message_carries_no_personal_data(postgres_schema_url: URL) -> None:
    store = LedgerStore.from_url(postgres_schema_url)
    ActivityEnvironment().run(
        LedgerActivities(store).record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31))
    )
    options = postgres_schema_url.query["options"]
    impatient = LedgerStore.from_url(
        postgres_schema_url.update_query_dict({"options": f"{options} -clock_timeout=200"})
    )
    other_worker = store.engine.connect()
    other_worker.begin()
    other_worker.execute(text("SELECT * FROM customers WHERE customer_id = 'cust-001' FOR UPDATE"))
    try:
        with pytest.raises(OperationalError) as caught:
            ActivityEnvironment().run(
                LedgerActivities(impatient).record_invoice, invoice_request("INV-2", "100.00", date(2026, 2, 28))
            )
    finally:
        other_worker.close()
        impatient.close()
        store.close()

    assert not isinstance(caught.value, ApplicationError)  # retried: the other worker lets go in time
    assert "lock timeout" in str(caught.value)
    assert ACCOUNT.email not in str(caught.value) and ACCOUNT.name not in str(caught.value)


def test_activity_logs_carry_ids_and_no_personal_data(ledger_activities: LedgerActivities) -> None:
    env = ActivityEnvironment()

    with capture_logs() as logs:
        env.run(ledger_activities.record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31)))
        with pytest.raises(ApplicationError):
            env.run(ledger_activities.record_invoice, invoice_request("INV-1", "999.00", date(2026, 1, 31)))

    assert [(log["event"], log.get("code")) for log in logs] == [
        ("invoice_recorded", None),
        ("ledger_refused", "invoice_conflict"),
    ]
    assert all(log["invoice_id"] == "INV-1" and log["customer_id"] == "cust-001" for log in logs)
    assert ACCOUNT.name not in repr(logs) and ACCOUNT.email not in repr(logs)


def test_escalation_case_is_built_and_its_steps_recorded_through_the_activities(
    ledger_activities: LedgerActivities, sqlite_ledger: LedgerStore
) -> None:
    env = ActivityEnvironment()
    env.run(ledger_activities.record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31)))
    env.run(ledger_activities.record_payment, payment_request("PAY-1", "40.00"))
    dispute = DisputeRecordRequest(
        dispute_id="D-1",
        customer_id="cust-001",
        invoice_id="INV-1",
        amount=Money.of("60.00", "CNY"),
        reason="licence count does not match the order",
        opened_at=datetime(2026, 2, 2, 9, 0, tzinfo=SHANGHAI),
    )
    at = datetime(2026, 2, 3, 10, 0, tzinfo=SHANGHAI)

    with capture_logs() as logs:
        env.run(ledger_activities.record_dispute, dispute)
        case = env.run(
            ledger_activities.build_escalation_case,
            EscalationCaseRequest(customer_id="cust-001", dispute_id="D-1", invoice_id="INV-1"),
        )
        sent = EscalationChange(
            change_id="D-1:case", customer_id="cust-001", dispute_id="D-1", status="case_sent", at=at, case=case
        )
        # What the worker receives: the change, case included, as the pydantic data converter carries it.
        [payload] = pydantic_data_converter.payload_converter.to_payloads([sent])
        [received] = pydantic_data_converter.payload_converter.from_payloads([payload], [EscalationChange])
        env.run(ledger_activities.record_escalation, received)
        with pytest.raises(ApplicationError) as caught:
            env.run(
                ledger_activities.record_escalation,
                sent.model_copy(update={"change_id": "D-1:filed", "status": "filed", "case": None}),
            )

    assert (case.customer.name, case.disputed_amount, case.invoice.outstanding) == (
        ACCOUNT.name,
        Money.of("60.00", "CNY"),
        Money.of("60.00", "CNY"),
    )
    assert [(p.payment_id, [a.invoice_id for a in p.allocations]) for p in case.payments] == [("PAY-1", ["INV-1"])]
    assert (caught.value.details, caught.value.non_retryable) == (("invalid_escalation",), True)
    escalation = sqlite_ledger.escalation("D-1")
    assert escalation is not None and (escalation.status, escalation.case) == ("case_sent", case)
    assert [log["event"] for log in logs] == ["dispute_recorded", "escalation_recorded", "ledger_refused"]
    assert all(log["dispute_id"] == "D-1" for log in logs)
    assert ACCOUNT.name not in repr(logs) and ACCOUNT.email not in repr(logs)


def test_audit_and_due_date_activities_keep_the_operators_actions(
    ledger_activities: LedgerActivities, sqlite_ledger: LedgerStore
) -> None:
    env = ActivityEnvironment()
    env.run(ledger_activities.record_invoice, invoice_request("INV-1", "100.00", date(2026, 1, 31)))
    entry = AuditEntry(
        action_id="customer-billing-cust-001:upd-1",
        customer_id="cust-001",
        action="extend_due_date",
        reason="customer's finance closes late",
        details={"invoice_id": "INV-1", "due_on": "2026-02-15"},
        at=datetime(2026, 1, 30, 10, 0, tzinfo=SHANGHAI),
    )

    balance = env.run(
        ledger_activities.reschedule_invoice,
        RescheduleInvoiceRequest(
            change_id=entry.action_id,
            customer_id="cust-001",
            invoice_id="INV-1",
            due_on=date(2026, 2, 15),
            due_at=datetime(2026, 2, 15, 23, 59, 59, tzinfo=SHANGHAI),
            reason=entry.reason,
        ),
    )
    env.run(ledger_activities.record_audit, entry)
    env.run(ledger_activities.record_audit, entry)

    assert [(i.invoice_id, i.due_on) for i in balance.invoices] == [("INV-1", date(2026, 2, 15))]
    assert sqlite_ledger.audit_trail("cust-001") == [entry]
