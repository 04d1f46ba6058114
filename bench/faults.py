"""The fault suite (issue 12): real `CustomerBilling` lifecycles of every kind on a dev server with `worker.py`
subprocesses, the Partner Center emulator and an SMTP sink, while workers are SIGKILLed, the dev server is
killed and restarted, mail is down, Partner Center throttles and fails, and every signal and update is fuzzed
with malformed payloads. Prints one line of figures; exits 1 on any defect.

    python -m bench.faults              the small setting (about a minute; what tests/test_faults.py runs)
    python -m bench.faults --full       the large setting
    python -m bench.faults --postgres   the ledger on PostgreSQL (a schema of its own, dropped afterwards)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, make_url, select, text
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import (
    Client,
    WorkflowHistory,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import RawValue
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from bench.stack import DevServerProcess, Mailbox, TimedSink, Workers
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger.schema import notice_log, payments
from billing.lifecycle.state import MAX_REJECTED
from billing.models import BillingStatus, CustomerAccount, Dispute, Invoice, Payment, ResolveDispute
from billing.money import Money
from cli.customers import issue_invoice
from tests.builders import SHANGHAI
from tests.conftest import POSTGRES_URL
from tests.devserver_fixtures import FAST_POLICY, TEST_DATA_CONVERTER, free_port, worker_environment
from worker import WORKFLOWS
from workflows.inbox import OnePayloadPerMessage

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "docs" / "schemas"
T = TypeVar("T")

# Two of the tenant's subscriptions are the engine's to suspend; the third was suspended before (not ours).
OURS = ("sub-a", "sub-b")
FOREIGN = "sub-foreign"
KINDS = ("paid_on_time", "partial_then_full", "suspended_then_paid", "duplicate_payment", "second_invoice", "dispute")
# The gRPC answers of a server that is restarting or overloaded: a call that got one is sent again.
TRANSIENT = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN}


@dataclass(frozen=True)
class Setting:
    name: str
    per_kind: int  # lifecycles of each kind
    fuzz_customers: int
    fuzz_examples: int  # hypothesis examples per signal and update
    worker_kills: int
    two_workers: bool
    server_restart: bool
    smtp_outage: float  # seconds the sink is down
    storm: float  # seconds Partner Center answers 429/500/503
    stagger: float  # seconds over which lifecycles start
    deadline: float  # seconds after the last start by which every lifecycle must have completed


SMALL = Setting("small", 1, 1, 2, 1, False, False, 4, 6, 1, 80)
FULL = Setting("full", 5, 3, 12, 5, True, True, 8, 10, 20, 420)


# --- lifecycles ----------------------------------------------------------------------------------------------


@dataclass
class Lifecycle:
    kind: str
    customer_id: str
    sent: dict[str, Decimal] = field(default_factory=dict)  # payment id -> amount (a repeat counts once)
    driver_error: str | None = None
    fuzz_signals: int = 0
    fuzz_updates: Counter[str] = field(default_factory=Counter)  # refused / accepted / error

    @property
    def workflow_id(self) -> str:
        return f"customer-billing-{self.customer_id}"


async def persist(call: Callable[[], Awaitable[T]], within: float = 120) -> T:
    """`call`, sent again while the server is unreachable or restarting."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as error:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The SDK turns a cancelled update call into this error: the cancellation stands.
                raise asyncio.CancelledError from error
            transient = not isinstance(error, RPCError) or error.status in TRANSIENT
            if not transient or time.monotonic() > deadline:
                raise
        except RuntimeError as error:  # the client's own "connection" errors while the server is down
            if time.monotonic() > deadline or "connect" not in str(error).lower():
                raise
        await asyncio.sleep(1)


