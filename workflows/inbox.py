"""Messages waiting for a workflow's main loop, which alone changes the books: signals other services sent and
operator updates that passed their validator. Shared by `CustomerBilling` and `PartnerPayable`.

Handlers only queue what arrived; the loop parses and applies it in order. A signal that cannot be applied is
rejected into the status's `rejected`; an update that cannot be applied is refused to the operator waiting for
it, with the engine's sentence and nothing else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from billing import refusals
    from billing.refusals import Refused

M = TypeVar("M", bound=BaseModel)


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
        self._outcomes: dict[str, str | None] = {}  # update id -> refusal, or None when applied

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def signalled(self, name: str, payload: Any) -> None:
        """A signal: queued as it came, parsed by the loop (so an invalid one is rejected, not dropped)."""
        self._waiting.append(InboxMessage(name=name, payload=payload, received_at=workflow.now()))

    async def updated(self, name: str, payload: Any) -> None:
        """An accepted update: queued, then wait until the loop applied it; raises the refusal if it could not."""
        info = workflow.current_update_info()
        update_id = info.id if info else f"{name}-{workflow.now().isoformat()}"
        self._waiting.append(InboxMessage(name=name, payload=payload, received_at=workflow.now(), update_id=update_id))
        await workflow.wait_condition(lambda: update_id in self._outcomes)
        refusal = self._outcomes.pop(update_id)
        if refusal is not None:
            raise refused(refusal)

    @property
    def waiting(self) -> tuple[InboxMessage, ...]:
        return tuple(self._waiting)

    def next(self) -> InboxMessage:
        return self._waiting.pop(0)

    def applied(self, message: InboxMessage) -> None:
        if message.update_id is not None:
            self._outcomes[message.update_id] = None

    def refused(self, message: InboxMessage, reason: str) -> None:
        """For an update: tell the waiting handler. Signals are rejected by the workflow into its state."""
        if message.update_id is not None:
            self._outcomes[message.update_id] = reason


def parse(model: type[M], payload: Any, reference_field: str | None = None, what: str = "invalid input") -> M:
    """The payload as `model`, or `Refused` naming what is wrong (and the id it carried, for `rejected`)."""
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        reference = _reference(payload, reference_field) if reference_field else None
        raise Refused(f"{what}: {refusals.reason(error)}", reference) from None


def refused(reason: str) -> ApplicationError:
    """The engine's refusal of an update, as the operator sees it."""
    return ApplicationError(reason, type="Refused", non_retryable=True)


def log_rejection(name: str, reason: str, reference: str | None) -> None:
    workflow.logger.warning("message rejected", extra={"signal": name, "reason": reason, "reference": reference})


def _reference(payload: Any, field: str) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get(field), str):
        return str(payload[field])[:100]
    return None
