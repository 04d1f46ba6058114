"""The daily sweep's activities: reconcile the ledger (the truth) with the customers' lifecycles in Temporal.

A customer who owes something and has no open `CustomerBilling` run gets one by signal-with-start, with the
open invoices from the books; a running lifecycle whose published amount or oldest due date differs from the
books is sent `ledger_changed`. Both are safe to repeat, so a retried page simply finds the work done.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.published import published_by_open_run
from billing.ledger import LedgerStore
from billing.ledger_messages import AccountBalance, OwedAccount
from billing.lifecycle.status import static_details, static_summary
from billing.models import CustomerAccount, Invoice, LedgerChanged
from billing.money import Money
from billing.sweep import (
    MAX_NAMED,
    UNTRACKED,
    CustomerProblem,
    LifecycleOutcome,
    OwedCustomersPage,
    PageOutcome,
    RunningLifecyclesPage,
    out_of_step,
    owing_by_stage,
)

log = structlog.get_logger(__name__)

LIFECYCLE_TYPE = "CustomerBilling"
LIFECYCLE_PREFIX = "customer-billing-"
RUNNING_AND_OWED = f"WorkflowType = '{LIFECYCLE_TYPE}' AND ExecutionStatus = 'Running' AND AmountDue > 0"
# Starts and signals in flight at once: enough to keep a remote server busy, few enough not to flood it.
CONCURRENCY = 32

T = TypeVar("T")
Outcome = tuple[str, LifecycleOutcome, str | None]


def lifecycle_id(customer_id: str) -> str:
    return f"{LIFECYCLE_PREFIX}{customer_id}"


def invoice_from_books(customer_id: str, balance: AccountBalance, invoice_id: str) -> Invoice:
    """The contract's `invoice_issued` payload for an invoice as the books hold it (due date as last moved)."""
    invoice = next(i for i in balance.invoices if i.invoice_id == invoice_id)
    return Invoice(
        invoice_id=invoice.invoice_id,
        customer_id=customer_id,
        amount=invoice.amount,
        issued_on=invoice.issued_on,
        due_on=invoice.due_on,
        due_at=invoice.due_at,
        description=invoice.description,
    )


