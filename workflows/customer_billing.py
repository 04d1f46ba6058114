"""`CustomerBilling`: one customer's billing lifecycle, from invoice to payment or suspension and back.

The loop reads like the collections policy: take in what other services reported, ask the decision core
what is next, wait until it is due (or a message arrives), do it through an activity, record the outcome.
Every rule lives in `billing/lifecycle/`; here each outside call is one small method followed by one
transition.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as FailureTimeoutError

# Everything but this module is passed through the sandbox: it is imported once per worker, not executed again
# (models built again) for every lifecycle the worker takes up.
with workflow.unsafe.imports_passed_through():
    # `import ... as`, not `from workflows import inbox`: a submodule named in a from-list is imported by Python's
    # own machinery, past the sandbox's pass-through, and would be compiled again for every instance.
    import workflows.inbox as inbox
    from activities.collections_policy import PolicyActivities
    from activities.ledger import LedgerActivities
    from activities.mailer import MailerActivities
    from activities.partner_center import PartnerCenterActivities
    from billing import search_attributes as attributes
    from billing.ledger_messages import AccountBalance, EscalationCase, EscalationStatus, PaymentRecorded
    from billing.lifecycle import ledger_requests as requests
    from billing.lifecycle import next_step, notice, transitions
    from billing.lifecycle import operator_rules as rules
    from billing.lifecycle.state import BillingState, CarriedState, CustomerBillingInput, DisputeRecord
    from billing.lifecycle.status import build_status, current_details
    from billing.lifecycle.steps import NEXT_ACTION_OF_STEP, Decision, Step, StepKind
    from billing.message_catalog import describe
    from billing.models import (
        BillingStatus,
        Dispute,
        DunningPause,
        EscalateDispute,
        ExtendDueDate,
        Invoice,
        LedgerChanged,
        Payment,
        RecordEscalation,
        Reinstate,
        RejectedMessage,
        ResolveDispute,
        SuspendNow,
        WriteOff,
    )
    from billing.money import Money
    from billing.partner_center_messages import (
        ActiveSubscriptions,
        SubscriptionQuery,
        SubscriptionsChange,
        SubscriptionStatusChange,
        SubscriptionStatusChanged,
        SubscriptionStatusTarget,
    )
    from billing.policy import CollectionsPolicy, LifecycleSettings
    from billing.refusals import Refused
    from workflows.activity_options import (
        HEARTBEAT_TIMEOUT,
        LEDGER_RETRY,
        LEDGER_TIMEOUT,
        LOCAL_RETRY_THRESHOLD,
        MAIL_TIMEOUT,
        OUTSIDE_GIVE_UP_AFTER,
        OUTSIDE_RETRY,
        PARTNER_CENTER_CALL_TIMEOUT,
        SETTINGS_TIMEOUT,
    )
    from workflows.inbox import InboxMessage

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P")
R = TypeVar("R")

# workflow.patched ids: each guards a change of commands against histories recorded before it.
PATCH_NOTICE_TIME = "notice-time-is-workflow-time"
PATCH_LADDER_RESTARTS = "ladder-restarts-after-extension-or-pause"
PATCH_NOTICE_GAP = "dunning-notices-keep-a-minimum-gap"
PATCH_SUBSCRIPTION_ANSWERS = "partner-center-answers-per-subscription"
PATCH_CHINA_CALENDAR = "business-days-follow-china-calendar"
# Every patch above, and fewer Temporal actions: a run that records this one marker takes every earlier change
# without a marker (and a TemporalChangeVersion upsert) each; it reads the policy in a local activity,
# publishes its search attributes (CustomerId with them) only when it waits, and changes all of a customer's
# subscriptions in one Partner Center activity on Partner Center's own task queue.
PATCH_FEWER_ACTIONS = "lifecycle-fewer-actions"
# All of the above, and the books and the mailer called in this worker (local activities): every ledger write
# and notice of one workflow task is one Temporal action, so the invoice is booked and its notice sent in the
# workflow task that reads the policy. Partner Center stays on its own rate-limited task queue.
PATCH_BOOKS_AND_MAIL_IN_WORKER = "lifecycle-books-and-mail-in-worker"


@workflow.defn(name="CustomerBilling")
class CustomerBilling:
    @workflow.init
    def __init__(self, start: CustomerBillingInput) -> None:
        self._account = start.customer_account()
        carried = start.carried_over
        self._state: BillingState | None = carried.state if carried else None
        self._policy: CollectionsPolicy | None = carried.settings.policy if carried else None
        self._inbox = inbox.Inbox()
        self._published: dict[str, object] = {}
        self._details = ""
        self._fewer_actions = False
        self._books_and_mail_in_worker = False
        self._partner_center_task_queue: str | None = None

    # --- messages from other services ----------------------------------------------------------------

    @workflow.signal(name="invoice_issued", description=describe("CustomerBilling", "invoice_issued"))
    def invoice_issued(self, invoice: RawValue = inbox.NO_PAYLOAD) -> None:
        # Taken as raw JSON and validated by the loop, so an invalid invoice is recorded in `rejected`
        # instead of being dropped by the SDK's decoder.
        self._inbox.signalled("invoice_issued", invoice)

    @workflow.signal(name="payment_received", description=describe("CustomerBilling", "payment_received"))
    def payment_received(self, payment: RawValue = inbox.NO_PAYLOAD) -> None:
        self._inbox.signalled("payment_received", payment)

    @workflow.signal(name="dispute_opened", description=describe("CustomerBilling", "dispute_opened"))
    def dispute_opened(self, dispute: RawValue = inbox.NO_PAYLOAD) -> None:
        self._inbox.signalled("dispute_opened", dispute)

    @workflow.signal(name="ledger_changed", description=describe("CustomerBilling", "ledger_changed"))
    def ledger_changed(self, change: RawValue = inbox.NO_PAYLOAD) -> None:
        self._inbox.signalled("ledger_changed", change)

    # --- operator actions: validated updates, applied by the main loop in order -----------------------

    def _refuse_unless(self, model: type[M], payload: RawValue, check: Callable[[BillingState, M], None]) -> None:
        """Validator body: parse the payload and check it against the state; raise to refuse the update."""
        try:
            action = inbox.parse(model, payload)
            # Before the first activity returns there is no state to check against, and while earlier messages
            # are being applied the state is not yet theirs: the main loop checks again when it applies the
            # action, and refuses it then if it must.
            if self._state is not None and self._inbox.settled:
                check(self._state, action)
        except Refused as refusal:
            raise inbox.refused(str(refusal)) from None

    async def _operate(self, name: str, payload: RawValue) -> BillingStatus:
        await self._inbox.updated(name, payload)
        return build_status(self._require_state(), self._decide(), workflow.now())

    @workflow.update(name="record_payment", description=describe("CustomerBilling", "record_payment"))
    async def record_payment(self, payment: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("record_payment", payment)

    @record_payment.validator
    def _validate_record_payment(self, payment: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(Payment, payment, rules.check_payment)

    @workflow.update(name="pause_dunning", description=describe("CustomerBilling", "pause_dunning"))
    async def pause_dunning(self, pause: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("pause_dunning", pause)

    @pause_dunning.validator
    def _validate_pause_dunning(self, pause: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(DunningPause, pause, lambda state, action: rules.check_pause(state, action, workflow.now()))

    @workflow.update(name="resume_dunning", description=describe("CustomerBilling", "resume_dunning"))
    async def resume_dunning(self, resume: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("resume_dunning", resume)

    @resume_dunning.validator
    def _validate_resume_dunning(self, resume: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(DunningPause, resume, lambda state, _: rules.check_resume(state, workflow.now()))

    @workflow.update(name="extend_due_date", description=describe("CustomerBilling", "extend_due_date"))
    async def extend_due_date(self, extension: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("extend_due_date", extension)

    @extend_due_date.validator
    def _validate_extend_due_date(self, extension: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(
            ExtendDueDate,
            extension,
            lambda state, action: rules.check_extend_due_date(state, action, workflow.now()),
        )

    @workflow.update(name="write_off", description=describe("CustomerBilling", "write_off"))
    async def write_off(self, write_off: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("write_off", write_off)

    @write_off.validator
    def _validate_write_off(self, write_off: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(WriteOff, write_off, rules.check_write_off)

    @workflow.update(name="suspend_now", description=describe("CustomerBilling", "suspend_now"))
    async def suspend_now(self, suspension: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("suspend_now", suspension)

    @suspend_now.validator
    def _validate_suspend_now(self, suspension: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(
            SuspendNow, suspension, lambda state, action: rules.check_suspend_now(state, action, workflow.now())
        )

    @workflow.update(name="reinstate", description=describe("CustomerBilling", "reinstate"))
    async def reinstate(self, reinstatement: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("reinstate", reinstatement)

    @reinstate.validator
    def _validate_reinstate(self, reinstatement: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(Reinstate, reinstatement, rules.check_reinstate)

    @workflow.update(name="resolve_dispute", description=describe("CustomerBilling", "resolve_dispute"))
    async def resolve_dispute(self, resolution: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("resolve_dispute", resolution)

    @resolve_dispute.validator
    def _validate_resolve_dispute(self, resolution: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(ResolveDispute, resolution, rules.check_resolve_dispute)

    @workflow.update(name="escalate_dispute", description=describe("CustomerBilling", "escalate_dispute"))
    async def escalate_dispute(self, escalation: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("escalate_dispute", escalation)

    @escalate_dispute.validator
    def _validate_escalate_dispute(self, escalation: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(EscalateDispute, escalation, rules.check_escalate_dispute)

    @workflow.update(name="record_escalation", description=describe("CustomerBilling", "record_escalation"))
    async def record_escalation(self, record: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("record_escalation", record)

    @record_escalation.validator
    def _validate_record_escalation(self, record: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(RecordEscalation, record, rules.check_record_escalation)

    @workflow.update(name="resolve_escalation", description=describe("CustomerBilling", "resolve_escalation"))
    async def resolve_escalation(self, resolution: RawValue = inbox.NO_PAYLOAD) -> BillingStatus:
        return await self._operate("resolve_escalation", resolution)

    @resolve_escalation.validator
    def _validate_resolve_escalation(self, resolution: RawValue = inbox.NO_PAYLOAD) -> None:
        self._refuse_unless(ResolveDispute, resolution, rules.check_resolve_escalation)

    @workflow.query(name="status", description=describe("CustomerBilling", "status"))
    def status(self) -> BillingStatus:
        state = self._require_state()
        return build_status(state, self._decide(), workflow.now())

    # --- the lifecycle ----------------------------------------------------------------------------------

    @workflow.run
    async def run(self, start: CustomerBillingInput) -> BillingStatus:
        account = self._account
        carried = start.carried_over
        # The newest marker stands for every change before it; a run recorded before it finds the one it has.
        self._books_and_mail_in_worker = workflow.patched(PATCH_BOOKS_AND_MAIL_IN_WORKER)
        self._fewer_actions = self._books_and_mail_in_worker or workflow.patched(PATCH_FEWER_ACTIONS)
        settings = carried.settings if carried else await self._load_settings()
        if self._fewer_actions:
            self._partner_center_task_queue = settings.partner_center_task_queue
        # A run recorded while business days were Monday to Friday everywhere keeps them: its replay would
        # otherwise hold back a notice it sent on a public holiday. Its successor after continue-as-new
        # follows the policy's calendar.
        patched = self._patched(PATCH_CHINA_CALENDAR)
        self._policy = settings.policy if patched else settings.policy.with_business_day_calendar("weekends")
        if self._state is None:
            # A ladder restarts after a new due date or a resumed pause; runs recorded before keep their keys.
            restarts = self._patched(PATCH_LADDER_RESTARTS)
            # A catch-up spaces out dunning notices; runs recorded before send them as they fall due.
            paces = self._patched(PATCH_NOTICE_GAP)
            # Partner Center's answer per subscription is kept, the desk told, suspend_now checked for overdue.
            per_subscription = self._patched(PATCH_SUBSCRIPTION_ANSWERS)
            self._state = BillingState.new(
                account,
                settings.policy.currency,
                restarts_ladders=restarts,
                paces_notices=paces,
                answers_per_subscription=per_subscription,
            )
        state = self._state
        if not self._fewer_actions:
            self._upsert({attributes.CUSTOMER_ID.name: account.customer_id})
        while True:
            await self._take_in_messages()
            now = workflow.now()
            transitions.time_passed(state, now)
            decision = self._decide()
            self._show(decision, now, waiting=False)
            if decision.finished:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._inbox:
                    self._show(decision, now, waiting=True)
                    break
                continue
            if decision.step is not None and decision.step.at <= now:
                await self._perform(decision.step)
                continue
            if self._should_continue_as_new(settings):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._inbox:
                    carried_over = CarriedState(state=state, settings=settings)
                    workflow.continue_as_new(CustomerBillingInput(**account.model_dump(), carried_over=carried_over))
            self._show(decision, now, waiting=True)
            await self._sleep_until(decision)
        workflow.logger.info("billing lifecycle complete", extra={"customer_id": account.customer_id})
        return build_status(state, self._decide(), workflow.now())

    async def _sleep_until(self, decision: Decision) -> None:
        now = workflow.now()
        timeout = None if decision.wake_at is None else max(decision.wake_at - now, timedelta(seconds=1))
        summary = None
        if decision.step is not None:
            what = NEXT_ACTION_OF_STEP[decision.step.kind].value.replace("_", " ")
            target = f" for {decision.step.invoice_id}" if decision.step.invoice_id else ""
            summary = f"Wait until the {what}{target} on {decision.step.at:%Y-%m-%d %H:%M} UTC"
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: bool(self._inbox), timeout=timeout, timeout_summary=summary)

    def _patched(self, patch_id: str) -> bool:
        """`workflow.patched(patch_id)`, except in a run that recorded PATCH_FEWER_ACTIONS, which has them all."""
        return True if self._fewer_actions else workflow.patched(patch_id)

    def _should_continue_as_new(self, settings: LifecycleSettings) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > settings.history_event_limit

    def _decide(self) -> Decision:
        return next_step.decide(self._require_state(), self._require_policy(), workflow.now())

    def _require_state(self) -> BillingState:
        if self._state is None:
            raise ApplicationError("the lifecycle has not started yet", type="NotStarted")
        return self._state

    def _require_policy(self) -> CollectionsPolicy:
        if self._policy is None:
            raise ApplicationError("the lifecycle has not loaded its policy yet", type="NotStarted")
        return self._policy

    async def _load_settings(self) -> LifecycleSettings:
        if self._fewer_actions:
            # The worker holds the policy in memory: no round trip through the server's activity queue.
            return await workflow.execute_local_activity_method(
                PolicyActivities.load_lifecycle_settings,
                start_to_close_timeout=SETTINGS_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary="Load the collections policy",
            )
        return await workflow.execute_activity_method(
            PolicyActivities.load_lifecycle_settings,
            start_to_close_timeout=SETTINGS_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="Load the collections policy",
        )

    # --- taking in facts and operator actions, one at a time --------------------------------------------

    async def _take_in_messages(self) -> None:
        state = self._require_state()
        while self._inbox:
            message = self._inbox.next()
            try:
                try:
                    await self._apply(message)
                except ActivityError as error:
                    if not self._fewer_actions:
                        raise  # runs recorded before failed here: their replay must too
                    # An outside system refused outright, or did not answer within the retry window: the message
                    # is refused (an update) or rejected (a signal) with the reason, and the lifecycle goes on.
                    raise Refused(outside_refusal(message.name, error)) from None
            except Refused as refusal:
                self._inbox.refused(message, str(refusal))
                if message.update_id is None:
                    rejection = RejectedMessage(
                        name=message.name, reason=str(refusal), at=message.received_at, reference=refusal.reference
                    )
                    transitions.message_rejected(state, rejection)
                    inbox.log_rejection(message.name, str(refusal), refusal.reference)
                continue
            if message.update_id is not None:
                await self._audit(message)
            self._inbox.applied(message)

    async def _apply(self, message: InboxMessage) -> None:
        state = self._require_state()
        policy = self._require_policy()
        name, payload, at = message.name, message.payload, message.received_at
        if name == "invoice_issued":
            invoice = inbox.parse(Invoice, payload, "invoice_id")
            _check(lambda: rules.check_owner(state, invoice.customer_id, invoice.amount.currency), invoice.invoice_id)
            transitions.invoice_booked(state, invoice.invoice_id, await self._record_invoice(invoice), at)
        elif name in ("payment_received", "record_payment"):
            payment = inbox.parse(Payment, payload, "payment_id" if message.update_id is None else None)
            if message.update_id is not None:
                _check(lambda: rules.check_payment(state, payment))
            else:
                _check(
                    lambda: rules.check_owner(state, payment.customer_id, payment.amount.currency), payment.payment_id
                )
            if payment.payment_id not in state.payment_ids:
                transitions.payment_booked(state, payment.payment_id, await self._record_payment(payment))
        elif name == "dispute_opened":
            dispute = inbox.parse(Dispute, payload, "dispute_id")
            existing = state.dispute(dispute.dispute_id)
            if existing is not None:
                if existing.invoice_id != dispute.invoice_id:
                    reason = f"dispute {dispute.dispute_id} already exists for {existing.invoice_id}"
                    raise Refused(reason, dispute.dispute_id)
                return
            _check(lambda: rules.check_dispute(state, dispute), dispute.dispute_id)
            invoice_balance = state.invoice(dispute.invoice_id)
            assert invoice_balance is not None
            amount = state.amount_to_dispute(invoice_balance, dispute.amount)
            await self._record_dispute(dispute, amount, at)
            transitions.dispute_opened(state, dispute, amount, at)
        elif name == "ledger_changed":
            change = inbox.parse(LedgerChanged, payload, "ledger")
            _check(lambda: rules.check_owner(state, change.customer_id, change.amount_due.currency), "ledger")
            known = [*state.invoice_ids, *(i for i in change.open_invoice_ids if i not in state.invoice_ids)]
            transitions.books_changed(state, await self._read_balance(known), at)
        elif name == "pause_dunning":
            pause = inbox.parse(DunningPause, payload)
            _check(lambda: rules.check_pause(state, pause, workflow.now()))
            transitions.dunning_paused(state, pause)
        elif name == "resume_dunning":
            inbox.parse(DunningPause, payload)
            _check(lambda: rules.check_resume(state, workflow.now()))
            transitions.dunning_resumed(state)
        elif name == "extend_due_date":
            extension = inbox.parse(ExtendDueDate, payload)
            _check(lambda: rules.check_extend_due_date(state, extension, workflow.now()))
            balance = await self._reschedule(extension, self._action_id(message))
            transitions.due_date_moved(state, extension.invoice_id, balance)
        elif name == "write_off":
            write_off = inbox.parse(WriteOff, payload)
            _check(lambda: rules.check_write_off(state, write_off))
            transitions.written_off(state, await self._write_off(write_off, self._action_id(message)))
        elif name == "suspend_now":
            action = inbox.parse(SuspendNow, payload)
            _check(lambda: rules.check_suspend_now(state, action, workflow.now()))
            now = workflow.now()
            active = await self._list_active_subscriptions()
            transitions.suspended_by_operator(state, action, active, now)
        elif name == "reinstate":
            reinstatement = inbox.parse(Reinstate, payload)
            _check(lambda: rules.check_reinstate(state, reinstatement))
            suspension = state.suspension
            assert suspension is not None
            results = await self._change_status(f"reinstatement-{suspension.key}", suspension.suspended_ids, "active")
            transitions.reinstated_by_operator(state, results, workflow.now())
        elif name in ("resolve_dispute", "resolve_escalation"):
            by_21vianet = name == "resolve_escalation"
            resolution = inbox.parse(ResolveDispute, payload)
            check = rules.check_resolve_escalation if by_21vianet else rules.check_resolve_dispute
            _check(lambda: check(state, resolution))
            dispute_record = state.dispute(resolution.dispute_id)
            assert dispute_record is not None
            now = workflow.now()
            balance = await self._post_credit(dispute_record, resolution) if resolution.credit is not None else None
            if by_21vianet:
                await self._record_escalation_change(dispute_record, "resolved", note=resolution.note)
            grace = policy.dispute.grace_after_uphold
            transitions.dispute_resolved(
                state, resolution, now, by_21vianet=by_21vianet, balance=balance, grace_after_uphold=grace
            )
        elif name == "escalate_dispute":
            escalation = inbox.parse(EscalateDispute, payload)
            _check(lambda: rules.check_escalate_dispute(state, escalation))
            transitions.dispute_escalated(state, escalation, workflow.now())
        elif name == "record_escalation":
            record = inbox.parse(RecordEscalation, payload)
            _check(lambda: rules.check_record_escalation(state, record))
            dispute_record = state.dispute(record.dispute_id)
            assert dispute_record is not None
            await self._record_escalation_change(dispute_record, "filed", reference=record.reference, note=record.note)
            transitions.escalation_filed(state, record, workflow.now())
        else:
            raise Refused(f"{name} is not a message this lifecycle takes")

    def _action_id(self, message: InboxMessage) -> str:
        return f"{workflow.info().workflow_id}/{message.update_id or message.received_at.isoformat()}"

    async def _audit(self, message: InboxMessage) -> None:
        """Every accepted operator action goes to the ledger's audit trail and the status's timeline."""
        state = self._require_state()
        payload, at = message.payload, message.received_at
        entry = requests.audit_entry(state, message.name, payload, self._action_id(message), at)
        summary = f"Audit trail: {message.name}"
        await self._books_or_mailer(LedgerActivities.record_audit, entry, LEDGER_TIMEOUT, LEDGER_RETRY, summary)
        reason, reference = requests.audit_reason(payload), requests.audit_reference(payload)
        transitions.operator_action_recorded(state, message.name, reason, reference, at, entry.operator)

    # --- doing the next step ----------------------------------------------------------------------------

    async def _perform(self, step: Step) -> None:
        state = self._require_state()
        try:
            if step.kind is StepKind.SUSPEND:
                if state.suspension is None:
                    active = await self._list_active_subscriptions()
                    transitions.suspension_started(state, step, active, workflow.now())
                assert state.suspension is not None
                results = await self._change_status(
                    state.suspension.key, state.suspension.subscription_ids, "suspended"
                )
                transitions.suspension_confirmed(state, results, workflow.now())
                done_at = workflow.now()
            elif step.kind is StepKind.REINSTATE:
                assert state.suspension is not None
                results = await self._change_status(step.key, state.suspension.suspended_ids, "active")
                transitions.reinstated(state, results, workflow.now())
                done_at = workflow.now()
            else:
                case = await self._build_escalation_case(step) if step.kind is StepKind.SEND_ESCALATION_CASE else None
                done_at = await self._send_notice(step, case)
        except ActivityError as error:
            reason = str(error.cause.message if isinstance(error.cause, ApplicationError) else error)
            failure = transitions.step_failed(state, step, reason, workflow.now())
            workflow.logger.error(
                "collections step failed; will try again",
                extra={"step": step.key, "attempts": failure.attempts, "retry_at": failure.retry_at.isoformat()},
            )
            return
        transitions.step_performed(state, step, done_at)

    # --- one method per outside call --------------------------------------------------------------------

    async def _ledger(
        self, activity: Callable[[LedgerActivities, P], R], request: P, reference: str, summary: str
    ) -> R:
        """A write to or read of the books; the books refusing it (`LedgerRejection`) is the engine's refusal."""
        try:
            return await self._books_or_mailer(activity, request, LEDGER_TIMEOUT, LEDGER_RETRY, summary)
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == "LedgerRejection":
                raise Refused(cause.message, reference) from None
            raise

    async def _record_invoice(self, invoice: Invoice) -> AccountBalance:
        request = requests.record_invoice(self._require_state(), invoice)
        summary = f"Record invoice {invoice.invoice_id}"
        return await self._ledger(LedgerActivities.record_invoice, request, invoice.invoice_id, summary)

    async def _record_payment(self, payment: Payment) -> PaymentRecorded:
        request = requests.record_payment(self._require_state(), payment)
        summary = f"Record payment {payment.payment_id}"
        return await self._ledger(LedgerActivities.record_payment, request, payment.payment_id, summary)

    async def _record_dispute(self, dispute: Dispute, amount: Money, opened_at: datetime) -> None:
        request = requests.record_dispute(self._require_state(), dispute, amount, opened_at)
        summary = f"Record dispute {dispute.dispute_id} on {dispute.invoice_id}"
        await self._ledger(LedgerActivities.record_dispute, request, dispute.dispute_id, summary)

    async def _read_balance(self, known_invoice_ids: list[str]) -> AccountBalance:
        request = requests.read_balance(self._require_state(), known_invoice_ids)
        summary = "Re-read the balance from the ledger"
        return await self._ledger(LedgerActivities.get_balance, request, "ledger", summary)

    async def _reschedule(self, extension: ExtendDueDate, change_id: str) -> AccountBalance:
        request = requests.reschedule(self._require_state(), extension, change_id)
        summary = f"Move the due date of {extension.invoice_id} to {extension.due_on}"
        return await self._ledger(LedgerActivities.reschedule_invoice, request, extension.invoice_id, summary)

    async def _write_off(self, write_off: WriteOff, write_off_id: str) -> AccountBalance:
        request = requests.write_off(self._require_state(), write_off, write_off_id)
        summary = f"Write off {write_off.invoice_id}"
        return await self._ledger(LedgerActivities.write_off_invoice, request, write_off.invoice_id, summary)

    async def _post_credit(self, dispute: DisputeRecord, resolution: ResolveDispute) -> AccountBalance:
        request = requests.credit_note(self._require_state(), dispute, resolution)
        summary = f"Credit {resolution.credit} on {dispute.invoice_id} for dispute {dispute.dispute_id}"
        return await self._ledger(LedgerActivities.post_credit_note, request, dispute.dispute_id, summary)

    async def _record_escalation_change(
        self,
        dispute: DisputeRecord,
        status: EscalationStatus,
        *,
        reference: str | None = None,
        note: str | None = None,
        case: EscalationCase | None = None,
    ) -> None:
        workflow_id, now = workflow.info().workflow_id, workflow.now()
        change = requests.escalation_change(
            self._require_state(), dispute, status, workflow_id, now, reference=reference, note=note, case=case
        )
        summary = f"Escalation of {dispute.dispute_id}: {status}"
        await self._ledger(LedgerActivities.record_escalation, change, dispute.dispute_id, summary)

    async def _build_escalation_case(self, step: Step) -> EscalationCase:
        """Build the case from the books and keep it with the escalation in the ledger; the notice mails it."""
        state = self._require_state()
        dispute = state.dispute(step.dispute_id or "")
        assert dispute is not None
        case = await self._books_or_mailer(
            LedgerActivities.build_escalation_case,
            requests.escalation_case(state, dispute),
            LEDGER_TIMEOUT,
            LEDGER_RETRY,
            f"Build the escalation case for dispute {dispute.dispute_id}",
        )
        await self._record_escalation_change(dispute, "case_sent", note=dispute.escalation_note, case=case)
        return case

    async def _send_notice(self, step: Step, case: EscalationCase | None = None) -> datetime:
        """Send the step's notice; returns when it counts as sent."""
        request = notice.notice_request(
            self._require_state(), self._require_policy(), step, workflow.now(), workflow.info().workflow_id, case
        )
        receipt = await self._books_or_mailer(
            MailerActivities.send_notice,
            request,
            MAIL_TIMEOUT,
            OUTSIDE_RETRY,
            notice.notice_summary(step),
            give_up_after=OUTSIDE_GIVE_UP_AFTER,
        )
        workflow.logger.info("notice sent", extra={"key": receipt.key, "already_sent": receipt.already_sent})
        # Workflow time, not the worker's clock: the core reasons in workflow time (suspension comes a full
        # warning period after the final notice). Runs recorded before this change keep the receipt's time.
        return workflow.now() if self._patched(PATCH_NOTICE_TIME) else receipt.sent_at

    async def _books_or_mailer(
        self,
        activity: Callable[[Any, P], Awaitable[R]] | Callable[[Any, P], R],
        request: P,
        start_to_close: timedelta,
        retry: RetryPolicy,
        summary: str,
        *,
        give_up_after: timedelta | None = None,
    ) -> R:
        """The ledger or the mailer, called in this worker (a local activity): both are short and idempotent by
        key (a retry finds the invoice booked, the notice logged), so a worker lost mid-call costs only a retry
        by the next one. Runs recorded before call them on the task queue, the mailer beating."""
        if self._books_and_mail_in_worker:
            try:
                return await workflow.execute_local_activity_method(
                    activity,  # type: ignore[arg-type]
                    request,
                    start_to_close_timeout=start_to_close,
                    schedule_to_close_timeout=give_up_after,
                    retry_policy=retry,
                    local_retry_threshold=LOCAL_RETRY_THRESHOLD,
                    summary=summary,
                )
            except (ApplicationError, FailureTimeoutError) as failure:
                # A local activity's failure reaches the workflow bare, not as the ActivityError a queued
                # activity's does: wrapped here, so a refusal or an outage is handled alike either way.
                raise _activity_error(activity, failure) from failure
        return await workflow.execute_activity_method(
            activity,  # type: ignore[arg-type]
            request,
            start_to_close_timeout=start_to_close,
            schedule_to_close_timeout=give_up_after,
            heartbeat_timeout=HEARTBEAT_TIMEOUT if give_up_after is not None else None,
            retry_policy=retry,
            summary=summary,
        )

    def _partner_center_call(self) -> dict[str, Any]:
        """How every Partner Center activity is run: on Partner Center's task queue (None in runs recorded before
        it had one: the lifecycle's own), beating, retried for a while, then the step fails and is tried later."""
        return {
            "task_queue": self._partner_center_task_queue,
            "start_to_close_timeout": PARTNER_CENTER_CALL_TIMEOUT,
            "heartbeat_timeout": HEARTBEAT_TIMEOUT,
            "schedule_to_close_timeout": OUTSIDE_GIVE_UP_AFTER,
            "retry_policy": OUTSIDE_RETRY,
        }

    async def _list_active_subscriptions(self) -> ActiveSubscriptions:
        state = self._require_state()
        active = await workflow.execute_activity_method(
            PartnerCenterActivities.list_active_subscriptions,
            SubscriptionQuery(tenant_id=state.account.tenant_id, correlation_id=workflow.info().workflow_id),
            **self._partner_center_call(),
            summary=f"List active subscriptions of tenant {state.account.tenant_id}",
        )
        return active

    async def _change_status(
        self, key: str, subscription_ids: list[str], target: SubscriptionStatusTarget
    ) -> list[SubscriptionStatusChanged]:
        """Every subscription at once; Partner Center's answer for each (a refusal is an answer, not an error)."""
        state = self._require_state()
        workflow_id = workflow.info().workflow_id
        if self._fewer_actions:
            if not subscription_ids:
                return []
            changed = await workflow.execute_activity_method(
                PartnerCenterActivities.change_subscriptions,
                SubscriptionsChange(
                    tenant_id=state.account.tenant_id,
                    subscription_ids=subscription_ids,
                    target=target,
                    request_key=f"{workflow_id}/{key}",
                    correlation_id=workflow_id,
                ),
                **self._partner_center_call(),
                summary=f"Set {len(subscription_ids)} subscription(s) {target}",
            )
            return changed.results
        changes = [
            workflow.execute_activity_method(
                PartnerCenterActivities.change_subscription_status,
                SubscriptionStatusChange(
                    tenant_id=state.account.tenant_id,
                    subscription_id=subscription_id,
                    target=target,
                    request_key=f"{workflow_id}/{key}/{subscription_id}",
                    correlation_id=workflow_id,
                ),
                **self._partner_center_call(),
                summary=f"Set subscription {subscription_id} {target}",
            )
            for subscription_id in subscription_ids
        ]
        return list(await asyncio.gather(*changes))

    # --- what operators see -----------------------------------------------------------------------------

    def _show(self, decision: Decision, now: datetime, *, waiting: bool) -> None:
        """Current details at every turn of the loop; search attributes at every turn in runs recorded before
        PATCH_FEWER_ACTIONS, otherwise only as the run waits or ends (one upsert for what a turn's steps changed)."""
        state = self._require_state()
        status = build_status(state, decision, now)
        if waiting or not self._fewer_actions:
            self._publish(state, status)
        details = current_details(state, status)
        if details != self._details:
            self._details = details
            workflow.set_current_details(details)

    def _publish(self, state: BillingState, status: BillingStatus) -> None:
        open_invoices = state.open_invoices()
        references = [d.reference for d in state.disputes if d.reference]
        first = {attributes.CUSTOMER_ID.name: state.account.customer_id} if self._fewer_actions else {}
        self._upsert(
            {
                **first,
                attributes.BILLING_STAGE.name: status.stage.value,
                attributes.AMOUNT_DUE.name: float(status.amount_due.amount),  # display only; the books stay Decimal
                attributes.OLDEST_DUE_DATE.name: open_invoices[0].due_at if open_invoices else None,
                # The latest 21Vianet reference, once one is recorded (older histories never set it).
                **({attributes.ESCALATION_REF.name: references[-1]} if references else {}),
            }
        )

    def _upsert(self, values: dict[str, object]) -> None:
        updates = []
        for name, value in values.items():
            if self._published.get(name, _UNSET) == value:
                continue
            self._published[name] = value
            key = attributes.BY_NAME[name]
            updates.append(key.value_unset() if value is None else key.value_set(value))  # type: ignore[attr-defined]
        if updates:
            workflow.upsert_search_attributes(updates)


_UNSET = object()


def outside_refusal(name: str, error: ActivityError) -> str:
    """The sentence for a message an outside system kept from being applied (its activity failed for good)."""
    cause = error.cause
    why = cause.message if isinstance(cause, ApplicationError) else str(cause or error)
    partner_center = {"list_active_subscriptions", "change_subscriptions", "change_subscription_status"}
    system = "Partner Center" if error.activity_type in partner_center else "an outside system"
    return f"{name} could not be done: {system} did not do it ({why}); nothing was changed, try again later"


def _activity_error(activity: Callable[..., Any], failure: Exception) -> ActivityError:
    """`failure` of a local activity as the ActivityError (its cause) a queued activity fails with."""
    name = activity.__name__  # each of the ledger's and the mailer's activities is named as its method
    error = ActivityError(
        f"local activity {name} failed",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type=name,
        activity_id="",
        retry_state=None,
    )
    error.__cause__ = failure
    return error


def _check(check: Callable[[], None], reference: str | None = None) -> None:
    """Run an operator rule; its refusal carries the message's id for `rejected`."""
    try:
        check()
    except Refused as refusal:
        raise Refused(str(refusal), reference) from None
