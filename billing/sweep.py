"""The daily sweep's vocabulary: what it is asked to do, what one page of work found, what a whole sweep did,
and the rule that says whether a running lifecycle still agrees with the ledger."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, time
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from billing.ledger_messages import AccountBalance, OwedAccount
from billing.lifecycle.state import BillingState
from billing.models import BillingStage, CustomerAccount

SWEEP_WORKFLOW_TYPE = "DailySweep"
SWEEP_SCHEDULE_ID = "billing-daily-sweep"
SWEEP_WORKFLOW_ID = "billing-daily-sweep"
DEFAULT_PAGE_SIZE = 500
# The report names at most this many customers per outcome; the counts are always complete.
MAX_NAMED = 20

SweepPhase = Literal["partner_invoices", "owed_customers", "running_lifecycles", "done"]
LifecycleOutcome = Literal["started", "in_step", "told", "failed"]
# The stage of a customer owing whose lifecycle has published none: none open (the sweep starts one), or one
# not through its first step yet.
UNTRACKED = "Untracked"
STAGES: tuple[str, ...] = (*(stage.value for stage in BillingStage), UNTRACKED)


def sweep_time_of_day(value: time) -> time:
    """The sweep's local start time: whole minutes, no zone of its own (`BILLING_SWEEP_TIME`, `--at`)."""
    if value.second or value.microsecond or value.tzinfo is not None:
        raise ValueError("must be a local time of day as HH:MM, such as 06:00")
    return value


def sweep_time_zone(value: str) -> str:
    """The zone the sweep's time is read in (`BILLING_SWEEP_TIME_ZONE`, `--time-zone`)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as Asia/Shanghai") from None
    return value


class SweepModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class CustomerProblem(SweepModel):
    customer_id: str
    reason: str


class OwedCustomersPage(SweepModel):
    """Activity input: reconcile the next page of customers who owe something, after `after_customer_id`."""

    sweep_id: str  # the sweep's workflow id, sent to Temporal as the reason of what it does
    after_customer_id: str | None = None
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=5000)
    checked_at: datetime


class RunningLifecyclesPage(SweepModel):
    """Activity input: check the next page of running lifecycles that believe money is owed."""

    sweep_id: str
    page_token: str | None = None  # the list's continuation, base64; None for the first page
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=5000)
    checked_at: datetime


class OwingByStage(SweepModel):
    """The customers owing at one lifecycle stage in one currency, and how much of theirs is past due."""

    stage: str  # the `BillingStage` the customer's open lifecycle published, or UNTRACKED
    currency: str
    customers: int = 0
    overdue: Decimal = Decimal(0)  # outstanding on invoices whose due moment has passed, in `currency`


def owing_by_stage(owed: Iterable[tuple[OwedAccount, str]], now: datetime) -> list[OwingByStage]:
    """Customers owing and their overdue amounts by (stage, currency); `owed` pairs each with its stage.
    Overdue as the lifecycle reckons it (`BillingState.overdue_amount`), one copy of that rule."""
    tallies: list[OwingByStage] = []
    for account, stage in owed:
        # Details the ledger cannot make a valid account of still owe money; the state reads only the books here.
        customer = account.account or CustomerAccount.model_construct(customer_id=account.customer_id)
        currency = account.balance.currency
        state = BillingState.new(customer, currency).model_copy(update={"balance": account.balance})
        overdue = state.overdue_amount(now).amount
        known = stage if stage in STAGES else UNTRACKED  # a search attribute someone else set: not a stage
        tallies.append(OwingByStage(stage=known, currency=currency, customers=1, overdue=overdue))
    return merged_owing([], tallies)


def merged_owing(earlier: Iterable[OwingByStage], later: Iterable[OwingByStage]) -> list[OwingByStage]:
    """The tallies of both added up by (stage, currency), in order of currency and stage."""
    totals: dict[tuple[str, str], OwingByStage] = {}
    for tally in [*earlier, *later]:
        key = (tally.currency, tally.stage)
        known = totals.get(key)
        totals[key] = (
            tally
            if known is None
            else known.model_copy(
                update={"customers": known.customers + tally.customers, "overdue": known.overdue + tally.overdue}
            )
        )
    return [totals[key] for key in sorted(totals)]


class PageOutcome(SweepModel):
    """What one page of work did: counts, the customers concerned (up to `MAX_NAMED` each) and problems."""

    examined: int = 0
    started: int = 0
    in_step: int = 0
    told: int = 0
    failed: int = 0
    started_ids: list[str] = Field(default_factory=list)
    told_ids: list[str] = Field(default_factory=list)
    problems: list[CustomerProblem] = Field(default_factory=list)
    next_after_customer_id: str | None = None  # owed customers: where the next page starts
    next_page_token: str | None = None  # running lifecycles: the list's continuation
    last_page: bool = False
    # Running lifecycles: False when the server cannot list workflows (Temporal's time-skipping test server).
    listing_supported: bool = True
    owing: list[OwingByStage] = Field(default_factory=list)  # owed customers: this page's, by stage and currency


class PartnerInvoicesOutcome(SweepModel):
    """What tracking 21Vianet's invoices to the partner did (filled in from `track_partner_invoices`)."""

    seen: int = 0
    started: int = 0
    already_tracked: int = 0
    settled: int = 0
    not_bills: int = 0  # void notes, adjustment notes, credit notes and amendments: never tracked as bills
    told_paid: int = 0  # running payables told Partner Center shows more paid than they knew of
    told_voided: int = 0  # running payables told Partner Center lists their invoice as a void note
    unreadable: list[str] = Field(default_factory=list)  # "invoice id: why", for a person to look at
    problem: str | None = None  # Partner Center could not be read at all


