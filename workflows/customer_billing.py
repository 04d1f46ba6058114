"""`CustomerBilling`: one customer's billing lifecycle, from invoice to payment or suspension and back.

The loop reads like the collections policy: take in what other services reported, ask the decision core
what is next, wait until it is due (or a message arrives), do it through an activity, record it.
"""

import asyncio
import contextlib
from datetime import datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from billing import collections
    from billing.account_state import BillingState, StepFailure, Suspension, SuspensionReason
    from billing.collections import Decision, Step, StepKind
    from billing.models import (
        BillingStatus,
        CustomerAccount,
        Invoice,
        NoticeKind,
        NoticeRecord,
        Payment,
        RejectedMessage,
    )
    from billing.policy import CollectionsPolicy
    from billing.ports import (
        AccountBalance,
        ActiveSubscriptions,
        LifecycleSettings,
        NoticeReceipt,
        NoticeRequest,
        PaymentRecorded,
        RecordInvoiceRequest,
        RecordPaymentRequest,
        SubscriptionQuery,
        SubscriptionStatusChange,
        SubscriptionStatusChanged,
        SubscriptionStatusTarget,
    )
    from billing.status import build_status, current_details

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
BILLING_STAGE = SearchAttributeKey.for_keyword("BillingStage")
AMOUNT_DUE = SearchAttributeKey.for_float("AmountDue")
OLDEST_DUE_DATE = SearchAttributeKey.for_datetime("OldestDueDate")

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
    name: str
    payload: Any
    received_at: datetime


def end_of_day(invoice: Invoice, account: CustomerAccount) -> datetime:
    """When payment is due: `due_at`, or the end of `due_on` in the customer's time zone."""
    if invoice.due_at is not None:
        return invoice.due_at
    return datetime.combine(invoice.due_on + timedelta(days=1), time(0), tzinfo=account.zone)


