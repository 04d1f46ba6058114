"""`CustomerBilling`: one customer's billing lifecycle, from invoice to payment or suspension and back.

The loop reads like the collections policy: take in what other services reported, ask the decision core
what is next, wait until it is due (or a message arrives), do it through an activity, record it.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from billing import collections, validation
    from billing import operator_rules as rules
    from billing.account_state import (
        BillingState,
        CollectionsIssue,
        DisputeRecord,
        StepFailure,
        Suspension,
        SuspensionReason,
    )
    from billing.collections import Decision, Step, StepKind
    from billing.models import (
        BillingStatus,
        CustomerAccount,
        Dispute,
        DisputeState,
        DunningPause,
        EscalateDispute,
        ExtendDueDate,
        Invoice,
        LedgerChanged,
        NoticeKind,
        NoticeRecord,
        Payment,
        RecordEscalation,
        Reinstate,
        RejectedMessage,
        ResolveDispute,
        SuspendNow,
        TimelineEntry,
        WriteOff,
    )
    from billing.operator_rules import Refused
    from billing.policy import CollectionsPolicy
    from billing.ports import (
        AccountBalance,
        ActiveSubscriptions,
        AuditEntry,
        BalanceRequest,
        CreditNoteRequest,
        DisputeRecordRequest,
        EscalationCase,
        EscalationCaseRequest,
        EscalationChange,
        LifecycleSettings,
        NoticeDispute,
        NoticeNextStep,
        NoticeReceipt,
        NoticeRequest,
        PaymentRecorded,
        RecordInvoiceRequest,
        RecordPaymentRequest,
        RescheduleInvoiceRequest,
        SubscriptionQuery,
        SubscriptionStatusChange,
        SubscriptionStatusChanged,
        SubscriptionStatusTarget,
        WriteOffRequest,
    )
    from billing.status import build_status, current_details

M = TypeVar("M", bound=BaseModel)

# workflow.patched ids: each guards a change of commands against histories recorded before it.
PATCH_NOTICE_TIME = "notice-time-is-workflow-time"

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
BILLING_STAGE = SearchAttributeKey.for_keyword("BillingStage")
AMOUNT_DUE = SearchAttributeKey.for_float("AmountDue")
OLDEST_DUE_DATE = SearchAttributeKey.for_datetime("OldestDueDate")
ESCALATION_REF = SearchAttributeKey.for_keyword("EscalationRef")

# The books must be reachable for anything to proceed: retry the ledger until it answers.
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["LedgerRejection"],
)
# Mail and Partner Center retry for a while; then the step is marked failed and tried again later, so an
# outage of either never stops payments from being taken in.
OUTSIDE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=[
        "MailRejected",
        "MailerNotConfigured",
        "InvalidRecipient",
        "InvalidNotice",
        "PartnerCenterRejected",
    ],
)
OUTSIDE_GIVE_UP_AFTER = timedelta(minutes=30)
# The client itself waits out 429s (Retry-After up to a minute) and 5xx a few times within one attempt.
PARTNER_CENTER_CALL_TIMEOUT = timedelta(minutes=5)
STEP_RETRY_BASE = timedelta(minutes=15)
STEP_RETRY_MAX = timedelta(hours=6)


class CarriedState(BaseModel):
    """What a continued-as-new run takes over from its predecessor."""

    state: BillingState
    settings: LifecycleSettings


class CustomerBillingInput(CustomerAccount):
    """The workflow input: the contract's `CustomerAccount` (all other services send just that), plus what a
    continued-as-new run takes over. One model, because the SDK only applies type hints when the number of
    arguments matches."""

    carried_over: CarriedState | None = None

    def customer_account(self) -> CustomerAccount:
        return CustomerAccount.model_validate(self.model_dump(exclude={"carried_over"}))


class InboxMessage(BaseModel):
    """A signal or an accepted update, waiting for the main loop (which alone changes the books)."""

    name: str
    payload: Any
    received_at: datetime
    update_id: str | None = None  # an operator's update waits for the outcome under this id


def end_of_day(invoice: Invoice, account: CustomerAccount) -> datetime:
    """When payment is due: `due_at`, or the end of `due_on` in the customer's time zone."""
    if invoice.due_at is not None:
        return invoice.due_at
    return datetime.combine(invoice.due_on + timedelta(days=1), time(0), tzinfo=account.zone)


