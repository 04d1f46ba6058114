"""Messages waiting for a workflow's main loop, which alone changes the books: signals other services sent and
operator updates that passed their validator. Shared by `CustomerBilling` and `PartnerPayable`.

Handlers only queue what arrived; the loop parses and applies it in order. A signal that cannot be applied is
rejected into the status's `rejected`; an update that cannot be applied is refused to the operator waiting for
it, with the engine's sentence and nothing else.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from billing import metrics, refusals

    # Passed through, so the interceptor (outside the sandbox) and the handlers (inside) share the class.
    from billing.refusals import Refused, Unreadable

M = TypeVar("M", bound=BaseModel)

# The default of every signal and update parameter: a message sent with no payload at all (what
# `temporal workflow signal --name payment_received` sends without --input) reaches the handler as this.
NO_PAYLOAD = RawValue(Payload())


def decoded(raw: Any) -> Any:
    """A handler's argument as JSON. Handlers take `RawValue`, so the SDK never decodes (and never drops or
    fails on) what a sender wrote; whatever it is, the loop then parses it or rejects it with a sentence."""
    if raw is NO_PAYLOAD:
        return Unreadable("the message carried no payload (send one JSON object)")
    if not isinstance(raw, RawValue):
        return raw  # already decoded, or Unreadable
    try:
        return workflow.payload_converter().from_payload(raw.payload)
    except Exception as error:  # any decoder failure is the sender's: it must not fail the workflow task
        encoding = raw.payload.metadata.get("encoding", b"").decode(errors="replace") or "none"
        return Unreadable(f"the payload is not JSON (encoding {encoding}: {type(error).__name__})")


class InboxMessage(BaseModel):
    """A signal or an accepted update, waiting for the main loop."""

    name: str
    payload: Any
    received_at: datetime
    update_id: str | None = None  # an operator's update waits for the outcome under this id


class Inbox:
    """What arrived, in order, and the outcome of each update for the handler waiting for it."""

    def __init__(self) -> None:
        self._waiting: list[InboxMessage] = []
        self._applying: InboxMessage | None = None  # taken by the loop, its activity perhaps still running
        self._outcomes: dict[str, str | None] = {}  # update id -> refusal, or None when applied

    def __bool__(self) -> bool:
        return bool(self._waiting)

    @property
    def settled(self) -> bool:
        """Nothing waiting and nothing being applied: the state is what every message so far made it. Until
        then a validator must not refuse on the state alone (an invoice it names may be being booked); the
        loop checks again when it applies the action."""
        return not self._waiting and self._applying is None

    def signalled(self, name: str, payload: Any) -> None:
        """A signal: queued as it came, parsed by the loop (so an invalid one is rejected, not dropped)."""
        self._waiting.append(InboxMessage(name=name, payload=decoded(payload), received_at=workflow.now()))

    async def updated(self, name: str, payload: Any) -> None:
        """An accepted update: queued, then wait until the loop applied it; raises the refusal if it could not."""
        info = workflow.current_update_info()
        update_id = info.id if info else f"{name}-{workflow.now().isoformat()}"
        message = InboxMessage(name=name, payload=decoded(payload), received_at=workflow.now(), update_id=update_id)
        self._waiting.append(message)
        await workflow.wait_condition(lambda: update_id in self._outcomes)
        refusal = self._outcomes.pop(update_id)
        if refusal is not None:
            raise refused(refusal)

    @property
    def waiting(self) -> tuple[InboxMessage, ...]:
        return tuple(self._waiting)

    def next(self) -> InboxMessage:
        self._applying = self._waiting.pop(0)
        return self._applying

    def applied(self, message: InboxMessage) -> None:
        self._applying = None
        if message.update_id is not None:
            self._outcomes[message.update_id] = None

    def refused(self, message: InboxMessage, reason: str) -> None:
        """For an update: tell the waiting handler. Signals are rejected by the workflow into its state."""
        self._applying = None
        if message.update_id is not None:
            self._outcomes[message.update_id] = reason


def parse(model: type[M], payload: Any, reference_field: str | None = None, what: str = "invalid input") -> M:
    """The payload as `model`, or `Refused` naming what is wrong (and the id it carried, for `rejected`)."""
    payload = decoded(payload)
    if isinstance(payload, Unreadable):
        raise Refused(f"{what}: {payload.reason}")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        reference = _reference(payload, reference_field) if reference_field else None
        raise Refused(f"{what}: {refusals.reason(error)}", reference) from None


def refused(reason: str) -> ApplicationError:
    """The engine's refusal of an update, as the operator sees it: raised by its validator or, once the loop
    refused it, by its handler (one or the other, never both), so each refused update counts once."""
    info = workflow.current_update_info()
    metrics.count_in_workflow(metrics.UPDATES_REFUSED, update=info.name if info else "unknown")
    return ApplicationError(reason, type="Refused", non_retryable=True)


def log_rejection(name: str, reason: str, reference: str | None) -> None:
    """A signal rejected into the status's `rejected`: logged and counted (by name, never the reference)."""
    metrics.count_in_workflow(metrics.SIGNALS_REJECTED, signal=name)
    workflow.logger.warning("message rejected", extra={"signal": name, "reason": reason, "reference": reference})


def _reference(payload: Any, field: str) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get(field), str):
        return str(payload[field])[:100]
    return None


class OnePayloadPerMessage(Interceptor):
    """Every signal and update of the engine takes one payload. Sent with two or more, the SDK would call the
    handler with as many arguments and fail the workflow task; this hands the handler one `Unreadable` instead,
    so the message is rejected like any other bad one. (Two payloads of which one is not JSON are dropped by
    the SDK's decoder before any interceptor sees them: logged by the SDK, not in `rejected`.)"""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _OnePayloadInbound


class _OnePayloadInbound(WorkflowInboundInterceptor):
    async def handle_signal(self, input: HandleSignalInput) -> None:
        await super().handle_signal(_one_payload(input))

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        super().handle_update_validator(_one_payload(input))

    async def handle_update_handler(self, input: HandleUpdateInput) -> Any:
        return await super().handle_update_handler(_one_payload(input))


def _one_payload(input: Any) -> Any:
    if len(input.args) <= 1:
        return input  # none: the handler's NO_PAYLOAD default stands for it
    reason = f"the message carried {len(input.args)} payloads; it takes one JSON object"
    return dataclasses.replace(input, args=[Unreadable(reason)])
