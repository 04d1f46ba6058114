"""Operator updates on `CustomerBilling` (time-skipping server, real worker wiring): every validator refuses
bad input with a clear message and changes nothing; accepted actions change the books and the timeline."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.api.workflowservice.v1 import QueryWorkflowRequest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from billing.encryption import ENCODING
from billing.ledger import LedgerStore
from billing.models import BillingStage, BillingStatus, NoticeKind
from cli.main import build_parser, dispatch
from tests.builders import SHANGHAI
from tests.temporal_fixtures import EngineFactory, skip_settled
from tests.test_customer_billing_workflow import account, cny, invoice, notice_kinds, payment, status_when

pytestmark = pytest.mark.timeout(120)


async def issued(engine: Any, account: Any, invoice: Any) -> Any:
    """Issue the invoice and wait until the lifecycle has booked it, so updates act on a known account."""
    handle = await engine.issue(account, invoice)
    await status_when(engine, account.customer_id, lambda s: invoice.invoice_id in [i.invoice_id for i in s.invoices])
    return handle


async def refused(handle: Any, update: str, payload: Any) -> str:
    """Send an update that must be refused; return the refusal message."""
    with pytest.raises(WorkflowUpdateFailedError) as failure:
        await handle.execute_update(update, payload, result_type=BillingStatus)
    cause = failure.value.cause
    return str(getattr(cause, "message", cause))


async def accepted(handle: Any, update: str, payload: Any) -> BillingStatus:
    return await handle.execute_update(update, payload, result_type=BillingStatus)


async def test_operator_actions_refuse_bad_input_and_change_nothing(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account("refusals"), invoice("refusals", "INV-O-1", "500.00", now + timedelta(days=9))
        )
        before = await status_when(engine, "refusals", lambda s: s.amount_due == cny("500.00"))
        good_payment = payment("refusals", "PAY-O-1", "10.00", now).model_dump(mode="json")
        cases = [
            ("record_payment", {**good_payment, "amount": {"amount": "0", "currency": "CNY"}}, "greater than zero"),
            ("record_payment", {**good_payment, "amount": {"amount": "-3", "currency": "CNY"}}, "greater than zero"),
            ("record_payment", {**good_payment, "amount": {"amount": "3", "currency": "USD"}}, "billed in CNY"),
            ("record_payment", {**good_payment, "invoice_id": "INV-NOPE"}, "INV-NOPE"),
            ("record_payment", {**good_payment, "customer_id": "other"}, "not refusals"),
            ("write_off", {"invoice_id": "INV-NOPE", "reason": "goodwill"}, "INV-NOPE"),
            (
                "write_off",
                {"invoice_id": "INV-O-1", "amount": {"amount": "600", "currency": "CNY"}, "reason": "x"},
                "only 500.00 CNY is outstanding",
            ),
            (
                "write_off",
                {"invoice_id": "INV-O-1", "amount": {"amount": "5", "currency": "USD"}, "reason": "x"},
                "billed in CNY",
            ),
            ("write_off", {"invoice_id": "INV-O-1", "reason": " "}, "must not be empty"),
            ("extend_due_date", {"invoice_id": "INV-O-1", "due_on": "2020-01-01", "reason": "late"}, "in the past"),
            ("extend_due_date", {"invoice_id": "INV-NOPE", "due_on": "2099-01-01", "reason": "x"}, "INV-NOPE"),
            ("pause_dunning", {"reason": "talks", "until": "2020-01-01T00:00:00+08:00"}, "in the past"),
            ("resume_dunning", {"reason": "done"}, "not paused"),
            ("reinstate", {"note": "please"}, "nothing is suspended"),
            ("suspend_now", {"reason": "because", "note": "x"}, "non_payment"),
            ("suspend_now", {"reason": "non_payment", "note": "x"}, "nothing is overdue"),
            ("resolve_dispute", {"dispute_id": "D-NOPE", "outcome": "uphold", "note": "x"}, "no dispute D-NOPE"),
            ("escalate_dispute", {"dispute_id": "D-NOPE", "note": "x"}, "no dispute D-NOPE"),
            ("record_escalation", {"dispute_id": "D-NOPE", "reference": "R"}, "no dispute D-NOPE"),
        ]
        for update, payload, expected in cases:
            message = await refused(handle, update, payload)
            assert expected in message, (update, payload, message)
        after = await engine.status("refusals")
        assert after.amount_due == before.amount_due
        assert after.timeline == []
        assert not after.paused
        await accepted(handle, "record_payment", payment("refusals", "PAY-O-2", "500.00", now).model_dump(mode="json"))
        await handle.result()


async def test_record_payment_returns_the_status_after_it_and_is_idempotent(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account("recpay"), invoice("recpay", "INV-RP-1", "800.00", now + timedelta(days=9))
        )
        first = payment("recpay", "PAY-RP-1", "300.00", now).model_dump(mode="json")
        status = await accepted(handle, "record_payment", first)
        assert status.amount_due == cny("500.00"), status
        again = await accepted(handle, "record_payment", first)
        assert again.amount_due == cny("500.00")
        assert [entry.action for entry in again.timeline] == ["record_payment", "record_payment"]
        await accepted(handle, "record_payment", payment("recpay", "PAY-RP-2", "500.00", now).model_dump(mode="json"))
        result = await handle.result()
    assert result.amount_due == cny("0.00")


async def test_pause_without_until_holds_the_ladder_until_resumed(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("pause"), invoice("pause", "INV-PA-1", "900.00", now + timedelta(days=1)))
        paused = await accepted(handle, "pause_dunning", {"reason": "customer in payment plan talks"})
        assert paused.paused and paused.stage is BillingStage.PAUSED
        await skip_settled(env, handle, timedelta(days=30))
        status = await engine.status("pause")
        assert [n.kind for n in status.notices_sent] == [NoticeKind.INVOICE]
        assert status.suspended_subscription_ids == []
        resumed = await accepted(handle, "resume_dunning", {"reason": "talks failed"})
        assert not resumed.paused
        await skip_settled(env, handle, timedelta(days=1))
        status = await engine.status("pause")
        # The latest rung that fell due during the pause goes out, not the whole ladder at once,
        # and suspension still waits the final notice's full warning period.
        assert [n.kind for n in status.notices_sent] == [NoticeKind.INVOICE, NoticeKind.FINAL_NOTICE]
        assert [e.action for e in status.timeline] == ["pause_dunning", "resume_dunning"]
        await accepted(handle, "record_payment", payment("pause", "PAY-PA-1", "900.00", now).model_dump(mode="json"))
        await handle.result()


async def test_pause_with_until_resumes_by_itself(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account("pauseu"), invoice("pauseu", "INV-PU-1", "900.00", now + timedelta(days=1))
        )
        until = (now + timedelta(days=10)).isoformat()
        status = await accepted(handle, "pause_dunning", {"reason": "promised to pay", "until": until})
        assert status.paused_until is not None
        await skip_settled(env, handle, timedelta(days=9))
        assert [n.kind for n in (await engine.status("pauseu")).notices_sent] == [NoticeKind.INVOICE]
        await skip_settled(env, handle, timedelta(days=2))
        status = await engine.status("pauseu")
        assert not status.paused
        assert [n.kind for n in status.notices_sent][-1] is NoticeKind.REMINDER
        assert status.timeline[-1].action == "dunning_resumed"
        await accepted(handle, "record_payment", payment("pauseu", "PAY-PU-1", "900.00", now).model_dump(mode="json"))
        await handle.result()


async def test_write_off_then_payment_completes_the_run(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("wo"), invoice("wo", "INV-WO-1", "1000.00", now + timedelta(days=1)))
        await skip_settled(env, handle, timedelta(days=3))
        status = await accepted(
            handle,
            "write_off",
            {"invoice_id": "INV-WO-1", "amount": {"amount": "250.00", "currency": "CNY"}, "reason": "service credit"},
        )
        assert status.amount_due == cny("750.00")
        assert status.timeline[-1].action == "write_off"
        assert status.timeline[-1].detail == "service credit"
        await accepted(handle, "record_payment", payment("wo", "PAY-WO-1", "750.00", now).model_dump(mode="json"))
        result = await handle.result()
    assert result.amount_due == cny("0.00")
    assert result.notices_sent[-1].kind is NoticeKind.CLOSE_THE_LOOP


async def test_extend_due_date_moves_the_ladder(time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account("extend"), invoice("extend", "INV-EX-1", "700.00", now + timedelta(days=2))
        )
        new_due = (now + timedelta(days=20)).date()
        status = await accepted(
            handle, "extend_due_date", {"invoice_id": "INV-EX-1", "due_on": str(new_due), "reason": "x"}
        )
        assert status.invoices[0].due_on == new_due
        await skip_settled(env, handle, timedelta(days=15))
        status = await engine.status("extend")
        assert status.stage is BillingStage.CURRENT
        assert NoticeKind.FINAL_NOTICE not in [n.kind for n in status.notices_sent]
        await accepted(handle, "record_payment", payment("extend", "PAY-EX-1", "700.00", now).model_dump(mode="json"))
        await handle.result()


async def test_extend_due_date_after_the_final_notice_warns_again_before_suspending(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    """The ladder starts again from the new due date: a fresh final notice, then suspension a full warning
    period later; the close-the-loop notice after the extension names it, not a payment."""
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account("re-anchor"), invoice("re-anchor", "INV-RA-1", "900.00", now + timedelta(days=1))
        )
        await skip_settled(env, handle, timedelta(days=16))
        before = await status_when(engine, "re-anchor", lambda s: NoticeKind.FINAL_NOTICE in notice_kinds(s))
        new_due = (now + timedelta(days=21)).astimezone(SHANGHAI).date()
        await accepted(handle, "extend_due_date", {"invoice_id": "INV-RA-1", "due_on": str(new_due), "reason": "x"})
        await skip_settled(env, handle, timedelta(days=40))
        status = await status_when(engine, "re-anchor", lambda s: s.stage is BillingStage.SUSPENDED)
        later = status.notices_sent[len(before.notices_sent) :]
        kinds = [n.kind for n in later]
        assert kinds[0] is NoticeKind.CLOSE_THE_LOOP  # nothing overdue once the date moved
        assert NoticeKind.FINAL_NOTICE in kinds and kinds.index(NoticeKind.FINAL_NOTICE) < kinds.index(
            NoticeKind.SUSPENSION
        )
        final = next(n for n in later if n.kind is NoticeKind.FINAL_NOTICE)
        assert final.at.astimezone(SHANGHAI).date() > new_due
        await accepted(
            handle, "record_payment", payment("re-anchor", "PAY-RA-1", "900.00", now).model_dump(mode="json")
        )
        await handle.result()


async def test_suspend_now_and_reinstate_for_non_payment(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, partner_center_emulator: Any
):
    env = time_skipping_env
    now = await env.get_current_time()
    partner_center_emulator.seed_tenant("manual", {"sub-1": "active", "sub-2": "suspended"})
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account("manual"), invoice("manual", "INV-MS-1", "900.00", now + timedelta(days=1))
        )
        await skip_settled(env, handle, timedelta(days=2))
        status = await accepted(handle, "suspend_now", {"reason": "non_payment", "note": "third broken promise"})
        assert status.stage is BillingStage.SUSPENDED
        assert status.suspended_subscription_ids == ["sub-1"]
        await status_when(engine, "manual", lambda s: NoticeKind.SUSPENSION in [n.kind for n in s.notices_sent])
        assert partner_center_emulator.subscription("manual", "sub-1")["status"] == "suspended"
        assert "already suspended" in await refused(handle, "suspend_now", {"reason": "non_payment", "note": "x"})
        status = await accepted(handle, "reinstate", {"note": "payment plan agreed"})
        assert status.suspended_subscription_ids == []
        assert partner_center_emulator.subscription("manual", "sub-1")["status"] == "active"
        assert partner_center_emulator.subscription("manual", "sub-2")["status"] == "suspended"
        await skip_settled(env, handle, timedelta(days=30))
        assert (await engine.status("manual")).stage is not BillingStage.SUSPENDED  # no automatic re-suspension
        await accepted(handle, "record_payment", payment("manual", "PAY-MS-1", "900.00", now).model_dump(mode="json"))
        result = await handle.result()
    assert [e.action for e in result.timeline][:2] == ["suspend_now", "reinstate"]


async def test_who_acted_is_in_the_audit_trail_the_timeline_and_the_current_details_and_a_refusal_has_no_trace(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, monkeypatch: pytest.MonkeyPatch
):
    """`starter.py` names the operator (`--operator`, else BILLING_OPERATOR); the engine keeps it with the reason.
    The Current Details name the customer and the last action, encrypted like every payload the engine writes;
    a refused update's failure is the sentence alone."""
    env = time_skipping_env
    now = await env.get_current_time()
    customer = f"who-{uuid.uuid4().hex[:6]}"
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account(customer), invoice(customer, "INV-W-1", "500.00", now + timedelta(days=9))
        )

        async def starter(*argv: str) -> None:
            args = build_parser().parse_args(["--task-queue", engine.settings.task_queue, *argv])
            await dispatch(engine.client, args, now)

        await starter("write-off", "--customer-id", customer, "--invoice-id", "INV-W-1", "--amount", "100.00",
                      "--reason", "goodwill", "--operator", " li.wei ")  # fmt: skip
        monkeypatch.setenv("BILLING_OPERATOR", "zhang.min")
        await starter("pause-dunning", "--customer-id", customer, "--reason", "payment plan talks")
        message = await refused(handle, "resume_dunning", {"reason": "x", "operator": "li\nwei"})
        assert "operator" in message and "one line" in message

        status = await engine.status(customer)
        assert [(e.action, e.operator, e.detail) for e in status.timeline] == [
            ("write_off", "li.wei", "goodwill"),
            ("pause_dunning", "zhang.min", "payment plan talks"),
        ]
        store = LedgerStore.from_url(engine.settings.ledger_url)
        try:
            assert [(e.action, e.operator) for e in store.audit_trail(customer)] == [
                ("write_off", "li.wei"),
                ("pause_dunning", "zhang.min"),
            ]
        finally:
            store.close()

        # The Current Details as the UI reads them (the metadata query), and as the Temporal server carries them.
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        details = metadata.current_details
        assert f"**Customer:** Lotus Trading ({customer}), times in Asia/Shanghai" in details
        assert "**Last operator action:** pause_dunning by zhang.min at " in details
        assert "(Asia/Shanghai): payment plan talks" in details
        raw = await engine.client.workflow_service.query_workflow(
            QueryWorkflowRequest(
                namespace=engine.client.namespace,
                execution=WorkflowExecution(workflow_id=handle.id),
                query=WorkflowQuery(query_type="__temporal_workflow_metadata"),
            )
        )
        [stored] = raw.query_result.payloads
        assert stored.metadata["encoding"] == ENCODING and b"Lotus Trading" not in stored.SerializeToString()

        # A refusal: the sentence, and no stack trace of the worker.
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            too_much = {"invoice_id": "INV-W-1", "amount": {"amount": "5000", "currency": "CNY"}, "reason": "x"}
            await handle.execute_update("write_off", too_much, result_type=BillingStatus)
        cause = failure.value.cause
        assert isinstance(cause, ApplicationError) and cause.failure is not None
        assert cause.message == "cannot write off 5000.00 CNY: only 400.00 CNY is outstanding on INV-W-1"
        assert cause.failure.stack_trace == ""

        await accepted(handle, "record_payment", payment(customer, "PAY-W-1", "400.00", now).model_dump(mode="json"))
        await handle.result()


