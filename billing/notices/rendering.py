"""Turns a `NoticeRequest` into the subject, plain-text and HTML parts of the email, from the template files.

Templates live in `templates/<locale>/<kind>.subject.txt|.txt|.html`; a partner overrides any of them with a
file of the same relative path in a directory passed as `template_dirs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context

from billing.models import Locale, NoticeKind
from billing.money import Money, total
from billing.notices.formatting import format_date, format_datetime, format_money
from billing.policy import DATA_DELETION_AFTER_SUSPENSION
from billing.ports import NoticeRequest

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


@pass_context
def _date(context: Context, value: date) -> str:
    return format_date(value, context["locale"])


@pass_context
def _moment(context: Context, value: datetime) -> str:
    return format_datetime(value, context["locale"], context["time_zone"])


class NoticeRenderer:
    """Renders notices; `template_dirs` are searched before the built-in templates."""

    def __init__(self, template_dirs: Sequence[Path | str] = ()) -> None:
        self._env = Environment(
            loader=FileSystemLoader([*template_dirs, TEMPLATE_DIR]),
            # Every value reaching an .html template is escaped unless a template says otherwise, so a
            # customer name or invoice description can never inject markup.
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._env.filters.update(money=_money, date=_date, moment=_moment)

    def render(self, request: NoticeRequest, *, sender_name: str = "") -> RenderedNotice:
        locale = request.account.locale
        context = _context(request, sender_name)
        _check_complete(request, context)
        base = f"{locale}/{request.kind}"
        # A subject is one line whatever the template's layout: a line break would end the header.
        subject = " ".join(self._env.get_template(f"{base}.subject.txt").render(context).split())
        context["subject"] = subject
        text = self._env.get_template(f"{base}.txt").render(context)
        html = self._env.get_template(f"{base}.html").render(context)
        return RenderedNotice(subject=subject, text=text, html=html, locale=locale)


def _check_complete(request: NoticeRequest, context: dict[str, Any]) -> None:
    missing = None
    if request.kind in KINDS_ABOUT_A_DISPUTE and request.dispute is None:
        missing = "the dispute it is about (dispute)"
    elif request.kind is NoticeKind.DISPUTE_RESOLVED and request.dispute and request.dispute.outcome is None:
        missing = "the decision (dispute.outcome)"
    elif request.kind is NoticeKind.SUSPENSION and request.suspended_on is None:
        missing = "the suspension date (suspended_on)"
    elif request.kind is NoticeKind.DATA_DELETION_WARNING and context["deletion_on"] is None:
        missing = "the deletion date (data_deletion_on or suspended_on)"
    if missing:
        raise IncompleteNotice(f"a {request.kind} notice needs {missing}; notice key {request.key!r}")


def _context(request: NoticeRequest, sender_name: str) -> dict[str, Any]:
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
        "suspension_reason": request.suspension_reason,
        "resolution": request.resolution,
        "dispute": request.dispute,
        "payments": request.payments,
        "notices_sent": request.notices_sent,
        "sender_name": sender_name.strip(),
    }


@cache
def _builtin_renderer() -> NoticeRenderer:
    return NoticeRenderer()


def render_notice(request: NoticeRequest, *, sender_name: str = "") -> RenderedNotice:
    """Render with the built-in templates."""
    return _builtin_renderer().render(request, sender_name=sender_name)