class Driver:
    def __init__(self, client: Client, task_queue: str, emulator: PartnerCenterEmulator, deadline: float) -> None:
        self.client = client
        self.task_queue = task_queue
        self.emulator = emulator
        self.deadline = deadline

    def account(self, life: Lifecycle) -> CustomerAccount:
        return CustomerAccount(
            customer_id=life.customer_id, name=f"Fault {life.kind}", email=f"ap-{life.customer_id.lower()}@faults.cn"
        )

    async def invoice(self, life: Lifecycle, invoice_id: str, amount: str, due_in: float = 6) -> None:
        due_at = (datetime.now(UTC) + timedelta(seconds=due_in)).astimezone(SHANGHAI)
        invoice = Invoice(
            invoice_id=invoice_id,
            customer_id=life.customer_id,
            amount=Money.of(amount, "CNY"),
            issued_on=datetime.now(SHANGHAI).date(),
            due_on=due_at.date(),
            due_at=due_at,
        )
        await persist(lambda: issue_invoice(self.client, self.task_queue, self.account(life), invoice))

    def payment(self, life: Lifecycle, payment_id: str, amount: str, invoice_id: str | None = None) -> Payment:
        life.sent.setdefault(payment_id, Decimal(amount))
        return Payment(
            payment_id=payment_id,
            customer_id=life.customer_id,
            amount=Money.of(amount, "CNY"),
            received_at=datetime.now(UTC),
            invoice_id=invoice_id,
        )

    async def pay(self, life: Lifecycle, payment_id: str, amount: str, invoice_id: str | None = None) -> None:
        payment = self.payment(life, payment_id, amount, invoice_id)
        handle = self.client.get_workflow_handle(life.workflow_id)
        await persist(lambda: handle.signal("payment_received", payment))

    async def update(self, life: Lifecycle, name: str, arg: Any) -> None:
        handle = self.client.get_workflow_handle(life.workflow_id)
        update_id = f"{name}-{uuid.uuid4().hex[:8]}"
        await persist(lambda: handle.execute_update(name, arg, id=update_id, result_type=BillingStatus))

    async def suspended(self, life: Lifecycle, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(self.emulator.subscription(life.customer_id, sid)["status"] == "suspended" for sid in OURS):
                return True
            await asyncio.sleep(0.3)
        return False

    async def drive(self, life: Lifecycle) -> None:
        try:
            await getattr(self, life.kind)(life)
        except Exception as error:  # reported as a defect of the run, with what failed
            life.driver_error = f"{type(error).__name__}: {error}"[:300]

    async def paid_on_time(self, life: Lifecycle) -> None:
        await self.invoice(life, f"INV-{life.customer_id}", "1234.50", due_in=10)
        await asyncio.sleep(1)
        await self.pay(life, f"PAY-{life.customer_id}", "1234.50")

    async def partial_then_full(self, life: Lifecycle) -> None:
        await self.invoice(life, f"INV-{life.customer_id}", "1000.00")
        await asyncio.sleep(3)
        await self.pay(life, f"PAY-{life.customer_id}-1", "400.00")
        await asyncio.sleep(3)
        await self.pay(life, f"PAY-{life.customer_id}-2", "600.00")

    async def suspended_then_paid(self, life: Lifecycle) -> None:
        await self.invoice(life, f"INV-{life.customer_id}", "2500.00")
        # Waited for; paid regardless, so a suspension that never comes still leaves a lifecycle to complete.
        await self.suspended(life, within=self.deadline / 2)
        await self.pay(life, f"PAY-{life.customer_id}", "2500.00")

    async def duplicate_payment(self, life: Lifecycle) -> None:
        await self.invoice(life, f"INV-{life.customer_id}", "800.00")
        await asyncio.sleep(2)
        await self.pay(life, f"PAY-{life.customer_id}", "800.00")
        await self.pay(life, f"PAY-{life.customer_id}", "800.00")
        # Refused, or the lifecycle already completed: either way the payment counts once.
        with contextlib.suppress(WorkflowUpdateFailedError, RPCError):
            await self.update(life, "record_payment", self.payment(life, f"PAY-{life.customer_id}", "800.00"))

    async def second_invoice(self, life: Lifecycle) -> None:
        await self.invoice(life, f"INV-{life.customer_id}-1", "900.00")
        await asyncio.sleep(2)
        await self.invoice(life, f"INV-{life.customer_id}-2", "300.00", due_in=8)
        await asyncio.sleep(2)
        await self.pay(life, f"PAY-{life.customer_id}-1", "900.00", f"INV-{life.customer_id}-1")
        await asyncio.sleep(1)
        await self.pay(life, f"PAY-{life.customer_id}-2", "300.00", f"INV-{life.customer_id}-2")

    async def dispute(self, life: Lifecycle) -> None:
        invoice_id, dispute_id = f"INV-{life.customer_id}", f"D-{life.customer_id}"
        await self.invoice(life, invoice_id, "1000.00")
        dispute = Dispute(
            dispute_id=dispute_id,
            customer_id=life.customer_id,
            invoice_id=invoice_id,
            reason="two licences too many",
            amount=Money.of("300.00", "CNY"),
        )
        handle = self.client.get_workflow_handle(life.workflow_id)
        await persist(lambda: handle.signal("dispute_opened", dispute))
        await asyncio.sleep(2)
        resolution = ResolveDispute(
            dispute_id=dispute_id, outcome="credit", credit=Money.of("300.00", "CNY"), note="credit agreed"
        )
        await self.update(life, "resolve_dispute", resolution)
        await self.pay(life, f"PAY-{life.customer_id}", "700.00")

    async def fuzz(self, life: Lifecycle, cases: list[Fuzz]) -> None:
        """A lifecycle that takes every malformed message first, then is paid and must complete."""
        try:
            await self.invoice(life, f"INV-{life.customer_id}", "1500.00", due_in=120)
            handle = self.client.get_workflow_handle(life.workflow_id)
            for case in cases:
                if case.kind == "signal":
                    await persist(lambda case=case: handle.signal(case.name, args=case.args))
                    life.fuzz_signals += 1
                    continue
                try:
                    await asyncio.wait_for(
                        persist(lambda case=case: handle.execute_update(case.name, args=case.args)), 30
                    )
                    life.fuzz_updates["accepted"] += 1
                except WorkflowUpdateFailedError:
                    life.fuzz_updates["refused"] += 1
                except Exception as error:
                    life.fuzz_updates["error"] += 1
                    life.driver_error = f"update {case.name} {case.label}: {type(error).__name__}: {error}"[:300]
            await self.pay(life, f"PAY-{life.customer_id}", "1500.00")
        except Exception as error:
            life.driver_error = f"{type(error).__name__}: {error}"[:300]


# --- malformed messages, derived from the JSON Schemas in docs/schemas -----------------------------------------


@dataclass(frozen=True)
class Fuzz:
    kind: str  # signal or update
    name: str
    label: str
    args: list[Any]


def _json(value: Any) -> RawValue:
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode()))


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return _resolve(root["$defs"][ref.rsplit("/", 1)[1]], root) if ref else schema


