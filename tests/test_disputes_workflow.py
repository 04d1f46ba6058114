"""Disputes, the 21Vianet escalation case and fraud review on `CustomerBilling` (time-skipping server, real
worker wiring: SQLite ledger, SMTP sink, Partner Center emulator)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from billing.models import BillingStage, DisputeState, NoticeKind
from tests.temporal_fixtures import EngineFactory
from tests.test_customer_billing_workflow import account, cny, invoice, payment, status_when
from tests.test_operator_actions_workflow import accepted, issued, refused

pytestmark = pytest.mark.timeout(120)


def dispute(customer: str, dispute_id: str, invoice_id: str, amount: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dispute_id": dispute_id,
        "customer_id": customer,
        "invoice_id": invoice_id,
        "reason": "charged for seats we cancelled",
    }
    if amount is not None:
        body["amount"] = {"amount": amount, "currency": "CNY"}
    return body


def desk_mail(smtp_sink: Any, customer: str) -> list[Any]:
    return [
        m
        for m in smtp_sink.messages
        if m["X-Billing-Customer"] == customer and m["X-Billing-Notice"] == "escalation_case"
    ]


def kinds(status: Any) -> list[NoticeKind]:
    return [notice.kind for notice in status.notices_sent]


async def test_disputed_amount_leaves_the_ladder_while_the_rest_is_dunned(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("dsp"), invoice("dsp", "INV-D-1", "1000.00", now + timedelta(days=1)))
        await engine.issue(account("dsp"), invoice("dsp", "INV-D-2", "50.00", now + timedelta(days=1)))
        await handle.signal("dispute_opened", dispute("dsp", "D-1", "INV-D-1"))
        status = await status_when(engine, "dsp", lambda s: s.disputes)
        assert status.stage is BillingStage.DISPUTED
        await env.sleep(timedelta(days=30))
        status = await engine.status("dsp")
        assert NoticeKind.DISPUTE_RECEIVED in kinds(status)
        # INV-D-2 (below the minimum) is reminded; the disputed INV-D-1 never leads to a final notice or suspension.
        assert NoticeKind.REMINDER in kinds(status)
        assert NoticeKind.FINAL_NOTICE not in kinds(status)
        assert status.suspended_subscription_ids == []
        assert [n.invoice_id for n in status.notices_sent if n.kind is NoticeKind.REMINDER] == ["INV-D-2"] * 2
        credited = await accepted(
            handle,
            "resolve_dispute",
            {
                "dispute_id": "D-1",
                "outcome": "credit",
                "credit": {"amount": "1000.00", "currency": "CNY"},
                "note": "seats were cancelled in time",
            },
        )
        assert credited.amount_due == cny("50.00")
        assert "already resolved" in await refused(
            handle, "resolve_dispute", {"dispute_id": "D-1", "outcome": "uphold", "note": "again"}
        )
        await handle.signal("payment_received", payment("dsp", "PAY-D-1", "50.00", now + timedelta(days=30)))
        result = await handle.result()
    assert result.disputes[0].state is DisputeState.RESOLVED
    assert kinds(result)[-2:] == [NoticeKind.DISPUTE_RESOLVED, NoticeKind.CLOSE_THE_LOOP]


async def test_upheld_dispute_returns_to_the_ladder_after_the_grace_period(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(
            engine, account("uphold"), invoice("uphold", "INV-U-1", "800.00", now + timedelta(days=1))
        )
        await handle.signal("dispute_opened", dispute("uphold", "D-U", "INV-U-1"))
        await env.sleep(timedelta(days=25))
        assert "more than" not in await refused(
            handle,
            "resolve_dispute",
            {"dispute_id": "D-U", "outcome": "credit", "credit": {"amount": "900.00", "currency": "CNY"}, "note": "x"},
        )
        status = await accepted(handle, "resolve_dispute", {"dispute_id": "D-U", "outcome": "uphold", "note": "valid"})
        upheld_at = await env.get_current_time()
        assert status.suspended_subscription_ids == []
        await env.sleep(timedelta(days=6))
        status = await engine.status("uphold")
        assert status.suspended_subscription_ids == []
        dunning = [n for n in status.notices_sent if n.kind in (NoticeKind.REMINDER, NoticeKind.FINAL_NOTICE)]
        assert dunning == []  # nothing during the grace period
        await env.sleep(timedelta(days=10))
        status = await engine.status("uphold")
        first_dunning = next(n for n in status.notices_sent if n.kind in (NoticeKind.REMINDER, NoticeKind.FINAL_NOTICE))
        # (the test reads the clock just after the update returned: allow the moments in between)
        assert first_dunning.at >= upheld_at + timedelta(days=7) - timedelta(minutes=1)
        await handle.signal("payment_received", payment("uphold", "PAY-U-1", "800.00", now + timedelta(days=40)))
        await handle.result()


async def test_escalation_case_goes_to_the_desk_and_is_chased_until_resolved(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("esc"), invoice("esc", "INV-E-1", "3000.00", now + timedelta(days=10)))
        await handle.signal("dispute_opened", dispute("esc", "D-E", "INV-E-1", "1200.00"))
        await status_when(engine, "esc", lambda s: s.disputes)
        assert "never escalated" in await refused(handle, "record_escalation", {"dispute_id": "D-E", "reference": "R"})
        assert "never escalated" in await refused(
            handle, "resolve_escalation", {"dispute_id": "D-E", "outcome": "uphold", "note": "x"}
        )
        status = await accepted(handle, "escalate_dispute", {"dispute_id": "D-E", "note": "customer insists"})
        assert status.stage is BillingStage.ESCALATED
        assert "already escalated" in await refused(handle, "escalate_dispute", {"dispute_id": "D-E", "note": "x"})
        await status_when(engine, "esc", lambda s: len(desk_mail(smtp_sink, "esc")) >= 1)
        case_mail = desk_mail(smtp_sink, "esc")[0]
        assert case_mail["To"] == "escalations@partner.example.cn"
        attachments = [part for part in case_mail.iter_attachments() if part.get_content_type() == "application/json"]
        case = json.loads(attachments[0].get_content())
        assert case["dispute_id"] == "D-E"
        assert case["invoice"]["invoice_id"] == "INV-E-1"
        await env.sleep(timedelta(days=2, hours=12))
        chased = len(desk_mail(smtp_sink, "esc")) - 1
        assert chased == 2  # chase_after P1D: day 1 and day 2
        status = await accepted(handle, "record_escalation", {"dispute_id": "D-E", "reference": "21V-2026-0042"})
        assert status.disputes[0].escalation_reference == "21V-2026-0042"
        described = await handle.describe()
        assert described.search_attributes.get("EscalationRef") == ["21V-2026-0042"]
        await env.sleep(timedelta(days=1, hours=12))
        assert len(desk_mail(smtp_sink, "esc")) - 1 == chased + 1  # chased again while no answer is recorded
        await accepted(
            handle,
            "resolve_escalation",
            {
                "dispute_id": "D-E",
                "outcome": "credit",
                "credit": {"amount": "1200.00", "currency": "CNY"},
                "note": "21Vianet confirmed the seats were cancelled",
            },
        )
        await handle.signal("payment_received", payment("esc", "PAY-E-1", "1800.00", now + timedelta(days=5)))
        result = await handle.result()
    assert result.amount_due == cny("0.00")
    assert kinds(result)[-1] is NoticeKind.CLOSE_THE_LOOP
    closing = next(
        m for m in smtp_sink.messages if m["X-Billing-Customer"] == "esc" and m["X-Billing-Notice"] == "close_the_loop"
    )
    assert "世纪互联已完成" in closing.get_body(preferencelist=("plain",)).get_content()  # zh-CN: 21Vianet reviewed it


async def test_open_dispute_prompts_the_desk_once_and_is_never_escalated_by_itself(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, smtp_sink: Any
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("desk"), invoice("desk", "INV-K-1", "500.00", now + timedelta(days=30)))
        await handle.signal("dispute_opened", dispute("desk", "D-K", "INV-K-1"))
        await env.sleep(timedelta(days=12))
        status = await engine.status("desk")
        assert status.stage is BillingStage.DISPUTED
        assert len(desk_mail(smtp_sink, "desk")) == 1
        await accepted(
            handle,
            "resolve_dispute",
            {"dispute_id": "D-K", "outcome": "credit", "credit": {"amount": "500.00", "currency": "CNY"}, "note": "ok"},
        )
        await handle.result()


async def test_dispute_on_a_suspended_account_does_not_reinstate_by_itself(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("dsusp"), invoice("dsusp", "INV-S-1", "2000.00", now + timedelta(days=1)))
        await env.sleep(timedelta(days=23))
        assert (await engine.status("dsusp")).stage is BillingStage.SUSPENDED
        await handle.signal("dispute_opened", dispute("dsusp", "D-S", "INV-S-1"))
        status = await status_when(engine, "dsusp", lambda s: s.disputes)
        await env.sleep(timedelta(days=1))
        status = await engine.status("dsusp")
        assert status.stage is BillingStage.SUSPENDED
        assert status.suspended_subscription_ids
        assert any("dispute" in line for line in status.pending)
        await accepted(
            handle,
            "resolve_dispute",
            {
                "dispute_id": "D-S",
                "outcome": "credit",
                "credit": {"amount": "2000.00", "currency": "CNY"},
                "note": "ok",
            },
        )
        result = await handle.result()
    assert result.suspended_subscription_ids == []


async def test_fraud_review_suspends_at_once_and_holds_until_an_operator_reinstates(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    smtp_sink: Any,
    partner_center_emulator: Any,
):
    env = time_skipping_env
    now = await env.get_current_time()
    partner_center_emulator.seed_tenant("fraud", {"sub-f": "active"})
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("fraud"), invoice("fraud", "INV-F-1", "400.00", now + timedelta(days=20)))
        status = await accepted(handle, "suspend_now", {"reason": "fraud_review", "note": "card testing pattern"})
        assert status.stage is BillingStage.SUSPENDED
        await status_when(engine, "fraud", lambda s: len(desk_mail(smtp_sink, "fraud")) == 1)
        assert partner_center_emulator.subscription("fraud", "sub-f")["status"] == "suspended"
        await accepted(handle, "record_payment", payment("fraud", "PAY-F-1", "400.00", now).model_dump(mode="json"))
        await env.sleep(timedelta(days=2))
        status = await engine.status("fraud")
        assert status.stage is BillingStage.SUSPENDED  # a payment alone does not reinstate
        assert any("operator" in line for line in status.pending)
        await accepted(handle, "reinstate", {"note": "review found nothing"})
        result = await handle.result()
    assert partner_center_emulator.subscription("fraud", "sub-f")["status"] == "active"
    assert result.stage is BillingStage.RESOLVED


async def test_dispute_for_an_unknown_invoice_or_another_customer_is_rejected(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
):
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client) as engine:
        handle = await issued(engine, account("drej"), invoice("drej", "INV-R-1", "300.00", now + timedelta(days=9)))
        await handle.signal("dispute_opened", dispute("drej", "D-R1", "INV-NOPE"))
        await handle.signal("dispute_opened", {**dispute("drej", "D-R2", "INV-R-1"), "customer_id": "other"})
        await handle.signal("dispute_opened", dispute("drej", "D-R3", "INV-R-1", "301.00"))
        status = await status_when(engine, "drej", lambda s: len(s.rejected) == 3)
        assert status.disputes == []
        assert [r.reference for r in status.rejected] == ["D-R1", "D-R2", "D-R3"]
        await handle.signal("payment_received", payment("drej", "PAY-R-1", "300.00", now))
        await handle.result()
