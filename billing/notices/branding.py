"""Who the customer deals with: the partner's name and logo, its support channels, where to pay and where the
collections policy is published. Every customer notice and the policy document show these."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator

# A SWIFT/BIC code: bank (4 letters), country (2 letters), location (2), optional branch (3).
_SWIFT = re.compile(r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]*$")
_ACCOUNT_NUMBER = re.compile(r"^[A-Z0-9][A-Z0-9 \-]*$")


def one_line(value: str) -> str:
    """Printed text: trimmed, non-empty, one line (it may end up in a header or a table cell)."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if "\n" in value or "\r" in value:
        raise ValueError("must be a single line")
    return value


def web_url(value: str) -> str:
    """An address a customer's mail client may open: http(s) only, never `javascript:` or `data:`."""
    value = one_line(value)
    if not value.startswith(("https://", "http://")) or len(value) <= len("https://") or " " in value:
        raise ValueError(f"{value!r} is not an http(s) URL such as https://partner.example.cn/billing/policy")
    return value


def email_address(value: str) -> str:
    value = one_line(value)
    local, _, domain = value.partition("@")
    if not local or "." not in domain or " " in value:
        raise ValueError(f"{value!r} is not an email address such as support@partner.example.cn")
    return value


def phone_number(value: str) -> str:
    value = one_line(value)
    if not _PHONE.match(value) or sum(ch.isdigit() for ch in value) < 5:
        raise ValueError(f"{value!r} is not a phone number such as 400-820-1234 or +86 10 5555 0100")
    return value


def account_number(value: str) -> str:
    written = one_line(value)
    value = written.upper()
    if not _ACCOUNT_NUMBER.match(value) or sum(ch.isdigit() for ch in value) < 6:
        raise ValueError(f"{written!r} is not a bank account number (digits, letters, spaces and hyphens)")
    return value


def swift_code(value: str) -> str:
    written = one_line(value)
    value = written.upper()
    if not _SWIFT.match(value):
        raise ValueError(f"{written!r} is not a SWIFT/BIC code of 8 or 11 characters such as CMBCCNBS")
    return value


class BrandingModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BankAccount(BrandingModel):
    """Where customers pay by bank transfer; they quote the invoice id as the payment reference."""

    bank_name: str
    account_name: str
    account_number: str
    swift: str | None = None  # for transfers from abroad

    @field_validator("bank_name", "account_name")
    @classmethod
    def _printed(cls, value: str) -> str:
        return one_line(value)

    @field_validator("account_number")
    @classmethod
    def _account_number(cls, value: str) -> str:
        return account_number(value)

    @field_validator("swift")
    @classmethod
    def _swift(cls, value: str | None) -> str | None:
        return None if value is None else swift_code(value)


class Branding(BrandingModel):
    """What is left out is left out of the texts too (no logo, no phone line); nothing is ever invented.

    `support_email` absent: the mailer uses the sender's address, which receives replies anyway.
    `support_hours` absent: the templates say "7×24小时" / "24 hours a day, 7 days a week" (`default_support_hours`
    of `templates/<locale>/_phrases.txt`).
    `policy_url` absent: the invoice notice attaches the rendered collections policy instead.
    `fapiao_note` absent: the invoice notice says a fapiao is issued after payment on request, in the reader's
    language. Either way it first says the notice itself is a bill, not a fapiao.
    """

    partner_name: str | None = None
    logo_url: str | None = None
    support_phone: str | None = None
    support_email: str | None = None
    support_hours: str | None = None
    bank: BankAccount | None = None
    policy_url: str | None = None
    fapiao_note: str | None = None  # how the partner issues the tax invoice (fapiao), as one sentence

    @field_validator("partner_name", "support_hours", "fapiao_note")
    @classmethod
    def _printed(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value)

    @field_validator("logo_url", "policy_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else web_url(value)

    @field_validator("support_phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None else phone_number(value)

    @field_validator("support_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else email_address(value)