def _valid(schema: dict[str, Any], root: dict[str, Any], name: str, customer_id: str) -> Any:
    """A value of `schema` (required properties only): the base each mutation spoils."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return _valid(next(s for s in schema["anyOf"] if s.get("type") != "null"), root, name, customer_id)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: _valid(properties[key], root, key, customer_id) for key in schema.get("required", [])}
    if kind == "array":
        return [_valid(schema.get("items", {}), root, name, customer_id)]
    if kind in ("number", "integer"):
        return 1
    if schema.get("format") == "date-time":
        return datetime.now(UTC).isoformat()
    if schema.get("format") == "date":
        return datetime.now(UTC).date().isoformat()
    if name == "amount":
        return "10.00"
    if name == "currency":
        return "CNY"
    # A customer id not this lifecycle's: a mutation that happens to leave the payload valid is still refused.
    return "C-SOMEONE-ELSE" if name == "customer_id" else f"fuzz-{name}"


WRONG_TYPES = st.one_of(
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.floats(allow_nan=False, allow_infinity=False),
)
BAD_AMOUNTS = st.sampled_from([1e30, int("9" * 30), "9" * 30, -5, "-0.01", "0", "1.001", "abc", "", None, True])


def _mutations(schema: dict[str, Any], root: dict[str, Any], base: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Payloads the schema does not allow: a required field missing or of the wrong type, a bad amount anywhere
    an amount is, or no object at all."""
    required = list(schema.get("required", []))
    properties = schema.get("properties", {})
    money_fields = [key for key in required if "Money" in json.dumps(properties.get(key, {}))]
    choices: list[st.SearchStrategy[Any]] = [
        st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.none())
    ]
    if required:
        choices.append(st.sampled_from(required).map(lambda key: {k: v for k, v in base.items() if k != key}))
        choices.append(st.tuples(st.sampled_from(required), WRONG_TYPES).map(lambda kv: base | {kv[0]: kv[1]}))
    if money_fields:
        choices.append(
            st.tuples(st.sampled_from(money_fields), BAD_AMOUNTS).map(
                lambda kv: base | {kv[0]: base[kv[0]] | {"amount": kv[1]}}
            )
        )
    return st.one_of(choices)


