"""Notices to look at before customers do: a realistic sample request of every kind, its dates taken from the
decision core's `forecast()`, and `starter.py notices preview`, which writes the `.eml` and an HTML file."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from billing.ledger_messages import InvoiceBalance
from billing.lifecycle.schedule import InvoiceSchedule, ScheduledStep, invoice_schedule, unpaid_invoice
from billing.lifecycle.steps import StepKind
from billing.models import CustomerAccount, Locale, NextActionKind, NoticeKind, NoticeRecord, Payment
from billing.money import Money
from billing.notice_request import NoticeDispute, NoticeNextStep, NoticePayable, NoticeRequest
from billing.partner_payable import (
    PartnerInvoice,
    PartnerPayment,
    PayableState,
)
from billing.policy import CollectionsPolicy

SAMPLE_CUSTOMERS: dict[Locale, CustomerAccount] = {
    "zh-CN": CustomerAccount(
        customer_id="C-1001",
        name="北京示例科技有限公司",
        email="ap@example-tech.cn",
        locale="zh-CN",
        tenant_id="5f0a1c2e-7b3d-4e8f-9a61-2c4d6e8f0a1b",
    ),
    "en-US": CustomerAccount(
        customer_id="C-1002",
        name="Lotus Trading Co., Ltd.",
        email="accounts@lotus-trading.cn",
        locale="en-US",
        tenant_id="9b7d3e4f-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
    ),
}
SUBSCRIPTION_IDS = ["6a4f2d1e-0c9b-4a8f-b7e6-d5c4b3a2f1e0", "0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"]
SAMPLE_AMOUNT = "12345.60"
DISPUTED_AMOUNT = "2345.60"
PAYMENT_TERM = timedelta(days=30)


class _SampleLifecycle:
    """One customer, one invoice left unpaid: the moments of its ladder as `forecast()` predicts them."""

    def __init__(self, locale: Locale, policy: CollectionsPolicy, issued_on: date) -> None:
        self.account = SAMPLE_CUSTOMERS[locale]
        self.currency = policy.currency
        self.partner_payable_rules = policy.partner_payable
        zone = self.account.zone
        description = {
            "zh-CN": f"Microsoft 365 商业标准版，50 个许可证，{issued_on.year}年{issued_on.month}月",
            "en-US": f"Microsoft 365 Business Standard, 50 licences, {issued_on:%Y-%m}",
        }[locale]
        self.invoice = unpaid_invoice(
            f"INV-{issued_on:%Y%m}-0042",
            Money.of(SAMPLE_AMOUNT, self.currency),
            issued_on,
            issued_on + PAYMENT_TERM,
            zone,
            description,
        )
        self.issued_at = datetime.combine(issued_on, time(10, 0), tzinfo=zone)
        self.schedule: InvoiceSchedule = invoice_schedule(policy, self.account, self.invoice, self.issued_at)

    def step(self, kind: StepKind, overdue_only: bool = False) -> ScheduledStep | None:
        steps = [step for step in self.schedule.of_kind(kind) if not overdue_only or step.at >= self.invoice.due_at]
        return steps[0] if steps else None

    def moment_of(self, kind: NoticeKind) -> datetime:
        """When the lifecycle would send a notice of `kind`: its ladder step, else the invoice's issue."""
        ladder = {
            NoticeKind.REMINDER: StepKind.SEND_REMINDER,
            NoticeKind.FINAL_NOTICE: StepKind.SEND_FINAL_NOTICE,
            NoticeKind.SUSPENSION: StepKind.SUSPEND,
            NoticeKind.DATA_DELETION_WARNING: StepKind.SEND_DATA_DELETION_WARNING,
        }
        step = self.step(ladder[kind], overdue_only=True) if kind in ladder else None
        return step.at if step is not None else self.issued_at

    def money(self, amount: str) -> Money:
        return Money.of(amount, self.currency)

    def request(self, kind: NoticeKind, **fields: object) -> NoticeRequest:
        defaults: dict[str, object] = {
            "key": f"{kind}-{self.invoice.invoice_id}",
            "kind": kind,
            "account": self.account,
            "workflow_id": f"customer-billing-{self.account.customer_id}",
            "at": self.moment_of(kind),
            "invoices": [self.invoice],
            "amount_due": self.invoice.outstanding,
            "overdue_amount": Money.zero(self.currency),
        }
        return NoticeRequest.model_validate({**defaults, **fields})

    def with_credit(self, credit: Money) -> InvoiceBalance:
        return self.invoice.model_copy(update={"credited": credit, "outstanding": self.invoice.outstanding - credit})


