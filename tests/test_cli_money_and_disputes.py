"""`starter.py` commands in-process against the real worker wiring on the time-skipping server: `open-dispute`,
`payment` (the update, falling back to the signal), `book-credit` (money with no open invoice, used by the next
invoice), typed dates read in the customer's zone, and `sweep run`'s progress."""

from __future__ import annotations

import io
import uuid
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger import LedgerStore
from billing.models import BillingStage
from cli.common import CommandError
from cli.main import build_parser, dispatch
from cli.payments import book_credit
from cli.sweep import sweep_with_progress
from tests.builders import SHANGHAI, cny
from tests.temporal_fixtures import EngineFactory, settled
from tests.test_customer_billing_workflow import account, invoice, status_when

pytestmark = pytest.mark.timeout(120)

BERLIN = ZoneInfo("Europe/Berlin")


def unique(name: str) -> str:
    return f"cli-{name}-{uuid.uuid4().hex[:6]}"


async def starter(engine: Any, now: datetime, *argv: str) -> None:
    """`starter.py ARGV` on the engine's client and task queue, at `now`."""
    args = build_parser().parse_args(["--task-queue", engine.settings.task_queue, *argv])
    await dispatch(engine.client, args, now)


async def issued(engine: Any, customer_id: str, invoice_id: str, amount: str, due_at: datetime, **extra: Any) -> Any:
    handle = await engine.issue(account(customer_id, **extra), invoice(customer_id, invoice_id, amount, due_at))
    await status_when(engine, customer_id, lambda s: invoice_id in [i.invoice_id for i in s.invoices])
    await settled(handle)
    return handle


