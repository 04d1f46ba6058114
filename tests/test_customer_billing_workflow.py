"""`CustomerBilling` on the time-skipping test server with the real worker wiring: SQLite ledger, SMTP sink,
Partner Center emulator. Days of dunning pass in seconds."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment

from bench.lifecycle_bench import cloud_actions
from billing.business_days import KNOWN_YEARS, unknown_years
from billing.due_dates import due_moment
from billing.models import BillingStage, BillingStatus, CustomerAccount, Invoice, NoticeKind, Payment
from billing.policy import CollectionsPolicy, QuietHours
from tests.builders import SHANGHAI, cny
from tests.temporal_fixtures import TEST_POLICY, EngineFactory
from worker import warn_if_china_calendar_runs_out
from workflows.customer_billing import PATCH_BOOKS_AND_MAIL_IN_WORKER, PATCH_CHINA_CALENDAR, PATCH_FEWER_ACTIONS


def account(customer_id: str, **extra: Any) -> CustomerAccount:
    return CustomerAccount(customer_id=customer_id, name="Lotus Trading", email="ap@lotus.example.cn", **extra)


def invoice(customer_id: str, invoice_id: str, amount: str, due_at: datetime) -> Invoice:
    return Invoice(
        invoice_id=invoice_id,
        customer_id=customer_id,
        amount=cny(amount),
        issued_on=(due_at - timedelta(days=30)).date(),
        due_on=due_at.astimezone(SHANGHAI).date(),
        due_at=due_at,
    )


def payment(customer_id: str, payment_id: str, amount: str, at: datetime, invoice_id: str | None = None) -> Payment:
    return Payment(
        payment_id=payment_id,
        customer_id=customer_id,
        amount=cny(amount),
        received_at=at,
        invoice_id=invoice_id,
    )


async def status_when(engine: Any, customer_id: str, predicate: Any) -> Any:
    """The status once `predicate` holds: signals are taken in asynchronously, through ledger activities."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        status = await engine.status(customer_id)
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status never satisfied the condition; last: {status}")
        await asyncio.sleep(0.05)


def command_events(history: Any) -> list[str]:
    """The history's events that commands of the workflow made, by type (workflow tasks, signals and activity
    progress left out)."""
    names = [EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in history.events]
    made = ("MARKER_RECORDED", "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES", "ACTIVITY_TASK_SCHEDULED", "TIMER_STARTED")
    return [name for name in names if name in made or name in ("TIMER_CANCELED", "WORKFLOW_EXECUTION_COMPLETED")]


def notice_kinds(status: Any) -> list[NoticeKind]:
    return [notice.kind for notice in status.notices_sent]


def sink_kinds(smtp_sink: Any, customer_id: str) -> list[str]:
    return [m["X-Billing-Notice"] for m in smtp_sink.messages if m["X-Billing-Customer"] == customer_id]


