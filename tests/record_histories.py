"""Records the histories that `test_replay.py` replays: `python -m tests.record_histories`.

Run it when a workflow change is deliberate and patched (`workflow.patched`), to add a history of the new
code beside the old ones; never overwrite a recorded history to make a replay test pass. A history whose name
ends in `_encrypted_vN` is recorded with payload encryption on, under `HISTORY_ENCRYPTION_KEYS`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.encryption import data_converter
from billing.ledger import LedgerStore
from billing.ledger_messages import RecordInvoiceRequest, RecordPaymentRequest
from billing.models import CustomerAccount, Invoice, LedgerChanged, Payment
from billing.money import Money
from billing.partner_payable import PartnerInvoice, PartnerPayableInput
from billing.settings import Settings, parse_encryption_keys
from billing.sweep import SweepInput
from tests.builders import SHANGHAI
from tests.temporal_fixtures import TEST_POLICY, TEST_SERVER, register_search_attributes
from worker import billing_worker
from workflows.customer_billing import CustomerBilling
from workflows.daily_sweep import DailySweep
from workflows.partner_payable import PartnerPayable

HISTORIES = Path(__file__).parent / "histories"
# The key of the recorded encrypted histories, so the replay test can decrypt them: a test key, protecting
# nothing but these fixtures (never use a key from a repository in a deployment).
HISTORY_ENCRYPTION_KEYS = "histories-test:+Wve+QiYq0XAjSqOw21kKogVvxiZyk0+VgXZVNK/S4o="
HISTORY_DATA_CONVERTER = data_converter(parse_encryption_keys(HISTORY_ENCRYPTION_KEYS))


Scenario = Callable[[WorkflowEnvironment, Settings], Awaitable[WorkflowHandle[Any, Any]]]


async def full_ladder(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """Invoice → reminders → final notice → suspension → payment → reinstatement → close the loop."""
    now = await env.get_current_time()
    handle = await _issue(env, settings.task_queue, "history-1", "INV-H-1", "5600.00", now + timedelta(days=1))
    await env.sleep(timedelta(days=23))
    await handle.signal("payment_received", _payment("history-1", "PAY-H-1", "5600.00", now + timedelta(days=23)))
    return handle


async def dispute_and_escalation(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """Invoice → dispute → desk reminder → escalation case → chases → 21Vianet's reference → credit → payment."""
    now = await env.get_current_time()
    handle = await _issue(env, settings.task_queue, "history-2", "INV-H-2", "3000.00", now + timedelta(days=10))
    dispute = {
        "dispute_id": "D-H-2",
        "customer_id": "history-2",
        "invoice_id": "INV-H-2",
        "reason": "seats cancelled in October still billed",
        "amount": {"amount": "1200.00", "currency": "CNY"},
    }
    await handle.signal("dispute_opened", dispute)
    await env.sleep(timedelta(days=6))
    await handle.execute_update("escalate_dispute", {"dispute_id": "D-H-2", "note": "customer insists"})
    await env.sleep(timedelta(days=2))
    await handle.execute_update("record_escalation", {"dispute_id": "D-H-2", "reference": "21V-H-0001"})
    await env.sleep(timedelta(days=2))
    await handle.execute_update(
        "resolve_escalation",
        {
            "dispute_id": "D-H-2",
            "outcome": "credit",
            "credit": {"amount": "1200.00", "currency": "CNY"},
            "note": "21Vianet confirmed the cancellation",
        },
    )
    await handle.signal("payment_received", _payment("history-2", "PAY-H-2", "1800.00", now + timedelta(days=10)))
    return handle


