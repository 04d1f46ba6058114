"""21Vianet's invoices to the partner: `GET /v1/invoices` against the emulator (paging, amounts, currency), and
`track_partner_invoices` starting one `PartnerPayable` per plain invoice with money owed, idempotently, and none
for void notes, adjustment notes, credit notes or amendments."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.partner_center import (
    PartnerCenterClient,
    UnreadableInvoice,
    document_type,
    not_a_bill,
    partner_invoice,
)
from activities.partner_payables import PartnerPayableActivities
from billing.devtools.partner_center_emulator import PartnerCenterEmulator, invoice_resource
from billing.ledger.partner_payments import PartnerPaymentBook
from billing.ledger.store import LedgerStore
from billing.ledger_messages import PartnerPaymentBooking
from billing.money import Money
from billing.partner_center_messages import TrackPartnerInvoicesRequest
from billing.partner_payable import PartnerPayableStatus, PartnerPayment
from tests.builders import SHANGHAI
from tests.temporal_fixtures import EngineFactory


def client_for(emulator: PartnerCenterEmulator) -> PartnerCenterClient:
    return PartnerCenterClient(emulator.base_url, emulator.token_url, emulator.client_id, emulator.client_secret)


async def test_every_page_of_invoices_is_read_with_exact_amounts_and_each_invoices_own_currency(
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    partner_center_emulator.seed_invoices(
        [
            invoice_resource("G1", date(2026, 8, 1), "98000.00", "CNY", paid="98000.00"),
            invoice_resource("G2", date(2026, 9, 1), "45600.10", "CNY", paid="10000.00"),
            invoice_resource("G3", date(2026, 10, 1), "52300.00", "CNY"),
            invoice_resource("G4", date(2026, 10, 5), "1200.00", "USD", invoice_type="OneTime"),
            invoice_resource("G5", date(2026, 11, 1), "0.30", "CNY"),
        ]
    )
    async with client_for(partner_center_emulator) as client:
        resources = await client.list_partner_invoices("partner-sweep-test", page_size=100)

    assert [resource["id"] for resource in resources] == ["G1", "G2", "G3", "G4", "G5"]
    pages = partner_center_emulator.api_requests("GET")
    assert [request.path for request in pages] == ["/v1/invoices"] * 3  # the emulator serves two a page
    assert len({request.header("MS-CorrelationId") for request in pages}) == len(pages)  # one for every call
    invoices = [partner_invoice(resource) for resource in resources]
    assert invoices[0].paid == Money.of("98000.00", "CNY")  # Partner Center shows the payment negative
    assert invoices[1].amount == Money.of("45600.10", "CNY")
    assert invoices[1].due_on == date(2026, 10, 1)
    assert invoices[3].amount == Money.of("1200.00", "USD")
    assert invoices[3].invoice_type == "OneTime"
    assert invoices[4].amount.amount == Decimal("0.30")


def test_an_invoice_without_a_currency_is_unreadable_not_assumed_to_be_yuan() -> None:
    resource = invoice_resource("G9", date(2026, 10, 1), "100.00", "CNY")
    del resource["currencyCode"]

    with pytest.raises(UnreadableInvoice, match="invoice G9 has no currencyCode"):
        partner_invoice(resource)


def test_the_emulator_serves_demo_invoices_one_paid_one_overdue_one_not_in_yuan_and_documents_that_are_not_bills() -> (
    None
):
    emulator = PartnerCenterEmulator()
    today = date.today()

    documents = emulator.invoices()
    invoices = [partner_invoice(resource) for resource in documents if not_a_bill(resource) is None]

    assert any(invoice.paid == invoice.amount for invoice in invoices)
    assert any(invoice.due_on < today and invoice.paid < invoice.amount for invoice in invoices)
    assert any(invoice.currency != "CNY" for invoice in invoices)
    assert {document_type(resource) for resource in documents} == {"invoice", "void_note", "credit_note"}


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("invoice", "invoice"),
        ("Invoice", "invoice"),
        ("void_note", "void_note"),  # the wire, as in "Get a collection of invoices"
        ("VoidNote", "void_note"),  # the SDK's enum member
        ("adjustment_note", "adjustment_note"),
        ("Credit Note", "credit_note"),  # the Invoice resource's reference
        ("CreditNote", "credit_note"),
        (None, "invoice"),  # no documentType: read as an invoice, as before
    ],
)
def test_every_spelling_partner_center_uses_for_a_document_type_reads_the_same(written: str | None, read: str) -> None:
    resource = invoice_resource("G1", date(2026, 10, 1), "100.00", "CNY")
    resource["documentType"] = written

    assert document_type(resource) == read


def test_only_a_plain_invoice_is_a_bill_and_a_document_of_an_unknown_type_is_left_for_a_person() -> None:
    def document(kind: str, amends_of: str | None = None) -> dict[str, Any]:
        return invoice_resource("G2", date(2026, 10, 1), "100.00", "CNY", document_type=kind, amends_of=amends_of)

    assert not_a_bill(document("invoice")) is None
    assert not_a_bill(document("void_note")) == "a void note"
    assert not_a_bill(document("adjustment_note", "G1")) == "an adjustment note of G1"
    assert not_a_bill(document("Credit Note", "G1")) == "a credit note of G1"
    assert not_a_bill(document("invoice", "G1")) == "an amendment of G1"
    with pytest.raises(UnreadableInvoice, match="documentType 'tax_receipt' is not one this engine knows"):
        not_a_bill(document("tax_receipt"))


async def test_tracking_twice_starts_each_owed_invoice_once_and_never_one_that_is_paid(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    partner_center_emulator: PartnerCenterEmulator,
    tmp_path: Path,
) -> None:
    env = time_skipping_env
    today = (await env.get_current_time()).astimezone(SHANGHAI).date()
    partner_center_emulator.seed_invoices(
        [
            invoice_resource("T-PAID", today - timedelta(days=60), "98000.00", "CNY", paid="98000.00"),
            invoice_resource("T-OWED", today - timedelta(days=10), "52300.00", "CNY", paid="2300.00"),
            invoice_resource("T-USD", today - timedelta(days=5), "1200.00", "USD", invoice_type="OneTime"),
            invoice_resource("T-BOOKED", today - timedelta(days=40), "500.00", "CNY"),
        ]
    )
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    book = PartnerPaymentBook(store.engine)
    # Paid in full on our books (its payable finished long ago), though Partner Center does not show it yet.
    book.record(
        PartnerPaymentBooking(
            invoice_id="T-BOOKED",
            payment=PartnerPayment(payment_id="TT-0", amount=Money.of("500.00", "CNY"), paid_on=today),
            recorded_by="partner-payable-T-BOOKED",
        )
    )
    async with engine_factory(env.client) as engine, client_for(partner_center_emulator) as partner_center:
        engine.started.update({"partner-payable-T-OWED", "partner-payable-T-USD"})
        tracker = PartnerPayableActivities(partner_center, env.client, engine.settings.task_queue, book)
        request = TrackPartnerInvoicesRequest(correlation_id="daily-sweep-test")

        first = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
        second = await ActivityEnvironment().run(tracker.track_partner_invoices, request)

        assert first.seen == 4
        assert sorted(first.started) == ["T-OWED", "T-USD"]
        assert sorted(first.settled) == ["T-BOOKED", "T-PAID"]
        assert second.started == []
        assert sorted(second.already_tracked) == ["T-OWED", "T-USD"]
        owed = env.client.get_workflow_handle("partner-payable-T-OWED")
        status: Any = await owed.query("status", result_type=PartnerPayableStatus)
        assert status.amount_due == Money.of("50000.00", "CNY")
        usd: Any = await env.client.get_workflow_handle("partner-payable-T-USD").query(
            "status", result_type=PartnerPayableStatus
        )
        assert usd.amount_due == Money.of("1200.00", "USD")

        # Paid in full: the payable completes, and a later sweep does not start it again.
        await owed.execute_update(
            "record_partner_payment",
            {"payment_id": "TT-1", "amount": {"amount": "50000.00", "currency": "CNY"}, "paid_on": str(today)},
        )
        await owed.result()
        third = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
    store.close()

    assert "T-OWED" in third.already_tracked
    assert third.started == []


async def test_void_notes_adjustment_notes_credit_notes_and_amendments_never_start_a_payable(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    partner_center_emulator: PartnerCenterEmulator,
    tmp_path: Path,
) -> None:
    env = time_skipping_env
    today = (await env.get_current_time()).astimezone(SHANGHAI).date()
    issued = today - timedelta(days=45)  # overdue, unpaid: each would be reminded about as a bill
    partner_center_emulator.seed_invoices(
        [
            invoice_resource("N-BILL", issued, "52300.00", "CNY"),
            invoice_resource("N-VOID", issued, "3000.00", "CNY", document_type="void_note"),
            invoice_resource("N-ADJ", issued, "900.00", "CNY", document_type="adjustment_note", amends_of="N-BILL"),
            invoice_resource("N-CREDIT", issued, "800.00", "CNY", document_type="Credit Note", amends_of="N-BILL"),
            invoice_resource("N-AMEND", issued, "700.00", "CNY", amends_of="N-BILL"),
            invoice_resource("N-ODD", issued, "600.00", "CNY", document_type="tax_receipt"),
        ]
    )
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    async with engine_factory(env.client) as engine, client_for(partner_center_emulator) as partner_center:
        engine.started.update(f"partner-payable-{d['id']}" for d in partner_center_emulator.invoices())
        tracker = PartnerPayableActivities(
            partner_center, env.client, engine.settings.task_queue, PartnerPaymentBook(store.engine)
        )
        request = TrackPartnerInvoicesRequest(correlation_id="daily-sweep-test")

        tracked = await ActivityEnvironment().run(tracker.track_partner_invoices, request)

        assert tracked.seen == 6
        assert tracked.started == ["N-BILL"]
        assert tracked.not_bills == [
            "N-VOID: a void note",
            "N-ADJ: an adjustment note of N-BILL",
            "N-CREDIT: a credit note of N-BILL",
            "N-AMEND: an amendment of N-BILL",
        ]
        assert [entry.split(":")[0] for entry in tracked.unreadable] == ["invoice N-ODD"]
        for document_id in ("N-VOID", "N-ADJ", "N-CREDIT", "N-AMEND", "N-ODD"):
            with pytest.raises(RPCError):
                await env.client.get_workflow_handle(f"partner-payable-{document_id}").describe()
    store.close()


async def test_a_running_payable_is_told_when_partner_center_lists_its_invoice_as_voided_and_stops(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    partner_center_emulator: PartnerCenterEmulator,
    tmp_path: Path,
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    today = now.astimezone(SHANGHAI).date()
    partner_center_emulator.seed_invoices(
        [
            invoice_resource("V-VOIDED", today - timedelta(days=40), "3000.00", "CNY"),
            invoice_resource("V-KEPT", today - timedelta(days=40), "800.00", "CNY"),
        ]
    )
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    async with engine_factory(env.client) as engine, client_for(partner_center_emulator) as partner_center:
        engine.started.update({"partner-payable-V-VOIDED", "partner-payable-V-KEPT"})
        tracker = PartnerPayableActivities(
            partner_center, env.client, engine.settings.task_queue, PartnerPaymentBook(store.engine)
        )
        request = TrackPartnerInvoicesRequest(correlation_id="daily-sweep-test", checked_at=now)
        first = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
        assert sorted(first.started) == ["V-KEPT", "V-VOIDED"]

        partner_center_emulator.void_invoice("V-VOIDED")
        told = await ActivityEnvironment().run(tracker.track_partner_invoices, request)

        assert told.told_voided == ["V-VOIDED"]
        assert told.not_bills == ["V-VOIDED: a void note"]
        assert told.already_tracked == ["V-KEPT"]
        voided = await env.client.get_workflow_handle(
            "partner-payable-V-VOIDED", result_type=PartnerPayableStatus
        ).result()
        assert voided.stage.value == "Resolved" and voided.voided_on == today
        # Finished: the next sweep neither tells it again nor starts it anew.
        again = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
        assert again.told_voided == [] and again.started == []
        kept: Any = await env.client.get_workflow_handle("partner-payable-V-KEPT").query(
            "status", result_type=PartnerPayableStatus
        )
        assert kept.voided_on is None and kept.amount_due == Money.of("800.00", "CNY")
    store.close()


def test_the_books_refuse_a_different_payment_under_a_payment_id_already_used(tmp_path: Path) -> None:
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    book = PartnerPaymentBook(store.engine)
    booking = PartnerPaymentBooking(
        invoice_id="G1",
        payment=PartnerPayment(payment_id="TT-1", amount=Money.of("10.00", "CNY"), paid_on=date(2026, 11, 2)),
        recorded_by="partner-payable-G1",
    )

    assert book.record(booking).duplicate is False
    assert book.record(booking).duplicate is True
    changed = booking.model_copy(
        update={"payment": booking.payment.model_copy(update={"amount": Money.of("11.00", "CNY")})}
    )
    with pytest.raises(ValueError, match=r"already on the books as 10\.00 CNY"):
        book.record(changed)
    assert book.record(booking).paid == Money.of("10.00", "CNY")
    store.close()


async def test_a_running_payable_is_told_when_21vianet_registers_a_payment_and_not_when_nothing_changed(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    partner_center_emulator: PartnerCenterEmulator,
    tmp_path: Path,
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    today = now.astimezone(SHANGHAI).date()
    partner_center_emulator.seed_invoices(
        [
            invoice_resource("T-PART", today - timedelta(days=10), "52300.00", "CNY", paid="2300.00"),
            invoice_resource("T-FULL", today - timedelta(days=35), "1200.00", "USD"),
            invoice_resource("T-QUIET", today - timedelta(days=5), "800.00", "CNY"),
        ]
    )
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    book = PartnerPaymentBook(store.engine)
    async with engine_factory(env.client) as engine, client_for(partner_center_emulator) as partner_center:
        engine.started.update({"partner-payable-T-PART", "partner-payable-T-FULL", "partner-payable-T-QUIET"})
        tracker = PartnerPayableActivities(partner_center, env.client, engine.settings.task_queue, book)
        request = TrackPartnerInvoicesRequest(correlation_id="daily-sweep-test", checked_at=now)
        first = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
        assert sorted(first.started) == ["T-FULL", "T-PART", "T-QUIET"]

        async def status(invoice_id: str) -> Any:
            handle = env.client.get_workflow_handle(f"partner-payable-{invoice_id}")
            return await handle.query("status", result_type=PartnerPayableStatus)

        # Wait until each payable published its AmountDue (the tracker compares Partner Center with it).
        for invoice_id in first.started:
            for _ in range(300):
                description = await env.client.get_workflow_handle(f"partner-payable-{invoice_id}").describe()
                if "AmountDue" in description.raw_description.workflow_execution_info.search_attributes.indexed_fields:
                    break
                await asyncio.sleep(0.05)

        unchanged = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
        assert unchanged.told_paid == []

        # 21Vianet registers payments finance never records: part of one invoice, all of another.
        partner_center_emulator.record_invoice_payment("T-PART", "20000.00")
        partner_center_emulator.record_invoice_payment("T-FULL", "1200.00")
        told = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
        assert sorted(told.told_paid) == ["T-FULL", "T-PART"]
        assert "T-FULL" in told.settled and "T-PART" in told.already_tracked

        full = await env.client.get_workflow_handle("partner-payable-T-FULL", result_type=PartnerPayableStatus).result()
        assert full.stage.value == "Resolved"
        assert [(p.payment_id, p.amount) for p in full.payments] == [
            ("21vianet-T-FULL-paid-1200.00-USD", Money.of("1200.00", "USD"))
        ]
        for _ in range(300):
            part = await status("T-PART")
            if part.payments:
                break
            await asyncio.sleep(0.05)
        assert part.amount_due == Money.of("30000.00", "CNY")
        assert part.payments[0].amount == Money.of("20000.00", "CNY")
        assert (await status("T-QUIET")).payments == []

        # Once the payable has booked it, the next sweep has nothing to tell.
        for _ in range(300):
            again = await ActivityEnvironment().run(tracker.track_partner_invoices, request)
            if not again.told_paid:
                break
            await asyncio.sleep(0.05)
        assert again.told_paid == []
    store.close()
    assert [p.payment_id for p in book.payments("T-PART")] == ["21vianet-T-PART-paid-22300.00-CNY"]


def test_the_sweep_report_says_how_many_payables_were_told_of_payments_21vianet_registered() -> None:
    from datetime import UTC, datetime

    from billing.sweep import PartnerInvoicesOutcome, SweepReport

    partner = PartnerInvoicesOutcome(seen=3, already_tracked=2, settled=1, told_paid=2)
    report = SweepReport(started_at=datetime(2026, 11, 24, tzinfo=UTC), partner_invoices=partner)

    assert "1 settled, 2 told of payments 21Vianet registered" in report.details()
    with_notes = partner.model_copy(update={"not_bills": 2, "told_voided": 1})
    details = report.model_copy(update={"partner_invoices": with_notes}).details()
    assert "1 settled, 2 not bills (void, adjustment or credit notes)" in details
    assert "1 told their invoice was voided" in details
    assert (
        "told of payments"
        not in SweepReport(started_at=report.started_at, partner_invoices=PartnerInvoicesOutcome(seen=1)).details()
    )
