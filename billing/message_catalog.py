"""Every message other services and operators exchange with the engine's workflows, in one list, and the JSON
Schemas of their payloads that `docs/schemas/` publishes.

    python -m billing.message_catalog write [DIR]    (re)write the schemas (default docs/schemas)
    python -m billing.message_catalog check [DIR]    exit 1 and name the stale files when DIR is out of date

`tests/test_message_schemas.py` checks this list against the workflows `worker.WORKFLOWS` registers, so a new
signal, update or query needs an entry here (one line) and a `write`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from billing.models import (
    BillingStatus,
    CustomerAccount,
    Dispute,
    DunningPause,
    EscalateDispute,
    ExtendDueDate,
    Invoice,
    LedgerChanged,
    Payment,
    RecordEscalation,
    Reinstate,
    ResolveDispute,
    SuspendNow,
    WriteOff,
)
from billing.partner_payable import (
    PartnerCenterPaid,
    PartnerCenterVoided,
    PartnerPayableInput,
    PartnerPayableStatus,
    PartnerPayment,
)
from billing.sweep import SweepInput, SweepReport

Kind = Literal["signal", "update", "query"]
KINDS: tuple[Kind, ...] = ("signal", "update", "query")
PLURAL: dict[Kind, str] = {"signal": "signals", "update": "updates", "query": "queries"}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
WRITE_COMMAND = ".venv/bin/python -m billing.message_catalog write"
OTHER_SERVICES = "other services"


@dataclass(frozen=True)
class MessageEntry:
    """One signal, update or query: what it is called, what it carries, what it returns."""

    kind: Kind
    name: str
    payload: type[BaseModel] | None
    result: type[BaseModel] | None
    description: str
    sent_by: str = OTHER_SERVICES  # who sends it; docs/integration.md shows how for OTHER_SERVICES' signals


def signal(name: str, payload: type[BaseModel], description: str, sent_by: str = OTHER_SERVICES) -> MessageEntry:
    return MessageEntry("signal", name, payload, None, description, sent_by)


# Said by every update whose payload names who acted: the Temporal UI's "Send an Update" dialog shows it.
ASK_OPERATOR = ' Add "operator": "your name or login" (who acted): the audit trail and the timeline keep it.'


def update(name: str, payload: type[BaseModel], result: type[BaseModel], description: str) -> MessageEntry:
    if "operator" in payload.model_fields:
        description += ASK_OPERATOR
    return MessageEntry("update", name, payload, result, description)


def query(name: str, result: type[BaseModel], description: str) -> MessageEntry:
    return MessageEntry("query", name, None, result, description)


@dataclass(frozen=True)
class WorkflowEntry:
    """One workflow type: its id scheme, the input other services send, and its messages."""

    workflow_type: str
    workflow_id: str  # the id scheme, e.g. "customer-billing-{customer_id}"
    input: type[BaseModel]  # what other services send; the workflow's own input type may extend it
    description: str
    messages: tuple[MessageEntry, ...]

    def message(self, kind: Kind, name: str) -> MessageEntry | None:
        return next((m for m in self.messages if m.kind == kind and m.name == name), None)


CATALOG: tuple[WorkflowEntry, ...] = (
    WorkflowEntry(
        workflow_type="CustomerBilling",
        workflow_id="customer-billing-{customer_id}",
        input=CustomerAccount,
        description="One customer's billing lifecycle: invoices, dunning, suspension, disputes, reinstatement.",
        messages=(
            signal(
                "invoice_issued",
                Invoice,
                "An invoice issued to the customer (starts the lifecycle by signal-with-start). JSON: "
                '{"invoice_id", "customer_id", "amount": {"amount": "1234.50", "currency": "CNY"}, "issued_on": '
                '"2026-11-24", "due_on": "2026-12-24", "due_at"?, "description"?}. Invalid ones land in '
                "status.rejected.",
            ),
            signal(
                "payment_received",
                Payment,
                'A payment the bank reported. JSON: {"payment_id", "customer_id", "amount": {"amount", '
                '"currency"}, "received_at": "2026-11-24T10:00:00+08:00", "invoice_id"?}; without invoice_id the '
                "oldest invoice is paid first. A repeated payment_id counts once.",
            ),
            signal(
                "dispute_opened",
                Dispute,
                'The customer disputes an invoice or part of it. JSON: {"dispute_id", "customer_id", '
                '"invoice_id", "reason", "amount"?: {"amount": "100.00", "currency": "CNY"}} (no amount: the '
                "whole invoice). The disputed amount leaves the dunning ladder until the dispute is resolved.",
            ),
            signal(
                "ledger_changed",
                LedgerChanged,
                "Sent by the daily sweep when the books differ from what this lifecycle last saw. JSON: "
                '{"customer_id", "amount_due": {"amount", "currency"}, "open_invoice_ids": ["INV-1"], '
                '"checked_at": "2026-11-24T06:00:00+08:00"}. The lifecycle re-reads its balance from the ledger '
                "and carries on from it.",
                sent_by="DailySweep",
            ),
            update(
                "record_payment",
                Payment,
                BillingStatus,
                'Record a payment and learn the outcome. JSON: {"payment_id", "customer_id", "amount": {"amount":'
                ' "1234.50", "currency": "CNY"}, "received_at": "2026-11-24T10:00:00+08:00", "invoice_id"?}. A '
                "repeated payment_id counts once. Returns the status after it.",
            ),
            update(
                "pause_dunning",
                DunningPause,
                BillingStatus,
                'Pause reminders, final notice and suspension. JSON: {"reason": "...", "until"?: '
                '"2026-12-01T09:00:00+08:00"}; without until the pause lasts until resume_dunning.',
            ),
            update(
                "resume_dunning",
                DunningPause,
                BillingStatus,
                'Resume dunning paused by pause_dunning. JSON: {"reason": "..."}.',
            ),
            update(
                "extend_due_date",
                ExtendDueDate,
                BillingStatus,
                "Give the customer more time on one invoice; its ladder moves with the new date. JSON: "
                '{"invoice_id": "INV-1", "due_on": "2026-12-31", "reason": "..."}.',
            ),
            update(
                "write_off",
                WriteOff,
                BillingStatus,
                'Write off (part of) an invoice in the ledger. JSON: {"invoice_id": "INV-1", "amount"?: '
                '{"amount": "100.00", "currency": "CNY"}, "reason": "..."}; without amount: all that is '
                "outstanding.",
            ),
            update(
                "suspend_now",
                SuspendNow,
                BillingStatus,
                'Suspend the customer\'s active subscriptions at once. JSON: {"reason": "non_payment" or '
                '"fraud_review", "note": "..."}. fraud_review also sends the escalation desk a case for 21Vianet '
                "and holds the account suspended until reinstate.",
            ),
            update(
                "reinstate",
                Reinstate,
                BillingStatus,
                'Reactivate the subscriptions this engine suspended (only those). JSON: {"note": "..."}.',
            ),
            update(
                "resolve_dispute",
                ResolveDispute,
                BillingStatus,
                'Settle a dispute without 21Vianet. JSON: {"dispute_id", "outcome": "credit" or "uphold", '
                '"credit"?: {"amount": "100.00", "currency": "CNY"}, "note": "..."}. credit posts a credit note; '
                "uphold returns the amount to the ladder after a grace period.",
            ),
            update(
                "escalate_dispute",
                EscalateDispute,
                BillingStatus,
                "Escalate a dispute to 21Vianet: the escalation desk gets the case to file in the Partner Center "
                'portal. JSON: {"dispute_id", "note": "..."}.',
            ),
            update(
                "record_escalation",
                RecordEscalation,
                BillingStatus,
                'Record the reference 21Vianet gave for the filed case. JSON: {"dispute_id", "reference": "...", '
                '"note"?: "..."}.',
            ),
            update(
                "resolve_escalation",
                ResolveDispute,
                BillingStatus,
                'Record 21Vianet\'s answer to an escalated dispute. JSON: {"dispute_id", "outcome": "credit" or '
                '"uphold", "credit"?: {"amount", "currency"}, "note": "..."}.',
            ),
            query(
                "status",
                BillingStatus,
                "The customer's billing status: stage, amounts, invoices, disputes, suspended subscriptions, next"
                " action, notices sent, rejected messages, the timeline of operator actions and what it waits "
                "for.",
            ),
        ),
    ),
    WorkflowEntry(
        workflow_type="PartnerPayable",
        workflow_id="partner-payable-{invoice_id}",
        input=PartnerPayableInput,
        description="The partner's own bill from 21Vianet: reminds the partner's finance team until it is paid.",
        messages=(
            signal(
                "partner_center_paid",
                PartnerCenterPaid,
                "Sent by the daily sweep when Partner Center shows more paid on the invoice than this payable "
                'knows of. JSON: {"invoice_id": "...", "paid": {"amount": "12000.00", "currency": "CNY"}, '
                '"as_of": "2026-11-24T06:00:00+08:00"}; paid is the total Partner Center shows. The difference is'
                " booked as a payment registered by 21Vianet; never lowers what is paid. Invalid ones land in "
                "status.rejected.",
                sent_by="DailySweep",
            ),
            signal(
                "partner_center_voided",
                PartnerCenterVoided,
                "Sent by the daily sweep when Partner Center lists the invoice as a void note. JSON: "
                '{"invoice_id": "...", "as_of": "2026-11-24T06:00:00+08:00"}. Nothing is owed any more: the '
                "reminders stop, finance is told once and the payable completes. Invalid ones land in "
                "status.rejected.",
                sent_by="DailySweep",
            ),
            update(
                "record_partner_payment",
                PartnerPayment,
                PartnerPayableStatus,
                'Record a payment the partner made to 21Vianet against this invoice. JSON: {"payment_id": "...", '
                '"amount": {"amount": "12000.00", "currency": "CNY"}, "paid_on": "2026-12-01", "reference"?: '
                '"..."}. The amount is in the invoice\'s currency and at most what is outstanding; a repeated '
                "payment_id counts once. Returns the status after it; paid in full, the reminders stop.",
            ),
            query(
                "status",
                PartnerPayableStatus,
                "The bill at a glance: stage, amount, paid, outstanding, due date, days overdue, the late charge "
                "accrued (an estimate on the policy's terms: rate, basis and cap), the next reminder to finance, "
                "payments and notices.",
            ),
        ),
    ),
    WorkflowEntry(
        workflow_type="DailySweep",
        workflow_id="billing-daily-sweep (its schedule appends the scheduled time)",
        input=SweepInput,
        description="Once a day, makes the running lifecycles agree with the ledger; started by its schedule.",
        messages=(query("status", SweepReport, "What the sweep has done so far."),),
    ),
)


def entry(workflow_type: str) -> WorkflowEntry | None:
    return next((w for w in CATALOG if w.workflow_type == workflow_type), None)


def describe(workflow_type: str, name: str) -> str:
    """The description of a signal, update or query, for its handler (the Temporal UI shows it) and the
    published schema alike."""
    workflow = entry(workflow_type)
    found = next((m for m in workflow.messages if m.name == name), None) if workflow else None
    if found is None:
        raise KeyError(f"{workflow_type} has no message {name} in the catalog")
    return found.description


# --- the published schemas ------------------------------------------------------------------------------


def payload_path(workflow: WorkflowEntry, message: MessageEntry) -> str:
    return f"{workflow.workflow_type}/{message.kind}.{message.name}.json"


def result_path(workflow: WorkflowEntry, model: type[BaseModel]) -> str:
    # Results are shared (every CustomerBilling update returns BillingStatus): one file per result model.
    return f"{workflow.workflow_type}/result.{model.__name__}.json"


def input_path(workflow: WorkflowEntry) -> str:
    return f"{workflow.workflow_type}/input.json"


def _schema(
    model: type[BaseModel], mode: Literal["validation", "serialization"], schema_id: str, title: str, about: str
) -> dict[str, Any]:
    generated = model.model_json_schema(mode=mode)
    docstring = generated.pop("description", "")
    generated.pop("title", None)
    description = about if not docstring else f"{about}\n\n{docstring}"
    # Identification first, then pydantic's (already stable) order, so a diff shows only what changed.
    return {"$schema": SCHEMA_DIALECT, "$id": schema_id, "title": title, "description": description} | generated


def _direction(message: MessageEntry) -> str:
    return {"signal": "Signal", "update": "Update", "query": "Query"}[message.kind]


def schema_files(catalog: tuple[WorkflowEntry, ...] = CATALOG) -> dict[str, dict[str, Any]]:
    """Every schema file under docs/schemas, by relative path, with the index that lists them."""
    files: dict[str, dict[str, Any]] = {}
    index: list[dict[str, Any]] = []
    for workflow in catalog:
        name = workflow.workflow_type
        files[input_path(workflow)] = _schema(
            workflow.input,
            "validation",
            input_path(workflow),
            f"{name} input: {workflow.input.__name__}",
            f"The input of workflow {name} (workflow id {workflow.workflow_id}), as other services send it "
            "with signal-with-start.",
        )
        listed: dict[str, list[dict[str, str]]] = {PLURAL[kind]: [] for kind in KINDS}
        for message in workflow.messages:
            item = {"name": message.name, "description": message.description}
            if message.kind == "signal":
                item["sent_by"] = message.sent_by
            if message.payload is not None:
                path = payload_path(workflow, message)
                files[path] = _schema(
                    message.payload,
                    "validation",
                    path,
                    f"{name} {message.kind} {message.name}: {message.payload.__name__}",
                    f"{_direction(message)} `{message.name}` of workflow {name}: {message.description}",
                )
                item["payload"] = path
            if message.result is not None:
                path = result_path(workflow, message.result)
                # One file serves every message with this result: say which.
                returned_by = [f"{m.kind} {m.name}" for m in workflow.messages if m.result is message.result]
                files[path] = _schema(
                    message.result,
                    "serialization",
                    path,
                    f"{name} result: {message.result.__name__}",
                    f"What {name} returns from {', '.join(returned_by)}.",
                )
                item["result"] = path
            listed[PLURAL[message.kind]].append(item)
        index.append(
            {
                "workflow_type": name,
                "description": workflow.description,
                "workflow_id": workflow.workflow_id,
                "input": input_path(workflow),
                **listed,
            }
        )
    files["index.json"] = {
        "$comment": f"Generated from billing/message_catalog.py by `{WRITE_COMMAND}`; do not edit by hand.",
        "workflows": index,
    }
    return files


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema file and remove the ones no message uses any more (only from a directory that
    already holds an index, so a mistyped DIR loses nothing)."""
    wanted = {directory / path: render(document) for path, document in schema_files().items()}
    if (directory / "index.json").exists():
        for stale in set(directory.rglob("*.json")) - set(wanted):
            stale.unlink()
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return sorted(wanted)


def differences(directory: Path = DEFAULT_DIR) -> Iterator[str]:
    """What `write` would change in `directory`, one line per file."""
    wanted = {path: render(document) for path, document in schema_files().items()}
    present = {path.relative_to(directory).as_posix() for path in directory.rglob("*.json")}
    for path in sorted(present - set(wanted)):
        yield f"{path}: no message uses it any more"
    for path, text in sorted(wanted.items()):
        if path not in present:
            yield f"{path}: missing"
        elif (directory / path).read_text(encoding="utf-8") != text:
            yield f"{path}: out of date"


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or argv[0] not in ("write", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(argv[1]) if len(argv) == 2 else DEFAULT_DIR
    if argv[0] == "write":
        written = write(directory)
        print(f"{len(written)} schema files in {directory}")
        return 0
    stale = list(differences(directory))
    for line in stale:
        print(line, file=sys.stderr)
    if stale:
        print(f"refresh them with: {WRITE_COMMAND}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