def _draw(strategy: st.SearchStrategy[Any], examples: int, seed: int) -> list[Any]:
    """`examples` values of `strategy`, drawn by hypothesis (shrinking has nothing to do: nothing fails)."""
    drawn: list[Any] = []

    @hypothesis_seed(seed)
    @hypothesis_settings(max_examples=examples, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn[:examples]


def fuzz_cases(examples: int, customer_id: str, seed: int) -> list[Fuzz]:
    """For every CustomerBilling signal and update: `examples` hypothesis-drawn mutations of a payload its JSON
    Schema describes, and the payloads no schema can: none, two, bytes that are no JSON, a non-JSON encoding."""
    index = json.loads((SCHEMAS / "index.json").read_text(encoding="utf-8"))
    entry = next(w for w in index["workflows"] if w["workflow_type"] == "CustomerBilling")
    cases: list[Fuzz] = []
    for kind, messages in (("signal", entry["signals"]), ("update", entry["updates"])):
        for message in messages:
            root = json.loads((SCHEMAS / message["payload"]).read_text(encoding="utf-8"))
            base = _valid(root, root, "", customer_id)
            drawn = _draw(_mutations(root, root, base), examples, seed)
            name = message["name"]
            cases += [Fuzz(kind, name, f"mutation {value!r}"[:120], [_json(value)]) for value in drawn]
            cases += [
                Fuzz(kind, name, "no payload", []),
                Fuzz(kind, name, "two payloads", [_json(base), _json(base)]),
                Fuzz(
                    kind,
                    name,
                    "bytes no JSON",
                    [RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b"\xff{"))],
                ),
                Fuzz(kind, name, "binary/null", [RawValue(Payload(metadata={"encoding": b"binary/null"}))]),
            ]
    return cases


# --- the run -------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    values: dict[str, Any] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)

    def defect_if(self, name: str, value: int, detail: str = "") -> None:
        self.values[name] = value
        if value:
            self.defects.append(f"{name}={value}{': ' + detail if detail else ''}")

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass
class Events:
    kills: list[float] = field(default_factory=list)  # time.monotonic() of every worker or server kill

    def crash_between(self, first: float, last: float) -> bool:
        return any(first <= at <= last for at in self.kills)


