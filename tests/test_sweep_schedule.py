"""The daily sweep's schedule on the real dev server: created idempotently (by `starter.py sweep schedule` as
deployments run it) on the sweep's own task queue, which the worker polls, and when it fires, the sweep starts
what the ledger calls for and tells a lifecycle the books call settled."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy, WorkflowExecutionStatus

from billing.ledger import LedgerStore
from billing.ledger_messages import RecordInvoiceRequest, RecordPaymentRequest
from billing.models import BillingStatus, CustomerAccount, Invoice, Payment
from billing.search_attributes import AMOUNT_DUE
from billing.sweep import SWEEP_SCHEDULE_ID, SweepReport
from billing.sweep_schedule import SweepSchedule, ensure_sweep_schedule
from tests.builders import SHANGHAI, cny
from tests.devserver_fixtures import DevServer, RunningWorker, eventually, run_starter


async def test_sweep_schedule_is_created_once_and_updated_only_when_its_time_changes(dev_server: DevServer) -> None:
    client = dev_server.client
    created = await run_starter(dev_server, "billing", "sweep", "schedule")
    again = await run_starter(dev_server, "billing", "sweep", "schedule")

    assert created.returncode == 0, created.stderr
    assert f"schedule {SWEEP_SCHEDULE_ID} created: daily at 06:00 Asia/Shanghai" in created.stdout
    assert again.returncode == 0 and f"schedule {SWEEP_SCHEDULE_ID} unchanged" in again.stdout
    handle = client.get_schedule_handle(SWEEP_SCHEDULE_ID)
    description = await handle.describe()
    assert description.schedule.spec.time_zone_name == "Asia/Shanghai"
    assert description.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    next_run = description.info.next_action_times[0].astimezone(SHANGHAI)
    assert (next_run.hour, next_run.minute, next_run.second) == (6, 0, 0)

    # An operator paused it; a deployment with a new time moves it but leaves it paused.
    await handle.pause(note="bank holiday: no sweep")
    later = SweepSchedule(time(7, 30), "Asia/Shanghai", "billing")
    assert await ensure_sweep_schedule(client, later) == "updated"
    assert await ensure_sweep_schedule(client, later) == "unchanged"
    moved = await handle.describe()
    assert moved.schedule.state.paused
    assert moved.schedule.state.note == later.note

    refused = await run_starter(dev_server, "billing", "sweep", "schedule", "--at", "6pm")
    assert refused.returncode == 2 and "--at" in refused.stderr


async def test_sweep_schedule_moves_an_older_schedule_to_the_sweep_queue_the_worker_polls(
    dev_server: DevServer, billing_worker_process: RunningWorker
) -> None:
    client, task_queue = dev_server.client, billing_worker_process.task_queue
    sweep_queue = f"{task_queue}-sweep"
    # As deployments made it before the sweep had its own queue: its sweeps waited among the lifecycles' tasks.
    older = SweepSchedule(time(6, 0), "Asia/Shanghai", task_queue)
    assert await ensure_sweep_schedule(client, older) == "created"
    handle = client.get_schedule_handle(SWEEP_SCHEDULE_ID)

    moved = await run_starter(dev_server, task_queue, "sweep", "schedule")
    again = await run_starter(dev_server, task_queue, "sweep", "schedule")

    assert moved.returncode == 0, moved.stderr
    assert f"schedule {SWEEP_SCHEDULE_ID} updated: daily at 06:00 Asia/Shanghai" in moved.stdout
    assert again.returncode == 0 and f"schedule {SWEEP_SCHEDULE_ID} unchanged" in again.stdout
    action = (await handle.describe()).schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.task_queue == sweep_queue

    # And the server sees worker.py's process (the SDK's identity is pid@host) poll that queue for both kinds of
    # task: the sweep's workflow and its activities.
    identity = f"{billing_worker_process.process.pid}@"

    async def polled(queue_type: TaskQueueType.ValueType) -> bool:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace, task_queue=TaskQueue(name=sweep_queue), task_queue_type=queue_type
            )
        )
        return any(poller.identity.startswith(identity) for poller in described.pollers)

    for queue_type in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        await eventually(
            f"worker.py polling {sweep_queue} ({TaskQueueType.Name(queue_type)})",
            lambda queue_type=queue_type: polled(queue_type),
            30,
            billing_worker_process.stderr,
        )


async def test_the_schedule_firing_starts_what_the_ledger_calls_for_and_settles_the_rest(
    tmp_path: Path, dev_server: DevServer, billing_worker_process: RunningWorker
) -> None:
    client, task_queue = dev_server.client, billing_worker_process.task_queue
    store = LedgerStore.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    today = datetime.now(SHANGHAI).date()
    due_on = today + timedelta(days=30)

    def invoice(customer_id: str) -> Invoice:
        return Invoice(
            invoice_id=f"INV-{customer_id}",
            customer_id=customer_id,
            amount=cny("500.00"),
            issued_on=today,
            due_on=due_on,
        )

    def account(customer_id: str) -> CustomerAccount:
        return CustomerAccount(customer_id=customer_id, name=f"Customer {customer_id}", email="ap@example.cn")

    def book(customer_id: str) -> None:
        store.record_invoice(
            RecordInvoiceRequest(
                account=account(customer_id),
                invoice=invoice(customer_id),
                due_at=datetime.combine(due_on + timedelta(days=1), time(0), tzinfo=SHANGHAI),
            )
        )

    # Booked while the engine was down: no lifecycle knows about these.
    for customer_id in ("S-OWES-1", "S-OWES-2"):
        book(customer_id)
    # Running, then paid straight into the ledger (the signal was lost).
    issued = await run_starter(
        dev_server,
        task_queue,
        "invoice",
        "--customer-id",
        "S-PAID",
        "--name",
        "Customer S-PAID",
        "--email",
        "ap@example.cn",
        "--invoice-id",
        "INV-S-PAID",
        "--amount",
        "500.00",
        "--issued-on",
        str(today),
        "--due-on",
        str(due_on),
    )
    assert issued.returncode == 0, issued.stderr
    paid_handle = client.get_workflow_handle("customer-billing-S-PAID", result_type=BillingStatus)

    async def published() -> bool:
        return (await paid_handle.describe()).typed_search_attributes.get(AMOUNT_DUE) == 500.0

    await eventually("S-PAID publishing its amount due", published, 30, billing_worker_process.stderr)
    store.record_payment(
        RecordPaymentRequest(
            payment=Payment(
                payment_id="PAY-S-PAID", customer_id="S-PAID", amount=cny("500.00"), received_at=datetime.now(UTC)
            )
        )
    )

    assert (await run_starter(dev_server, task_queue, "sweep", "schedule")).returncode == 0
    schedule = client.get_schedule_handle(SWEEP_SCHEDULE_ID)
    await schedule.trigger()

    async def fired() -> str | None:
        actions = (await schedule.describe()).info.recent_actions
        return actions[-1].action.workflow_id if actions else None

    sweep_id = await eventually("the schedule starting a sweep", fired, 30, billing_worker_process.stderr)
    report = await client.get_workflow_handle(sweep_id, result_type=SweepReport).result()

    assert report.customers_owing == 2
    # S-PAID, and the two just started if they published their amount before the listing.
    assert 1 <= report.running_lifecycles_checked <= 3
    assert report.lifecycles_started == 2
    assert sorted(report.started_ids) == ["S-OWES-1", "S-OWES-2"]
    assert report.running_lifecycles_listed
    assert report.lifecycles_told == 1 and report.told_ids == ["S-PAID"]
    for customer_id in ("S-OWES-1", "S-OWES-2"):
        status = await client.get_workflow_handle(f"customer-billing-{customer_id}").query(
            "status", result_type=BillingStatus
        )
        assert [i.invoice_id for i in status.invoices] == [f"INV-{customer_id}"]
        assert status.amount_due == cny("500.00")

    async def settled() -> bool:
        return (await paid_handle.describe()).status == WorkflowExecutionStatus.COMPLETED

    await eventually("S-PAID closing once it learned it was paid", settled, 30, billing_worker_process.stderr)
    final = await paid_handle.result()
    assert final.amount_due == cny("0.00")
    store.close()
