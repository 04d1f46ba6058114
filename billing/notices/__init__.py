"""Customer and partner notices: rendering a `NoticeRequest` into an email's subject, text and HTML parts."""

from billing.notices.branding import BankAccount, Branding
from billing.notices.rendering import IncompleteNotice, NoticeRenderer, RenderedNotice, render_notice

__all__ = ["BankAccount", "Branding", "IncompleteNotice", "NoticeRenderer", "RenderedNotice", "render_notice"]