def _validation_reason(error: ValidationError) -> str:
    """A readable reason without echoing the payload (it may hold personal data)."""
    parts = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"]) or "payload"
        parts.append(f"{where}: {detail['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


@workflow.defn(name="CustomerBilling")
class CustomerBilling:
    @workflow.init
    def __init__(self, start: CustomerBillingInput) -> None:
        self._account = start.customer_account()
        carried = start.carried_over
        self._state: BillingState | None = carried.state if carried else None
        self._policy: CollectionsPolicy | None = carried.settings.policy if carried else None
        self._inbox: list[InboxMessage] = []
        self._published: dict[str, object] = {}
        self._details = ""

    # --- messages from other services ----------------------------------------------------------------

    @workflow.signal(name="invoice_issued")
    def invoice_issued(self, invoice: Any) -> None:
        # Taken as raw JSON and validated here, so an invalid invoice is recorded in `rejected`
        # instead of being dropped by the SDK's decoder.
        self._inbox.append(InboxMessage(name="invoice_issued", payload=invoice, received_at=workflow.now()))

    @workflow.signal(name="payment_received")
    def payment_received(self, payment: Any) -> None:
        self._inbox.append(InboxMessage(name="payment_received", payload=payment, received_at=workflow.now()))

    @workflow.query(name="status")
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
                    workflow.continue_as_new(
                        CustomerBillingInput(**account.model_dump(), carried_over=carried_over)
                    )
            await self._sleep_until(decision)
        final = build_status(self._state, self._decide(), workflow.now())
        workflow.logger.info("billing lifecycle complete", extra={"customer_id": account.customer_id})
        return final

    async def _sleep_until(self, decision: Decision) -> None:
        now = workflow.now()
        timeout = None if decision.wake_at is None else max(decision.wake_at - now, timedelta(seconds=1))
        summary = None
        if decision.step is not None:
            what = decision.step.kind.value.replace("_", " ")
            summary = f"Wait for the {what} at {decision.step.at:%Y-%m-%d %H:%M} UTC"
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: bool(self._inbox), timeout=timeout, timeout_summary=summary)

    def _should_continue_as_new(self, settings: LifecycleSettings) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > settings.history_event_limit
        )

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
            if message.name == "invoice_issued":
                await self._take_invoice(message)
            elif message.name == "payment_received":
                await self._take_payment(message)

    def _reject(self, message: InboxMessage, reason: str, reference: str | None = None) -> None:
        state = self._require_state()
        state.reject(
            RejectedMessage(name=message.name, reason=reason, at=message.received_at, reference=reference)
        )
        workflow.logger.warning(
            "message rejected", extra={"signal": message.name, "reason": reason, "reference": reference}
        )

    def _check_owner(self, message: InboxMessage, customer_id: str, amount_currency: str, ref: str) -> bool:
        state = self._require_state()
        if customer_id != state.account.customer_id:
            self._reject(message, f"belongs to customer {customer_id}, not {state.account.customer_id}", ref)
            return False
        if amount_currency != state.currency:
            self._reject(
                message, f"amount is in {amount_currency}; this account is billed in {state.currency}", ref
            )
            return False
        return True

    async def _take_invoice(self, message: InboxMessage) -> None:
        state = self._require_state()
        try:
            invoice = Invoice.model_validate(message.payload)
        except ValidationError as error:
            self._reject(message, _validation_reason(error), _reference(message.payload, "invoice_id"))
            return
        if not self._check_owner(message, invoice.customer_id, invoice.amount.currency, invoice.invoice_id):
            return
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
            message,
            invoice.invoice_id,
            f"Record invoice {invoice.invoice_id}",
        )
        if balance is None:
            return
        if invoice.invoice_id not in state.invoice_ids:
            state.invoice_ids = [*state.invoice_ids, invoice.invoice_id]
            state.invoice_recorded_at = {**state.invoice_recorded_at, invoice.invoice_id: message.received_at}
        state.balance = balance

    async def _take_payment(self, message: InboxMessage) -> None:
        state = self._require_state()
        try:
            payment = Payment.model_validate(message.payload)
        except ValidationError as error:
            self._reject(message, _validation_reason(error), _reference(message.payload, "payment_id"))
            return
        if not self._check_owner(message, payment.customer_id, payment.amount.currency, payment.payment_id):
            return
        if payment.payment_id in state.payment_ids:
            return
        request = RecordPaymentRequest(payment=payment, known_invoice_ids=state.invoice_ids)
        recorded = await self._ledger(
            "record_payment",
            request,
            PaymentRecorded,
            message,
            payment.payment_id,
            f"Record payment {payment.payment_id}",
        )
        if recorded is None:
            return
        state.payment_ids = [*state.payment_ids, payment.payment_id]
        for allocation in recorded.allocations:
            if allocation.invoice_id not in state.invoice_ids:
                state.invoice_ids = [*state.invoice_ids, allocation.invoice_id]
        state.balance = recorded.balance

    async def _ledger(
        self,
        activity: str,
        request: BaseModel,
        result_type: type[Any],
        message: InboxMessage,
        reference: str,
        summary: str,
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
                self._reject(message, cause.message, reference)
                return None
            raise

    # --- doing the next step ----------------------------------------------------------------------------

    async def _perform(self, step: Step) -> None:
        state = self._require_state()
        try:
            if step.kind is StepKind.SUSPEND:
                await self._suspend(step)
            elif step.kind is StepKind.REINSTATE:
                await self._reinstate(step)
            else:
                await self._send_notice(step)
        except ActivityError as error:
            previous = state.failures.get(step.key)
            attempts = (previous.attempts if previous else 0) + 1
            delay = min(STEP_RETRY_BASE * (2 ** (attempts - 1)), STEP_RETRY_MAX)
            reason = str(error.cause.message if isinstance(error.cause, ApplicationError) else error)
            state.failures = {
                **state.failures,
                step.key: StepFailure(
                    key=step.key, attempts=attempts, retry_at=workflow.now() + delay, error=reason
                ),
            }
            workflow.logger.error(
                "collections step failed; will try again",
                extra={"step": step.key, "attempts": attempts, "retry_in_seconds": delay.total_seconds()},
            )
            return
        collections.mark_done(state, step)

    async def _send_notice(self, step: Step) -> None:
        state = self._require_state()
        kind = step.notice_kind
        assert kind is not None
        now = workflow.now()
        if kind is NoticeKind.INVOICE:
            invoices = [
                invoice for invoice in state.balance.invoices if invoice.invoice_id == step.invoice_id
            ]
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
            next_step=step.then,
            suspended_on=suspension.suspended_at.astimezone(state.account.zone).date()
            if suspension
            else None,
            data_deletion_on=collections.data_deletion_date(state),
            subscription_ids=(
                list(suspension.subscription_ids)
                if suspension
                else list(state.issue.reinstated_subscription_ids)
                if state.issue
                else []
            ),
            resolution="payment" if kind is NoticeKind.CLOSE_THE_LOOP else None,
            suspension_reason=suspension.reason.value if suspension else None,
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
        state.record_notice(
            NoticeRecord(kind=kind, at=receipt.sent_at, invoice_id=step.invoice_id, key=step.key)
        )

    async def _suspend(self, step: Step) -> None:
        state = self._require_state()
        if state.suspension is None:
            active: ActiveSubscriptions = await workflow.execute_activity(
                "list_active_subscriptions",
                SubscriptionQuery(
                    tenant_id=state.account.tenant_id, correlation_id=workflow.info().workflow_id
                ),
                start_to_close_timeout=PARTNER_CENTER_CALL_TIMEOUT,
                schedule_to_close_timeout=OUTSIDE_GIVE_UP_AFTER,
                retry_policy=OUTSIDE_RETRY,
                result_type=ActiveSubscriptions,
                summary=f"List active subscriptions of tenant {state.account.tenant_id}",
            )
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
            }
        )
        details = current_details(status, state.account.time_zone)
        if details != self._details:
            self._details = details
            workflow.set_current_details(details)

    def _upsert(self, values: dict[str, object]) -> None:
        keys = {
            CUSTOMER_ID.name: CUSTOMER_ID,
            BILLING_STAGE.name: BILLING_STAGE,
            AMOUNT_DUE.name: AMOUNT_DUE,
            OLDEST_DUE_DATE.name: OLDEST_DUE_DATE,
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


_UNSET = object()


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
    }
    return labels.get(step.kind, step.kind.value) + target
