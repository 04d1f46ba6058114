"""What an open workflow run last published as the contract's search attributes `AmountDue`,
`OldestDueDate` and `BillingStage`, for the sweep's checks of lifecycles and partner payables.

Read from the raw `DescribeWorkflowExecution`: the SDK's typed decoding raises on an attribute a run unset on
some servers (Temporal's time-skipping test server), and one such run must not stall a sweep.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from billing.search_attributes import AMOUNT_DUE, BILLING_STAGE, OLDEST_DUE_DATE


@dataclass(frozen=True)
class Published:
    amount_due: float | None  # None: not published yet (the run is in its first moments)
    oldest_due: datetime | None
    stage: str | None = None  # the run's `BillingStage`; None before it published one


async def published_by_open_run(client: Client, workflow_id: str) -> Published | None:
    """What the open run of `workflow_id` published; None when no run of it is open."""
    try:
        response = await client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
            )
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = response.workflow_execution_info
    if info.status != WorkflowExecutionStatus.RUNNING.value:
        return None
    fields = info.search_attributes.indexed_fields
    amount = _json_value(fields.get(AMOUNT_DUE.name))
    oldest = _json_value(fields.get(OLDEST_DUE_DATE.name))
    stage = _json_value(fields.get(BILLING_STAGE.name))
    return Published(
        amount_due=float(amount) if isinstance(amount, int | float) else None,
        oldest_due=instant(oldest) if isinstance(oldest, str) else None,
        stage=stage if isinstance(stage, str) and stage else None,
    )


def instant(text: str) -> datetime | None:
    """An ISO 8601 instant as servers write it (`Z`, up to nanoseconds), aware; None when unreadable."""
    match = re.fullmatch(r"(.+?T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?", text.strip())
    if match is None:
        return None
    moment, fraction, zone = match.groups()
    offset = "+00:00" if zone in (None, "Z") else zone
    try:
        parsed = datetime.fromisoformat(f"{moment}.{(fraction or '0')[:6]:0<6}{offset}")
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def _json_value(payload: Payload | None) -> object:
    if payload is None or not payload.data:
        return None
    try:
        return json.loads(payload.data)
    except ValueError:
        return None