class SweepReport(SweepModel):
    """The result of a sweep, and what its current details show while it runs."""

    started_at: datetime
    finished_at: datetime | None = None
    phase: SweepPhase = "partner_invoices"
    runs: int = 1  # continued-as-new runs so far, this one included
    pages: int = 0
    customers_owing: int = 0  # customers the ledger says owe something
    lifecycles_started: int = 0  # no open lifecycle: started by signal-with-start
    lifecycles_in_step: int = 0  # running and agreeing with the ledger
    lifecycles_told: int = 0  # running but out of step: sent `ledger_changed`
    failures: int = 0
    running_lifecycles_checked: int = 0  # running lifecycles believing money is owed, checked against the ledger
    running_lifecycles_listed: bool = True
    started_ids: list[str] = Field(default_factory=list)
    told_ids: list[str] = Field(default_factory=list)
    problems: list[CustomerProblem] = Field(default_factory=list)
    partner_invoices: PartnerInvoicesOutcome | None = None
    owing: list[OwingByStage] = Field(default_factory=list)  # every owed customer so far, by stage and currency

    def add(self, page: PageOutcome, *, owed: bool) -> SweepReport:
        return self.model_copy(
            update={
                "pages": self.pages + 1,
                "customers_owing": self.customers_owing + (page.examined if owed else 0),
                "running_lifecycles_checked": self.running_lifecycles_checked + (0 if owed else page.examined),
                "lifecycles_started": self.lifecycles_started + page.started,
                "lifecycles_in_step": self.lifecycles_in_step + (page.in_step if owed else 0),
                "lifecycles_told": self.lifecycles_told + page.told,
                "failures": self.failures + page.failed,
                "started_ids": [*self.started_ids, *page.started_ids][:MAX_NAMED],
                "told_ids": [*self.told_ids, *page.told_ids][:MAX_NAMED],
                "problems": [*self.problems, *page.problems][:MAX_NAMED],
                "running_lifecycles_listed": self.running_lifecycles_listed and page.listing_supported,
                "owing": merged_owing(self.owing, page.owing) if owed else self.owing,
            }
        )

    def progress(self) -> str:
        """One line of how far the sweep is, for a person watching it run (`starter.py sweep run`)."""
        return (
            f"sweep: {self.phase.replace('_', ' ')}, page {self.pages}, run {self.runs}: "
            f"{self.customers_owing} customers owing, {self.lifecycles_started} lifecycles started, "
            f"{self.lifecycles_in_step} in step, {self.lifecycles_told} told, "
            f"{self.running_lifecycles_checked} running checked, {self.failures} failures"
        )

    def details(self) -> str:
        """Markdown for the Temporal UI's current details."""
        lines = [
            f"**Phase:** {self.phase.replace('_', ' ')} (page {self.pages}, run {self.runs})",
            f"**Customers owing:** {self.customers_owing}",
            f"**Lifecycles started:** {self.lifecycles_started}",
            f"**In step with the ledger:** {self.lifecycles_in_step}",
            f"**Told the ledger changed:** {self.lifecycles_told}",
            f"**Running lifecycles checked:** {self.running_lifecycles_checked}"
            + ("" if self.running_lifecycles_listed else " (this server cannot list workflows)"),
            f"**Failures:** {self.failures}",
        ]
        if self.partner_invoices is not None:
            partner = self.partner_invoices
            lines.append(
                f"**21Vianet invoices:** {partner.seen} seen, {partner.started} newly tracked, "
                f"{partner.already_tracked} already tracked, {partner.settled} settled"
                + (f", {partner.not_bills} not bills (void, adjustment or credit notes)" if partner.not_bills else "")
                + (f", {partner.told_paid} told of payments 21Vianet registered" if partner.told_paid else "")
                + (f", {partner.told_voided} told their invoice was voided" if partner.told_voided else "")
                + (f" — {partner.problem}" if partner.problem else "")
            )
            lines.extend(f"- unreadable: {entry}" for entry in partner.unreadable)
        if self.problems:
            lines.append("**Problems:**")
            lines.extend(f"- {problem.customer_id}: {problem.reason}" for problem in self.problems)
        return "\n\n".join(lines)


class SweepInput(SweepModel):
    """The sweep workflow's input: empty when the schedule starts it; a continued run carries its place."""

    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=5000)
    pages_per_run: int = Field(default=100, ge=1)  # continue-as-new after this many pages
    phase: SweepPhase = "partner_invoices"
    after_customer_id: str | None = None
    page_token: str | None = None
    report: SweepReport | None = None


def out_of_step(owed: AccountBalance, amount_due: float | None, oldest_due: datetime | None) -> str | None:
    """Why a running lifecycle that published `amount_due` and `oldest_due` disagrees with the books, or None.

    The published amount is a float (search attributes have no decimals), so amounts agree when they are equal
    to the cent; the oldest due moment must be the very same instant."""
    books_amount = owed.amount_due.amount
    if amount_due is None or not math.isfinite(amount_due):
        return f"it shows no amount due; the ledger says {owed.amount_due}"
    if abs(Decimal(repr(amount_due)) - books_amount) >= Decimal("0.005"):
        return f"it shows {Decimal(repr(amount_due)):.2f} due; the ledger says {owed.amount_due}"
    open_invoices = [invoice for invoice in owed.invoices if invoice.outstanding.is_positive]
    books_oldest = open_invoices[0].due_at if open_invoices else None
    if books_oldest != oldest_due:
        shown = oldest_due.isoformat() if oldest_due else "none"
        books = books_oldest.isoformat() if books_oldest else "none"
        return f"it shows the oldest invoice due {shown}; the ledger says {books}"
    return None
