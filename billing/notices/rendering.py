"""Turns a `NoticeRequest` into the subject, plain-text and HTML parts of the email, from the template files.

Templates live in `templates/<locale>/<kind>.subject.txt|.txt|.html` (the collections policy document in
`templates/<locale>/collections_policy.md|.html`); a partner overrides any of them with a file of the same
relative path in a directory passed as `template_dirs` (BILLING_TEMPLATE_DIR).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context

from billing.models import CUSTOMER_NOTICE_KINDS, Locale, NoticeKind
from billing.money import Money, total
from billing.notice_links import NoticeLinks, Purpose
from billing.notice_request import NoticeRequest
from billing.notices.branding import Branding
from billing.notices.formatting import (
    format_date,
    format_datetime,
    format_duration,
    format_formal_money,
    format_money,
)
from billing.policy import DATA_DELETION_AFTER_SUSPENSION

TEMPLATE_DIR = Path(__file__).parent / "templates"

KINDS_ABOUT_A_DISPUTE = frozenset(
    {NoticeKind.DISPUTE_RECEIVED, NoticeKind.DISPUTE_RESOLVED, NoticeKind.ESCALATION_CASE}
)


class IncompleteNotice(ValueError):
    """The request lacks what its kind of notice must tell; sending it again will not help."""


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str
    locale: Locale


@pass_context
def _money(context: Context, value: Money) -> str:
    return format_money(value, context["locale"])


def _formal_money(value: Money) -> str:
    return format_formal_money(value)


@pass_context
def _date(context: Context, value: date) -> str:
    return format_date(value, context["locale"])


@pass_context
def _moment(context: Context, value: datetime) -> str:
    return format_datetime(value, context["locale"], context["time_zone"])


@pass_context
def _duration(context: Context, value: timedelta) -> str:
    return format_duration(value, context["locale"])


class NoticeRenderer:
    """Renders notices; `template_dirs` are searched before the built-in templates. With `links`, customer
    notices carry signed pay and dispute links per invoice (without, the texts read as they always did)."""

    def __init__(self, template_dirs: Sequence[Path | str] = (), *, links: NoticeLinks | None = None) -> None:
        self._env = template_environment(template_dirs)
        self._links = links

    def render(
        self,
        request: NoticeRequest,
        *,
        sender_name: str = "",
        branding: Branding | None = None,
        policy_attachment: str | None = None,
    ) -> RenderedNotice:
        """`policy_attachment`: the file name of the collections policy attached to the message, if any."""
        locale = request.account.locale
        context = _context(request, sender_name, branding or Branding(), policy_attachment)
        context.update(_link_context(request, self._links))
        _check_complete(request, context)
        base = f"{locale}/{request.kind}"
        # A subject is one line whatever the template's layout: a line break would end the header.
        subject = " ".join(self._env.get_template(f"{base}.subject.txt").render(context).split())
        context["subject"] = subject
        text = self._env.get_template(f"{base}.txt").render(context)
        html = self._env.get_template(f"{base}.html").render(context)
        return RenderedNotice(subject=subject, text=text, html=html, locale=locale)

    def render_document(self, template: str, context: dict[str, Any]) -> str:
        """Any other template of the same folders (the collections policy), with the same filters."""
        return self._env.get_template(template).render(context)


def template_environment(template_dirs: Sequence[Path | str] = ()) -> Environment:
    """Templates of `template_dirs` first, then the built-in ones, with the money and date filters
    (`formal_money` is the Chinese formal form, `人民币12,345.60元`, for zh-CN templates)."""
    env = Environment(
        loader=FileSystemLoader([*template_dirs, TEMPLATE_DIR]),
        # Every value reaching an .html template is escaped unless a template says otherwise, so a
        # customer name or invoice description can never inject markup.
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Templates do not change while a worker runs: no stat of the template file on every render.
        auto_reload=False,
    )
    env.filters.update(money=_money, formal_money=_formal_money, date=_date, moment=_moment, duration=_duration)
    return env


def _check_complete(request: NoticeRequest, context: dict[str, Any]) -> None:
    missing = None
    # A fraud review or a report of subscriptions Partner Center would not change is about the account.
    fraud_review_case = request.kind is NoticeKind.ESCALATION_CASE and request.desk_purpose in (
        "fraud_review",
        "subscriptions",
    )
    if request.kind in KINDS_ABOUT_A_DISPUTE and request.dispute is None and not fraud_review_case:
        missing = "the dispute it is about (dispute)"
    elif request.kind is NoticeKind.DISPUTE_RESOLVED and request.dispute and request.dispute.outcome is None:
        missing = "the decision (dispute.outcome)"
    elif request.kind is NoticeKind.SUSPENSION and request.suspended_on is None:
        missing = "the suspension date (suspended_on)"
    elif request.kind is NoticeKind.DATA_DELETION_WARNING and context["deletion_on"] is None:
        missing = "the deletion date (data_deletion_on or suspended_on)"
    if missing:
        raise IncompleteNotice(f"a {request.kind} notice needs {missing}; notice key {request.key!r}")


def _context(
    request: NoticeRequest, sender_name: str, branding: Branding, policy_attachment: str | None
) -> dict[str, Any]:
    account = request.account
    overdue = request.overdue_amount
    deletion_on = request.data_deletion_on
    if deletion_on is None and request.suspended_on is not None:
        deletion_on = request.suspended_on + DATA_DELETION_AFTER_SUSPENSION
    return {
        "locale": account.locale,
        "time_zone": account.time_zone,
        "kind": str(request.kind),
        "key": request.key,
        "workflow_id": request.workflow_id,
        "customer": account,
        "invoices": request.invoices,
        "invoices_outstanding": total(
            [invoice.outstanding for invoice in request.invoices], request.amount_due.currency
        ),
        "amount_due": request.amount_due,
        "overdue_amount": overdue,
        "overdue": overdue is not None and overdue.is_positive,
        "earliest_due_on": min((invoice.due_on for invoice in request.invoices), default=None),
        "next_step": request.next_step,
        "suspended_on": request.suspended_on,
        "deletion_on": deletion_on,
        "subscription_ids": request.subscription_ids,
        "subscription_names": request.subscription_names,
        "subscription_problems": request.subscription_problems,
        "late_reinstatement": request.late_reinstatement,
        "suspension_reason": request.suspension_reason,
        "resolution": request.resolution,
        # What resolved the issue, one or more of payment, credit, write_off, dispute, 21vianet_review.
        "resolutions": [part.strip() for part in (request.resolution or "").split(",") if part.strip()],
        "dispute": request.dispute,
        "desk_purpose": request.desk_purpose,
        "case": request.escalation_case,
        "dispute_opened_at": request.escalation_case.dispute_opened_at if request.escalation_case else None,
        "payments": request.payments,
        "notices_sent": request.notices_sent,
        "sender_name": sender_name.strip(),
        "branding": branding,
        "customer_notice": request.kind in CUSTOMER_NOTICE_KINDS,
        # The invoice ids a transfer quotes as its payment reference: those with something left to pay.
        "payment_references": [invoice.invoice_id for invoice in request.invoices if invoice.outstanding.is_positive],
        "policy_attachment": policy_attachment,
        "partner_payable": request.partner_payable,
    }


def _link_context(request: NoticeRequest, links: NoticeLinks | None) -> dict[str, Any]:
    """`pay_links` for the invoices with something to pay, `dispute_links` for every invoice named (the templates
    show them where the notice tells how to pay and how to question an invoice), and when they stop working."""
    context: dict[str, Any] = {"pay_links": [], "dispute_links": [], "links_valid_until": None}
    at = request.at
    # A request made before notices carried their time has no moment to count the expiry from.
    if links is None or at is None or request.kind not in CUSTOMER_NOTICE_KINDS:
        return context
    payable = [invoice.invoice_id for invoice in request.invoices if invoice.outstanding.is_positive]
    context["pay_links"] = _links_of(links, "pay", request.account.customer_id, payable, at)
    named = [invoice.invoice_id for invoice in request.invoices]
    context["dispute_links"] = _links_of(links, "dispute", request.account.customer_id, named, at)
    if context["pay_links"] or context["dispute_links"]:
        context["links_valid_until"] = datetime.fromtimestamp(links.expires(at), UTC)
    return context


def _links_of(
    links: NoticeLinks, purpose: Purpose, customer_id: str, invoice_ids: list[str], at: datetime
) -> list[dict[str, str]]:
    made = []
    for invoice_id in invoice_ids:
        try:
            url = links.link(purpose, customer_id, invoice_id, at)
        except ValueError:
            continue  # an id with a line break cannot be signed unambiguously: that invoice goes without
        if url is not None:
            made.append({"invoice_id": invoice_id, "url": url})
    return made


@cache
def _builtin_renderer(links: NoticeLinks | None = None) -> NoticeRenderer:
    return NoticeRenderer(links=links)


def render_notice(
    request: NoticeRequest,
    *,
    sender_name: str = "",
    branding: Branding | None = None,
    policy_attachment: str | None = None,
    links: NoticeLinks | None = None,
) -> RenderedNotice:
    """Render with the built-in templates."""
    return _builtin_renderer(links).render(
        request, sender_name=sender_name, branding=branding, policy_attachment=policy_attachment
    )