@workflow.defn(name="CustomerBilling")
class CustomerBilling:
    _takers: ClassVar[dict[str, Callable[["CustomerBilling", InboxMessage], Awaitable[None]]]]

    @workflow.init
    def __init__(self, start: CustomerBillingInput) -> None:
        self._account = start.customer_account()
        carried = start.carried_over
        self._state: BillingState | None = carried.state if carried else None
        self._policy: CollectionsPolicy | None = carried.settings.policy if carried else None
        self._inbox: list[InboxMessage] = []
        self._outcomes: dict[str, str | None] = {}  # update id -> refusal message, or None when applied
        self._published: dict[str, object] = {}
        self._details = ""

    # --- messages from other services ----------------------------------------------------------------

    @workflow.signal(
        name="invoice_issued",
        description="An invoice issued to the customer (starts the lifecycle by signal-with-start). JSON: "
        '{"invoice_id", "customer_id", "amount": {"amount": "1234.50", "currency": "CNY"}, "issued_on": '
        '"2026-11-24", "due_on": "2026-12-24", "due_at"?, "description"?}. Invalid ones land in status.rejected.',
    )
    def invoice_issued(self, invoice: Any) -> None:
        # Taken as raw JSON and validated here, so an invalid invoice is recorded in `rejected`
        # instead of being dropped by the SDK's decoder.
        self._inbox.append(InboxMessage(name="invoice_issued", payload=invoice, received_at=workflow.now()))

    @workflow.signal(
        name="payment_received",
        description='A payment the bank reported. JSON: {"payment_id", "customer_id", "amount": {"amount", '
        '"currency"}, "received_at": "2026-11-24T10:00:00+08:00", "invoice_id"?}; without invoice_id the oldest '
        "invoice is paid first. A repeated payment_id counts once.",
    )
    def payment_received(self, payment: Any) -> None:
        self._inbox.append(InboxMessage(name="payment_received", payload=payment, received_at=workflow.now()))

    @workflow.signal(
        name="dispute_opened",
        description='The customer disputes an invoice or part of it. JSON: {"dispute_id", "customer_id", '
        '"invoice_id", "reason", "amount"?: {"amount": "100.00", "currency": "CNY"}} (no amount: the whole '
        "invoice). The disputed amount leaves the dunning ladder until the dispute is resolved.",
    )
    def dispute_opened(self, dispute: Any) -> None:
        self._inbox.append(InboxMessage(name="dispute_opened", payload=dispute, received_at=workflow.now()))

    @workflow.signal(
        name="ledger_changed",
        description="Sent by the daily sweep when the books differ from what this lifecycle last saw. JSON: "
        '{"customer_id", "amount_due": {"amount", "currency"}, "open_invoice_ids": ["INV-1"], "checked_at": '
        '"2026-11-24T06:00:00+08:00"}. The lifecycle re-reads its balance from the ledger and carries on from it.',
    )
    def ledger_changed(self, change: Any) -> None:
        self._inbox.append(InboxMessage(name="ledger_changed", payload=change, received_at=workflow.now()))

    # --- operator actions: validated updates, applied by the main loop in order -----------------------

    def _refuse_unless(self, model: type[M], payload: Any, check: Callable[[BillingState, M], None]) -> None:
        """Validator body: parse the payload and check it against the state; raise to refuse the update."""
        try:
            action = _parse(model, payload)
            # Before the first activity returns there is no state to check against: the main loop checks
            # again when it applies the action, and refuses it then if it must.
            if self._state is not None:
                check(self._state, action)
        except Refused as refusal:
            raise ApplicationError(str(refusal), type="Refused", non_retryable=True) from None

    async def _operate(self, name: str, payload: Any) -> BillingStatus:
        info = workflow.current_update_info()
        update_id = info.id if info else f"{name}-{workflow.now().isoformat()}"
        self._inbox.append(InboxMessage(name=name, payload=payload, received_at=workflow.now(), update_id=update_id))
        await workflow.wait_condition(lambda: update_id in self._outcomes)
        refusal = self._outcomes.pop(update_id)
        if refusal is not None:
            raise ApplicationError(refusal, type="Refused", non_retryable=True)
        return build_status(self._require_state(), self._decide(), workflow.now())

    @workflow.update(
        name="record_payment",
        description='Record a payment and learn the outcome. JSON: {"payment_id", "customer_id", "amount": '
        '{"amount": "1234.50", "currency": "CNY"}, "received_at": "2026-11-24T10:00:00+08:00", "invoice_id"?}. '
        "A repeated payment_id counts once. Returns the status after it.",
    )
    async def record_payment(self, payment: Any) -> BillingStatus:
        return await self._operate("record_payment", payment)

    @record_payment.validator
    def _validate_record_payment(self, payment: Any) -> None:
        self._refuse_unless(Payment, payment, rules.check_payment)

    @workflow.update(
        name="pause_dunning",
        description='Pause reminders, final notice and suspension. JSON: {"reason": "...", "until"?: '
        '"2026-12-01T09:00:00+08:00"}; without until the pause lasts until resume_dunning.',
    )
    async def pause_dunning(self, pause: Any) -> BillingStatus:
        return await self._operate("pause_dunning", pause)

    @pause_dunning.validator
    def _validate_pause_dunning(self, pause: Any) -> None:
        self._refuse_unless(DunningPause, pause, lambda state, action: rules.check_pause(state, action, workflow.now()))

    @workflow.update(
        name="resume_dunning",
        description='Resume dunning paused by pause_dunning. JSON: {"reason": "..."}.',
    )
    async def resume_dunning(self, resume: Any) -> BillingStatus:
        return await self._operate("resume_dunning", resume)

    @resume_dunning.validator
    def _validate_resume_dunning(self, resume: Any) -> None:
        self._refuse_unless(DunningPause, resume, lambda state, _: rules.check_resume(state, workflow.now()))

    @workflow.update(
        name="extend_due_date",
        description="Give the customer more time on one invoice; its ladder moves with the new date. JSON: "
        '{"invoice_id": "INV-1", "due_on": "2026-12-31", "reason": "..."}.',
    )
    async def extend_due_date(self, extension: Any) -> BillingStatus:
        return await self._operate("extend_due_date", extension)

    @extend_due_date.validator
    def _validate_extend_due_date(self, extension: Any) -> None:
        self._refuse_unless(
            ExtendDueDate,
            extension,
            lambda state, action: rules.check_extend_due_date(state, action, workflow.now()),
        )

    @workflow.update(
        name="write_off",
        description='Write off (part of) an invoice in the ledger. JSON: {"invoice_id": "INV-1", "amount"?: '
        '{"amount": "100.00", "currency": "CNY"}, "reason": "..."}; without amount: all that is outstanding.',
    )
    async def write_off(self, write_off: Any) -> BillingStatus:
        return await self._operate("write_off", write_off)

    @write_off.validator
    def _validate_write_off(self, write_off: Any) -> None:
        self._refuse_unless(WriteOff, write_off, rules.check_write_off)

    @workflow.update(
        name="suspend_now",
        description='Suspend the customer\'s active subscriptions at once. JSON: {"reason": "non_payment" or '
        '"fraud_review", "note": "..."}. fraud_review also sends the escalation desk a case for 21Vianet and '
        "holds the account suspended until reinstate.",
    )
    async def suspend_now(self, suspension: Any) -> BillingStatus:
        return await self._operate("suspend_now", suspension)

    @suspend_now.validator
    def _validate_suspend_now(self, suspension: Any) -> None:
        self._refuse_unless(SuspendNow, suspension, rules.check_suspend_now)

    @workflow.update(
        name="reinstate",
        description='Reactivate the subscriptions this engine suspended (only those). JSON: {"note": "..."}.',
    )
    async def reinstate(self, reinstatement: Any) -> BillingStatus:
        return await self._operate("reinstate", reinstatement)

    @reinstate.validator
    def _validate_reinstate(self, reinstatement: Any) -> None:
        self._refuse_unless(Reinstate, reinstatement, rules.check_reinstate)

    @workflow.update(
        name="resolve_dispute",
        description='Settle a dispute without 21Vianet. JSON: {"dispute_id", "outcome": "credit" or "uphold", '
        '"credit"?: {"amount": "100.00", "currency": "CNY"}, "note": "..."}. credit posts a credit note; uphold '
        "returns the amount to the ladder after a grace period.",
    )
    async def resolve_dispute(self, resolution: Any) -> BillingStatus:
        return await self._operate("resolve_dispute", resolution)

    @resolve_dispute.validator
    def _validate_resolve_dispute(self, resolution: Any) -> None:
        self._refuse_unless(ResolveDispute, resolution, rules.check_resolve_dispute)

    @workflow.update(
        name="escalate_dispute",
        description="Escalate a dispute to 21Vianet: the escalation desk gets the case to file in the Partner "
        'Center portal. JSON: {"dispute_id", "note": "..."}.',
    )
    async def escalate_dispute(self, escalation: Any) -> BillingStatus:
        return await self._operate("escalate_dispute", escalation)

    @escalate_dispute.validator
    def _validate_escalate_dispute(self, escalation: Any) -> None:
        self._refuse_unless(EscalateDispute, escalation, rules.check_escalate_dispute)

    @workflow.update(
        name="record_escalation",
        description="Record the reference 21Vianet gave for the filed case. JSON: "
        '{"dispute_id", "reference": "...", "note"?: "..."}.',
    )
    async def record_escalation(self, record: Any) -> BillingStatus:
        return await self._operate("record_escalation", record)

    @record_escalation.validator
    def _validate_record_escalation(self, record: Any) -> None:
        self._refuse_unless(RecordEscalation, record, rules.check_record_escalation)

    @workflow.update(
        name="resolve_escalation",
        description='Record 21Vianet\'s answer to an escalated dispute. JSON: {"dispute_id", "outcome": '
        '"credit" or "uphold", "credit"?: {"amount", "currency"}, "note": "..."}.',
    )
    async def resolve_escalation(self, resolution: Any) -> BillingStatus:
        return await self._operate("resolve_escalation", resolution)

    @resolve_escalation.validator
    def _validate_resolve_escalation(self, resolution: Any) -> None:
        self._refuse_unless(ResolveDispute, resolution, rules.check_resolve_escalation)

    @workflow.query(
        name="status",
        description="The customer's billing status: stage, amounts, invoices, disputes, suspended subscriptions, "
        "next action, notices sent, rejected messages, the timeline of operator actions and what it waits for.",
    )
    def status(self) -> BillingStatus:
        state = self._require_state()
        return build_status(state, self._decide(), workflow.now())

    # --- the lifecycle ----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, start: CustomerBillingInput) -> BillingStatus:
        account = self._account
        carried = start.carried_over
        settings = carried.settings if carried else await self._load_settings()
        self._policy = settings.policy
        if self._state is None:
            self._state = BillingState.new(account, settings.policy.currency)
        self._publish_customer_id()
        while True:
            await self._take_in_messages()
            now = workflow.now()
            collections.observe(self._state, now)
            decision = self._decide()
            self._publish(decision, now)
            if decision.finished:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._inbox:
                    break
                continue
            if decision.step is not None and decision.step.at <= now:
                await self._perform(decision.step)
                continue
            if self._should_continue_as_new(settings):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._inbox:
                    carried_over = CarriedState(state=self._state, settings=settings)
                    workflow.continue_as_new(CustomerBillingInput(**account.model_dump(), carried_over=carried_over))
            await self._sleep_until(decision)
        final = build_status(self._state, self._decide(), workflow.now())
        workflow.logger.info("billing lifecycle complete", extra={"customer_id": account.customer_id})
        return final

    async def _sleep_until(self, decision: Decision) -> None:
        now = workflow.now()
        timeout = None if decision.wake_at is None else max(decision.wake_at - now, timedelta(seconds=1))
        summary = None
        if decision.step is not None:
            what = collections.NEXT_ACTION_OF_STEP[decision.step.kind].value.replace("_", " ")
            target = f" for {decision.step.invoice_id}" if decision.step.invoice_id else ""
            summary = f"Wait until the {what}{target} on {decision.step.at:%Y-%m-%d %H:%M} UTC"
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: bool(self._inbox), timeout=timeout, timeout_summary=summary)

    def _should_continue_as_new(self, settings: LifecycleSettings) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > settings.history_event_limit

    def _decide(self) -> Decision:
        return collections.decide(self._require_state(), self._require_policy(), workflow.now())

    def _require_state(self) -> BillingState:
        if self._state is None:
            raise ApplicationError("the lifecycle has not started yet", type="NotStarted")
        return self._state

    def _require_policy(self) -> CollectionsPolicy:
        if self._policy is None:
            raise ApplicationError("the lifecycle has not loaded its policy yet", type="NotStarted")
        return self._policy

    async def _load_settings(self) -> LifecycleSettings:
        return await workflow.execute_activity(
            "load_lifecycle_settings",
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LEDGER_RETRY,
            result_type=LifecycleSettings,
            summary="Load the collections policy",
        )

    # --- taking in facts --------------------------------------------------------------------------------

    async def _take_in_messages(self) -> None:
        while self._inbox:
            message = self._inbox.pop(0)
            take = self._takers[message.name]
            try:
                await take(self, message)
            except Refused as refusal:
                if message.update_id is not None:
                    self._outcomes[message.update_id] = str(refusal)
                else:
                    self._reject(message, str(refusal), refusal.reference)
                continue
            if message.update_id is not None:
                await self._audit(message)
                self._outcomes[message.update_id] = None

    def _reject(self, message: InboxMessage, reason: str, reference: str | None = None) -> None:
        state = self._require_state()
        state.reject(RejectedMessage(name=message.name, reason=reason, at=message.received_at, reference=reference))
        workflow.logger.warning(
            "message rejected", extra={"signal": message.name, "reason": reason, "reference": reference}
        )

    def _check_owner(self, customer_id: str, amount_currency: str, ref: str) -> None:
        state = self._require_state()
        if customer_id != state.account.customer_id:
            raise Refused(f"belongs to customer {customer_id}, not {state.account.customer_id}", ref)
        if amount_currency != state.currency:
            raise Refused(f"amount is in {amount_currency}; this account is billed in {state.currency}", ref)

    async def _take_invoice(self, message: InboxMessage) -> None:
        state = self._require_state()
        invoice = _parse(Invoice, message.payload, "invoice_id")
        self._check_owner(invoice.customer_id, invoice.amount.currency, invoice.invoice_id)
        request = RecordInvoiceRequest(
            account=state.account,
            invoice=invoice,
            due_at=end_of_day(invoice, state.account),
            known_invoice_ids=[*state.invoice_ids, invoice.invoice_id],
        )
        balance = await self._ledger(
            "record_invoice",
            request,
            AccountBalance,
            invoice.invoice_id,
            f"Record invoice {invoice.invoice_id}",
        )
        if invoice.invoice_id not in state.invoice_ids:
            state.invoice_ids = [*state.invoice_ids, invoice.invoice_id]
            state.invoice_recorded_at = {**state.invoice_recorded_at, invoice.invoice_id: message.received_at}
        state.balance = balance

    async def _take_payment(self, message: InboxMessage) -> None:
        state = self._require_state()
        payment = _parse(Payment, message.payload, "payment_id")
        self._check_owner(payment.customer_id, payment.amount.currency, payment.payment_id)
        if payment.payment_id in state.payment_ids:
            return
        request = RecordPaymentRequest(payment=payment, known_invoice_ids=state.invoice_ids)
        recorded = await self._ledger(
            "record_payment",
            request,
            PaymentRecorded,
            payment.payment_id,
            f"Record payment {payment.payment_id}",
        )
        state.payment_ids = [*state.payment_ids, payment.payment_id]
        for allocation in recorded.allocations:
            if allocation.invoice_id not in state.invoice_ids:
                state.invoice_ids = [*state.invoice_ids, allocation.invoice_id]
        state.balance = recorded.balance
        if state.issue is not None and "payment" not in state.issue.resolutions:
            state.issue.resolutions = [*state.issue.resolutions, "payment"]

    async def _take_dispute(self, message: InboxMessage) -> None:
        state = self._require_state()
        dispute = _parse(Dispute, message.payload, "dispute_id")
        existing = state.dispute(dispute.dispute_id)
        if existing is not None:
            if existing.invoice_id != dispute.invoice_id:
                raise Refused(
                    f"dispute {dispute.dispute_id} already exists for {existing.invoice_id}",
                    dispute.dispute_id,
                )
            return
        _check(lambda: rules.check_dispute(state, dispute), dispute.dispute_id)
        invoice = state.invoice(dispute.invoice_id)
        assert invoice is not None
        amount = dispute.amount or invoice.outstanding - state.disputed_amount(dispute.invoice_id)
        await self._ledger(
            "record_dispute",
            DisputeRecordRequest(
                dispute_id=dispute.dispute_id,
                customer_id=state.account.customer_id,
                invoice_id=dispute.invoice_id,
                amount=amount,
                reason=dispute.reason,
                opened_at=message.received_at,
            ),
            type(None),
            dispute.dispute_id,
            f"Record dispute {dispute.dispute_id} on {dispute.invoice_id}",
        )
        state.disputes = [
            *state.disputes,
            DisputeRecord(
                dispute_id=dispute.dispute_id,
                invoice_id=dispute.invoice_id,
                amount=amount,
                reason=dispute.reason,
                opened_at=message.received_at,
            ),
        ]
        state.note(
            TimelineEntry(
                at=message.received_at,
                action="dispute_opened",
                detail=f"{amount} of {dispute.invoice_id}",
                reference=dispute.dispute_id,
            )
        )

    async def _take_ledger_change(self, message: InboxMessage) -> None:
        """Adopt the books' view: invoices booked without reaching us join the run (and get their invoice
        notice), and what was settled meanwhile counts towards resolving the open issue."""
        state = self._require_state()
        change = _parse(LedgerChanged, message.payload, "ledger")
        self._check_owner(change.customer_id, change.amount_due.currency, "ledger")
        known = [*state.invoice_ids, *(i for i in change.open_invoice_ids if i not in state.invoice_ids)]
        before = {invoice.invoice_id: invoice for invoice in state.balance.invoices}
        balance = await self._ledger(
            "get_balance",
            BalanceRequest(customer_id=state.account.customer_id, currency=state.currency, known_invoice_ids=known),
            AccountBalance,
            "ledger",
            "Re-read the balance from the ledger",
        )
        for invoice in balance.invoices:
            if invoice.invoice_id not in state.invoice_ids:
                state.invoice_ids = [*state.invoice_ids, invoice.invoice_id]
                state.invoice_recorded_at = {**state.invoice_recorded_at, invoice.invoice_id: message.received_at}
            earlier = before.get(invoice.invoice_id)
            if earlier is not None:
                for how, now_settled, was_settled in (
                    ("payment", invoice.paid, earlier.paid),
                    ("credit", invoice.credited, earlier.credited),
                    ("write_off", invoice.written_off, earlier.written_off),
                ):
                    if now_settled > was_settled:
                        self._resolved_by(how)
        if balance != state.balance:
            state.note(
                TimelineEntry(
                    at=message.received_at,
                    action="ledger_changed",
                    detail=f"amount due {state.balance.amount_due} -> {balance.amount_due} (from the ledger)",
                )
            )
        state.balance = balance

    async def _ledger(
        self, activity: str, request: BaseModel, result_type: type[Any], reference: str, summary: str
    ) -> Any:
        try:
            return await workflow.execute_activity(
                activity,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=LEDGER_RETRY,
                result_type=result_type,
                summary=summary,
            )
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == "LedgerRejection":
                raise Refused(cause.message, reference) from None
            raise

    # --- applying operator actions (the main loop calls these, one at a time) ---------------------------

    async def _apply_record_payment(self, message: InboxMessage) -> None:
        state = self._require_state()
        payment = _parse(Payment, message.payload)
        _check(lambda: rules.check_payment(state, payment))
        await self._take_payment(message)

    async def _apply_pause_dunning(self, message: InboxMessage) -> None:
        state = self._require_state()
        pause = _parse(DunningPause, message.payload)
        _check(lambda: rules.check_pause(state, pause, workflow.now()))
        state.dunning_paused = True
        state.paused_until = pause.until

    async def _apply_resume_dunning(self, message: InboxMessage) -> None:
        state = self._require_state()
        _parse(DunningPause, message.payload)
        _check(lambda: rules.check_resume(state, workflow.now()))
        state.dunning_paused = False
        state.paused_until = None

    async def _apply_extend_due_date(self, message: InboxMessage) -> None:
        state = self._require_state()
        extension = _parse(ExtendDueDate, message.payload)
        _check(lambda: rules.check_extend_due_date(state, extension, workflow.now()))
        due_at = datetime.combine(extension.due_on + timedelta(days=1), time(0), tzinfo=state.account.zone)
        request = RescheduleInvoiceRequest(
            change_id=self._action_id(message),
            customer_id=state.account.customer_id,
            invoice_id=extension.invoice_id,
            due_on=extension.due_on,
            due_at=due_at,
            reason=extension.reason,
            known_invoice_ids=state.invoice_ids,
        )
        state.balance = await self._ledger(
            "reschedule_invoice",
            request,
            AccountBalance,
            extension.invoice_id,
            f"Move the due date of {extension.invoice_id} to {extension.due_on}",
        )

    async def _apply_write_off(self, message: InboxMessage) -> None:
        state = self._require_state()
        write_off = _parse(WriteOff, message.payload)
        _check(lambda: rules.check_write_off(state, write_off))
        request = WriteOffRequest(
            write_off_id=self._action_id(message),
            customer_id=state.account.customer_id,
            invoice_id=write_off.invoice_id,
            amount=write_off.amount,
            reason=write_off.reason,
            known_invoice_ids=state.invoice_ids,
        )
        state.balance = await self._ledger(
            "write_off_invoice",
            request,
            AccountBalance,
            write_off.invoice_id,
            f"Write off {write_off.invoice_id}",
        )
        self._resolved_by("write_off")

    async def _apply_suspend_now(self, message: InboxMessage) -> None:
        state = self._require_state()
        action = _parse(SuspendNow, message.payload)
        _check(lambda: rules.check_suspend_now(state, action))
        now = workflow.now()
        active = await self._list_active_subscriptions()
        reason = SuspensionReason(action.reason)
        state.suspension = Suspension(
            key=f"operator-suspension-{state.suspension_count + 1}",
            reason=reason,
            suspended_at=now,
            subscription_ids=active.subscription_ids,
            invoice_id=collections.ladder_anchor(state),
            held_for_operator=reason is SuspensionReason.FRAUD_REVIEW,
        )
        state.suspension_count += 1
        if state.issue is None:
            state.issue = CollectionsIssue(key=f"operator-{state.issue_count + 1}", opened_at=now)
            state.issue_count += 1

    async def _apply_reinstate(self, message: InboxMessage) -> None:
        state = self._require_state()
        action = _parse(Reinstate, message.payload)
        _check(lambda: rules.check_reinstate(state, action))
        suspension = state.suspension
        assert suspension is not None
        await self._change_status(f"reinstatement-{suspension.key}", suspension.subscription_ids, "active")
        if suspension.invoice_id and suspension.invoice_id not in state.suspension_waived_for:
            # The operator decided: the ladder does not suspend again over the same invoice by itself.
            state.suspension_waived_for = [*state.suspension_waived_for, suspension.invoice_id]
        if state.issue is not None:
            state.issue.reinstated_subscription_ids = list(suspension.subscription_ids)
        state.suspension = None

    async def _apply_resolve_dispute(self, message: InboxMessage) -> None:
        await self._resolve(message, by_21vianet=False)

    async def _apply_resolve_escalation(self, message: InboxMessage) -> None:
        await self._resolve(message, by_21vianet=True)

    async def _resolve(self, message: InboxMessage, *, by_21vianet: bool) -> None:
        state = self._require_state()
        policy = self._require_policy()
        resolution = _parse(ResolveDispute, message.payload)
        check = rules.check_resolve_escalation if by_21vianet else rules.check_resolve_dispute
        _check(lambda: check(state, resolution))
        dispute = state.dispute(resolution.dispute_id)
        assert dispute is not None
        now = workflow.now()
        if resolution.credit is not None:
            state.balance = await self._ledger(
                "post_credit_note",
                CreditNoteRequest(
                    credit_id=f"credit-{dispute.dispute_id}",
                    dispute_id=dispute.dispute_id,
                    customer_id=state.account.customer_id,
                    invoice_id=dispute.invoice_id,
                    amount=resolution.credit,
                    reason=resolution.note,
                    known_invoice_ids=state.invoice_ids,
                ),
                AccountBalance,
                dispute.dispute_id,
                f"Credit {resolution.credit} on {dispute.invoice_id} for dispute {dispute.dispute_id}",
            )
        else:
            grace_ends = now + policy.dispute.grace_after_uphold
            state.dunning_not_before = max(grace_ends, state.dunning_not_before or grace_ends)
        if by_21vianet:
            await self._record_escalation_change(dispute, "resolved", note=resolution.note)
        dispute.state = DisputeState.RESOLVED
        dispute.outcome = resolution.outcome
        dispute.credit = resolution.credit
        dispute.resolution_note = resolution.note
        dispute.resolved_at = now
        dispute.resolved_by_21vianet = by_21vianet
        self._resolved_by("credit" if resolution.credit is not None else "uphold")
        if by_21vianet:
            self._resolved_by("21vianet_review")

    async def _apply_escalate_dispute(self, message: InboxMessage) -> None:
        state = self._require_state()
        escalation = _parse(EscalateDispute, message.payload)
        _check(lambda: rules.check_escalate_dispute(state, escalation))
        dispute = state.dispute(escalation.dispute_id)
        assert dispute is not None
        dispute.state = DisputeState.ESCALATED
        dispute.escalated_at = workflow.now()
        dispute.escalation_note = escalation.note

    async def _apply_record_escalation(self, message: InboxMessage) -> None:
        state = self._require_state()
        record = _parse(RecordEscalation, message.payload)
        _check(lambda: rules.check_record_escalation(state, record))
        dispute = state.dispute(record.dispute_id)
        assert dispute is not None
        await self._record_escalation_change(dispute, "filed", reference=record.reference, note=record.note)
        dispute.reference = record.reference
        dispute.reference_recorded_at = workflow.now()

    async def _record_escalation_change(
        self,
        dispute: DisputeRecord,
        status: str,
        *,
        reference: str | None = None,
        note: str | None = None,
        case: EscalationCase | None = None,
    ) -> None:
        state = self._require_state()
        change = EscalationChange(
            change_id=f"{workflow.info().workflow_id}/{dispute.dispute_id}/{status}/{reference or ''}",
            customer_id=state.account.customer_id,
            dispute_id=dispute.dispute_id,
            status=status,  # type: ignore[arg-type]
            reference=reference,
            note=note,
            at=workflow.now(),
            case=case,
        )
        await self._ledger(
            "record_escalation",
            change,
            type(None),
            dispute.dispute_id,
            f"Escalation of {dispute.dispute_id}: {status}",
        )

    def _resolved_by(self, how: str) -> None:
        state = self._require_state()
        if state.issue is not None and how not in state.issue.resolutions:
            state.issue.resolutions = [*state.issue.resolutions, how]

    def _action_id(self, message: InboxMessage) -> str:
        return f"{workflow.info().workflow_id}/{message.update_id or message.received_at.isoformat()}"

    async def _audit(self, message: InboxMessage) -> None:
        """Every accepted operator action goes to the ledger's audit trail and the status's timeline."""
        state = self._require_state()
        payload = message.payload if isinstance(message.payload, dict) else {}
        reason = str(payload.get("reason") or payload.get("note") or "")
        details = {
            key: str(value)
            for key, value in payload.items()
            if key not in ("reason", "note") and isinstance(value, str | int | float)
        }
        reference = next(
            (str(payload[key]) for key in ("dispute_id", "invoice_id", "payment_id") if payload.get(key)),
            None,
        )
        entry = AuditEntry(
            action_id=self._action_id(message),
            customer_id=state.account.customer_id,
            action=message.name,
            reason=reason,
            details=details,
            at=message.received_at,
        )
        await workflow.execute_activity(
            "record_audit",
            entry,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=LEDGER_RETRY,
            summary=f"Audit trail: {message.name}",
        )
        state.note(TimelineEntry(at=message.received_at, action=message.name, detail=reason, reference=reference))

    # --- doing the next step ----------------------------------------------------------------------------

    async def _perform(self, step: Step) -> None:
        state = self._require_state()
        try:
            if step.kind is StepKind.SUSPEND:
                await self._suspend(step)
            elif step.kind is StepKind.REINSTATE:
                await self._reinstate(step)
            elif step.kind is StepKind.SEND_ESCALATION_CASE:
                await self._send_escalation_case(step)
            else:
                await self._send_notice(step)
        except ActivityError as error:
            previous = state.failures.get(step.key)
            attempts = (previous.attempts if previous else 0) + 1
            delay = min(STEP_RETRY_BASE * (2 ** (attempts - 1)), STEP_RETRY_MAX)
            reason = str(error.cause.message if isinstance(error.cause, ApplicationError) else error)
            state.failures = {
                **state.failures,
                step.key: StepFailure(key=step.key, attempts=attempts, retry_at=workflow.now() + delay, error=reason),
            }
            workflow.logger.error(
                "collections step failed; will try again",
                extra={"step": step.key, "attempts": attempts, "retry_in_seconds": delay.total_seconds()},
            )
            return
        collections.mark_done(state, step)

    async def _send_escalation_case(self, step: Step) -> None:
        """Build the case from the books, keep it with the escalation in the ledger, mail it to the desk."""
        state = self._require_state()
        dispute = state.dispute(step.dispute_id or "")
        assert dispute is not None
        case: EscalationCase = await workflow.execute_activity(
            "build_escalation_case",
            EscalationCaseRequest(
                customer_id=state.account.customer_id,
                dispute_id=dispute.dispute_id,
                invoice_id=dispute.invoice_id,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=LEDGER_RETRY,
            result_type=EscalationCase,
            summary=f"Build the escalation case for dispute {dispute.dispute_id}",
        )
        await self._record_escalation_change(dispute, "case_sent", note=dispute.escalation_note, case=case)
        await self._send_notice(step, case)

    async def _send_notice(self, step: Step, case: EscalationCase | None = None) -> None:
        state = self._require_state()
        kind = step.notice_kind
        assert kind is not None
        now = workflow.now()
        if kind is NoticeKind.INVOICE:
            invoices = [invoice for invoice in state.balance.invoices if invoice.invoice_id == step.invoice_id]
        elif kind in (NoticeKind.CLOSE_THE_LOOP, NoticeKind.DATA_DELETION_WARNING):
            invoices = state.overdue_invoices(now) or []
        else:
            invoices = state.overdue_invoices(now) or state.open_invoices()
        suspension = state.suspension
        request = NoticeRequest(
            key=step.key,
            kind=kind,
            account=state.account,
            workflow_id=workflow.info().workflow_id,
            invoices=invoices,
            amount_due=state.balance.amount_due,
            overdue_amount=state.overdue_amount(now),
            next_step=step.then or (self._ladder_outlook() if kind is NoticeKind.INVOICE else None),
            suspended_on=suspension.suspended_at.astimezone(state.account.zone).date() if suspension else None,
            data_deletion_on=collections.data_deletion_date(state),
            subscription_ids=(
                list(suspension.subscription_ids)
                if suspension
                else list(state.issue.reinstated_subscription_ids)
                if state.issue
                else []
            ),
            resolution=self._resolution() if kind is NoticeKind.CLOSE_THE_LOOP else None,
            suspension_reason=suspension.reason.value if suspension else None,
            dispute=self._notice_dispute(step.dispute_id),
            desk_purpose=DESK_PURPOSE.get(step.kind),
            escalation_case=case,
            payments=_case_payments(case, state.account.customer_id),
            notices_sent=_desk_notices(case, state) if kind is NoticeKind.ESCALATION_CASE else [],
        )
        receipt: NoticeReceipt = await workflow.execute_activity(
            "send_notice",
            request,
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_close_timeout=OUTSIDE_GIVE_UP_AFTER,
            retry_policy=OUTSIDE_RETRY,
            result_type=NoticeReceipt,
            summary=_notice_summary(step),
        )
        # Workflow time, not the worker's clock: the core reasons in workflow time (suspension comes a full
        # warning period after the final notice). Runs recorded before this change keep the receipt's time.
        sent_at = workflow.now() if workflow.patched(PATCH_NOTICE_TIME) else receipt.sent_at
        state.record_notice(NoticeRecord(kind=kind, at=sent_at, invoice_id=step.invoice_id, key=step.key))
        workflow.logger.info("notice sent", extra={"key": receipt.key, "already_sent": receipt.already_sent})

    def _ladder_outlook(self) -> NoticeNextStep | None:
        """For the invoice notice: the date the ladder would suspend if nothing were paid."""
        return next((step.then for step in self._decide().pending if step.then is not None), None)

    def _resolution(self) -> str:
        """How the issue was resolved, for the close-the-loop notice, e.g. "credit,21vianet_review"."""
        state = self._require_state()
        ways = [way for way in (state.issue.resolutions if state.issue else []) if way != "uphold"]
        return ",".join(ways) or "payment"

    def _notice_dispute(self, dispute_id: str | None) -> NoticeDispute | None:
        state = self._require_state()
        dispute = state.dispute(dispute_id) if dispute_id else None
        if dispute is None:
            return None
        return NoticeDispute(
            dispute_id=dispute.dispute_id,
            invoice_id=dispute.invoice_id,
            reason=dispute.reason,
            amount=dispute.amount,
            outcome=dispute.outcome,  # type: ignore[arg-type]
            credit=dispute.credit,
            note=dispute.resolution_note or dispute.escalation_note,
            escalation_reference=dispute.reference,
        )

    async def _list_active_subscriptions(self) -> ActiveSubscriptions:
        state = self._require_state()
        return await workflow.execute_activity(
            "list_active_subscriptions",
            SubscriptionQuery(tenant_id=state.account.tenant_id, correlation_id=workflow.info().workflow_id),
            start_to_close_timeout=PARTNER_CENTER_CALL_TIMEOUT,
            schedule_to_close_timeout=OUTSIDE_GIVE_UP_AFTER,
            retry_policy=OUTSIDE_RETRY,
            result_type=ActiveSubscriptions,
            summary=f"List active subscriptions of tenant {state.account.tenant_id}",
        )

    async def _suspend(self, step: Step) -> None:
        state = self._require_state()
        if state.suspension is None:
            active = await self._list_active_subscriptions()
            # Recorded before any change, so a retry acts on exactly these and reinstatement finds them all.
            state.suspension = Suspension(
                key=step.key,
                reason=SuspensionReason.NON_PAYMENT,
                suspended_at=workflow.now(),
                subscription_ids=active.subscription_ids,
                invoice_id=step.invoice_id,
            )
            state.suspension_count += 1
        suspension = state.suspension
        await self._change_status(suspension.key, suspension.subscription_ids, "suspended")
        suspension.confirmed = True

    async def _reinstate(self, step: Step) -> None:
        state = self._require_state()
        suspension = state.suspension
        assert suspension is not None
        await self._change_status(step.key, suspension.subscription_ids, "active")
        if state.issue is not None:
            state.issue.reinstated_subscription_ids = list(suspension.subscription_ids)
        state.suspension = None

    async def _change_status(
        self, key: str, subscription_ids: list[str], target: SubscriptionStatusTarget
    ) -> list[str]:
        state = self._require_state()
        workflow_id = workflow.info().workflow_id
        changes = [
            workflow.execute_activity(
                "change_subscription_status",
                SubscriptionStatusChange(
                    tenant_id=state.account.tenant_id,
                    subscription_id=subscription_id,
                    target=target,
                    request_key=f"{workflow_id}/{key}/{subscription_id}",
                    correlation_id=workflow_id,
                ),
                start_to_close_timeout=PARTNER_CENTER_CALL_TIMEOUT,
                schedule_to_close_timeout=OUTSIDE_GIVE_UP_AFTER,
                retry_policy=OUTSIDE_RETRY,
                result_type=SubscriptionStatusChanged,
                summary=f"Set subscription {subscription_id} {target}",
            )
            for subscription_id in subscription_ids
        ]
        results: list[SubscriptionStatusChanged] = list(await asyncio.gather(*changes))
        return [result.subscription_id for result in results if result.status == target]

    # --- what operators see -----------------------------------------------------------------------------

    def _publish_customer_id(self) -> None:
        self._upsert({CUSTOMER_ID.name: self._account.customer_id})

    def _publish(self, decision: Decision, now: datetime) -> None:
        state = self._require_state()
        status = build_status(state, decision, now)
        open_invoices = state.open_invoices()
        self._upsert(
            {
                BILLING_STAGE.name: status.stage.value,
                AMOUNT_DUE.name: float(status.amount_due.amount),  # display only; the books stay Decimal
                OLDEST_DUE_DATE.name: open_invoices[0].due_at if open_invoices else None,
                **self._escalation_reference(),
            }
        )
        details = current_details(status, state.account.time_zone)
        if details != self._details:
            self._details = details
            workflow.set_current_details(details)

    def _escalation_reference(self) -> dict[str, object]:
        """The latest 21Vianet reference, once one is recorded (older histories never set it)."""
        references = [d.reference for d in self._require_state().disputes if d.reference]
        return {ESCALATION_REF.name: references[-1]} if references else {}

    def _upsert(self, values: dict[str, object]) -> None:
        keys = {
            CUSTOMER_ID.name: CUSTOMER_ID,
            BILLING_STAGE.name: BILLING_STAGE,
            AMOUNT_DUE.name: AMOUNT_DUE,
            OLDEST_DUE_DATE.name: OLDEST_DUE_DATE,
            ESCALATION_REF.name: ESCALATION_REF,
        }
        updates = []
        for name, value in values.items():
            if self._published.get(name, _UNSET) == value:
                continue
            self._published[name] = value
            key = keys[name]
            updates.append(key.value_unset() if value is None else key.value_set(value))  # type: ignore[attr-defined]
        if updates:
            workflow.upsert_search_attributes(updates)


DESK_PURPOSE: dict[StepKind, Literal["case", "chase", "desk_reminder", "fraud_review"]] = {
    StepKind.SEND_ESCALATION_CASE: "case",
    StepKind.CHASE_ESCALATION_DESK: "chase",
    StepKind.REMIND_DESK: "desk_reminder",
    StepKind.SEND_FRAUD_REVIEW_CASE: "fraud_review",
}

CustomerBilling._takers = {
    "invoice_issued": CustomerBilling._take_invoice,
    "payment_received": CustomerBilling._take_payment,
    "dispute_opened": CustomerBilling._take_dispute,
    "ledger_changed": CustomerBilling._take_ledger_change,
    "record_payment": CustomerBilling._apply_record_payment,
    "pause_dunning": CustomerBilling._apply_pause_dunning,
    "resume_dunning": CustomerBilling._apply_resume_dunning,
    "extend_due_date": CustomerBilling._apply_extend_due_date,
    "write_off": CustomerBilling._apply_write_off,
    "suspend_now": CustomerBilling._apply_suspend_now,
    "reinstate": CustomerBilling._apply_reinstate,
    "resolve_dispute": CustomerBilling._apply_resolve_dispute,
    "escalate_dispute": CustomerBilling._apply_escalate_dispute,
    "record_escalation": CustomerBilling._apply_record_escalation,
    "resolve_escalation": CustomerBilling._apply_resolve_escalation,
}

_UNSET = object()


def _parse(model: type[M], payload: Any, reference_field: str | None = None) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        reference = _reference(payload, reference_field) if reference_field else None
        raise Refused(f"invalid input: {validation.reason(error)}", reference) from None


def _check(check: Callable[[], None], reference: str | None = None) -> None:
    try:
        check()
    except Refused as refusal:
        raise Refused(str(refusal), reference) from None


def _desk_notices(case: EscalationCase | None, state: BillingState) -> list[NoticeRecord]:
    """Every notice the customer got: from the ledger's notice log when there is a case (all runs), else
    what this run sent."""
    if case is None:
        return list(state.notices)
    return [
        NoticeRecord(kind=entry.kind, at=entry.sent_at, invoice_id=entry.invoice_id, key=entry.key)
        for entry in case.notices
    ]


def _case_payments(case: EscalationCase | None, customer_id: str) -> list[Payment]:
    if case is None:
        return []
    return [
        Payment(
            payment_id=view.payment_id,
            customer_id=customer_id,
            amount=view.amount,
            received_at=view.received_at,
            invoice_id=view.allocations[0].invoice_id if len(view.allocations) == 1 else None,
        )
        for view in case.payments
    ]


def _reference(payload: Any, field: str) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get(field), str):
        return str(payload[field])[:100]
    return None


