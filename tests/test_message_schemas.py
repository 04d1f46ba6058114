"""The message catalog names every signal, update and query of every workflow the worker registers, the
published JSON Schemas in `docs/schemas/` are the ones the models generate, and what `docs/integration.md`
sends satisfies both the schemas and the models."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError
from temporalio import workflow

import worker
from billing import message_catalog
from billing.message_catalog import CATALOG, DEFAULT_DIR, PLURAL, WRITE_COMMAND, WorkflowEntry
from billing.models import BillingStage, BillingStatus
from billing.money import Money
from tests.test_integration_doc import documented_payloads


def schema_validator(relative_path: str) -> Draft202012Validator:
    schema = json.loads((DEFAULT_DIR / relative_path).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def model_for(relative_path: str) -> type[BaseModel]:
    """The pydantic model behind a schema file, from the catalog."""
    for entry in CATALOG:
        if relative_path == message_catalog.input_path(entry):
            return entry.input
        for message in entry.messages:
            if message.payload is not None and relative_path == message_catalog.payload_path(entry, message):
                return message.payload
    raise AssertionError(f"{relative_path} is not a payload schema of billing/message_catalog.py")


# --- the catalog against the workflows ------------------------------------------------------------------


def _entry_line(kind: str, name: str) -> str:
    if kind == "signal":
        return f'signal("{name}", <PayloadModel>, "<what it reports, in one line>"),'
    if kind == "update":
        return f'update("{name}", <PayloadModel>, <ResultModel>, "<what it does, in one line>"),'
    return f'query("{name}", <ResultModel>, "<what it answers, in one line>"),'


def _model(hint: Any) -> type[BaseModel] | None:
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None


def catalog_problems(workflows: list[type], catalog: tuple[WorkflowEntry, ...]) -> list[str]:
    """How `catalog` differs from the registered `workflows`, each with what to do about it."""
    problems: list[str] = []
    registered: set[str] = set()
    for cls in workflows:
        definition = workflow._Definition.must_from_class(cls)
        name = definition.name or cls.__name__
        registered.add(name)
        entry = next((e for e in catalog if e.workflow_type == name), None)
        if entry is None:
            problems.append(
                f"worker.WORKFLOWS registers {name} ({cls.__module__}.{cls.__qualname__}) but "
                f"billing/message_catalog.py has no entry for it: add to CATALOG\n"
                f'    WorkflowEntry(workflow_type="{name}", workflow_id="<its id scheme>", input=<InputModel>, '
                f'description="<one line>", messages=(...one line per signal, update and query...)),'
            )
            continue
        handlers: dict[str, dict[str | None, Any]] = {
            "signal": dict(definition.signals),
            "update": dict(definition.updates),
            "query": dict(definition.queries),
        }
        for kind, by_name in handlers.items():
            if None in by_name:
                problems.append(f"{name} has a dynamic {kind} handler, which no schema can describe")
            for handler_name, handler in sorted((n, h) for n, h in by_name.items() if n is not None):
                message = entry.message(kind, handler_name)  # type: ignore[arg-type]
                if message is None:
                    problems.append(
                        f"{name} has {kind} `{handler_name}` but billing/message_catalog.py does not list it: "
                        f"add to the {name} entry's messages\n    {_entry_line(kind, handler_name)}"
                    )
                    continue
                returned = _model(getattr(handler, "ret_type", None))
                if returned is not None and message.result is not returned:
                    problems.append(
                        f"{name} {kind} `{handler_name}` returns {returned.__name__}, but the catalog says "
                        f"{message.result.__name__ if message.result else 'nothing'}"
                    )
        for message in entry.messages:
            if message.name not in handlers[message.kind]:
                problems.append(
                    f"billing/message_catalog.py lists {message.kind} `{message.name}` for {name}, which has no "
                    f"such handler: remove the entry (or fix its name or kind)"
                )
        arg_types = definition.arg_types or []
        run_input = _model(arg_types[0]) if arg_types else None
        if run_input is None or not issubclass(run_input, entry.input):
            problems.append(
                f"{name}.run takes {run_input.__name__ if run_input else 'no typed input'}, which is not "
                f"{entry.input.__name__} (the input the catalog publishes) or an extension of it"
            )
    for entry in catalog:
        if entry.workflow_type not in registered:
            problems.append(f"billing/message_catalog.py lists {entry.workflow_type}, which worker.WORKFLOWS lacks")
    return problems


def test_the_catalog_lists_every_message_of_every_registered_workflow() -> None:
    problems = catalog_problems(worker.WORKFLOWS, CATALOG)
    assert not problems, (
        "billing/message_catalog.py and worker.WORKFLOWS disagree:\n- "
        + "\n- ".join(problems)
        + f"\nthen refresh docs/schemas with: {WRITE_COMMAND}"
    )


# A workflow with a signal the catalog below leaves out and a query whose result it gets wrong.
@workflow.defn(name="Probe")
class Probe:
    @workflow.run
    async def run(self, start: BillingStatus) -> None:
        pass

    @workflow.signal(name="poke")
    def poke(self, payload: Any) -> None:
        pass

    @workflow.query(name="status")
    def status(self) -> BillingStatus:
        raise NotImplementedError


def test_a_handler_without_a_catalog_entry_is_named_with_the_line_to_add() -> None:
    listed = WorkflowEntry(
        "Probe", "probe-{id}", BillingStatus, "a probe", (message_catalog.query("status", Money, "x"),)
    )
    problems = catalog_problems([Probe], (listed,))
    assert problems == [
        "Probe has signal `poke` but billing/message_catalog.py does not list it: add to the Probe entry's messages\n"
        '    signal("poke", <PayloadModel>, "<what it reports, in one line>"),',
        "Probe query `status` returns BillingStatus, but the catalog says Money",
    ]
    [unlisted] = catalog_problems([Probe], ())
    assert (
        unlisted.startswith("worker.WORKFLOWS registers Probe (") and 'WorkflowEntry(workflow_type="Probe"' in unlisted
    )


# --- the published schemas ------------------------------------------------------------------------------


def test_published_schemas_are_what_the_models_generate(tmp_path: Path) -> None:
    message_catalog.write(tmp_path)
    fresh = {path.relative_to(tmp_path).as_posix(): path.read_text("utf-8") for path in tmp_path.rglob("*.json")}
    published = {
        path.relative_to(DEFAULT_DIR).as_posix(): path.read_text("utf-8") for path in DEFAULT_DIR.rglob("*.json")
    }
    stale = (
        [f"{path}: missing" for path in sorted(fresh.keys() - published.keys())]
        + [f"{path}: no message uses it any more" for path in sorted(published.keys() - fresh.keys())]
        + [f"{path}: out of date" for path in sorted(fresh.keys() & published.keys()) if fresh[path] != published[path]]
    )
    assert not stale, "docs/schemas/ is stale:\n  " + "\n  ".join(stale) + f"\nrefresh it with: {WRITE_COMMAND}"


def test_every_published_schema_is_a_valid_2020_12_schema_with_its_own_path_as_id() -> None:
    for path in sorted(DEFAULT_DIR.rglob("*.json")):
        relative = path.relative_to(DEFAULT_DIR).as_posix()
        if relative == "index.json":
            continue
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$id"] == relative
        assert schema["title"] and schema["description"]


@pytest.mark.parametrize(
    ("amount", "accepted"),
    [
        ("1234.50", True),
        ("12", True),
        ("-5.00", True),
        (1234.5, True),
        (1234, True),
        ("1,234.50", False),
        ("999999999999.99", True),
        ("-999999999999.99", True),
        ("0000999999999999.99", True),
        (999999999999.99, True),
        ("1000000000000", False),
        ("-1000000000000.00", False),
        (1e13, False),
        (1e30, False),
        ("9" * 30, False),
        ("twelve", False),
        ("", False),
        (True, False),
        (None, False),
    ],
)
def test_the_money_schema_accepts_the_amounts_the_model_accepts(amount: Any, accepted: bool) -> None:
    payload = {"amount": amount, "currency": "CNY"}
    by_schema = Draft202012Validator(Money.model_json_schema(mode="validation")).is_valid(payload)
    try:
        Money.model_validate(payload)
        by_model = True
    except ValidationError:
        by_model = False
    assert (by_schema, by_model) == (accepted, accepted)


def test_results_are_described_as_the_engine_serialises_them() -> None:
    status = BillingStatus(customer_id="C-1001", stage=BillingStage.CURRENT, amount_due=Money.of("1234.50", "CNY"))
    shown = status.model_dump(mode="json")
    assert shown["amount_due"] == {"amount": "1234.50", "currency": "CNY"}
    schema_validator("CustomerBilling/result.BillingStatus.json").validate(shown)
    assert not schema_validator("CustomerBilling/result.BillingStatus.json").is_valid(
        shown | {"amount_due": {"amount": 1234.5, "currency": "CNY"}}
    ), "the engine always answers with a string amount; the result schema must say so"


def test_the_index_lists_every_message_with_its_schema_files() -> None:
    index = json.loads((DEFAULT_DIR / "index.json").read_text(encoding="utf-8"))
    listed = {
        (workflow_index["workflow_type"], kind, message["name"])
        for workflow_index in index["workflows"]
        for kind, plural in PLURAL.items()
        for message in workflow_index[plural]
    }
    assert listed == {(entry.workflow_type, m.kind, m.name) for entry in CATALOG for m in entry.messages}
    for workflow_index in index["workflows"]:
        assert (DEFAULT_DIR / workflow_index["input"]).is_file(), workflow_index["input"]
        for plural in PLURAL.values():
            for message in workflow_index[plural]:
                for key in ("payload", "result"):
                    if key in message:
                        assert (DEFAULT_DIR / message[key]).is_file(), message[key]


# --- the document's examples ----------------------------------------------------------------------------


def test_every_payload_in_the_integration_document_satisfies_its_schema_and_its_model() -> None:
    payloads = documented_payloads()
    schemas = {payload.schema for payload in payloads}
    assert {"CustomerBilling/input.json", "CustomerBilling/signal.invoice_issued.json"} <= schemas
    assert len(payloads) >= 12
    for documented in payloads:
        errors = [error.message for error in schema_validator(documented.schema).iter_errors(documented.payload)]
        assert not errors, f"{documented.where} does not satisfy {documented.schema}: {errors}"
        try:
            model_for(documented.schema).model_validate(documented.payload)
        except ValidationError as error:
            raise AssertionError(f"{documented.where}: the engine would reject it: {error}") from None


def test_a_payload_the_schema_refuses_is_reported_with_its_reason() -> None:
    invoice = {
        "invoice_id": "INV-1",
        "customer_id": "C-1",
        "amount": {"amount": "1,234.50", "currency": "CNY"},
        "issued_on": "2026-11-24",
    }
    errors = sorted(
        e.message for e in schema_validator("CustomerBilling/signal.invoice_issued.json").iter_errors(invoice)
    )
    assert "'due_on' is a required property" in errors
    assert any("1,234.50" in error for error in errors)


def test_the_example_amounts_are_decimal_strings() -> None:
    # The contract prefers strings; the document must not teach senders to use JSON numbers.
    def amounts(value: Any) -> list[Any]:
        if isinstance(value, dict):
            found = [value["amount"]] if set(value) == {"amount", "currency"} else []
            return found + [a for item in value.values() for a in amounts(item)]
        return []

    for documented in documented_payloads():
        for amount in amounts(documented.payload):
            assert isinstance(amount, str) and Decimal(amount), f"{documented.where}: amount {amount!r}"