async def chaos(
    setting: Setting,
    rng: random.Random,
    workers: Workers,
    server: DevServerProcess,
    mailbox: Mailbox,
    emulator: PartnerCenterEmulator,
    events: Events,
    log: list[str],
) -> None:
    """The faults, on a timeline from the first lifecycle's start; the Partner Center storm begins with the first
    final notice (suspension follows it 3 s later on the fast policy), or on the timeline if none came by then."""
    start = time.monotonic()
    storm_started = False

    async def storm_at_first_final_notice() -> None:
        nonlocal storm_started
        # Polled: the sink receives in a thread of its own.
        while not any(m["X-Billing-Notice"] == "final_notice" for m in mailbox.sink.messages):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        if not storm_started:
            storm_started = True
            log.append(f"{time.monotonic() - start:.1f}s storm")
            emulator.storm(setting.storm)

    watcher = asyncio.create_task(storm_at_first_final_notice())
    plan: list[tuple[float, str]] = [(rng.uniform(2, 9), "kill")]
    plan += [(rng.uniform(2, setting.stagger + 30), "kill") for _ in range(setting.worker_kills - 1)]
    plan += [(16, "smtp"), (setting.stagger + 20, "storm")]
    if setting.server_restart:
        plan.append((rng.uniform(8, setting.stagger + 15), "server"))
    for at, what in sorted(plan):
        await asyncio.sleep(max(0, start + at - time.monotonic()))
        if what == "storm" and storm_started:
            continue
        log.append(f"{time.monotonic() - start:.1f}s {what}")
        if what == "kill":
            events.kills.append(time.monotonic())
            workers.sigkill(rng.choice(workers.running))
            await workers.start()
        elif what == "storm":
            storm_started = True
            emulator.storm(setting.storm)
        elif what == "smtp":
            mailbox.down()
            await asyncio.sleep(setting.smtp_outage)
            mailbox.up()
        elif what == "server":
            events.kills.append(time.monotonic())
            server.kill()
            await asyncio.sleep(2)
            await server.start()
    watcher.cancel()


async def wait_for_completion(
    client: Client, lifecycles: list[Lifecycle], within: float, durations: dict[str, float]
) -> dict[str, str]:
    """Each lifecycle's last known status name, polling until every one closed or `within` passed; `durations`
    gets the seconds from start to close of each closed one."""
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for life in lifecycles:
            if statuses.get(life.customer_id) in (None, "RUNNING"):
                try:
                    described = await client.get_workflow_handle(life.workflow_id).describe()
                except RPCError:
                    continue
                status = described.status
                statuses[life.customer_id] = status.name if status else "UNKNOWN"
                if described.close_time is not None:
                    durations[life.customer_id] = (described.close_time - described.start_time).total_seconds()
        if all(statuses.get(life.customer_id) not in (None, "RUNNING") for life in lifecycles):
            break
        await asyncio.sleep(0.5)
    return statuses


