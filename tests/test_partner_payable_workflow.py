"""`PartnerPayable` on the time-skipping test server with the real worker wiring: reminders to finance before
the due date and while overdue (late charge and account risk stated), payments in part and in full, refusals,
search attributes."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from billing.ledger.partner_payments import PartnerPaymentBook
from billing.ledger.store import LedgerStore
from billing.money import Money
from billing.partner_payable import PartnerInvoice, PartnerPayableInput, PartnerPayableStatus, workflow_id
from billing.search_attributes import AMOUNT_DUE, BILLING_STAGE, OLDEST_DUE_DATE
from tests.builders import SHANGHAI
from tests.temporal_fixtures import TEST_POLICY, Engine, EngineFactory
from workflows.partner_payable import PartnerPayable


def partner_invoice(invoice_id: str, invoice_date: date, amount: str, currency: str = "CNY") -> PartnerInvoice:
    return PartnerInvoice(
        invoice_id=invoice_id,
        invoice_date=invoice_date,
        amount=Money.of(amount, currency),
        paid=Money.of("0", currency),
    )


async def start(
    engine: Engine, invoice: PartnerInvoice, locale: str = "zh-CN"
) -> WorkflowHandle[PartnerPayable, PartnerPayableStatus]:
    engine.started.add(workflow_id(invoice.invoice_id))
    return await engine.client.start_workflow(
        PartnerPayable.run,
        PartnerPayableInput(invoice=invoice, locale=locale),
        id=workflow_id(invoice.invoice_id),
        task_queue=engine.settings.task_queue,
    )


def finance_mail(smtp_sink: Any, invoice_id: str) -> list[Any]:
    return [
        delivery
        for delivery in smtp_sink.deliveries
        if delivery.message["X-Billing-Notice"] == "partner_payable" and invoice_id in delivery.message["Subject"]
    ]


def text_of(delivery: Any) -> str:
    body = delivery.message.get_body(preferencelist=("plain",))
    return str(body.get_content())


async def until(predicate: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


def payment(payment_id: str, amount: str, paid_on: date, currency: str = "CNY") -> dict[str, Any]:
    return {"payment_id": payment_id, "amount": {"amount": amount, "currency": currency}, "paid_on": str(paid_on)}


async def test_finance_is_reminded_before_the_due_date_and_while_overdue_with_the_late_charge_until_paid(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any, tmp_path: Any
) -> None:
    env = time_skipping_env
    today = (await env.get_current_time()).astimezone(SHANGHAI).date()
    bill = partner_invoice("G-LADDER-1", today - timedelta(days=20), "30000.00")  # due in 10 days
    async with engine_factory(env.client) as engine:
        handle = await start(engine, bill, "en-US")

        # Past the reminder 7 days before the due date.
        await env.sleep(timedelta(days=4))
        await until(lambda: _count(smtp_sink, bill.invoice_id, 1), "the first reminder")
        before = finance_mail(smtp_sink, bill.invoice_id)[0]
        assert before.rcpt_tos == ["finance@partner.example.cn"]
        assert before.message["X-Billing-Customer"] == "partner"
        assert "1.5%" in text_of(before) and "¥450.00" in text_of(before)  # a month late on ¥30,000.00
        assert "new orders" in text_of(before)
        status = await handle.query(PartnerPayable.status)
        assert status.stage.value == "Current"

        # Past the due date and the first overdue reminder a week after it.
        await env.sleep(timedelta(days=14))
        await until(lambda: _count(smtp_sink, bill.invoice_id, 3), "the overdue reminder")
        overdue = finance_mail(smtp_sink, bill.invoice_id)[2]
        status = await handle.query(PartnerPayable.status)
        assert status.stage.value == "Overdue"
        assert status.late_charge.is_positive
        assert status.late_charge.amount == 30000 * status.days_overdue * 5 / 10000  # 0.05% a day, no rounding
        assert "overdue" in overdue.message["Subject"].lower()
        assert "late charge" in text_of(overdue).lower()
        assert "block the partner account from placing new orders" in text_of(overdue)
        description = await handle.describe()
        attributes = description.typed_search_attributes
        assert attributes.get(BILLING_STAGE) == "Overdue"
        assert attributes.get(AMOUNT_DUE) == 30000.0
        assert attributes.get(OLDEST_DUE_DATE) == datetime(
            bill.due_on.year, bill.due_on.month, bill.due_on.day, tzinfo=SHANGHAI
        ) + timedelta(days=1)

        paid_on = (await env.get_current_time()).astimezone(SHANGHAI).date()
        after_part = await handle.execute_update(
            PartnerPayable.record_partner_payment, payment("TT-1", "10000.00", paid_on)
        )
        assert after_part.amount_due == Money.of("20000.00", "CNY")
        assert (await handle.describe()).typed_search_attributes.get(AMOUNT_DUE) == 20000.0

        final = await handle.execute_update(PartnerPayable.record_partner_payment, payment("TT-2", "20000.00", paid_on))
        assert final.amount_due.is_zero
        result = await handle.result()

    assert result.stage.value == "Resolved"
    assert [p.payment_id for p in result.payments] == ["TT-1", "TT-2"]
    closing = finance_mail(smtp_sink, bill.invoice_id)[-1]
    assert closing.message["Subject"].startswith("Paid in full")
    assert "a late charge of about" in text_of(closing)
    books = PartnerPaymentBook(LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db").engine)
    assert [p.payment_id for p in books.payments(bill.invoice_id)] == ["TT-1", "TT-2"]


async def test_the_late_charge_in_the_status_and_the_reminders_follows_the_policy_files_terms(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any
) -> None:
    env = time_skipping_env
    today = (await env.get_current_time()).astimezone(SHANGHAI).date()
    bill = partner_invoice("G-TERMS-1", today - timedelta(days=40), "30000.00")  # 10 days overdue
    policy = TEST_POLICY + '[partner_payable]\nlate_charge_percent_per_month = "1"\nlate_charge_cap_percent = "0.2"\n'
    async with engine_factory(env.client, policy=policy) as engine:
        handle = await start(engine, bill, "en-US")
        await until(lambda: _count(smtp_sink, bill.invoice_id, 1), "the reminder of a bill found late")
        status = await handle.query(PartnerPayable.status)

    assert status.late_charge_rate_per_month == Decimal("0.01")
    assert status.late_charge_cap == Money.of("60.00", "CNY")  # 0.2% of 30,000.00
    assert status.late_charge == Money.of(str(min(10 * status.days_overdue, 60)) + ".00", "CNY")  # 100.00 a day
    reminder = text_of(finance_mail(smtp_sink, bill.invoice_id)[0])
    assert "21Vianet may charge 1% of the invoice amount a month, at most ¥60.00 in all" in reminder
    assert "1.5%" not in reminder


async def _count(smtp_sink: Any, invoice_id: str, at_least: int) -> bool:
    return len(finance_mail(smtp_sink, invoice_id)) >= at_least


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (payment("TT-9", "100.00", date(2026, 1, 1), "USD"), "but 21Vianet's invoice G-REFUSE-1 is in CNY"),
        (payment("TT-9", "5000.01", date(2026, 1, 1)), "only 5000.00 CNY is outstanding"),
        (payment("TT-9", "0", date(2026, 1, 1)), "greater than zero"),
        (payment("TT-1", "200.00", date(2026, 1, 1)), "already recorded as 1000.00 CNY"),
    ],
    ids=["wrong currency", "more than outstanding", "not positive", "payment id reused"],
)
async def test_a_payment_that_cannot_be_right_is_refused_with_a_reason_and_changes_nothing(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, bad: dict[str, Any], reason: str
) -> None:
    env = time_skipping_env
    today = (await env.get_current_time()).astimezone(SHANGHAI).date()
    bill = partner_invoice("G-REFUSE-1", today - timedelta(days=3), "6000.00")
    bad = {**bad, "paid_on": str(today)}
    async with engine_factory(env.client) as engine:
        handle = await start(engine, bill)
        await handle.execute_update(PartnerPayable.record_partner_payment, payment("TT-1", "1000.00", today))
        # The same payment again counts once.
        again = await handle.execute_update(PartnerPayable.record_partner_payment, payment("TT-1", "1000.00", today))
        assert again.amount_due == Money.of("5000.00", "CNY")

        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(PartnerPayable.record_partner_payment, bad)

        assert reason in str(refused.value.cause)
        status = await handle.query(PartnerPayable.status)
        assert status.amount_due == Money.of("5000.00", "CNY")
        assert [p.payment_id for p in status.payments] == ["TT-1"]


async def test_a_bill_in_us_dollars_is_reminded_and_paid_in_us_dollars(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any
) -> None:
    env = time_skipping_env
    today = (await env.get_current_time()).astimezone(SHANGHAI).date()
    bill = partner_invoice("G-USD-1", today - timedelta(days=40), "1200.00", "USD")  # 10 days overdue
    async with engine_factory(env.client) as engine:
        handle = await start(engine, bill)
        await until(lambda: _count(smtp_sink, bill.invoice_id, 1), "the reminder of a bill found late")

        status = await handle.query(PartnerPayable.status)
        assert status.amount_due == Money.of("1200.00", "USD")
        assert status.late_charge.currency == "USD"
        assert "USD 1,200.00" in text_of(finance_mail(smtp_sink, bill.invoice_id)[0])
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(PartnerPayable.record_partner_payment, payment("W-1", "1200.00", today))
        await handle.execute_update(PartnerPayable.record_partner_payment, payment("W-1", "1200.00", today, "USD"))
        result = await handle.result()

    assert result.stage.value == "Resolved"
    # One reminder for a bill found 10 days late, not one for each rung it missed, then the closing notice.
    assert len(finance_mail(smtp_sink, bill.invoice_id)) == 2


async def test_finance_records_a_payment_and_reads_the_status_from_the_command_line(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, capsys: Any
) -> None:
    from cli.common import CommandError
    from cli.main import build_parser
    from cli.partner_payables import partner_payable_command

    env = time_skipping_env
    today = (await env.get_current_time()).astimezone(SHANGHAI).date()
    bill = partner_invoice("G-CLI-1", today - timedelta(days=35), "800.00")
    async with engine_factory(env.client) as engine:
        await start(engine, bill)
        # The test server's clock runs ahead of the wall clock the command defaults to: give the date.
        record = ["partner-payable", "record-payment", "G-CLI-1", "--paid-on", str(today), "--payment-id", "TT-C1"]
        record += ["--amount", "300.00"]
        await partner_payable_command(env.client, build_parser().parse_args([*record, "--currency", "CNY"]))
        with pytest.raises(CommandError, match="refused: the payment is in USD"):
            args = build_parser().parse_args([*record[:6], "TT-C2", "--amount", "1.00", "--currency", "USD"])
            await partner_payable_command(env.client, args)
        await partner_payable_command(env.client, build_parser().parse_args(["partner-payable", "status", "G-CLI-1"]))

    printed = capsys.readouterr().out
    assert "Outstanding       500.00 CNY" in printed
    assert "Days overdue      5" in printed
    assert "Payment TT-C1     300.00 CNY on" in printed
    assert "(estimate at 1.5% a month of the invoice amount; 21Vianet's statement is what is owed)" in printed


def partner_center_paid(invoice_id: str, paid: str, as_of: datetime, currency: str = "CNY") -> dict[str, Any]:
    return {"invoice_id": invoice_id, "paid": {"amount": paid, "currency": currency}, "as_of": as_of.isoformat()}


async def test_payments_21vianet_registered_in_partner_center_are_booked_once_and_close_the_payable(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any, tmp_path: Any
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    today = now.astimezone(SHANGHAI).date()
    bill = partner_invoice("G-PC-1", today - timedelta(days=40), "9000.00", "USD")  # 10 days overdue
    async with engine_factory(env.client) as engine:
        handle = await start(engine, bill, "en-US")
        await until(lambda: _count(smtp_sink, bill.invoice_id, 1), "the reminder of a bill found late")

        await handle.signal("partner_center_paid", partner_center_paid("G-PC-1", "4000.00", now, "USD"))
        await handle.signal("partner_center_paid", partner_center_paid("G-PC-1", "4000.00", now, "USD"))  # again

        async def part_booked() -> bool:
            return (await handle.query(PartnerPayable.status)).amount_due == Money.of("5000.00", "USD")

        await until(part_booked, "the part 21Vianet registered booked")
        status = await handle.query(PartnerPayable.status)
        assert [(p.payment_id, p.amount, p.paid_on) for p in status.payments] == [
            ("21vianet-G-PC-1-paid-4000.00-USD", Money.of("4000.00", "USD"), today)
        ]
        assert status.payments[0].reference == "registered by 21Vianet in Partner Center"
        # Finance records the same money later: refused, and told why.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(PartnerPayable.record_partner_payment, payment("TT-1", "9000.00", today, "USD"))
        assert "21Vianet already registered payments of 4000.00 USD in Partner Center" in str(refused.value.cause)

        await handle.signal("partner_center_paid", partner_center_paid("G-PC-1", "9000.00", now, "USD"))
        result = await handle.result()

    assert result.stage.value == "Resolved"
    assert [p.amount for p in result.payments] == [Money.of("4000.00", "USD"), Money.of("5000.00", "USD")]
    assert result.rejected == []
    closing = finance_mail(smtp_sink, bill.invoice_id)[-1]
    assert closing.message["Subject"].startswith("Paid in full")
    assert len(finance_mail(smtp_sink, bill.invoice_id)) == 2  # the reminder, then the closing notice
    books = PartnerPaymentBook(LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db").engine)
    assert [p.payment_id for p in books.payments(bill.invoice_id)] == [
        "21vianet-G-PC-1-paid-4000.00-USD",
        "21vianet-G-PC-1-paid-9000.00-USD",
    ]


async def test_an_invalid_or_wrong_currency_partner_center_report_is_recorded_and_changes_nothing(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    today = now.astimezone(SHANGHAI).date()
    bill = partner_invoice("G-PC-BAD", today - timedelta(days=3), "6000.00")
    async with engine_factory(env.client) as engine:
        handle = await start(engine, bill)
        await handle.signal("partner_center_paid", {"invoice_id": "G-PC-BAD", "paid": "lots"})
        await handle.signal("partner_center_paid", partner_center_paid("G-PC-BAD", "100.00", now, "USD"))
        await handle.signal("partner_center_paid")  # what `temporal workflow signal` sends without --input
        await handle.signal("partner_center_paid", args=[{}, {}])

        async def both_rejected() -> bool:
            return len((await handle.query(PartnerPayable.status)).rejected) == 4

        await until(both_rejected, "both reports rejected")
        status = await handle.query(PartnerPayable.status)
        # Still running and still taking payments.
        after = await handle.execute_update(PartnerPayable.record_partner_payment, payment("TT-1", "1000.00", today))

    invalid, wrong_currency, empty, two = status.rejected
    assert empty.reason == "invalid: the message carried no payload (send one JSON object)"
    assert two.reason == "invalid: the message carried 2 payloads; it takes one JSON object"
    assert invalid.name == "partner_center_paid" and invalid.reason.startswith("invalid: ")
    assert "is in USD, but invoice G-PC-BAD is in CNY" in wrong_currency.reason
    assert wrong_currency.reference == "G-PC-BAD"
    assert status.amount_due == Money.of("6000.00", "CNY") and status.payments == []
    assert after.amount_due == Money.of("5000.00", "CNY")


async def test_an_invoice_21vianet_voided_stops_the_reminders_tells_finance_once_and_completes(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    today = now.astimezone(SHANGHAI).date()
    bill = partner_invoice("G-VOID-1", today - timedelta(days=40), "3000.00")  # 10 days overdue
    async with engine_factory(env.client) as engine:
        handle = await start(engine, bill, "en-US")
        await until(lambda: _count(smtp_sink, bill.invoice_id, 1), "the reminder of a bill found late")
        await handle.execute_update(PartnerPayable.record_partner_payment, payment("TT-1", "500.00", today))
        await handle.signal("partner_center_voided", {"invoice_id": "G-VOID-1"})  # no as_of: rejected

        await handle.signal("partner_center_voided", {"invoice_id": "G-VOID-1", "as_of": now.isoformat()})
        # Bounded: a payable that kept reminding would skip through weeks for ever instead of completing.
        result = await asyncio.wait_for(handle.result(), 20)
        await env.sleep(timedelta(days=30))  # no reminder follows

    assert result.stage.value == "Resolved"
    assert result.voided_on == today
    assert result.amount_due == Money.of("0", "CNY") and result.late_charge == Money.of("0", "CNY")
    assert [r.name for r in result.rejected] == ["partner_center_voided"]
    mails = finance_mail(smtp_sink, bill.invoice_id)
    assert len(mails) == 2  # the overdue reminder, then the voided notice
    assert mails[-1].message["Subject"] == "Voided by 21Vianet: invoice G-VOID-1 (¥3,000.00), nothing to pay"
    assert "Partner Center lists it as a void note" in text_of(mails[-1])
    assert "¥500.00 was paid against it: ask 21Vianet to apply it to another invoice or to refund it" in text_of(
        mails[-1]
    )
