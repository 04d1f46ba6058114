"""Records the histories that `test_replay.py` replays: `python -m tests.record_histories`.

Run it when a workflow change is deliberate and patched (`workflow.patched`), to add a history of the new
code beside the old ones; never overwrite a recorded history to make a replay test pass.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.models import CustomerAccount, Invoice, Payment
from billing.money import Money
from billing.settings import Settings
from tests.temporal_fixtures import TEST_POLICY, TEST_SERVER, register_search_attributes
from worker import billing_worker
from workflows.customer_billing import CustomerBilling

HISTORIES = Path(__file__).parent / "histories"


async def record_full_ladder(name: str) -> Path:
    """Invoice → reminders → final notice → suspension → payment → reinstatement → close the loop."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    with tempfile.TemporaryDirectory() as tmp, PartnerCenterEmulator() as emulator:
        policy = Path(tmp) / "policy.toml"
        policy.write_text(TEST_POLICY, encoding="utf-8")
        settings = Settings(
            task_queue="billing-history",
            ledger_url=f"sqlite:///{tmp}/ledger.db",
            outbox_dir=Path(tmp) / "outbox",
            partner_center_url=emulator.base_url,
            partner_center_token_url=emulator.token_url,
            partner_center_client_id=emulator.client_id,
            partner_center_client_secret=emulator.client_secret,
            policy_file=policy,
        )
        now = await env.get_current_time()
        account = CustomerAccount(customer_id="history-1", name="Lotus Trading", email="ap@lotus.example.cn")
        invoice = Invoice(
            invoice_id="INV-H-1",
            customer_id="history-1",
            amount=Money.of("5600.00", "CNY"),
            issued_on=now.date(),
            due_on=(now + timedelta(days=1)).date(),
            due_at=now + timedelta(days=1),
        )
        async with billing_worker(env.client, settings) as worker, worker:
            handle = await env.client.start_workflow(
                CustomerBilling.run,
                account,
                id="customer-billing-history-1",
                task_queue=settings.task_queue,
                start_signal="invoice_issued",
                start_signal_args=[invoice],
            )
            await env.sleep(timedelta(days=23))
            payment = Payment(
                payment_id="PAY-H-1",
                customer_id="history-1",
                amount=Money.of("5600.00", "CNY"),
                received_at=now + timedelta(days=23),
            )
            await handle.signal("payment_received", payment)
            await handle.result()
            history = await handle.fetch_history()
    await env.shutdown()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json(), encoding="utf-8")
    return path


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "customer_billing_full_ladder_v1"
    print(asyncio.run(record_full_ladder(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