async def test_invoice_paid_on_time_completes_without_close_the_loop(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(account("ontime"), invoice("ontime", "INV-T-1", "880.00", now + timedelta(days=10)))
        await status_when(engine, "ontime", lambda s: notice_kinds(s) == [NoticeKind.INVOICE])  # then it waits
        await handle.signal("payment_received", payment("ontime", "PAY-T-1", "880.00", now))
        result = await handle.result()
        history = await handle.fetch_history()
        commands = command_events(history)
    assert result.stage is BillingStage.RESOLVED
    assert result.amount_due == cny("0.00")
    assert notice_kinds(result) == [NoticeKind.INVOICE]
    assert sink_kinds(smtp_sink, "ontime") == ["invoice"]
    # The policy, the invoice's booking and its notice are local activities of the first workflow task: one
    # Temporal action; search attributes (CustomerId with the first stage) are upserted as the run waits and as
    # it ends; one patch marker (and its TemporalChangeVersion upsert) for every change.
    assert commands == [
        "MARKER_RECORDED",  # PATCH_BOOKS_AND_MAIL_IN_WORKER
        "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",  # TemporalChangeVersion, by the SDK for the patch
        "MARKER_RECORDED",  # the policy
        "MARKER_RECORDED",  # record_invoice
        "MARKER_RECORDED",  # send_notice (invoice)
        "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",  # CustomerId, Current, amount, oldest due date
        "TIMER_STARTED",
        "TIMER_CANCELED",
        "MARKER_RECORDED",  # record_payment
        "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",  # Resolved, nothing due
        "WORKFLOW_EXECUTION_COMPLETED",
    ]
    # Temporal Cloud's count (https://docs.temporal.io/cloud/actions): the start and the invoice's signal (this
    # engine starts, then signals), the first task's local activities, the first upsert, the timer, the payment's
    # signal, its local activity and the last upsert.
    assert cloud_actions(history.events) == {
        "workflow started": 1,
        "signal": 2,
        "local activities (per workflow task)": 2,
        "search attributes upserted": 2,
        "timer started": 1,
    }


async def test_full_ladder_to_suspension_then_payment_reinstates_and_closes_the_loop(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    smtp_sink: Any,
    partner_center_emulator: Any,
):
    env = time_skipping_env
    now = await env.get_current_time()
    partner_center_emulator.seed_tenant("ladder", {"sub-a": "active", "sub-b": "active", "sub-old": "suspended"})
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(account("ladder"), invoice("ladder", "INV-L-1", "5600.00", now + timedelta(days=1)))
        await env.sleep(timedelta(days=23))
        status = await engine.status("ladder")
        assert status.stage is BillingStage.SUSPENDED
        assert sorted(status.suspended_subscription_ids) == ["sub-a", "sub-b"]
        assert partner_center_emulator.subscription("ladder", "sub-a")["status"] == "suspended"
        assert notice_kinds(status) == [
            NoticeKind.INVOICE,
            NoticeKind.REMINDER,
            NoticeKind.REMINDER,
            NoticeKind.FINAL_NOTICE,
            NoticeKind.SUSPENSION,
        ]
        await handle.signal("payment_received", payment("ladder", "PAY-L-1", "5600.00", now + timedelta(days=23)))
        result = await handle.result()
        history = await handle.fetch_history()
    # One Partner Center activity changes both subscriptions, on Partner Center's own (rate-limited) task queue.
    partner_center_calls = [
        (
            event.activity_task_scheduled_event_attributes.activity_type.name,
            event.activity_task_scheduled_event_attributes.task_queue.name,
        )
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.task_queue.name == engine.settings.partner_center_queue
    ]
    assert [name for name, _ in partner_center_calls] == [
        "list_active_subscriptions",
        "change_subscriptions",  # suspension
        "change_subscriptions",  # reinstatement
    ]
    assert result.stage is BillingStage.RESOLVED
    assert notice_kinds(result)[-1] is NoticeKind.CLOSE_THE_LOOP
    assert result.suspended_subscription_ids == []
    assert partner_center_emulator.subscription("ladder", "sub-a")["status"] == "active"
    assert partner_center_emulator.subscription("ladder", "sub-b")["status"] == "active"
    # Temporal Cloud's count: a timer per rung and one waiting after the suspension, an upsert per stage, the three
    # Partner Center activities, and one action for each workflow task that books or mails (local activities).
    assert cloud_actions(history.events) == {
        "workflow started": 1,
        "signal": 2,  # the invoice (this engine starts, then signals) and the payment
        "local activities (per workflow task)": 7,  # policy+invoice+notice, 2 reminders, final, suspension,
        # the payment, close the loop
        "timer started": 6,
        "search attributes upserted": 5,
        "activity started or retried": 3,
    }
    # Reinstatement touches only what this engine suspended.
    assert partner_center_emulator.subscription("ladder", "sub-old")["status"] == "suspended"
    assert sink_kinds(smtp_sink, "ladder") == [
        "invoice",
        "reminder",
        "reminder",
        "final_notice",
        "suspension",
        "close_the_loop",
    ]


async def test_partial_payment_lowers_amount_due_without_resetting_the_ladder(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(
            account("partial"), invoice("partial", "INV-P-1", "1000.00", now + timedelta(days=1))
        )
        await env.sleep(timedelta(days=3))
        await handle.signal("payment_received", payment("partial", "PAY-P-1", "400.00", now + timedelta(days=3)))
        await env.sleep(timedelta(days=13))
        status = await engine.status("partial")
        assert status.amount_due == cny("600.00")
        assert status.stage is BillingStage.FINAL_NOTICE
        reminders = [n for n in status.notices_sent if n.kind is NoticeKind.REMINDER]
        assert len(reminders) == 2  # +1D and +7D, each once: the payment did not restart the ladder
        await handle.signal("payment_received", payment("partial", "PAY-P-2", "600.00", now + timedelta(days=16)))
        result = await handle.result()
    assert result.amount_due == cny("0.00")
    assert notice_kinds(result)[-1] is NoticeKind.CLOSE_THE_LOOP


async def test_second_invoice_joins_the_running_lifecycle(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        first = await engine.issue(account("joins"), invoice("joins", "INV-J-1", "300.00", now + timedelta(days=5)))
        second = await engine.issue(account("joins"), invoice("joins", "INV-J-2", "700.00", now + timedelta(days=35)))
        assert second.result_run_id == first.result_run_id
        status = await status_when(engine, "joins", lambda s: len(s.invoices) == 2)
        assert status.amount_due == cny("1000.00")
        assert [i.invoice_id for i in status.invoices] == ["INV-J-1", "INV-J-2"]
        assert status.oldest_due_on == (now + timedelta(days=5)).astimezone(SHANGHAI).date()
        await first.signal("payment_received", payment("joins", "PAY-J-1", "1000.00", now))
        result = await first.result()
    assert result.amount_due == cny("0.00")
    assert notice_kinds(result) == [NoticeKind.INVOICE, NoticeKind.INVOICE]


async def test_below_minimum_is_never_suspended(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, partner_center_emulator: Any
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(account("small"), invoice("small", "INV-S-1", "60.00", now + timedelta(days=1)))
        await env.sleep(timedelta(days=40))
        status = await engine.status("small")
        assert status.stage is BillingStage.OVERDUE
        assert status.suspended_subscription_ids == []
        assert NoticeKind.SUSPENSION not in notice_kinds(status)
        assert NoticeKind.FINAL_NOTICE not in notice_kinds(status)
        assert partner_center_emulator.api_requests("PATCH") == []
        await handle.signal("payment_received", payment("small", "PAY-S-1", "60.00", now + timedelta(days=40)))
        await handle.result()


async def test_repeated_payment_counts_once(time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(account("repeat"), invoice("repeat", "INV-R-1", "1000.00", now + timedelta(days=9)))
        twice = payment("repeat", "PAY-R-1", "400.00", now)
        await handle.signal("payment_received", twice)
        await handle.signal("payment_received", twice)
        await handle.signal("payment_received", payment("repeat", "PAY-R-MARK", "0.01", now))
        status = await status_when(engine, "repeat", lambda s: s.amount_due == cny("599.99"))
        assert status.amount_due == cny("599.99")
        await handle.signal("payment_received", payment("repeat", "PAY-R-2", "599.99", now))
        result = await handle.result()
    assert result.amount_due == cny("0.00")
    assert result.rejected == []


async def test_invalid_signals_are_rejected_and_change_nothing(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(
            account("invalid"), invoice("invalid", "INV-I-1", "500.00", now + timedelta(days=9))
        )
        good = payment("invalid", "PAY-I-0", "1.00", now).model_dump(mode="json")
        await handle.signal("payment_received", {**good, "payment_id": "PAY-I-1", "customer_id": "someone-else"})
        await handle.signal(
            "payment_received",
            {**good, "payment_id": "PAY-I-2", "amount": {"amount": "-5", "currency": "CNY"}},
        )
        await handle.signal(
            "payment_received",
            {**good, "payment_id": "PAY-I-3", "amount": {"amount": "5", "currency": "USD"}},
        )
        await handle.signal("payment_received", {**good, "payment_id": "PAY-I-4", "invoice_id": "INV-NOPE"})
        await handle.signal("invoice_issued", {"invoice_id": "INV-I-2", "customer_id": "invalid"})
        await handle.signal("invoice_issued", "not an invoice")
        await handle.signal(
            "invoice_issued",
            invoice("invalid", "INV-I-1", "999.00", now + timedelta(days=9)).model_dump(mode="json"),
        )
        status = await status_when(engine, "invalid", lambda s: len(s.rejected) == 7)
        assert status.amount_due == cny("500.00")
        assert [(r.name, r.reference) for r in status.rejected] == [
            ("payment_received", "PAY-I-1"),
            ("payment_received", "PAY-I-2"),
            ("payment_received", "PAY-I-3"),
            ("payment_received", "PAY-I-4"),
            ("invoice_issued", "INV-I-2"),
            ("invoice_issued", None),
            ("invoice_issued", "INV-I-1"),
        ]
        reasons = [r.reason for r in status.rejected]
        assert "someone-else" in reasons[0]
        assert "greater than zero" in reasons[1]
        assert "USD" in reasons[2]
        assert "INV-NOPE" in reasons[3]
        await handle.signal("payment_received", payment("invalid", "PAY-I-5", "500.00", now))
        result = await handle.result()
    assert result.amount_due == cny("0.00")


async def test_no_payload_two_payloads_and_non_json_are_rejected_and_nothing_sticks(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    """What the `temporal` CLI sends without --input, with --input twice, or bytes that are no JSON: each is
    rejected (signals) or refused (updates) with a sentence, and the next real payment is booked."""
    env = time_skipping_env
    now = await env.get_current_time()
    not_json = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b"{not json"))
    binary = RawValue(Payload(metadata={"encoding": b"binary/plain"}, data=b"\xff\xfe"))
    good = payment("raw", "PAY-R-0", "1.00", now).model_dump(mode="json")
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(account("raw"), invoice("raw", "INV-R-1", "500.00", now + timedelta(days=9)))
        await handle.signal("payment_received")
        await handle.signal("payment_received", args=[good, good])
        await handle.signal("payment_received", not_json)
        await handle.signal("dispute_opened", binary)
        status = await status_when(engine, "raw", lambda s: len(s.rejected) == 4)
        reasons = [(r.name, r.reason) for r in status.rejected]
        assert reasons[0] == (
            "payment_received",
            "invalid input: the message carried no payload (send one JSON object)",
        )
        assert reasons[1] == (
            "payment_received",
            "invalid input: the message carried 2 payloads; it takes one JSON object",
        )
        assert reasons[2][1].startswith("invalid input: the payload is not JSON (encoding json/plain")
        assert reasons[3][0] == "dispute_opened" and reasons[3][1].startswith("invalid input:")
        for args, expected in (
            ([], "carried no payload"),
            ([good, good], "carried 2 payloads"),
            ([not_json], "not JSON"),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update("record_payment", args=args, result_type=BillingStatus)
            assert expected in str(getattr(refused.value.cause, "message", refused.value.cause))
        assert (await engine.status("raw")).amount_due == cny("500.00")
        await handle.signal("payment_received", payment("raw", "PAY-R-1", "500.00", now))
        result = await handle.result()
    assert result.amount_due == cny("0.00")


async def test_a_subscription_partner_center_refuses_stays_out_of_the_suspension_and_the_desk_hears_why(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, partner_center_emulator: Any, smtp_sink: Any
):
    """One refusal no longer holds the account in a retry loop: what could be suspended is, the notice names
    exactly that by its name, the desk gets the refused one with Partner Center's code; reinstatement touches
    only what was suspended and the close-the-loop notice claims only what was restored."""
    env = time_skipping_env
    now = await env.get_current_time()
    partner_center_emulator.seed_tenant(
        "refusing",
        {"sub-ok": "active", "sub-stuck": "active"},
        offer_names={"sub-ok": "Office 365 E3 operated by 21Vianet", "sub-stuck": "Azure plan"},
        friendly_names={"sub-ok": "Head office", "sub-stuck": "Lab"},
    )
    partner_center_emulator.refuse_status_change("refusing", "sub-stuck", "800096")
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(
            account("refusing"), invoice("refusing", "INV-RF-1", "900.00", now + timedelta(days=1))
        )
        await env.sleep(timedelta(days=25))
        status = await status_when(engine, "refusing", lambda s: NoticeKind.SUSPENSION in notice_kinds(s))
        assert status.stage is BillingStage.SUSPENDED
        assert status.suspended_subscription_ids == ["sub-ok"]
        assert status.suspended_subscriptions == ["Office 365 E3 operated by 21Vianet (Head office)"]
        assert partner_center_emulator.subscription("refusing", "sub-stuck")["status"] == "active"
        messages = {m["X-Billing-Notice"]: m for m in smtp_sink.messages if m["X-Billing-Customer"] == "refusing"}
        suspension_text = messages["suspension"].get_body(preferencelist=("plain",)).get_content()
        assert "Head office" in suspension_text and "Lab" not in suspension_text and "sub-ok" not in suspension_text
        desk = messages["escalation_case"]
        desk_text = desk.get_body(preferencelist=("plain",)).get_content()
        assert "sub-stuck" in desk_text and "800096" in desk_text and "sub-ok" not in desk_text
        # Reactivating the suspended one does not take either: the customer is not told it was restored.
        partner_center_emulator.refuse_status_change("refusing", "sub-ok", "2011")
        await handle.signal("payment_received", payment("refusing", "PAY-RF-1", "900.00", now))
        result = await handle.result()
    close = [
        m
        for m in smtp_sink.messages
        if m["X-Billing-Customer"] == "refusing" and m["X-Billing-Notice"] == "close_the_loop"
    ]
    close_text = close[-1].get_body(preferencelist=("plain",)).get_content()
    assert "未能在合作伙伴中心恢复" in close_text and "我们已恢复" not in close_text
    desk_reports = [
        m
        for m in smtp_sink.messages
        if m["X-Billing-Customer"] == "refusing" and m["X-Billing-Notice"] == "escalation_case"
    ]
    assert len(desk_reports) == 2 and "2011" in desk_reports[-1].get_body(preferencelist=("plain",)).get_content()
    assert result.stage is BillingStage.RESOLVED


LARGEST = "is larger than the largest amount this engine books (999,999,999,999.99 CNY)"


async def test_amounts_beyond_the_bound_are_rejected_and_never_stick_the_lifecycle(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        due = now + timedelta(days=9)
        handle = await engine.issue(account("absurd"), invoice("absurd", "INV-A-1", "600000000000.00", due))
        good = payment("absurd", "PAY-A-0", "1.00", now).model_dump(mode="json")
        # The issue's amounts: a string, a JSON number and thirty 9s (InvalidOperation), and one beyond the ledger's
        # NUMERIC(18, 2) (retried for ever); then an invoice that would take the amount due beyond the bound.
        absurd: list[Any] = ["1e30", 1e30, "9" * 30, "99999999999999999999.00"]
        for number, amount in enumerate(absurd, start=1):
            money = {"amount": amount, "currency": "CNY"}
            await handle.signal("payment_received", {**good, "payment_id": f"PAY-A-{number}", "amount": money})
        await handle.signal("invoice_issued", invoice("absurd", "INV-A-2", "400000000000.00", due))
        status = await status_when(engine, "absurd", lambda s: len(s.rejected) == 5)

        assert [(r.name, r.reference) for r in status.rejected] == [
            *(("payment_received", f"PAY-A-{number}") for number in range(1, 5)),
            ("invoice_issued", "INV-A-2"),
        ]
        assert all(LARGEST in r.reason for r in status.rejected), [r.reason for r in status.rejected]
        assert "amount due: the sum 1,000,000,000,000.00 CNY" in status.rejected[4].reason
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                "record_payment", {**good, "amount": {"amount": "1e30", "currency": "CNY"}}, result_type=BillingStatus
            )
        assert str(getattr(refused.value.cause, "message", "")) == f"invalid input: amount: 1E+30 {LARGEST}"
        assert status.amount_due == cny("600000000000.00")
        await handle.signal("payment_received", payment("absurd", "PAY-A-5", "600000000000.00", now))
        result = await handle.result()
    assert result.amount_due == cny("0.00")


async def test_a_dispute_whose_sum_leaves_the_bound_is_rejected_and_the_lifecycle_goes_on(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        largest = "999999999999.99"
        handle = await engine.issue(account("bound"), invoice("bound", "INV-B-1", largest, now + timedelta(days=9)))
        whole = {"dispute_id": "D-1", "customer_id": "bound", "invoice_id": "INV-B-1", "reason": "all of it"}
        await handle.signal("dispute_opened", whole)
        await status_when(engine, "bound", lambda s: len(s.disputes) == 1)
        more = {**whole, "dispute_id": "D-2", "amount": {"amount": "0.01", "currency": "CNY"}}
        await handle.signal("dispute_opened", more)
        status = await status_when(engine, "bound", lambda s: len(s.rejected) == 1)

        assert (status.rejected[0].reference, LARGEST in status.rejected[0].reason) == ("D-2", True)
        await handle.signal("payment_received", payment("bound", "PAY-B-1", "100.00", now))
        after = await status_when(engine, "bound", lambda s: s.amount_due == cny("999999999899.99"))
        assert [d.dispute_id for d in after.disputes] == ["D-1"]


async def test_a_suspension_partner_center_refuses_for_every_subscription_is_not_announced(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, partner_center_emulator: Any, smtp_sink: Any
):
    env = time_skipping_env
    now = await env.get_current_time()
    partner_center_emulator.seed_tenant("all-refused", {"sub-only": "active"})
    partner_center_emulator.refuse_status_change("all-refused", "sub-only", "800096")
    async with engine_factory(env.client) as engine:
        handle = await engine.issue(
            account("all-refused"), invoice("all-refused", "INV-AR-1", "900.00", now + timedelta(days=1))
        )
        await env.sleep(timedelta(days=30))
        status = await status_when(
            engine, "all-refused", lambda s: "escalation_case" in sink_kinds(smtp_sink, "all-refused")
        )
        assert status.stage is not BillingStage.SUSPENDED and status.suspended_subscription_ids == []
        assert "suspension" not in sink_kinds(smtp_sink, "all-refused")
        await handle.signal("payment_received", payment("all-refused", "PAY-AR-1", "900.00", now))
        await handle.result()


async def test_quiet_hours_and_weekends_hold_customer_notices(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    policy = TEST_POLICY.replace(
        "enabled = false", 'enabled = true\nstart = "09:00"\nend = "18:00"\nbusiness_days_only = true'
    )
    zone = ZoneInfo("Europe/Berlin")
    async with engine_factory(env.client, policy=policy) as engine:
        await engine.issue(
            account("quiet", time_zone="Europe/Berlin"),
            invoice("quiet", "INV-Q-1", "900.00", now + timedelta(days=2)),
        )
        await env.sleep(timedelta(days=26))
        status = await engine.status("quiet")
    assert status.stage is BillingStage.SUSPENDED
    assert len(status.notices_sent) >= 5
    for notice in status.notices_sent:
        local = notice.at.astimezone(zone)
        assert local.weekday() < 5, notice
        assert 9 <= local.hour < 18, notice


async def test_a_new_lifecycle_records_that_it_follows_the_policys_business_day_calendar(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    """The marker tells a replay that this run counts China's holidays (runs without it count Monday to
    Friday: tests/test_replay.py); the core's tests show what the calendar does to the dates. A new run records
    one marker, PATCH_BOOKS_AND_MAIL_IN_WORKER, which stands for every earlier patch, the calendar's among them."""
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        due = now + timedelta(days=9)
        handle = await engine.issue(account("calendar"), invoice("calendar", "INV-K-1", "880.00", due))
        await handle.signal("payment_received", payment("calendar", "PAY-K-1", "880.00", now))
        await handle.result()
        history = await handle.fetch_history()
    patches = [
        json.loads(payload.data)["id"]
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
        for payload in event.marker_recorded_event_attributes.details["patch-data"].payloads
    ]
    assert patches == [PATCH_BOOKS_AND_MAIL_IN_WORKER]
    # Implied by it: no marker and upsert of their own.
    assert PATCH_CHINA_CALENDAR not in patches
    assert PATCH_FEWER_ACTIONS not in patches


def test_the_worker_warns_at_start_up_about_this_year_and_next_when_china_calendar_does_not_know_them():
    unknown = 2099  # China's calendar is published a few weeks ahead of each year
    with capture_logs() as logs:
        warn_if_china_calendar_runs_out(CollectionsPolicy(), date(unknown, 6, 1))
    [warning] = logs
    assert warning["log_level"] == "warning"
    assert warning["years"] == [unknown, unknown + 1]
    assert warning["known_through"] == KNOWN_YEARS[-1]

    with capture_logs() as logs:
        warn_if_china_calendar_runs_out(CollectionsPolicy(), date(KNOWN_YEARS[-2], 6, 1))  # both years known
        for quiet in (QuietHours(calendar="weekends"), QuietHours(enabled=False), QuietHours(business_days_only=False)):
            warn_if_china_calendar_runs_out(CollectionsPolicy(quiet_hours=quiet), date(unknown, 6, 1))
    assert logs == []


async def test_the_worker_says_once_when_china_calendar_does_not_know_this_year_or_next(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    """Once per worker, however many workflow tasks its lifecycles run: the core falls back without a word."""
    env = time_skipping_env
    now = await env.get_current_time()
    today = datetime.now(SHANGHAI).date()  # the worker's clock, not the skipped-ahead workflow time
    policy = TEST_POLICY.replace("enabled = false", "enabled = true")
    with capture_logs() as logs:
        async with engine_factory(env.client, policy=policy) as engine:
            handle = await engine.issue(account("once"), invoice("once", "INV-O-1", "880.00", now + timedelta(days=4)))
            await env.sleep(timedelta(days=8))
            await handle.signal("payment_received", payment("once", "PAY-O-1", "880.00", now))
            result = await handle.result()
    assert len(result.notices_sent) >= 2  # the invoice and the reminder before it is due, at least
    warnings = [entry for entry in logs if entry["event"].startswith("china calendar not known")]
    expected = unknown_years([today.year, today.year + 1])
    assert [warning["years"] for warning in warnings] == ([expected] if expected else [])


async def test_continue_as_new_keeps_the_state(time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client, history_event_limit=20) as engine:
        handle = await engine.issue(account("long"), invoice("long", "INV-C-1", "2500.00", now + timedelta(days=1)))
        first_run = handle.result_run_id
        await env.sleep(timedelta(days=16))
        status = await engine.status("long")
        described = await engine.handle("long").describe()
        assert described.run_id != first_run  # continued as new at least once
        assert described.status is WorkflowExecutionStatus.RUNNING
        assert status.stage is BillingStage.FINAL_NOTICE
        assert notice_kinds(status) == [
            NoticeKind.INVOICE,
            NoticeKind.REMINDER,
            NoticeKind.REMINDER,
            NoticeKind.FINAL_NOTICE,
        ]
        await engine.handle("long").signal("payment_received", payment("long", "PAY-C-1", "2500.00", now))
        result = await engine.handle("long").result()
    assert notice_kinds(result)[-1] is NoticeKind.CLOSE_THE_LOOP
    assert result.invoices[0].invoice_id == "INV-C-1"


def test_due_date_without_due_at_is_the_end_of_the_day_in_the_customers_zone():
    due_on = date(2026, 12, 1)
    assert due_moment(due_on, account("c").zone) == datetime(2026, 12, 2, 0, 0, tzinfo=SHANGHAI)
    berlin = ZoneInfo("Europe/Berlin")
    assert due_moment(due_on, berlin) == datetime(2026, 12, 2, 0, 0, tzinfo=berlin)
    exact = datetime(2026, 12, 1, 15, 0, tzinfo=SHANGHAI)
    assert due_moment(due_on, berlin, exact) == exact


pytestmark = pytest.mark.timeout(120)