def sample_request(
    kind: NoticeKind, locale: Locale, policy: CollectionsPolicy | None = None, issued_on: date | None = None
) -> NoticeRequest:
    """What the workflow would send at that point of a sample lifecycle; the invoice is issued `issued_on`
    (default today) and never paid until the close-the-loop notice."""
    policy = policy or CollectionsPolicy()
    life = _SampleLifecycle(locale, policy, issued_on or datetime.now(UTC).date())
    invoice, schedule = life.invoice, life.schedule
    suspension = schedule.suspension
    suspension_date = (
        NoticeNextStep(kind=NextActionKind.SUSPENSION, on=suspension.on) if suspension is not None else None
    )
    overdue = invoice.outstanding
    # Below the policy's minimum nothing is suspended over the ladder; an operator's suspend_now still can be.
    suspended_on = suspension.on if suspension is not None else invoice.due_on + policy.suspend_after
    deletion_on = schedule.data_deletion_on or suspended_on + timedelta(days=60)
    deletion = NoticeNextStep(kind=NextActionKind.DATA_DELETION_WARNING, on=deletion_on)
    dispute = NoticeDispute(
        dispute_id="D-2026-0007",
        invoice_id=invoice.invoice_id,
        reason={
            "zh-CN": "许可证数量与订单不符：订单为 40 个许可证，账单按 50 个计费",
            "en-US": "Licence count does not match our order: we ordered 40 licences, the invoice bills 50",
        }[locale],
        amount=life.money(DISPUTED_AMOUNT),
    )
    reinstated_on = suspended_on + timedelta(days=3)
    if kind is NoticeKind.INVOICE:
        return life.request(kind, key=f"invoice-{invoice.invoice_id}")
    if kind is NoticeKind.REMINDER:
        # The first reminder after the due date, unless the policy only reminds before it.
        late = life.step(StepKind.SEND_REMINDER, overdue_only=True) is not None
        return life.request(
            kind, overdue_amount=overdue if late else Money.zero(life.currency), next_step=suspension_date
        )
    if kind is NoticeKind.FINAL_NOTICE:
        return life.request(kind, overdue_amount=overdue, next_step=suspension_date)
    if kind in (NoticeKind.SUSPENSION, NoticeKind.DATA_DELETION_WARNING):
        return life.request(
            kind,
            overdue_amount=overdue,
            suspended_on=suspended_on,
            data_deletion_on=deletion_on,
            subscription_ids=SUBSCRIPTION_IDS,
            suspension_reason="non_payment",
            next_step=deletion,
        )
    if kind is NoticeKind.CLOSE_THE_LOOP:
        paid = invoice.model_copy(update={"paid": invoice.amount, "outstanding": Money.zero(life.currency)})
        payment = Payment(
            payment_id=f"PAY-{reinstated_on:%Y%m%d}-8841",
            customer_id=life.account.customer_id,
            amount=invoice.amount,
            received_at=datetime.combine(reinstated_on, time(11, 20), tzinfo=life.account.zone),
            invoice_id=invoice.invoice_id,
        )
        return life.request(
            kind,
            invoices=[paid],
            amount_due=Money.zero(life.currency),
            payments=[payment],
            subscription_ids=SUBSCRIPTION_IDS,
            resolution="payment",
        )
    if kind is NoticeKind.DISPUTE_RECEIVED:
        return life.request(kind, dispute=dispute)
    if kind is NoticeKind.DISPUTE_RESOLVED:
        credit = life.money(DISPUTED_AMOUNT)
        credited = life.with_credit(credit)
        note = {
            "zh-CN": "经核对订单，贵公司订购的是 40 个许可证，多计费的 10 个许可证已全额抵扣。",
            "en-US": "Your order was for 40 licences; the 10 licences billed in excess are credited in full.",
        }[locale]
        return life.request(
            kind,
            invoices=[credited],
            amount_due=credited.outstanding,
            dispute=dispute.model_copy(update={"outcome": "credit", "credit": credit, "note": note}),
        )
    if kind is NoticeKind.ESCALATION_CASE:
        first_reminder = life.step(StepKind.SEND_REMINDER, overdue_only=True)
        noticed = [
            NoticeRecord(kind=NoticeKind.INVOICE, at=life.issued_at, invoice_id=invoice.invoice_id),
            *(
                [NoticeRecord(kind=NoticeKind.REMINDER, at=first_reminder.at, invoice_id=invoice.invoice_id)]
                if first_reminder is not None
                else []
            ),
        ]
        note = {
            "zh-CN": "客户坚持按订单计费；我们无法从合作伙伴中心核实实际分配的许可证数量。",
            "en-US": "The customer insists on the ordered count; we cannot verify the assigned licences ourselves.",
        }[locale]
        # The customer paid what it does not dispute.
        undisputed = invoice.amount - dispute.amount
        payment = Payment(
            payment_id=f"PAY-{invoice.due_on:%Y%m%d}-5150",
            customer_id=life.account.customer_id,
            amount=undisputed,
            received_at=invoice.due_at - timedelta(hours=30),
            invoice_id=invoice.invoice_id,
        )
        part_paid = invoice.model_copy(update={"paid": undisputed, "outstanding": dispute.amount})
        return life.request(
            kind,
            invoices=[part_paid],
            amount_due=part_paid.outstanding,
            dispute=dispute.model_copy(update={"note": note}),
            payments=[payment],
            notices_sent=noticed,
        )
    return _partner_payable_sample(life)