def _notice_summary(step: Step) -> str:
    target = f" for {step.invoice_id}" if step.invoice_id else ""
    labels = {
        StepKind.SEND_INVOICE: "Invoice notice",
        StepKind.SEND_REMINDER: f"Reminder {step.rung}",
        StepKind.SEND_FINAL_NOTICE: "Final notice",
        StepKind.SEND_SUSPENSION_NOTICE: "Suspension notice",
        StepKind.SEND_DATA_DELETION_WARNING: f"Data deletion warning {step.rung}",
        StepKind.CLOSE_THE_LOOP: "Close-the-loop notice",
        StepKind.SEND_DISPUTE_RECEIVED: f"Dispute {step.dispute_id} received",
        StepKind.SEND_DISPUTE_RESOLVED: f"Dispute {step.dispute_id} resolved",
        StepKind.SEND_ESCALATION_CASE: f"Escalation case for dispute {step.dispute_id} to the desk",
        StepKind.CHASE_ESCALATION_DESK: f"Chase the desk on dispute {step.dispute_id} ({step.rung})",
        StepKind.REMIND_DESK: f"Remind the desk to resolve or escalate dispute {step.dispute_id}",
        StepKind.SEND_FRAUD_REVIEW_CASE: "Fraud review case to the desk",
    }
    return labels.get(step.kind, step.kind.value) + target