async def test_open_dispute_shows_the_status_once_taken_in_or_the_rejection(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    customer = unique("dispute")
    async with engine_factory(env.client) as engine:
        await issued(engine, customer, "INV-D-1", "800.00", now + timedelta(days=9))
        capsys.readouterr()
        await starter(
            engine, now, "open-dispute", "--customer-id", customer, "--dispute-id", "D-1", "--invoice-id", "INV-D-1",
            "--amount", "200.00", "--reason", "two seats billed twice",
        )  # fmt: skip
        shown = capsys.readouterr().out
        assert f"dispute D-1 opened for customer-billing-{customer}" in shown
        assert "D-1" in shown.split("dispute ")[-1]
        status = await engine.status(customer)
        assert [(d.dispute_id, d.amount, d.reason) for d in status.disputes] == [
            ("D-1", cny("200.00"), "two seats billed twice")
        ]
        assert status.stage == BillingStage.DISPUTED

        with pytest.raises(CommandError) as refused:
            await starter(
                engine, now, "open-dispute", "--customer-id", customer, "--dispute-id", "D-2", "--invoice-id",
                "INV-NOPE", "--reason", "not ours",
            )  # fmt: skip
        assert "dispute D-2 rejected:" in str(refused.value)
        assert "INV-NOPE" in str(refused.value)
        assert [d.dispute_id for d in (await engine.status(customer)).disputes] == ["D-1"]


async def test_payment_shows_what_it_paid_and_the_refusal_of_one_that_does_not_fit(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    customer = unique("payment")
    async with engine_factory(env.client) as engine:
        await issued(engine, customer, "INV-P-1", "500.00", now + timedelta(days=9))
        capsys.readouterr()
        await starter(engine, now, "payment", "--customer-id", customer, "--payment-id", "PAY-1", "--amount", "200")
        shown = capsys.readouterr().out
        assert f"payment PAY-1 recorded for customer-billing-{customer}" in shown
        assert "amount due    300.00 CNY" in shown
        with pytest.raises(CommandError) as refused:
            await starter(
                engine, now, "payment", "--customer-id", customer, "--payment-id", "PAY-2", "--amount", "5",
                "--currency", "USD",
            )  # fmt: skip
        assert "record_payment refused:" in str(refused.value)
        assert "nothing was changed" in str(refused.value)
        assert (await engine.status(customer)).amount_due == cny("300.00")
        with pytest.raises(CommandError, match="book-credit"):
            await starter(
                engine, now, "payment", "--customer-id", unique("nobody"), "--payment-id", "P", "--amount", "1"
            )


async def test_payment_falls_back_to_the_signal_when_no_worker_answers(
    own_time_skipping_env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    """No worker polls the lifecycle's task queue: the update is not answered, and the payment is delivered as
    the `payment_received` signal instead, to be applied once a worker runs. (On a server of its own: the update
    given up on leaves the time-skipping server's clock locked.)"""
    env = own_time_skipping_env
    now = await env.get_current_time()
    customer = unique("no-worker")
    queue = f"nobody-polls-{uuid.uuid4().hex[:6]}"
    handle = await env.client.start_workflow(
        "CustomerBilling",
        account(customer),
        id=f"customer-billing-{customer}",
        task_queue=queue,
        start_signal="invoice_issued",
        start_signal_args=[invoice(customer, "INV-N-1", "100.00", now + timedelta(days=9))],
    )
    try:
        args = build_parser().parse_args(
            ["--task-queue", queue, "payment", "--customer-id", customer, "--payment-id", "PAY-N", "--amount", "100",
             "--wait", "0.5"]
        )  # fmt: skip
        await dispatch(env.client, args, now)
        assert "delivered to" in capsys.readouterr().out
        signals = [
            event.workflow_execution_signaled_event_attributes.signal_name
            async for event in handle.fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        assert signals == ["invoice_issued", "payment_received"]
    finally:
        await handle.terminate(reason="test finished")


async def test_book_credit_without_a_lifecycle_pays_the_next_invoice_and_a_refund_pays_none(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    credited, refunded = unique("credit"), unique("refund")
    async with engine_factory(env.client) as engine:
        store = LedgerStore.from_url(engine.settings.ledger_url)
        try:

            def credit(*argv: str) -> Any:
                return build_parser().parse_args(["book-credit", "--ledger-url", engine.settings.ledger_url, *argv])

            first = await book_credit(
                store,
                env.client,
                credit("--customer-id", credited, "--payment-id", "PAY-C", "--amount", "300.00", "--received-at",
                       "today", "--note", "transfer with no invoice"),
                now,
            )  # fmt: skip
            assert (first.duplicate, first.credit, first.balance.unapplied_credit) == (False, cny("300"), cny("300"))
            # The bank file imported twice: the same payment id changes nothing.
            again = await book_credit(
                store, env.client, credit("--customer-id", credited, "--payment-id", "PAY-C", "--amount", "300.00"), now
            )
            assert (again.duplicate, again.balance.unapplied_credit) == (True, cny("300"))
            assert "nothing changed" in capsys.readouterr().out
            [entry] = store.audit_trail(credited)
            assert (entry.action, entry.reason, entry.details["payment_id"]) == (
                "book_credit",
                "transfer with no invoice",
                "PAY-C",
            )
            # "today" is the start of today in the customer's zone (Asia/Shanghai: no invoice has named one).
            start_of_today = datetime.combine(now.astimezone(SHANGHAI).date(), time(0), tzinfo=SHANGHAI)
            assert entry.details["received_at"] == start_of_today.isoformat()

            with pytest.raises(CommandError, match="already on the books"):
                await book_credit(
                    store,
                    env.client,
                    credit("--customer-id", credited, "--payment-id", "PAY-C", "--amount", "300.00", "--refund"),
                    now,
                )

            await book_credit(
                store,
                env.client,
                credit("--customer-id", refunded, "--payment-id", "PAY-R", "--amount", "80.00", "--refund"),
                now,
            )
            assert store.audit_trail(refunded)[0].action == "flag_refund"

            # The next invoice starts the lifecycle and is paid from the credit as the ledger books it.
            handle = await engine.issue(account(credited), invoice(credited, "INV-C-1", "200.00", now + timedelta(9)))
            paid = await status_when(engine, credited, lambda s: s.invoices and s.invoices[0].paid == cny("200.00"))
            assert (paid.amount_due, paid.unapplied_credit) == (cny("0"), cny("100.00"))
            await handle.result()  # nothing owed: the lifecycle completes

            # Money flagged for refund pays nothing.
            await engine.issue(account(refunded), invoice(refunded, "INV-R-1", "50.00", now + timedelta(days=9)))
            owing = await status_when(engine, refunded, lambda s: bool(s.invoices))
            assert (owing.amount_due, owing.invoices[0].paid) == (cny("50.00"), cny("0"))

            # With an invoice open, money for it is a payment, not credit.
            with pytest.raises(CommandError) as refused:
                await book_credit(
                    store,
                    env.client,
                    credit("--customer-id", refunded, "--payment-id", "PAY-R2", "--amount", "50.00"),
                    now,
                )
            assert "INV-R-1" in str(refused.value)
            assert "starter.py payment" in str(refused.value)
        finally:
            store.close()


async def test_book_credit_tells_a_running_lifecycle_with_nothing_owed_to_reread_the_books(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
) -> None:
    """A disputed invoice the customer paid anyway: nothing is owed, but the run waits for the dispute. The
    credit booked in the ledger reaches its status through `ledger_changed`."""
    env = time_skipping_env
    now = await env.get_current_time()
    customer = unique("running")
    async with engine_factory(env.client) as engine:
        await issued(engine, customer, "INV-X-1", "100.00", now + timedelta(days=9))
        await starter(
            engine, now, "open-dispute", "--customer-id", customer, "--dispute-id", "D-X", "--invoice-id", "INV-X-1",
            "--reason", "price",
        )  # fmt: skip
        await starter(engine, now, "payment", "--customer-id", customer, "--payment-id", "PAY-X", "--amount", "100")
        store = LedgerStore.from_url(engine.settings.ledger_url)
        try:
            args = build_parser().parse_args(
                ["book-credit", "--customer-id", customer, "--payment-id", "PAY-X2", "--amount", "40",
                 "--ledger-url", engine.settings.ledger_url]
            )  # fmt: skip
            await book_credit(store, env.client, args, now)
        finally:
            store.close()
        status = await status_when(engine, customer, lambda s: s.unapplied_credit == cny("40"))
        assert status.amount_due == cny("0")
        assert "ledger_changed" in [entry.action for entry in status.timeline]


async def test_typed_days_are_read_in_the_zone_of_the_customers_lifecycle(
    own_time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory
) -> None:
    # On a server of its own: after this test the session's time-skipping server stopped skipping time (every
    # later sleep waited out its deadline), and it does not use time skipping itself.
    env = own_time_skipping_env
    now = await env.get_current_time()
    customer = unique("berlin")
    async with engine_factory(env.client) as engine:
        await starter(
            engine, now, "invoice", "--customer-id", customer, "--name", "Lotus GmbH", "--email", "ap@lotus.example.de",
            "--time-zone", "Europe/Berlin", "--invoice-id", "INV-B-1", "--amount", "900", "--issued-on", "today",
            "--due-on", "+30d",
        )  # fmt: skip
        berlin_today = now.astimezone(BERLIN).date()
        status = await status_when(engine, customer, lambda s: bool(s.invoices))
        assert status.invoices[0].due_on == berlin_today + timedelta(days=30)
        await settled(engine.handle(customer))

        await starter(engine, now, "pause-dunning", "--customer-id", customer, "--reason", "talks", "--until", "+3d")
        paused = await engine.status(customer)
        end_of_day = datetime.combine(berlin_today + timedelta(days=4), time.min, tzinfo=BERLIN)
        assert paused.paused_until == end_of_day

        with pytest.raises(CommandError, match="already past"):
            await starter(engine, now, "pause-dunning", "--customer-id", customer, "--reason", "x", "--until=-1d")


async def test_sweep_run_shows_progress_and_ends_with_its_report(
    time_skipping_env: WorkflowEnvironment,
    engine_factory: EngineFactory,
    partner_center_emulator: PartnerCenterEmulator,
) -> None:
    env = time_skipping_env
    async with engine_factory(env.client) as engine:
        engine.started.update(f"partner-payable-{invoice['id']}" for invoice in partner_center_emulator.invoices())
        progress = io.StringIO()
        report = await sweep_with_progress(env.client, engine.settings.task_queue, progress, every=0.05)
        assert report.phase == "done"
        lines = progress.getvalue().splitlines()
        assert lines
        assert all(line.startswith("sweep: ") for line in lines)
        assert len(set(lines)) == len(lines)  # a line only when the sweep got further
