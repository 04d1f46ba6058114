"""The collections policy as customers read it, in zh-CN or en-US, Markdown or HTML, rendered from the same
`CollectionsPolicy` the engine enforces; given an invoice's due date it lists that invoice's dates.

Every date it prints comes from the decision core's `forecast()` (through `billing.lifecycle.schedule`), so the
document cannot promise a date the engine would not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from billing.business_days import KNOWN_YEARS, calendar_for, unknown_years
from billing.lifecycle.schedule import InvoiceSchedule, invoice_schedule, unpaid_invoice
from billing.lifecycle.steps import StepKind
from billing.models import DEFAULT_TIME_ZONE, CustomerAccount, Locale
from billing.money import Money, minor_units
from billing.notices import Branding, NoticeRenderer
from billing.policy import DATA_DELETION_AFTER_SUSPENSION, CollectionsPolicy

DocumentFormat = Literal["md", "html"]
FORMATS: tuple[DocumentFormat, ...] = get_args(DocumentFormat)
LOCALES: tuple[Locale, ...] = get_args(Locale)

# How long before its due date an example invoice is issued when `--issued-on` is not given.
EXAMPLE_PAYMENT_TERM = timedelta(days=30)
EXAMPLE_INVOICE_ID = "INV-EXAMPLE"

TITLES: dict[Locale, str] = {"zh-CN": "付款与催收政策", "en-US": "Payment and collections policy"}


def attachment_name(locale: Locale) -> str:
    """The file name of the policy attached to invoice notices when no BILLING_POLICY_URL is set."""
    return f"collections-policy.{locale}.html"


@dataclass(frozen=True)
class ScheduleRow:
    """One line of an invoice's dates: `kind` names the step for the template, `number` counts rungs."""

    kind: Literal["due", "reminder", "final_notice", "suspension", "data_deletion_warning", "data_deletion"]
    on: date
    number: int = 0


_ROW_OF_STEP = {
    StepKind.SEND_REMINDER: "reminder",
    StepKind.SEND_FINAL_NOTICE: "final_notice",
    StepKind.SUSPEND: "suspension",
    StepKind.SEND_DATA_DELETION_WARNING: "data_deletion_warning",
}


def schedule_rows(schedule: InvoiceSchedule) -> list[ScheduleRow]:
    """Each step the customer sees or feels and the due date, in time order, then the day the data is deleted."""
    moments = [(schedule.invoice.due_at, ScheduleRow(kind="due", on=schedule.invoice.due_on))]
    counts: dict[str, int] = {}
    for step in schedule.steps:
        kind = _ROW_OF_STEP.get(step.kind)
        if kind is None:  # the suspension notice goes out with the suspension itself
            continue
        counts[kind] = counts.get(kind, 0) + 1
        moments.append((step.at, ScheduleRow(kind=kind, on=step.on, number=counts[kind])))  # type: ignore[arg-type]
    # A stable sort: a step planned for the very moment payment falls due is listed after it.
    rows = [row for _, row in sorted(moments, key=lambda moment: moment[0])]
    if schedule.data_deletion_on is not None:
        rows.append(ScheduleRow(kind="data_deletion", on=schedule.data_deletion_on))
    return rows


def example_schedule(
    policy: CollectionsPolicy,
    due_on: date,
    time_zone: str = DEFAULT_TIME_ZONE,
    issued_on: date | None = None,
) -> InvoiceSchedule:
    """The dates for an unpaid invoice due on `due_on` that is large enough to be suspended over.

    The invoice reaches the engine at the start of `issued_on` (default: 30 days before it is due) in the
    customer's time zone; a reminder planned before that moment is skipped, as the engine skips it.
    """
    issued_on = issued_on or due_on - EXAMPLE_PAYMENT_TERM
    if issued_on > due_on:
        raise ValueError(f"the invoice cannot be issued ({issued_on}) after it is due ({due_on})")
    account = CustomerAccount(customer_id="example", name="example", email="billing@example.cn", time_zone=time_zone)
    zone = account.zone
    # The smallest invoice the engine would suspend over: the minimum, and at least one fen (or cent).
    one_minor_unit = Decimal(1).scaleb(-minor_units(policy.currency))
    amount = Money.of(max(policy.minimum_amount_to_suspend, one_minor_unit), policy.currency)
    invoice = unpaid_invoice(EXAMPLE_INVOICE_ID, amount, issued_on, due_on, zone)
    recorded_at = datetime.combine(issued_on, time(0), tzinfo=zone)
    return invoice_schedule(policy, account, invoice, recorded_at)


def calendar_unknown_years(policy: CollectionsPolicy, schedule: InvoiceSchedule) -> list[int]:
    """The years of the schedule's steps in which China's calendar applies but is not known: Monday to Friday."""
    quiet = policy.quiet_hours
    if not (quiet.enabled and quiet.business_days_only):
        return []
    if calendar_for(ZoneInfo(schedule.time_zone), quiet.calendar) != "CN":
        return []
    return unknown_years(step.on.year for step in schedule.steps)


def policy_context(
    policy: CollectionsPolicy,
    locale: Locale,
    branding: Branding,
    schedule: InvoiceSchedule | None,
) -> dict[str, Any]:
    reminders = [{"offset": abs(offset), "before": offset < timedelta(0)} for offset in policy.reminders]
    return {
        "locale": locale,
        "time_zone": schedule.time_zone if schedule else DEFAULT_TIME_ZONE,
        "subject": f"{branding.partner_name} — {TITLES[locale]}" if branding.partner_name else TITLES[locale],
        "title": TITLES[locale],
        "branding": branding,
        "policy": policy,
        "reminders": reminders,
        "minimum": policy.minimum_to_suspend,
        "deletion_after": DATA_DELETION_AFTER_SUSPENSION,
        "schedule": schedule,
        "rows": schedule_rows(schedule) if schedule else [],
        "example_amount": schedule.invoice.amount if schedule else None,
        "calendar_known_through": KNOWN_YEARS[-1],
        "calendar_unknown_years": calendar_unknown_years(policy, schedule) if schedule else [],
    }


def render_policy_document(
    policy: CollectionsPolicy,
    locale: Locale,
    document_format: DocumentFormat = "md",
    *,
    branding: Branding | None = None,
    schedule: InvoiceSchedule | None = None,
    renderer: NoticeRenderer | None = None,
) -> str:
    """The policy document; `renderer` brings the partner's template overrides (BILLING_TEMPLATE_DIR)."""
    renderer = renderer or NoticeRenderer()
    context = policy_context(policy, locale, branding or Branding(), schedule)
    return renderer.render_document(f"{locale}/collections_policy.{document_format}", context)
