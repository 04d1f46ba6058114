"""The daily sweep: the ledger's paging, and a sweep over a few thousand customers on the time-skipping server
that starts exactly the lifecycles the books call for, tells the out-of-step ones, and changes nothing when it
runs again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.published import instant
from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger import LedgerStore
from billing.ledger.schema import allocations, customers, invoices, payments
from billing.ledger_messages import RecordInvoiceRequest, RecordPaymentRequest
from billing.models import CustomerAccount, Invoice, Payment
from billing.money import Money
from billing.search_attributes import AMOUNT_DUE
from billing.sweep import SweepInput, SweepReport, out_of_step
from tests.builders import SHANGHAI, cny
from tests.devserver_fixtures import TEST_DATA_CONVERTER, eventually
from tests.temporal_fixtures import TEST_SERVER, register_search_attributes
from workflows.daily_sweep import DailySweep

HUNDRED = Money(amount=Decimal("100.00"), currency="CNY")


def account(customer_id: str) -> CustomerAccount:
    return CustomerAccount(customer_id=customer_id, name=f"客户 {customer_id}", email=f"ap-{customer_id}@example.cn")


def due_moment(due_on: date) -> datetime:
    return datetime.combine(due_on + timedelta(days=1), time(0), tzinfo=SHANGHAI)


def book(
    store: LedgerStore, owed: Iterable[str], paid: Iterable[str], issued_on: date, *, email: str | None = None
) -> None:
    """Books in one transaction, as the ledger keeps them: an invoice of 100.00 per customer, owed in full or
    paid by a payment allocated to it. (One at a time through the store would take most of a minute.)"""
    now = datetime.now(UTC)
    due_on = issued_on + timedelta(days=30)
    rows: dict[str, list[dict[str, Any]]] = {"customers": [], "invoices": [], "payments": [], "allocations": []}
    for customer_id, settled in [*((c, False) for c in owed), *((c, True) for c in paid)]:
        rows["customers"].append(
            {
                "customer_id": customer_id,
                "name": f"客户 {customer_id}",
                "email": email or f"ap-{customer_id}@example.cn",
                "locale": "zh-CN",
                "time_zone": "Asia/Shanghai",
                "tenant_id": customer_id,
                "currency": "CNY",
                "created_at": now,
                "updated_at": now,
            }
        )
        rows["invoices"].append(
            {
                "invoice_id": f"INV-{customer_id}",
                "customer_id": customer_id,
                "currency": "CNY",
                "amount": Decimal("100.00"),
                "paid": Decimal("100.00") if settled else Decimal(0),
                "credited": Decimal(0),
                "written_off": Decimal(0),
                "outstanding": Decimal(0) if settled else Decimal("100.00"),
                "issued_on": issued_on,
                "due_on": due_on,
                "due_at": due_moment(due_on),
                "description": "Microsoft 365 E3",
                "recorded_at": now,
            }
        )
        if settled:
            payment = {"payment_id": f"PAY-{customer_id}", "customer_id": customer_id, "currency": "CNY"}
            rows["payments"].append(
                payment | {"amount": Decimal("100.00"), "received_at": now, "invoice_id": None, "recorded_at": now}
            )
            rows["allocations"].append(
                payment
                | {
                    "invoice_id": f"INV-{customer_id}",
                    "source": "payment",
                    "amount": Decimal("100.00"),
                    "allocated_at": now,
                }
            )
    with store.engine.begin() as connection:
        for table in (customers, invoices, payments, allocations):
            if rows[table.name]:
                connection.execute(insert(table), rows[table.name])


def invoice_of(customer_id: str, issued_on: date, suffix: str = "", amount: Money = HUNDRED) -> Invoice:
    due_on = issued_on + timedelta(days=30)
    return Invoice(
        invoice_id=f"INV-{customer_id}{suffix}",
        customer_id=customer_id,
        amount=amount,
        issued_on=issued_on,
        due_on=due_on,
        due_at=due_moment(due_on),
        description="Microsoft 365 E3",
    )


# --- the ledger's paging ------------------------------------------------------------------------------------


def test_owed_accounts_pages_through_customers_who_owe_in_id_order(sqlite_ledger: LedgerStore) -> None:
    issued = date(2026, 11, 1)
    book(
        sqlite_ledger,
        owed=[f"C-{n:03}" for n in range(0, 10, 2)],
        paid=[f"C-{n:03}" for n in range(1, 10, 2)],
        issued_on=issued,
    )
    sqlite_ledger.record_invoice(
        RecordInvoiceRequest(
            account=account("C-004"),
            invoice=invoice_of("C-004", issued + timedelta(days=1), "-B", cny("50.00")),
            due_at=due_moment(issued + timedelta(days=31)),
        )
    )
    first = sqlite_ledger.owed_accounts(None, 2)
    second = sqlite_ledger.owed_accounts(first[-1].customer_id, 2)
    third = sqlite_ledger.owed_accounts(second[-1].customer_id, 2)

    assert [owed.customer_id for owed in [*first, *second, *third]] == ["C-000", "C-002", "C-004", "C-006", "C-008"]
    assert sqlite_ledger.owed_accounts("C-008", 2) == []
    c004 = second[0]
    assert c004.account is not None and c004.account.name == "客户 C-004"
    assert [invoice.invoice_id for invoice in c004.balance.invoices] == ["INV-C-004", "INV-C-004-B"]
    assert c004.balance.amount_due == cny("150.00")


def test_owed_accounts_reports_unusable_customer_details_instead_of_failing(sqlite_ledger: LedgerStore) -> None:
    book(sqlite_ledger, owed=["C-BAD"], paid=[], issued_on=date(2026, 11, 1), email="not an address")

    [owed] = sqlite_ledger.owed_accounts(None, 10)

    assert owed.account is None
    assert owed.account_problem is not None and "email" in owed.account_problem
    assert owed.balance.amount_due == HUNDRED


def test_customers_owing_nothing_are_told_apart_with_their_currency(sqlite_ledger: LedgerStore) -> None:
    book(sqlite_ledger, owed=["C-1"], paid=["C-2"], issued_on=date(2026, 11, 1))

    assert sqlite_ledger.currencies_of_customers_owing_nothing(["C-1", "C-2", "C-unknown"]) == {"C-2": "CNY"}


def test_out_of_step_compares_to_the_cent_and_the_oldest_due_moment(sqlite_ledger: LedgerStore) -> None:
    book(sqlite_ledger, owed=["C-1"], paid=[], issued_on=date(2026, 11, 1))
    [owed] = sqlite_ledger.owed_accounts(None, 1)
    due = owed.balance.invoices[0].due_at

    assert out_of_step(owed.balance, 100.0, due) is None
    assert out_of_step(owed.balance, 100.001, due) is None
    assert out_of_step(owed.balance, 60.0, due) == "it shows 60.00 due; the ledger says 100.00 CNY"
    assert out_of_step(owed.balance, None, None) is not None
    assert out_of_step(owed.balance, 100.0, due - timedelta(days=1)) is not None


# --- the sweep on the time-skipping server ------------------------------------------------------------------

PAID, MISSING, RUNNING, OUT_OF_STEP = 2400, 300, 100, 30


async def published_amount(client: Client, customer_id: str) -> float | None:
    description = await client.get_workflow_handle(f"customer-billing-{customer_id}").describe()
    return description.typed_search_attributes.get(AMOUNT_DUE)


async def lifecycle_status(client: Client, customer_id: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(f"customer-billing-{customer_id}").describe()).status
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def gather_bounded(jobs: Iterable[Any], limit: int = 32) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def bounded(job: Any) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(bounded(job) for job in jobs)))


async def sweep(env: WorkflowEnvironment, task_queue: str) -> SweepReport:
    return await env.client.execute_workflow(
        DailySweep.run,
        SweepInput(page_size=100, pages_per_run=2),
        id=f"billing-daily-sweep-test-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
    )


@pytest.fixture
async def sweep_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of its own: the sweep test leaves thousands of executions behind, which the
    server keeps in memory and which slowed the shared session server for the tests after it."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=TEST_DATA_CONVERTER
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.mark.timeout(300)
async def test_sweep_starts_exactly_the_lifecycles_the_ledger_calls_for(
    sweep_server: WorkflowEnvironment, engine_factory: Any, partner_center_emulator: PartnerCenterEmulator
) -> None:
    env = sweep_server
    async with engine_factory(env.client) as engine:
        # The payables the sweep starts for 21Vianet's invoices end with the test, like the lifecycles.
        engine.started.update(f"partner-payable-{invoice['id']}" for invoice in partner_center_emulator.invoices())
        store = LedgerStore.from_url(engine.settings.ledger_url)
        issued = (await asyncio.to_thread(lambda: datetime.now(UTC))).date()
        run = uuid.uuid4().hex[:4]
        paid = [f"P{run}-{n:05}" for n in range(PAID)]
        missing = [f"M{run}-{n:05}" for n in range(MISSING)]
        running = [f"R{run}-{n:05}" for n in range(RUNNING)]
        out_of_step_ids = running[:OUT_OF_STEP]
        broken = f"X{run}-bad-details"
        book(store, owed=missing, paid=paid, issued_on=issued)
        book(store, owed=[broken], paid=[], issued_on=issued, email="no address")
        # One missing customer owes on two invoices, one of them half paid: both must reach the lifecycle.
        two_invoices = missing[0]
        store.record_invoice(
            RecordInvoiceRequest(
                account=account(two_invoices),
                invoice=invoice_of(two_invoices, issued, "-B", cny("80.00")),
                due_at=due_moment(issued + timedelta(days=30)),
            )
        )
        store.record_payment(
            RecordPaymentRequest(
                payment=Payment(
                    payment_id=f"PAY-{two_invoices}-B",
                    customer_id=two_invoices,
                    amount=cny("40.00"),
                    received_at=datetime.now(UTC),
                    invoice_id=f"INV-{two_invoices}-B",
                )
            )
        )

        # Paid in full once, its lifecycle completed; then an invoice booked straight into the ledger.
        returning = f"B{run}-returning"
        engine.started.add(f"customer-billing-{returning}")
        first_run = await engine.issue(account(returning), invoice_of(returning, issued))
        await first_run.signal(
            "payment_received",
            Payment(
                payment_id=f"PAY-{returning}", customer_id=returning, amount=HUNDRED, received_at=datetime.now(UTC)
            ),
        )
        await first_run.result()
        store.record_invoice(
            RecordInvoiceRequest(
                account=account(returning),
                invoice=invoice_of(returning, issued, "-NEXT"),
                due_at=due_moment(issued + timedelta(days=30)),
            )
        )

        with env.auto_time_skipping_disabled():
            await gather_bounded(engine.issue(account(c), invoice_of(c, issued)) for c in running)
            engine.started.update(f"customer-billing-{c}" for c in [*missing, *running])

            async def all_published() -> bool:
                amounts = await gather_bounded(published_amount(env.client, c) for c in running)
                return all(amount == 100.0 for amount in amounts)

            await eventually("the running lifecycles publishing their amount due", all_published, 120)
            # Money booked while the lifecycle never heard of it: a payment from a bank import, or an invoice.
            for number, customer_id in enumerate(out_of_step_ids):
                if number % 2:
                    store.record_payment(
                        RecordPaymentRequest(
                            payment=Payment(
                                payment_id=f"PAY-{customer_id}",
                                customer_id=customer_id,
                                amount=cny("30.00"),
                                received_at=datetime.now(UTC),
                            )
                        )
                    )
                else:
                    store.record_invoice(
                        RecordInvoiceRequest(
                            account=account(customer_id),
                            invoice=invoice_of(customer_id, issued, "-B", cny("25.00")),
                            due_at=due_moment(issued + timedelta(days=30)),
                        )
                    )

            report = await sweep(env, engine.settings.sweep_queue)

            assert report.phase == "done" and report.finished_at is not None
            assert report.customers_owing == MISSING + RUNNING + 2
            assert report.lifecycles_started == MISSING + 1
            assert report.lifecycles_told == OUT_OF_STEP
            assert report.lifecycles_in_step == RUNNING - OUT_OF_STEP
            assert report.failures == 1
            assert [problem.customer_id for problem in report.problems] == [broken]
            assert "email" in report.problems[0].reason
            assert report.runs > 2  # 431 owing customers in pages of 100, two pages per run
            assert not report.running_lifecycles_listed  # the time-skipping server cannot list workflows
            partner = report.partner_invoices
            assert partner is not None and partner.problem is None
            assert partner.seen == len(partner_center_emulator.invoices())
            assert partner.started >= 1 and partner.not_bills == 2  # the emulator's void note and credit note
            assert partner.started + partner.settled + partner.not_bills + len(partner.unreadable) == partner.seen

            statuses = await gather_bounded(lifecycle_status(env.client, c) for c in [*missing, *paid, broken])
            assert statuses[:MISSING] == [WorkflowExecutionStatus.RUNNING] * MISSING
            assert await lifecycle_status(env.client, returning) == WorkflowExecutionStatus.RUNNING

            # The new run takes its invoice in through the ledger, asynchronously: ask until it has.
            async def booked() -> list[str] | None:
                invoices = [i.invoice_id for i in (await engine.status(returning)).invoices]
                return invoices or None

            assert await eventually("the returning customer's new run booking its invoice", booked, 15) == [
                f"INV-{returning}-NEXT"
            ]
            assert statuses[MISSING:] == [None] * (PAID + 1)

            async def agrees_with_ledger(customer_id: str) -> bool:
                try:
                    status = await engine.status(customer_id)
                except RPCError as error:  # a query waits for the run's workflow task; on a loaded machine, ask again
                    if "Timeout expired" not in str(error):
                        raise
                    return False
                books = store.balance(customer_id, "CNY", [i.invoice_id for i in status.invoices])
                return status.amount_due == books.amount_due and {i.invoice_id for i in status.invoices} >= {
                    i.invoice_id for i in books.invoices
                }

            for customer_id in [*out_of_step_ids, two_invoices]:
                await eventually(
                    f"{customer_id} agreeing with the ledger", lambda c=customer_id: agrees_with_ledger(c), 60
                )
            two = await engine.status(two_invoices)
            assert two.amount_due == cny("140.00")
            told = await engine.status(out_of_step_ids[0])
            assert any(entry.action == "ledger_changed" for entry in told.timeline)

            async def everyone_published() -> bool:
                amounts = await gather_bounded(published_amount(env.client, c) for c in [*missing, *running, returning])
                return all(amount is not None for amount in amounts)

            await eventually("every lifecycle publishing its amount due", everyone_published, 120)
            again = await sweep(env, engine.settings.sweep_queue)

            assert again.lifecycles_started == 0
            assert again.lifecycles_told == 0
            assert again.lifecycles_in_step == MISSING + RUNNING + 1
            assert again.failures == 1
            assert again.partner_invoices is not None
            assert again.partner_invoices.started == 0
            assert again.partner_invoices.already_tracked == partner.started
        store.close()


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-12-25T16:00:00Z", datetime(2026, 12, 25, 16, tzinfo=UTC)),
        ("2026-12-25T16:00:00.123456789Z", datetime(2026, 12, 25, 16, 0, 0, 123456, tzinfo=UTC)),
        ("2026-12-26T00:00:00+08:00", datetime(2026, 12, 25, 16, tzinfo=UTC)),
        ("not a date", None),
    ],
)
def test_published_due_moments_are_read_as_servers_write_them(written: str, expected: datetime | None) -> None:
    assert instant(written) == expected