def _partner_payable_sample(life: _SampleLifecycle) -> NoticeRequest:
    """21Vianet's bill to the partner, issued 45 days before the sample's invoice date: 15 days overdue, part
    paid, with the late charge accrued so far."""
    today = life.invoice.issued_on
    bill = PayableState(
        invoice=PartnerInvoice(
            invoice_id=f"G{today - timedelta(days=45):%Y%m}0001",
            invoice_date=today - timedelta(days=45),
            amount=life.money("98000.00"),
            paid=life.money("0"),
            billing_period_start=(today - timedelta(days=75)).replace(day=1),
            billing_period_end=today - timedelta(days=46),
        ),
        locale=life.account.locale,
        payments=[
            PartnerPayment(payment_id="TT-20260001", amount=life.money("20000.00"), paid_on=today - timedelta(days=20))
        ],
    )
    invoice = bill.invoice
    outstanding = bill.outstanding
    balance = unpaid_invoice(invoice.invoice_id, invoice.amount, invoice.invoice_date, invoice.due_on, bill.zone)
    balance = balance.model_copy(update={"paid": bill.paid, "outstanding": outstanding})
    return life.request(
        NoticeKind.PARTNER_PAYABLE,
        key=f"partner-payable-{invoice.invoice_id}/overdue/2",
        workflow_id=f"partner-payable-{invoice.invoice_id}",
        invoices=[balance],
        amount_due=outstanding,
        overdue_amount=outstanding,
        next_step=NoticeNextStep(kind=NextActionKind.REMINDER, on=today + timedelta(days=6)),
        partner_payable=NoticePayable.of(bill, today, life.partner_payable_rules),
    )