async def run_suite(setting: Setting, *, postgres: bool, seed: int, sabotage: str | None, keep: bool) -> Figures:
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix=f"faults-{setting.name}-"))
    figures = Figures()
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT") if postgres else None
    if admin is not None:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        ledger_url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    else:
        ledger_url = make_url(f"sqlite:///{folder / 'ledger.db'}")
    mailbox = Mailbox()
    emulator = PartnerCenterEmulator().start()
    server = DevServerProcess(folder, TEST_DATA_CONVERTER)  # worker_environment encrypts with the test key
    workers: Workers | None = None
    background: list[asyncio.Task[None]] = []
    try:
        client = await server.start()
        task_queue = f"faults-{uuid.uuid4().hex[:8]}"
        env = worker_environment(folder, server.address, emulator, mailbox.sink, task_queue, FAST_POLICY)
        env["BILLING_LEDGER_URL"] = ledger_url.render_as_string(hide_password=False)
        if sabotage == "smtp-unreachable":  # to see the suite fail: no notice can go out, nothing completes
            env["BILLING_SMTP_PORT"] = str(free_port())
        workers = Workers(folder, env)
        await workers.start()
        if setting.two_workers:
            await workers.start()
        background.append(asyncio.create_task(workers.watch()))

        run_id = uuid.uuid4().hex[:6].upper()
        lifecycles = [
            Lifecycle(kind, f"C-F{run_id}-{kind[:4].upper()}-{n}") for n in range(setting.per_kind) for kind in KINDS
        ]
        fuzzed = [Lifecycle("fuzz", f"C-F{run_id}-FUZZ-{n}") for n in range(setting.fuzz_customers)]
        for life in lifecycles + fuzzed:
            emulator.seed_tenant(life.customer_id, {OURS[0]: "active", OURS[1]: "active", FOREIGN: "suspended"})
        cases = fuzz_cases(setting.fuzz_examples, "C-SOMEONE-ELSE", seed)
        shares = [cases[n :: setting.fuzz_customers] for n in range(setting.fuzz_customers)]

        driver = Driver(client, task_queue, emulator, setting.deadline)
        events, chaos_log = Events(), []
        started = time.monotonic()
        background.append(
            asyncio.create_task(chaos(setting, rng, workers, server, mailbox, emulator, events, chaos_log))
        )
        drivers = []
        for n, life in enumerate(lifecycles):
            await asyncio.sleep(max(0, started + setting.stagger * n / len(lifecycles) - time.monotonic()))
            drivers.append(asyncio.create_task(driver.drive(life)))
        drivers += [asyncio.create_task(driver.fuzz(life, share)) for life, share in zip(fuzzed, shares, strict=True)]
        _, late = await asyncio.wait(drivers, timeout=setting.deadline + setting.stagger)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for task, life in zip(drivers, lifecycles + fuzzed, strict=True):
            if task in late:
                life.driver_error = "the driver did not finish in time (a message it sent was never applied?)"
        await background[-1]  # every fault has happened
        everyone = lifecycles + fuzzed
        durations: dict[str, float] = {}
        within = setting.deadline - (time.monotonic() - started)
        statuses = await wait_for_completion(client, everyone, within, durations)
        # The last close-the-loop notices and reinstatements are in before the books are read.
        await asyncio.sleep(1)
        await check(figures, client, everyone, statuses, mailbox.sink, emulator, ledger_url, events, workers)
        # Not a defect by itself: an activity in flight on a killed worker is retried after its timeout.
        figures.values["slowest_lifecycle_s"] = round(max(durations.values(), default=0))
        figures.values["worker_kills"] = workers.killed
        figures.values["server_restarts"] = server.starts - 1
        figures.values["storm_answers"] = sum(
            1 for request in emulator.api_requests() if request.status in (429, 500, 503)
        )
        figures.defect_if("faults_not_exercised", int(figures.values["storm_answers"] == 0), "the storm hit no call")
        figures.values["chaos"] = "|".join(chaos_log).replace(" ", "")
        return figures
    finally:
        for task in background:
            task.cancel()
        if workers is not None:
            workers.stop()
        server.stop()
        emulator.stop()
        mailbox.down()
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def check(
    figures: Figures,
    client: Client,
    lifecycles: list[Lifecycle],
    statuses: dict[str, str],
    sink: TimedSink,
    emulator: PartnerCenterEmulator,
    ledger_url: Any,
    events: Events,
    workers: Workers,
) -> None:
    ids = {life.customer_id for life in lifecycles}
    figures.values["lifecycles"] = len(lifecycles)
    figures.values["completed"] = sum(1 for life in lifecycles if statuses.get(life.customer_id) == "COMPLETED")
    stuck = [life for life in lifecycles if statuses.get(life.customer_id) in (None, "RUNNING")]
    figures.defect_if("stuck", len(stuck), ",".join(f"{life.customer_id}({life.kind})" for life in stuck))
    closed_badly = [f"{cid}:{s}" for cid, s in statuses.items() if s not in ("COMPLETED", "RUNNING")]
    figures.defect_if("failed", len(closed_badly), ",".join(closed_badly))
    errors = [f"{life.customer_id}: {life.driver_error}" for life in lifecycles if life.driver_error]
    figures.defect_if("driver_errors", len(errors), " | ".join(errors))
    figures.defect_if("worker_exits", len(workers.exited))

    # Mail: the same Message-ID twice is the receiver's to drop, and expected only across a crash (the notice
    # went out, the worker died before logging it); a notice key twice in a lifecycle's record never is.
    engine = create_engine(ledger_url)
    with engine.connect() as connection:
        logged = {row.message_id: (row.customer_id, row.key) for row in connection.execute(select(notice_log))}
        booked: dict[str, Decimal] = defaultdict(Decimal)
        for row in connection.execute(select(payments.c.customer_id, payments.c.amount)):
            booked[row.customer_id] += Decimal(str(row.amount))
    engine.dispose()
    arrivals: dict[str, list[float]] = defaultdict(list)
    for delivery, at in zip(sink.deliveries, sink.arrived, strict=True):
        if delivery.message["X-Billing-Customer"] in ids:
            arrivals[str(delivery.message["Message-ID"])].append(at)
    repeats = {mid: times for mid, times in arrivals.items() if len(times) > 1}
    figures.values["notices"] = sum(len(times) for times in arrivals.values())
    figures.values["dup_msgid"] = sum(len(times) - 1 for times in repeats.values())
    unexplained = [mid for mid, times in repeats.items() if not events.crash_between(times[0], times[-1])]
    figures.defect_if("dup_msgid_outside_crash", len(unexplained), ",".join(str(logged.get(m, m)) for m in unexplained))
    unlogged = [mid for mid in arrivals if mid not in logged]
    figures.defect_if("sent_not_logged", len(unlogged))

    dup_keys, not_ours, double, left_suspended, ledger_off, rejected_short = [], [], [], [], [], []
    for life in lifecycles:
        try:
            status: BillingStatus = await persist(
                lambda life=life: client.get_workflow_handle(life.workflow_id).query(
                    "status", result_type=BillingStatus
                )
            )
        except Exception as error:
            errors.append(f"{life.customer_id}: status {error}")
            continue
        keys = Counter(notice.key for notice in status.notices_sent)
        dup_keys += [f"{life.customer_id}:{key}" for key, n in keys.items() if n > 1]
        if life.kind == "fuzz":
            expected = min(life.fuzz_signals, MAX_REJECTED)
            if len(status.rejected) < expected:
                rejected_short.append(f"{life.customer_id}:{len(status.rejected)}<{expected}")
        sent = sum(life.sent.values(), Decimal(0))
        if booked.get(life.customer_id, Decimal(0)) != sent:
            ledger_off.append(f"{life.customer_id}:booked {booked.get(life.customer_id)} sent {sent}")
        if statuses.get(life.customer_id) == "COMPLETED":
            left_suspended += [
                f"{life.customer_id}/{sid}"
                for sid in OURS
                if emulator.subscription(life.customer_id, sid)["status"] != "active"
            ]
    figures.defect_if("dup_notice_key", len(dup_keys), ",".join(dup_keys))

    # Partner Center: a suspension PATCH (a new MS-RequestId answered 200) while the engine's last answered
    # change already suspended it is a double suspension; any reactivation of the foreign one is not ours.
    last_change: dict[tuple[str, str], str] = {}
    answered: set[str] = set()
    for request in emulator.api_requests("PATCH"):
        tenant, subscription = request.path.split("/")[3], request.path.split("/")[5]
        wanted = (request.body or {}).get("status") if isinstance(request.body, dict) else None
        if subscription == FOREIGN and wanted == "active":
            not_ours.append(f"{tenant}/{subscription}")
        request_id = request.header("MS-RequestId") or ""
        if request.status != 200 or request_id in answered:
            continue
        answered.add(request_id)
        if wanted == "suspended" and last_change.get((tenant, subscription)) == "suspended":
            double.append(f"{tenant}/{subscription}")
        if wanted in ("active", "suspended"):
            last_change[(tenant, subscription)] = wanted
    not_ours += [f"{cid}/{FOREIGN}" for cid in ids if emulator.subscription(cid, FOREIGN)["status"] != "suspended"]
    figures.defect_if("double_suspensions", len(double), ",".join(double))
    figures.defect_if("foreign_reinstated", len(not_ours), ",".join(not_ours))
    figures.defect_if("left_suspended", len(left_suspended), ",".join(left_suspended))
    figures.defect_if("ledger_mismatch", len(ledger_off), ",".join(ledger_off))
    fuzz = [life for life in lifecycles if life.kind == "fuzz"]
    figures.values["fuzz_signals"] = sum(life.fuzz_signals for life in fuzz)
    updates: Counter[str] = sum((life.fuzz_updates for life in fuzz), Counter())
    figures.values["fuzz_updates_refused"] = updates["refused"]
    figures.values["fuzz_updates_accepted"] = updates["accepted"]
    figures.defect_if("fuzz_update_errors", updates["error"])
    figures.defect_if("fuzz_not_rejected", len(rejected_short), ",".join(rejected_short))

    # Histories: no workflow task may fail, and every history must replay on today's code. One failure is the
    # server's, not ours: a task that completes the run while a new signal or update arrives is failed with cause
    # UNHANDLED_COMMAND, so that the worker takes the message in before completing (nothing is lost; the
    # next task does it). It is counted, not a defect.
    histories: list[WorkflowHistory] = []
    task_failures: list[str] = []
    completions_redone = 0
    for life in lifecycles:
        history = await persist(lambda life=life: client.get_workflow_handle(life.workflow_id).fetch_history())
        histories.append(history)
        failures = [
            e.workflow_task_failed_event_attributes.cause
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        redone = failures.count(WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND)
        completions_redone += redone
        if len(failures) > redone:
            task_failures.append(f"{life.workflow_id}:{len(failures) - redone}")
    figures.defect_if("workflow_task_failures", len(task_failures), ",".join(task_failures))
    figures.values["completions_redone_for_a_new_message"] = completions_redone
    replayer = Replayer(workflows=WORKFLOWS, interceptors=[OnePayloadPerMessage()], data_converter=TEST_DATA_CONVERTER)
    results = await replayer.replay_workflows(_each(histories), raise_on_replay_failure=False)
    figures.values["replayed"] = f"{len(histories) - len(results.replay_failures)}/{len(histories)}"
    figures.defect_if(
        "replay_failures",
        len(results.replay_failures),
        ",".join(f"{run}:{error}"[:200] for run, error in results.replay_failures.items()),
    )


async def _each(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the large setting")
    parser.add_argument("--postgres", action="store_true", help=f"the ledger on PostgreSQL ({POSTGRES_URL})")
    parser.add_argument("--seed", type=int, default=None, help="the random seed (default: random, printed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the logs")
    parser.add_argument(
        "--sabotage",
        choices=["smtp-unreachable"],
        help="break the worker on purpose to see the suite fail (smtp-unreachable: no notice goes out)",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # asyncio.run cancels the suite, whose cleanup stops every process it started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    setting = FULL if args.full else SMALL
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    began = time.monotonic()
    figures = asyncio.run(run_suite(setting, postgres=args.postgres, seed=seed, sabotage=args.sabotage, keep=args.keep))
    ledger = "postgres" if args.postgres else "sqlite"
    wall = time.monotonic() - began
    print(f"faults setting={setting.name} ledger={ledger} seed={seed} {figures.line()} wall={wall:.0f}s")
    for defect in figures.defects:
        print(f"DEFECT {defect}", file=sys.stderr)
    return 1 if figures.defects else 0


if __name__ == "__main__":
    sys.exit(main())
