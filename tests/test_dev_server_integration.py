"""The engine end to end on the real Temporal dev server: `worker.py` and `starter.py` as subprocesses, the
Partner Center emulator, an SMTP sink and a SQLite ledger, on a collections ladder seconds long."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.models import BillingStage, BillingStatus
from tests.builders import SHANGHAI
from tests.conftest import SmtpSink
from tests.devserver_fixtures import (
    REPO,
    DevServer,
    Finished,
    RunningWorker,
    eventually,
    free_port,
    run_starter,
    worker_environment,
)

pytestmark = pytest.mark.devserver

DUE_IN = timedelta(seconds=6)  # on FAST_POLICY: reminders at -2 s and +2 s, final notice +4 s, suspension +7 s
# Suspended subscriptions this engine did not suspend must stay suspended after reinstatement.
SUBSCRIPTIONS = {"sub-office": "active", "sub-m365": "active", "sub-already-suspended": "suspended"}


def subscription_statuses(emulator: PartnerCenterEmulator, tenant_id: str) -> dict[str, str]:
    return {sid: emulator.subscription(tenant_id, sid)["status"] for sid in SUBSCRIPTIONS}


def notices_to(sink: SmtpSink, customer_id: str, kind: str | None = None) -> list[str]:
    return [
        str(message["X-Billing-Notice"])
        for message in sink.messages
        if message["X-Billing-Customer"] == customer_id and kind in (None, message["X-Billing-Notice"])
    ]


async def test_customer_goes_through_the_ladder_to_suspension_and_back_on_the_dev_server(
    dev_server: DevServer,
    billing_worker_process: RunningWorker,
    partner_center_emulator: PartnerCenterEmulator,
    smtp_sink: SmtpSink,
) -> None:
    """Invoice, reminders, final notice, suspension in Partner Center, payment, reinstatement and close the
    loop, driven through `starter.py`; also `starter.py status`, the `BillingStage` search attribute, the
    notices' headers, a clean SIGTERM shutdown and JSON logs without the customer's name or email."""
    worker = billing_worker_process
    client = dev_server.client
    customer_id = f"C-IT-{uuid.uuid4().hex[:8]}"
    name, email = "莲花贸易 Integration Ltd", f"ap-{customer_id.lower()}@lotus.example.cn"
    invoice_id = f"INV-{customer_id}"
    partner_center_emulator.seed_tenant(customer_id, SUBSCRIPTIONS)

    due_at = (datetime.now(UTC) + DUE_IN).astimezone(SHANGHAI)
    issued = await run_starter(
        dev_server,
        worker.task_queue,
        "invoice",
        "--customer-id",
        customer_id,
        "--name",
        name,
        "--email",
        email,
        "--invoice-id",
        invoice_id,
        "--amount",
        "1234.50",
        "--due-on",
        due_at.date().isoformat(),
        "--due-at",
        due_at.isoformat(),
    )
    assert issued.returncode == 0, issued.stderr
    assert f"customer-billing-{customer_id}" in issued.stdout

    async def suspended_in_visibility() -> bool:
        query = f'BillingStage = "Suspended" AND CustomerId = "{customer_id}"'
        return [execution.id async for execution in client.list_workflows(query)] == [f"customer-billing-{customer_id}"]

    await eventually("BillingStage Suspended in visibility", suspended_in_visibility, 30, worker.stderr)
    assert subscription_statuses(partner_center_emulator, customer_id) == {
        "sub-office": "suspended",
        "sub-m365": "suspended",
        "sub-already-suspended": "suspended",
    }

    async def suspension_notice_sent() -> list[str]:
        # Paid before the suspension notice went out, the customer would (rightly) never get one.
        return notices_to(smtp_sink, customer_id, "suspension")

    await eventually("the suspension notice", suspension_notice_sent, 15, worker.stderr)

    shown = await run_starter(dev_server, worker.task_queue, "status", "--customer-id", customer_id)
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout
    assert f"customer      {customer_id}" in table
    assert "stage         Suspended" in table
    assert "amount due    1234.50 CNY" in table
    assert "sub-office" in table and "sub-m365" in table and "sub-already-suspended" not in table
    assert invoice_id in table and "overdue" in table
    assert "final_notice" in table and "suspension" in table

    paid = await run_starter(
        dev_server,
        worker.task_queue,
        "payment",
        "--customer-id",
        customer_id,
        "--payment-id",
        f"PAY-{customer_id}",
        "--amount",
        "1234.50",
    )
    assert paid.returncode == 0, paid.stderr

    handle = client.get_workflow_handle(f"customer-billing-{customer_id}", result_type=BillingStatus)
    final = await asyncio.wait_for(handle.result(), timeout=30)
    assert final.stage is BillingStage.RESOLVED
    assert final.amount_due.amount == 0 and final.suspended_subscription_ids == []
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED

    async def resolved_in_visibility() -> bool:
        query = f'BillingStage = "Resolved" AND CustomerId = "{customer_id}"'
        return bool([execution.id async for execution in client.list_workflows(query)])

    await eventually("BillingStage Resolved in visibility", resolved_in_visibility, 10, worker.stderr)
    assert subscription_statuses(partner_center_emulator, customer_id) == {
        "sub-office": "active",
        "sub-m365": "active",
        "sub-already-suspended": "suspended",
    }

    kinds = notices_to(smtp_sink, customer_id)
    assert kinds[0] == "invoice" and kinds[-1] == "close_the_loop"
    assert "reminder" in kinds
    assert kinds.index("reminder") < kinds.index("final_notice") < kinds.index("suspension")
    assert sorted(set(kinds)) == ["close_the_loop", "final_notice", "invoice", "reminder", "suspension"]
    mine = [d for d in smtp_sink.deliveries if d.message["X-Billing-Customer"] == customer_id]
    assert all(delivery.rcpt_tos == [email] for delivery in mine)
    message_ids = [str(delivery.message["Message-ID"]) for delivery in mine]
    assert all(mid.startswith("<") and mid.endswith(">") for mid in message_ids)
    assert len(set(message_ids)) == len(message_ids), "every notice has a Message-ID of its own"

    unknown = await run_starter(dev_server, worker.task_queue, "status", "--customer-id", "C-NOBODY")
    assert unknown.returncode == 1
    assert "no billing lifecycle found for customer C-NOBODY" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    worker.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.process.wait, 15) == 0, "clean shutdown within 15 s"

    lines = [line for line in worker.stderr.read_text(encoding="utf-8").splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(event, dict) and "event" in event for event in events)
    assert {"worker started", "worker stopped"} <= {event["event"] for event in events}
    sent = [e for e in events if e["event"] == "notice_sent" and e.get("customer_id") == customer_id]
    assert sorted(e["message_id"] for e in sent) == sorted(message_ids), "the mail is what the log says"
    everything = "\n".join(lines) + worker.stdout.read_text(encoding="utf-8")
    assert email not in everything and name not in everything


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BILLING_SMTP_PORT", "notaport"), ("BILLING_PARTNER_CENTER_CLIENT_ID", None)],
    ids=["smtp-port-not-a-number", "client-id-missing"],
)
def test_worker_with_a_broken_setting_exits_2_naming_the_variable(
    tmp_path: Path,
    partner_center_emulator: PartnerCenterEmulator,
    smtp_sink: SmtpSink,
    variable: str,
    value: str | None,
) -> None:
    # Settings are checked before connecting, so no Temporal server is needed (nor reached) here.
    unreachable = f"127.0.0.1:{free_port()}"
    env = worker_environment(tmp_path, unreachable, partner_center_emulator, smtp_sink, "billing-broken")
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    finished = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert finished.returncode == 2
    stderr = finished.stderr.decode()
    assert variable in stderr
    assert "Traceback" not in stderr


async def test_operator_actions_from_starter_print_the_new_status_or_the_refusal(
    dev_server: DevServer, billing_worker_process: RunningWorker
) -> None:
    """Each contract update has a `starter.py` subcommand: accepted, it prints the status table after it;
    refused, it prints the engine's reason and exits 1 without a traceback; the run closed, it says so."""
    worker = billing_worker_process
    customer_id = f"C-OP-{uuid.uuid4().hex[:8]}"
    invoice_id = f"INV-{customer_id}"
    due_on = (datetime.now(SHANGHAI) + timedelta(days=30)).date()

    async def starter(*args: str) -> Finished:
        return await run_starter(dev_server, worker.task_queue, *args, "--customer-id", customer_id)

    issued = await starter(
        "invoice",
        *("--name", "Operator CLI Ltd", "--email", "ap@operator.example.cn"),
        *("--invoice-id", invoice_id, "--amount", "800.00", "--due-on", due_on.isoformat()),
    )
    assert issued.returncode == 0, issued.stderr

    before_issue = await starter(
        "invoice",
        *("--name", "Operator CLI Ltd", "--email", "ap@operator.example.cn"),
        *("--invoice-id", f"{invoice_id}-X", "--amount", "800.00"),
        *("--issued-on", "2026-12-02", "--due-on", "2026-12-01"),
    )
    assert before_issue.returncode == 2
    # A rule about the whole invoice has no field: the sentence alone, not behind an empty location.
    assert before_issue.stderr == (
        "starter.py invoice: invalid input: due_on 2026-12-01 is before issued_on 2026-12-02\n"
    ), before_issue.stderr

    paused = await starter("pause-dunning", "--reason", "payment plan talks")
    assert paused.returncode == 0, paused.stderr
    assert f"pause_dunning accepted for customer-billing-{customer_id}" in paused.stdout
    assert "stage         Paused" in paused.stdout
    assert "paused        until resume-dunning" in paused.stdout
    assert "pause_dunning" in paused.stdout.split("timeline", 1)[1]

    too_much = await starter("write-off", "--invoice-id", invoice_id, "--amount", "5000.00", "--reason", "goodwill")
    assert too_much.returncode == 1
    assert (
        f"starter.py write-off: write_off refused: cannot write off 5000.00 CNY: only 800.00 CNY is outstanding "
        f"on {invoice_id}\nnothing was changed"
    ) in too_much.stderr
    assert too_much.stdout == "" and "Traceback" not in too_much.stderr

    past = await starter("extend-due-date", "--invoice-id", invoice_id, "--due-on", "2020-01-01", "--reason", "x")
    assert past.returncode == 1 and "2020-01-01 is in the past" in past.stderr

    resumed = await starter("resume-dunning", "--reason", "talks failed", "--json")
    assert resumed.returncode == 0, resumed.stderr
    status = BillingStatus.model_validate_json(resumed.stdout)
    assert not status.paused and [entry.action for entry in status.timeline] == ["pause_dunning", "resume_dunning"]

    written_off = await starter("write-off", "--invoice-id", invoice_id, "--amount", "100.00", "--reason", "credit")
    assert written_off.returncode == 0, written_off.stderr
    assert "amount due    700.00 CNY" in written_off.stdout

    paid = await starter("record-payment", "--payment-id", f"PAY-{customer_id}", "--amount", "700.00")
    assert paid.returncode == 0, paid.stderr
    assert "amount due    0.00 CNY" in paid.stdout

    handle = dev_server.client.get_workflow_handle(f"customer-billing-{customer_id}", result_type=BillingStatus)
    final = await asyncio.wait_for(handle.result(), timeout=30)
    assert [entry.action for entry in final.timeline] == [
        "pause_dunning",
        "resume_dunning",
        "write_off",
        "record_payment",
    ]
    closed = await starter("reinstate", "--note", "too late")
    assert closed.returncode == 1
    assert f"customer {customer_id} has no open billing lifecycle" in closed.stderr
    assert "reinstate was not applied" in closed.stderr