class SweepActivities:
    """Holds the ledger, a Temporal client and the task queue the lifecycles run on."""

    def __init__(self, store: LedgerStore, client: Client, task_queue: str, concurrency: int = CONCURRENCY) -> None:
        self._store = store
        self._client = client
        self._task_queue = task_queue
        self._concurrency = concurrency

    @activity.defn(name="reconcile_owed_customers")
    async def reconcile_owed_customers(self, page: OwedCustomersPage) -> PageOutcome:
        owed = await asyncio.to_thread(self._store.owed_accounts, page.after_customer_id, page.page_size)
        stages: dict[str, str] = {}
        outcomes = await self._each(
            owed,
            lambda account: self._reconcile_owed(account, page.checked_at, stages),
            lambda account: account.customer_id,
        )
        result = _tally(outcomes)
        return result.model_copy(
            update={
                "next_after_customer_id": owed[-1].customer_id if owed else page.after_customer_id,
                "last_page": len(owed) < page.page_size,
                "owing": owing_by_stage(
                    ((account, stages.get(account.customer_id, UNTRACKED)) for account in owed), page.checked_at
                ),
            }
        )

    @activity.defn(name="reconcile_running_lifecycles")
    async def reconcile_running_lifecycles(self, page: RunningLifecyclesPage) -> PageOutcome:
        """Running lifecycles that believe money is owed although the books say nothing is: told so."""
        listing = self._client.list_workflows(
            RUNNING_AND_OWED,
            page_size=page.page_size,
            next_page_token=base64.b64decode(page.page_token) if page.page_token else None,
        )
        try:
            await listing.fetch_next_page()
        except RPCError as error:
            if error.status != RPCStatusCode.UNIMPLEMENTED:
                raise
            log.warning("sweep_cannot_list_lifecycles", reason=error.message)
            return PageOutcome(last_page=True, listing_supported=False)
        executions = [
            execution
            for execution in listing.current_page or []
            if execution.id.startswith(LIFECYCLE_PREFIX) and execution.status == WorkflowExecutionStatus.RUNNING
        ]
        customer_ids = [execution.id.removeprefix(LIFECYCLE_PREFIX) for execution in executions]
        owing_nothing = await asyncio.to_thread(self._store.currencies_of_customers_owing_nothing, customer_ids)

        async def tell(customer_id: str) -> Outcome:
            zero = Money.zero(owing_nothing[customer_id])
            change = LedgerChanged(
                customer_id=customer_id, amount_due=zero, open_invoice_ids=[], checked_at=page.checked_at
            )
            try:
                await self._client.get_workflow_handle(lifecycle_id(customer_id)).signal("ledger_changed", change)
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:  # it completed since it was listed
                    return customer_id, "in_step", None
                raise
            log.info("sweep_told_lifecycle", customer_id=customer_id, reason="the ledger says nothing is owed")
            return customer_id, "told", None

        outcomes = await self._each([c for c in customer_ids if c in owing_nothing], tell, str)
        token = listing.next_page_token
        return _tally(outcomes).model_copy(
            update={
                "examined": len(customer_ids),
                "next_page_token": base64.b64encode(token).decode("ascii") if token else None,
                "last_page": not token,
            }
        )

    async def _each(
        self, items: list[T], work: Callable[[T], Awaitable[Outcome]], name: Callable[[T], str]
    ) -> list[Outcome]:
        """Run `work` on every item, `concurrency` at a time, heartbeating as results come in.

        One customer that Temporal refuses is reported and does not hold up the others; when every customer
        of the page fails, Temporal itself is in trouble and the page is retried as a whole."""
        gate = asyncio.Semaphore(self._concurrency)
        done = 0

        async def bounded(item: T) -> Outcome:
            nonlocal done
            async with gate:
                try:
                    result = await work(item)
                except RPCError as error:
                    log.warning("sweep_customer_failed", customer_id=name(item), status=error.status.name)
                    result = (name(item), "failed", f"Temporal refused: {error.message}")
                except (ValueError, TypeError) as error:
                    # Data this customer's books or run hold that we cannot read: theirs alone to look at.
                    log.warning("sweep_customer_failed", customer_id=name(item), error=type(error).__name__)
                    result = (name(item), "failed", f"unreadable: {error}")
            done += 1
            activity.heartbeat(done)
            return result

        outcomes = list(await asyncio.gather(*(bounded(item) for item in items)))
        refused = [
            reason
            for _, outcome, reason in outcomes
            if outcome == "failed" and reason and reason.startswith("Temporal")
        ]
        if outcomes and len(refused) == len(outcomes):
            raise RuntimeError(f"Temporal refused every customer of the page, e.g. {refused[0]}")
        return outcomes

    async def _reconcile_owed(self, owed: OwedAccount, checked_at: datetime, stages: dict[str, str]) -> Outcome:
        """`stages` hears the stage the customer's open lifecycle published, if it did."""
        customer_id = owed.customer_id
        if owed.account is None:
            return customer_id, "failed", f"the ledger's customer details are not usable: {owed.account_problem}"
        handle = self._client.get_workflow_handle(lifecycle_id(customer_id))
        published = await published_by_open_run(self._client, lifecycle_id(customer_id))
        if published is not None and published.stage is not None:
            stages[customer_id] = published.stage
        if published is None:
            await self._start(owed.account, owed.balance)
            return customer_id, "started", None
        if published.amount_due is None:
            # Started a moment ago and not through its first step yet: it reads the books itself.
            return customer_id, "in_step", None
        reason = out_of_step(owed.balance, published.amount_due, published.oldest_due)
        if reason is None:
            return customer_id, "in_step", None
        change = LedgerChanged(
            customer_id=customer_id,
            amount_due=owed.balance.amount_due,
            open_invoice_ids=[invoice.invoice_id for invoice in owed.balance.invoices],
            checked_at=checked_at,
        )
        await handle.signal("ledger_changed", change)
        log.info("sweep_told_lifecycle", customer_id=customer_id, reason=reason)
        return customer_id, "told", None

    async def _start(self, account: CustomerAccount, balance: AccountBalance) -> None:
        """Signal-with-start with the oldest open invoice, then the others as later invoices of the same run."""
        first, *others = [invoice_from_books(account.customer_id, balance, i.invoice_id) for i in balance.invoices]
        handle = await self._client.start_workflow(
            LIFECYCLE_TYPE,
            account,
            id=lifecycle_id(account.customer_id),
            task_queue=self._task_queue,
            start_signal="invoice_issued",
            start_signal_args=[first],
            static_summary=static_summary(account),
            static_details=static_details(account),
        )
        for invoice in others:
            await handle.signal("invoice_issued", invoice)
        log.info("sweep_started_lifecycle", customer_id=account.customer_id, invoices=len(balance.invoices))


def _tally(outcomes: list[Outcome]) -> PageOutcome:
    counts = {"started": 0, "in_step": 0, "told": 0, "failed": 0}
    for _, outcome, _ in outcomes:
        counts[outcome] += 1
    return PageOutcome(
        examined=len(outcomes),
        started_ids=[c for c, outcome, _ in outcomes if outcome == "started"][:MAX_NAMED],
        told_ids=[c for c, outcome, _ in outcomes if outcome == "told"][:MAX_NAMED],
        problems=[CustomerProblem(customer_id=c, reason=r) for c, _, r in outcomes if r][:MAX_NAMED],
        **counts,
    )
