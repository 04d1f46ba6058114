"""`PartnerPayable`: one bill 21Vianet issued to the partner, from the day it is found until it is paid in full.

The loop reads like the ladder: take in what the daily sweep reports from Partner Center (payments 21Vianet
registered, or that it voided the invoice) and the payments finance recorded, ask the core what is next, wait
until it is due (or a message arrives), remind finance through the mailer, record it. Paid in full or voided:
the closing notice, then the run completes.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # Passed through, as in CustomerBilling: imported once per worker, not compiled again for every instance.
    import workflows.inbox as inbox
    from billing import partner_payable as core
    from billing import search_attributes as attributes
    from billing.ledger_messages import InvoiceBalance, PartnerPaymentBooked, PartnerPaymentBooking
    from billing.message_catalog import describe
    from billing.models import CustomerAccount, NextActionKind, NoticeKind, RejectedMessage
    from billing.money import Money
    from billing.notice_request import NoticeNextStep, NoticePayable, NoticeReceipt, NoticeRequest
    from billing.partner_payable import (
        PartnerCenterPaid,
        PartnerCenterVoided,
        PartnerPayableInput,
        PartnerPayableStatus,
        PartnerPayment,
        PayableRefused,
        PayableState,
        Reminder,
        ReminderKind,
    )
    from billing.policy import LifecycleSettings, PartnerPayableRules
    from billing.refusals import Refused
    from workflows.activity_options import (
        HEARTBEAT_TIMEOUT,
        LEDGER_RETRY,
        LEDGER_TIMEOUT,
        MAIL_TIMEOUT,
        OUTSIDE_GIVE_UP_AFTER,
        OUTSIDE_RETRY,
        SETTINGS_TIMEOUT,
    )


# The partner's own side of the mail: X-Billing-Customer on every partner_payable notice, and the notice log's
# customer id. The recipient is BILLING_FINANCE_EMAIL, whatever the account's address says.
PARTNER_ACCOUNT_ID = "partner"
_FINANCE_TEAM = {"zh-CN": "财务团队", "en-US": "Finance team"}

# `partner_center_voided` came after payables were already running: one sent it before its code knew the signal
# buffered and ignored it, and its history must replay that way. Only a run that records this patch acts on it.
VOIDED_PATCH = "partner-center-voided"

HISTORY_EVENT_LIMIT = 10_000


@workflow.defn(name="PartnerPayable")
class PartnerPayable:
    @workflow.init
    def __init__(self, start: PartnerPayableInput) -> None:
        self._state: PayableState = start.new_state()
        self._rules: PartnerPayableRules | None = None
        self._payments = inbox.Inbox()  # record_partner_payment updates
        self._reports = inbox.Inbox()  # partner_center_paid and partner_center_voided signals
        self._published: dict[str, object] = {}
        self._details = ""

    # --- finance records a payment ----------------------------------------------------------------------

    @workflow.update(name="record_partner_payment", description=describe("PartnerPayable", "record_partner_payment"))
    async def record_partner_payment(self, payment: RawValue = inbox.NO_PAYLOAD) -> PartnerPayableStatus:
        await self._payments.updated("record_partner_payment", payment)
        return self._status()

    @record_partner_payment.validator
    def _validate_record_partner_payment(self, payment: RawValue = inbox.NO_PAYLOAD) -> None:
        try:
            parsed = inbox.parse(PartnerPayment, payment, what="invalid payment")
            core.check_payment(self._with_pending(), parsed, self._state.today(workflow.now()))
        except Refused as refusal:
            raise inbox.refused(str(refusal)) from None

    # --- 21Vianet registered a payment ------------------------------------------------------------------

    @workflow.signal(name="partner_center_paid", description=describe("PartnerPayable", "partner_center_paid"))
    def partner_center_paid(self, report: RawValue = inbox.NO_PAYLOAD) -> None:
        # Taken as raw JSON and validated in the main loop, so an invalid report is recorded in `rejected`
        # instead of being dropped by the SDK's decoder.
        self._reports.signalled("partner_center_paid", report)

    @workflow.signal(name="partner_center_voided", description=describe("PartnerPayable", "partner_center_voided"))
    def partner_center_voided(self, report: RawValue = inbox.NO_PAYLOAD) -> None:
        if not workflow.patched(VOIDED_PATCH):
            workflow.logger.warning("partner_center_voided ignored: this run began before the engine knew it")
            return
        self._reports.signalled("partner_center_voided", report)

    @workflow.query(name="status", description=describe("PartnerPayable", "status"))
    def status(self) -> PartnerPayableStatus:
        return self._status()

    # --- the payable ------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, start: PartnerPayableInput) -> PartnerPayableStatus:
        settings = await workflow.execute_activity(
            "load_lifecycle_settings",
            start_to_close_timeout=SETTINGS_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            result_type=LifecycleSettings,
            summary="Load the reminder ladder for 21Vianet's bills",
        )
        self._rules = settings.policy.partner_payable
        while True:
            await self._take_in_reports()
            await self._take_in_payments()
            now = workflow.now()
            decision = core.decide(self._state, self._rules, now)
            self._publish()
            if decision.finished:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._payments and not self._reports:
                    break
                continue
            if decision.step is not None and decision.wake_at is not None and decision.wake_at <= now:
                await self._remind(decision.step)
                continue
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() > HISTORY_EVENT_LIMIT:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._payments and not self._reports:
                    workflow.continue_as_new(start.model_copy(update={"carried_over": self._state}))
            timeout = None if decision.wake_at is None else max(decision.wake_at - now, timedelta(seconds=1))
            summary = f"Wait for the {decision.step.kind.value} reminder" if decision.step else None
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: bool(self._payments or self._reports), timeout=timeout, timeout_summary=summary
                )
        workflow.logger.info(
            "partner payable closed",
            extra={"invoice_id": self._state.invoice.invoice_id, "voided": self._state.voided_on is not None},
        )
        return self._status()

    async def _take_in_reports(self) -> None:
        while self._reports:
            reported = self._reports.next()
            state = self._state
            about: str | None = None  # the invoice the report names, once it parsed
            try:
                if reported.name == "partner_center_voided":
                    voided = inbox.parse(PartnerCenterVoided, reported.payload, what="invalid")
                    about = voided.invoice_id
                    if core.record_void(state, voided, state.today(workflow.now())):
                        workflow.logger.info("invoice voided by 21Vianet", extra={"invoice_id": about})
                    continue
                report = inbox.parse(PartnerCenterPaid, reported.payload, what="invalid")
                about = report.invoice_id
                payment = core.payment_registered_by_21vianet(state, report, state.today(workflow.now()))
                if payment is not None:
                    await self._record(payment)
            except Refused as refusal:
                reference = about if isinstance(refusal, PayableRefused) else refusal.reference
                rejection = RejectedMessage(
                    name=reported.name, reason=str(refusal), at=reported.received_at, reference=reference
                )
                self._state.rejected = [*self._state.rejected, rejection]
                inbox.log_rejection(reported.name, str(refusal), reference)
                self._reports.refused(reported, str(refusal))
                continue
            self._reports.applied(reported)
            if payment is not None:
                workflow.logger.info(
                    "payment registered by 21Vianet booked",
                    extra={"payment_id": payment.payment_id, "invoice_id": state.invoice.invoice_id},
                )

    async def _take_in_payments(self) -> None:
        while self._payments:
            message = self._payments.next()
            try:
                await self._record(inbox.parse(PartnerPayment, message.payload, what="invalid payment"))
            except Refused as refusal:
                self._payments.refused(message, str(refusal))
                continue
            self._payments.applied(message)

    async def _record(self, payment: PartnerPayment) -> None:
        state = self._state
        # Checked again here: another payment may have been applied since the validator accepted this one.
        if not core.check_payment(state, payment, state.today(workflow.now())):
            return
        try:
            await workflow.execute_activity(
                "record_partner_payment",
                PartnerPaymentBooking(
                    invoice_id=state.invoice.invoice_id, payment=payment, recorded_by=workflow.info().workflow_id
                ),
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                result_type=PartnerPaymentBooked,
                summary=f"Book payment {payment.payment_id} of {payment.amount} to 21Vianet",
            )
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == "LedgerRejection":
                raise PayableRefused(cause.message) from None
            raise
        state.payments = [*state.payments, payment]

    async def _remind(self, step: Reminder) -> None:
        state = self._state
        try:
            receipt: NoticeReceipt = await workflow.execute_activity(
                "send_notice",
                self._notice(step),
                start_to_close_timeout=MAIL_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                schedule_to_close_timeout=OUTSIDE_GIVE_UP_AFTER,
                retry_policy=OUTSIDE_RETRY,
                result_type=NoticeReceipt,
                summary=_summary(step, state),
            )
        except ActivityError as error:
            reason = str(error.cause.message if isinstance(error.cause, ApplicationError) else error)
            if step.kind.closes:
                # The closing notice is a courtesy: the payment or the void is known, so the payable still completes.
                workflow.logger.error("closing notice not sent", extra={"key": step.key, "error": reason})
                core.mark_done(state, step)
                return
            core.reminder_failed(state, step, reason, workflow.now())
            workflow.logger.error("reminder to finance failed; will try again", extra={"key": step.key})
            return
        core.reminder_sent(state, step, workflow.now())
        workflow.logger.info(
            "reminder to finance sent", extra={"key": receipt.key, "already_sent": receipt.already_sent}
        )

    def _notice(self, step: Reminder) -> NoticeRequest:
        state = self._state
        invoice = state.invoice
        now = workflow.now()
        today = state.today(now)
        outstanding = state.outstanding
        rules = self._require_rules()
        following = None if step.kind.closes else core.next_after(state, rules, step.at)
        return NoticeRequest(
            key=step.key,
            kind=NoticeKind.PARTNER_PAYABLE,
            account=CustomerAccount(
                customer_id=PARTNER_ACCOUNT_ID,
                name=_FINANCE_TEAM[state.locale],
                email="finance@partner.invalid",
                locale=state.locale,
                time_zone=state.time_zone,
            ),
            workflow_id=workflow.info().workflow_id,
            invoices=[
                InvoiceBalance(
                    invoice_id=invoice.invoice_id,
                    amount=invoice.amount,
                    paid=state.paid,
                    credited=Money.zero(invoice.currency),
                    written_off=Money.zero(invoice.currency),
                    outstanding=outstanding,
                    issued_on=invoice.invoice_date,
                    due_on=invoice.due_on,
                    due_at=state.due_at,
                    description=invoice.description,
                )
            ],
            amount_due=outstanding,
            overdue_amount=outstanding if now >= state.due_at else Money.zero(invoice.currency),
            next_step=None
            if following is None
            else NoticeNextStep(kind=NextActionKind.REMINDER, on=following.at.astimezone(state.zone).date()),
            partner_payable=NoticePayable.of(state, today, rules, settled=step.kind.closes),
        )

    # --- what operators see -----------------------------------------------------------------------------

    def _status(self) -> PartnerPayableStatus:
        return core.build_status(self._state, self._require_rules(), workflow.now())

    def _require_rules(self) -> PartnerPayableRules:
        # Before the settings are loaded (a query in the first moments) the defaults describe the ladder.
        return self._rules or PartnerPayableRules()

    def _with_pending(self) -> PayableState:
        """The state as it will be once the accepted payments waiting in the inbox are applied."""
        # Every waiting payment passed the validator, which parsed it the same way.
        waiting = [inbox.parse(PartnerPayment, message.payload) for message in self._payments.waiting]
        pending = [payment for payment in waiting if self._state.payment(payment.payment_id) is None]
        return self._state.model_copy(update={"payments": [*self._state.payments, *pending]})

    def _publish(self) -> None:
        status = self._status()
        values: dict[str, object] = {
            attributes.BILLING_STAGE.name: status.stage.value,
            attributes.AMOUNT_DUE.name: float(status.amount_due.amount),  # display only; the books stay Decimal
            attributes.OLDEST_DUE_DATE.name: self._state.due_at,
        }
        updates = []
        for name, value in values.items():
            if self._published.get(name) != value:
                self._published[name] = value
                updates.append(attributes.BY_NAME[name].value_set(value))  # type: ignore[attr-defined]
        if updates:
            workflow.upsert_search_attributes(updates)
        details = core.current_details(status)
        if details != self._details:
            self._details = details
            workflow.set_current_details(details)


def _summary(step: Reminder, state: PayableState) -> str:
    labels = {
        ReminderKind.BEFORE_DUE: "Reminder to finance before the due date",
        ReminderKind.OVERDUE: "Overdue reminder to finance",
        ReminderKind.PAID: "Paid-in-full notice to finance",
        ReminderKind.VOIDED: "Voided-invoice notice to finance",
    }
    return f"{labels[step.kind]}: 21Vianet invoice {state.invoice.invoice_id}"
