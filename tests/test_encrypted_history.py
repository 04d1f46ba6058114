"""With a key configured, what Temporal stores holds no customer name or email in clear: a whole ladder (with
continue-as-new, an update, a refused update, the query) read back from the server without the codec.

The engine's client and worker here are the test fixtures', which encrypt with the session's key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution, WorkflowType
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest, QueryWorkflowRequest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from billing.encryption import ENCODING
from billing.models import BillingStage, BillingStatus, CustomerAccount, NoticeKind
from tests.temporal_fixtures import EngineFactory
from tests.test_customer_billing_workflow import invoice, payment

NAME = "莲花贸易有限公司 (Lotus Trading)"
EMAIL = "ap@lotus-secret.example.cn"
PERSONAL = [NAME.encode(), "莲花贸易".encode(), b"Lotus Trading", EMAIL.encode(), b"lotus-secret"]


def found_personal_data(data: bytes) -> list[bytes]:
    return [text for text in PERSONAL if text in data]


async def every_run(client: Client, workflow_id: str, first_run_id: str) -> list[History]:
    """The histories of the first run and of each run it continued as, raw as the server keeps them."""
    histories, run_id = [], first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(History(events=history.events))
        last = history.events[-1]
        continued = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else ""
    return histories


@pytest.mark.timeout(120)
async def test_a_full_ladder_stored_in_temporal_holds_no_customer_name_or_email(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, partner_center_emulator: Any
):
    env = time_skipping_env
    now = await env.get_current_time()
    customer = "sealed"
    workflow_id = f"customer-billing-{customer}"
    account = CustomerAccount(customer_id=customer, name=NAME, email=EMAIL, locale="en-US")
    partner_center_emulator.seed_tenant(customer, {"sub-a": "active"})
    # No codec: what anyone with access to the Temporal server (or its database) reads.
    outsider = Client(env.client.service_client, namespace=env.client.namespace)
    async with engine_factory(env.client, history_event_limit=20) as engine:
        handle = await engine.issue(account, invoice(customer, "INV-S-1", "5600.00", now + timedelta(days=1)))
        first_run = handle.result_run_id
        assert first_run
        await env.sleep(timedelta(days=23))
        assert (await engine.status(customer)).stage is BillingStage.SUSPENDED
        with pytest.raises(WorkflowUpdateFailedError) as refused:  # a failure: its message is encrypted too
            await handle.execute_update(
                "write_off",
                {"invoice_id": "INV-S-1", "amount": {"amount": "9000.00", "currency": "CNY"}, "reason": EMAIL},
                result_type=BillingStatus,
            )
        assert "cannot write off 9000.00 CNY" in str(getattr(refused.value.cause, "message", ""))
        await engine.handle(customer).execute_update(
            "record_payment",
            payment(customer, "PAY-S-1", "600.00", now + timedelta(days=23)),
            result_type=BillingStatus,
        )

        query = await outsider.workflow_service.query_workflow(
            QueryWorkflowRequest(
                namespace=env.client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id),
                query=WorkflowQuery(query_type="status"),
            )
        )
        [answer] = query.query_result.payloads
        assert answer.metadata["encoding"] == ENCODING and not found_personal_data(answer.SerializeToString())

        await engine.handle(customer).signal("payment_received", payment(customer, "PAY-S-2", "5000.00", now))
        result = await engine.handle(customer).result()
    assert result.stage is BillingStage.RESOLVED
    assert [notice.kind for notice in result.notices_sent][-1] is NoticeKind.CLOSE_THE_LOOP

    histories = await every_run(outsider, workflow_id, first_run)
    assert len(histories) > 1, "the ladder should have continued as new (history_event_limit=20)"
    for number, history in enumerate(histories, start=1):
        assert not found_personal_data(history.SerializeToString()), f"run {number} stores personal data in clear"
    description = await outsider.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=env.client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    # Summary, memo and search attributes: what the server shows in lists and the UI.
    assert not found_personal_data(description.SerializeToString())

    # The data is there, for a client with the key: the first run's input is the account.
    started = (await env.client.get_workflow_handle(workflow_id, run_id=first_run).fetch_history()).events[0]
    [sealed_input] = started.workflow_execution_started_event_attributes.input.payloads
    assert sealed_input.metadata["encoding"] == ENCODING
    [decrypted] = await env.client.data_converter.decode([sealed_input], [CustomerAccount])
    assert decrypted == account
    assert started.workflow_execution_started_event_attributes.workflow_type == WorkflowType(name="CustomerBilling")
