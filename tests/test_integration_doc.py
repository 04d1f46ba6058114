"""`docs/integration.md` works as written: its `sh` blocks run in order with the `temporal` CLI, and its Python
example runs as a script, against the dev server and `worker.py`; the engine's state must then be what the
document says it is."""

from __future__ import annotations

import ast
import asyncio
import itertools
import json
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.message_catalog import CATALOG, OTHER_SERVICES, WorkflowEntry
from billing.models import BillingStage, BillingStatus
from tests.conftest import SmtpSink
from tests.devserver_fixtures import (
    REPO,
    DevServer,
    RunningCodecServer,
    clean_environment,
    eventually,
    running_codec_server,
    spawn,
    stop_process,
    worker_environment,
)

DOC = REPO / "docs" / "integration.md"
EXPECTED_FAILURE = "# exits with status 1"
# The document's invoices carry fixed dates; a ladder ten years long keeps this test from dunning (and
# suspending) the document's customers on whatever day it runs.
DOC_POLICY = """\
currency = "CNY"
reminders = ["P3650D"]
final_notice = "P3660D"
suspend_after = "P3670D"
[quiet_hours]
enabled = false
"""


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int

    @property
    def expects_failure(self) -> bool:
        return self.text.lstrip().startswith(EXPECTED_FAILURE)


def code_blocks(text: str) -> list[Block]:
    return [
        Block(match["language"], match["body"], text.count("\n", 0, match.start()) + 1)
        for match in re.finditer(r"^```(?P<language>\w*)\n(?P<body>.*?)^```$", text, re.MULTILINE | re.DOTALL)
    ]


def shell_blocks() -> list[Block]:
    return [block for block in code_blocks(DOC.read_text(encoding="utf-8")) if block.language == "sh"]


def python_example() -> Block:
    (example,) = [block for block in code_blocks(DOC.read_text(encoding="utf-8")) if block.language == "python"]
    return example


@dataclass(frozen=True)
class DocumentedPayload:
    """A JSON payload the document sends, and the schema file (relative to docs/schemas) it must satisfy."""

    schema: str
    payload: Any
    where: str


def cli_options(words: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in itertools.pairwise(words) if flag.startswith("--")}


def _cli_payloads(block: Block, workflow: WorkflowEntry) -> list[DocumentedPayload]:
    words = shlex.split(block.text, comments=True)
    if words[:2] != ["temporal", "workflow"]:
        return []
    options = cli_options(words)
    where = f"docs/integration.md line {block.line}"
    found: list[DocumentedPayload] = []
    prefix = workflow.workflow_type
    match words[2:4]:
        case ["signal-with-start", *_]:
            found.append(DocumentedPayload(f"{prefix}/input.json", json.loads(options["--input"]), where))
            found.append(
                DocumentedPayload(
                    f"{prefix}/signal.{options['--signal-name']}.json", json.loads(options["--signal-input"]), where
                )
            )
        case ["signal", *_]:
            found.append(
                DocumentedPayload(f"{prefix}/signal.{options['--name']}.json", json.loads(options["--input"]), where)
            )
        case ["update", "execute"]:
            found.append(
                DocumentedPayload(f"{prefix}/update.{options['--name']}.json", json.loads(options["--input"]), where)
            )
    return found


# Which argument of the Python example's helpers is which message.
_PYTHON_ARGUMENTS = {
    "report_invoice": {1: "input.json", 2: "signal.invoice_issued.json"},
    "report_payment": {1: "signal.payment_received.json"},
    "write_off": {2: "update.write_off.json"},
}