async def test_an_operator_action_partner_center_refuses_outright_is_refused_and_the_lifecycle_goes_on(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, partner_center_emulator: Any
):
    """Partner Center refuses the engine's rights (403) while an operator suspends: the action is refused with
    the reason and changes nothing; the lifecycle is not failed, and the same action succeeds once Partner
    Center answers again."""
    env = time_skipping_env
    now = await env.get_current_time()
    partner_center_emulator.seed_tenant("rights", {"sub-1": "active"})
    async with engine_factory(env.client) as engine:
        bill = invoice("rights", "INV-R-1", "900.00", now + timedelta(days=1))
        handle = await issued(engine, account("rights"), bill)
        await skip_settled(env, handle, timedelta(days=2))
        partner_center_emulator.inject_fault(403, times=1)
        reason = await refused(handle, "suspend_now", {"reason": "non_payment", "note": "rights test"})
        assert "Partner Center" in reason and "nothing was changed" in reason
        status = await engine.status("rights")
        assert status.stage is not BillingStage.SUSPENDED and status.suspended_subscription_ids == []
        assert partner_center_emulator.subscription("rights", "sub-1")["status"] == "active"
        again = await accepted(handle, "suspend_now", {"reason": "non_payment", "note": "rights restored"})
        assert again.suspended_subscription_ids == ["sub-1"]