async def paid_behind_its_back(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """Invoice → a payment booked straight into the ledger → the sweep's `ledger_changed` → close the loop."""
    now = await env.get_current_time()
    handle = await _issue(env, settings.task_queue, "history-3", "INV-H-3", "900.00", now + timedelta(days=3))
    await env.sleep(timedelta(days=5))  # overdue: reminded, so the customer is told when it is resolved
    store = LedgerStore.from_url(settings.ledger_url)
    store.record_payment(RecordPaymentRequest(payment=_payment("history-3", "PAY-H-3", "900.00", now)))
    store.close()
    await handle.signal(
        "ledger_changed",
        LedgerChanged(customer_id="history-3", amount_due=Money.of("0", "CNY"), checked_at=now + timedelta(days=5)),
    )
    return handle


async def extension_after_final_notice(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """Invoice → reminders → final notice → the operator extends the due date → paid before the new date."""
    now = await env.get_current_time()
    handle = await _issue(env, settings.task_queue, "history-6", "INV-H-6", "2400.00", now + timedelta(days=1))
    await env.sleep(timedelta(days=16))
    new_due_on = (now + timedelta(days=21)).astimezone(SHANGHAI).date()
    extension = {"invoice_id": "INV-H-6", "due_on": str(new_due_on), "reason": "budget approval next week"}
    await handle.execute_update("extend_due_date", extension)
    await env.sleep(timedelta(days=4))
    await handle.signal("payment_received", _payment("history-6", "PAY-H-6", "2400.00", now + timedelta(days=20)))
    return handle


async def extension_then_suspension(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """Invoice → reminders → final notice → extension → still unpaid: the ladder again → suspension → paid."""
    now = await env.get_current_time()
    handle = await _issue(env, settings.task_queue, "history-7", "INV-H-7", "2400.00", now + timedelta(days=1))
    await env.sleep(timedelta(days=16))
    new_due_on = (now + timedelta(days=21)).astimezone(SHANGHAI).date()
    extension = {"invoice_id": "INV-H-7", "due_on": str(new_due_on), "reason": "budget approval next week"}
    await handle.execute_update("extend_due_date", extension)
    await env.sleep(timedelta(days=50))
    await handle.signal("payment_received", _payment("history-7", "PAY-H-7", "2400.00", now + timedelta(days=66)))
    return handle


async def daily_sweep(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """A sweep over a ledger where one customer owes without a lifecycle: partner invoices, one page each."""
    now = await env.get_current_time()
    store = LedgerStore.from_url(settings.ledger_url)
    store.record_invoice(
        RecordInvoiceRequest(
            account=CustomerAccount(customer_id="history-4", name="Lotus Trading", email="ap@lotus.example.cn"),
            invoice=Invoice(
                invoice_id="INV-H-4",
                customer_id="history-4",
                amount=Money.of("700.00", "CNY"),
                issued_on=now.date(),
                due_on=now.date() + timedelta(days=30),
            ),
            due_at=now + timedelta(days=31),
        )
    )
    store.close()
    return await env.client.start_workflow(
        DailySweep.run, SweepInput(page_size=10), id="billing-daily-sweep-history", task_queue=settings.task_queue
    )


async def partner_payable(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """21Vianet's invoice → reminders before the due date and overdue → paid in two parts."""
    today = (await env.get_current_time()).date()
    invoice = PartnerInvoice(
        invoice_id="G-H-5", invoice_date=today, amount=Money.of("10000.00", "CNY"), paid=Money.of("0", "CNY")
    )
    handle = await env.client.start_workflow(
        PartnerPayable.run,
        PartnerPayableInput(invoice=invoice),
        id="partner-payable-G-H-5",
        task_queue=settings.task_queue,
    )
    await env.sleep(timedelta(days=40))
    paid_on = str(today + timedelta(days=40))
    for number, amount in ((1, "4000.00"), (2, "6000.00")):
        payment = {"payment_id": f"PP-H-{number}", "amount": {"amount": amount, "currency": "CNY"}, "paid_on": paid_on}
        await handle.execute_update("record_partner_payment", payment)
    return handle


async def quiet_hours(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """Invoice → reminder before the due date → payment → close the loop, each notice in business hours
    (Asia/Shanghai): `test_replay.py` moves it onto a week of public holidays."""
    now = await env.get_current_time()
    handle = await _issue(env, settings.task_queue, "history-6", "INV-H-6", "800.00", now + timedelta(days=4))
    await env.sleep(timedelta(days=3))
    await handle.signal("payment_received", _payment("history-6", "PAY-H-6", "800.00", now + timedelta(days=3)))
    return handle


async def partner_payable_voided(env: WorkflowEnvironment, settings: Settings) -> WorkflowHandle[Any, Any]:
    """21Vianet's invoice → reminders → Partner Center lists it as a void note (`partner_center_voided`) → the
    voided notice, and the run completes. Recorded on code without the signal (tests/histories/
    partner_payable_void_before_patch_v1.json) the signal is ignored, so the scenario then pays the bill."""
    now = await env.get_current_time()
    invoice = PartnerInvoice(
        invoice_id="G-H-6",
        invoice_date=now.date() - timedelta(days=20),
        amount=Money.of("10000.00", "CNY"),
        paid=Money.of("0", "CNY"),
    )
    handle = await env.client.start_workflow(
        PartnerPayable.run,
        PartnerPayableInput(invoice=invoice),
        id="partner-payable-G-H-6",
        task_queue=settings.task_queue,
    )
    await env.sleep(timedelta(days=12))
    voided_at = await env.get_current_time()
    await handle.signal("partner_center_voided", {"invoice_id": "G-H-6", "as_of": voided_at.isoformat()})
    await env.sleep(timedelta(days=1))
    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        paid_on = str((await env.get_current_time()).date())
        payment = {"payment_id": "PP-H-6", "amount": {"amount": "10000.00", "currency": "CNY"}, "paid_on": paid_on}
        await handle.execute_update("record_partner_payment", payment)
    return handle


SCENARIOS: dict[str, Scenario] = {
    "customer_billing_full_ladder": full_ladder,
    "customer_billing_dispute_escalation": dispute_and_escalation,
    "customer_billing_ledger_changed": paid_behind_its_back,
    "customer_billing_extension_after_final_notice": extension_after_final_notice,
    "customer_billing_extension_then_suspension": extension_then_suspension,
    "daily_sweep": daily_sweep,
    "partner_payable": partner_payable,
    "customer_billing_quiet_hours": quiet_hours,
    "partner_payable_voided": partner_payable_voided,
}
# The recorded runs do without quiet hours (TEST_POLICY), except these.
QUIET_HOURS_POLICY = TEST_POLICY.replace("enabled = false", "enabled = true")
POLICIES = {"customer_billing_quiet_hours": QUIET_HOURS_POLICY}


async def _issue(
    env: WorkflowEnvironment, task_queue: str, customer_id: str, invoice_id: str, amount: str, due_at: datetime
) -> WorkflowHandle[Any, Any]:
    account = CustomerAccount(customer_id=customer_id, name="Lotus Trading", email="ap@lotus.example.cn")
    invoice = Invoice(
        invoice_id=invoice_id,
        customer_id=customer_id,
        amount=Money.of(amount, "CNY"),
        issued_on=due_at.date() - timedelta(days=30),
        due_on=due_at.date(),
        due_at=due_at,
    )
    return await env.client.start_workflow(
        CustomerBilling.run,
        account,
        id=f"customer-billing-{customer_id}",
        task_queue=task_queue,
        start_signal="invoice_issued",
        start_signal_args=[invoice],
    )


def _payment(customer_id: str, payment_id: str, amount: str, at: datetime) -> Payment:
    return Payment(payment_id=payment_id, customer_id=customer_id, amount=Money.of(amount, "CNY"), received_at=at)


async def record(scenario: str, name: str) -> Path:
    encrypted = "_encrypted_v" in name
    converter: DataConverter = HISTORY_DATA_CONVERTER if encrypted else pydantic_data_converter
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=converter
    )
    await register_search_attributes(env.client)
    with tempfile.TemporaryDirectory() as tmp, PartnerCenterEmulator() as emulator:
        policy = Path(tmp) / "policy.toml"
        policy.write_text(POLICIES.get(scenario, TEST_POLICY), encoding="utf-8")
        settings = Settings(
            task_queue="billing-history",
            ledger_url=f"sqlite:///{tmp}/ledger.db",
            outbox_dir=Path(tmp) / "outbox",
            mail_from="billing@partner.example.cn",
            escalation_email="escalations@partner.example.cn",
            finance_email="finance@partner.example.cn",
            partner_center_url=emulator.base_url,
            partner_center_token_url=emulator.token_url,
            partner_center_client_id=emulator.client_id,
            partner_center_client_secret=emulator.client_secret,
            policy_file=policy,
            encryption_keys=parse_encryption_keys(HISTORY_ENCRYPTION_KEYS) if encrypted else None,
            workflow_sandbox="strict",
        )
        async with billing_worker(env.client, settings) as worker, worker:
            handle = await SCENARIOS[scenario](env, settings)
            await handle.result()
            history = await handle.fetch_history()
    await env.shutdown()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json(), encoding="utf-8")
    return path


def main() -> int:
    """python -m tests.record_histories SCENARIO NAME, e.g. customer_billing_dispute_escalation ..._v1"""
    if len(sys.argv) != 3 or sys.argv[1] not in SCENARIOS:
        print(f"usage: python -m tests.record_histories {{{','.join(SCENARIOS)}}} HISTORY_NAME", file=sys.stderr)
        return 2
    print(asyncio.run(record(sys.argv[1], sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