def _python_payloads(block: Block, workflow: WorkflowEntry) -> list[DocumentedPayload]:
    found: list[DocumentedPayload] = []
    tree = ast.parse(block.text)
    # `account = {...}` then `report_invoice(client, account, ...)`: the example names some payloads.
    named = {
        node.targets[0].id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PYTHON_ARGUMENTS:
            for position, schema in _PYTHON_ARGUMENTS[node.func.id].items():
                where = f"docs/integration.md line {block.line + node.lineno - 1} ({node.func.id})"
                argument = node.args[position]
                if isinstance(argument, ast.Name):
                    argument = named[argument.id]
                payload = ast.literal_eval(argument)
                found.append(DocumentedPayload(f"{workflow.workflow_type}/{schema}", payload, where))
    return found


def documented_payloads() -> list[DocumentedPayload]:
    """Every payload the document sends to `CustomerBilling`, by the CLI or from Python."""
    (workflow,) = [entry for entry in CATALOG if entry.workflow_type == "CustomerBilling"]
    payloads = [payload for block in shell_blocks() for payload in _cli_payloads(block, workflow)]
    return payloads + _python_payloads(python_example(), workflow)


def test_the_document_shows_both_ways_to_send_every_signal_and_links_every_schema() -> None:
    text = DOC.read_text(encoding="utf-8")
    commands = [shlex.split(block.text, comments=True) for block in shell_blocks()]
    missing: list[str] = []
    (workflow,) = [entry for entry in CATALOG if entry.workflow_type == "CustomerBilling"]
    for message in workflow.messages:
        if message.kind == "signal" and message.sent_by == OTHER_SERVICES:
            with_start = [
                c
                for c in commands
                if c[2] == "signal-with-start" and cli_options(c).get("--signal-name") == message.name
            ]
            plain = [c for c in commands if c[2] == "signal" and cli_options(c).get("--name") == message.name]
            if not with_start:
                missing.append(f"an sh block with `temporal workflow signal-with-start --signal-name {message.name}`")
            if not plain:
                missing.append(f"an sh block with `temporal workflow signal --name {message.name}`")
        if message.payload is not None and f"schemas/CustomerBilling/{message.kind}.{message.name}.json" not in text:
            missing.append(f"a link to schemas/CustomerBilling/{message.kind}.{message.name}.json")
    assert not missing, "docs/integration.md lacks:\n  " + "\n  ".join(missing)


# --- running the document ------------------------------------------------------------------------------


@pytest.fixture
async def doc_worker(
    tmp_path: Path, dev_server: DevServer, partner_center_emulator: PartnerCenterEmulator, smtp_sink: SmtpSink
) -> AsyncIterator[None]:
    """`worker.py` on the default task queue `billing` that the document's commands name (the dev server is
    this test's own, so nothing else polls it)."""
    env = worker_environment(tmp_path, dev_server.address, partner_center_emulator, smtp_sink, "billing", DOC_POLICY)
    stderr = tmp_path / "worker.stderr.log"
    process = spawn([sys.executable, "worker.py"], stdout=tmp_path / "worker.stdout.log", stderr=stderr, env=env)
    try:

        async def started() -> bool:
            assert process.poll() is None, f"worker.py exited: {stderr.read_text(errors='replace')}"
            return "worker started" in stderr.read_text(errors="replace")

        await eventually("worker.py starting", started, 30, stderr)
        yield
    finally:
        stop_process(process)


CODEC_TOKEN = "integration-doc-token"


@pytest.fixture
async def codec_server(tmp_path: Path) -> AsyncIterator[RunningCodecServer]:
    """The engine's codec server, with a token as a deployment beyond loopback has one."""
    async with running_codec_server(tmp_path, token=CODEC_TOKEN) as server:
        yield server


def reader_environment(server: DevServer, codec: RunningCodecServer) -> dict[str, str]:
    """What a reader has: the `temporal` CLI and this Python on the PATH, the server in TEMPORAL_ADDRESS and the
    codec server in CODEC_ENDPOINT and CODEC_TOKEN; no key (only the engine and its codec server hold it)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return clean_environment() | {
        "TEMPORAL_ADDRESS": server.address,
        "PATH": path,
        "CODEC_ENDPOINT": codec.url,
        "CODEC_TOKEN": CODEC_TOKEN,
    }


async def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def status_of(client: Client, customer_id: str) -> BillingStatus:
    return await client.get_workflow_handle(f"customer-billing-{customer_id}").query(
        "status", result_type=BillingStatus
    )


@pytest.mark.devserver
async def test_the_integration_document_drives_the_engine_as_written(
    tmp_path: Path, dev_server: DevServer, doc_worker: None, codec_server: RunningCodecServer
) -> None:
    from tests.test_message_schemas import schema_validator

    env = reader_environment(dev_server, codec_server)
    blocks = shell_blocks()
    assert len(blocks) >= 8, "the sh blocks of docs/integration.md went missing"
    query_outputs: list[str] = []
    for block in blocks:
        code, out, err = await run(["bash", "-euo", "pipefail", "-c", block.text], env, tmp_path)
        where = f"docs/integration.md line {block.line}:\n{block.text}\nstdout: {out}\nstderr: {err}"
        if block.expects_failure:
            assert code != 0, f"this block should have been refused, {where}"
            assert "cannot write off" in out + err, where
        else:
            assert code == 0, where
        if "--name status" in block.text:
            query_outputs.append(out)

    # The CLI shows the status (re-rendered: it prints an empty list as null; and it may not show the last
    # signals yet, as the document says); a client gets the engine's JSON, as the schema publishes it.
    (answer,) = query_outputs
    shown = json.loads(answer)["queryResult"][0]
    assert (shown["customer_id"], shown["amount_due"]["currency"]) == ("C-1001", "CNY")
    sent = await dev_server.client.get_workflow_handle("customer-billing-C-1001").query("status")
    schema_validator("CustomerBilling/result.BillingStatus.json").validate(sent)

    # The updates ran after every signal, so the status now reflects all the document sent.
    status = await status_of(dev_server.client, "C-1001")
    invoices = {invoice.invoice_id: invoice for invoice in status.invoices}
    assert set(invoices) == {"INV-2026-0001", "INV-2026-0002"}
    # PAY-77 (sent twice) and PAY-78: 234.50 + 1000.00 settle INV-2026-0001 exactly, nothing spills over.
    assert invoices["INV-2026-0001"].paid.amount == Decimal("1234.50")
    assert invoices["INV-2026-0002"].paid.amount == Decimal("0.00")
    assert status.unapplied_credit is None or status.unapplied_credit.is_zero
    [dispute] = status.disputes
    assert (dispute.dispute_id, dispute.invoice_id, dispute.amount.amount) == (
        "D-7",
        "INV-2026-0002",
        Decimal("200.00"),
    )
    assert status.paused
    assert status.stage is BillingStage.DISPUTED
    [rejected] = status.rejected
    assert (rejected.name, rejected.reference) == ("payment_received", "PAY-USD-1")
    assert "USD" in rejected.reason

    # The account went through the codec server: ciphertext on the Temporal server. The plain `signal`s reached
    # the encrypting engine as plain JSON (stored as sent) and were read all the same (the status above).
    outsider = Client(dev_server.client.service_client, namespace=dev_server.client.namespace)  # no codec
    events = (await outsider.get_workflow_handle("customer-billing-C-1001").fetch_history()).events
    [account] = events[0].workflow_execution_started_event_attributes.input.payloads
    assert account.metadata["encoding"] == b"binary/encrypted" and b"Lotus" not in account.SerializeToString()
    signals = [
        event.workflow_execution_signaled_event_attributes.input.payloads[0]
        for event in events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert signals[0].metadata["encoding"] == b"binary/encrypted"  # signal-with-start's, through the codec
    plain = [json.loads(signal.data) for signal in signals if signal.metadata["encoding"] == b"json/plain"]
    assert {"PAY-USD-1", "PAY-77", "D-7"} <= {
        message.get("payment_id") or message.get("dispute_id") for message in plain
    }

    script = tmp_path / "billing_example.py"
    script.write_text(python_example().text, encoding="utf-8")
    code, out, err = await run([sys.executable, str(script)], env, tmp_path)
    assert code == 0, f"the Python example failed:\n{out}\n{err}"
    assert "write_off refused: invoice INV-NOPE" in out, out
    assert "rejected payment_received PAY-2001-2: " in out and "INV-2026-0999" in out, out

    stored = History(events=(await outsider.get_workflow_handle("customer-billing-C-2001").fetch_history()).events)
    assert b"Peony" not in stored.SerializeToString() and b"finance@peony" not in stored.SerializeToString()

    status = await status_of(dev_server.client, "C-2001")
    [invoice] = status.invoices
    assert (invoice.invoice_id, invoice.paid.amount, invoice.outstanding.amount) == (
        "INV-2026-0100",
        Decimal("80.00"),
        Decimal("770.00"),
    )
    assert status.amount_due.amount == Decimal("770.00")
    assert [(r.name, r.reference) for r in status.rejected] == [("payment_received", "PAY-2001-2")]
