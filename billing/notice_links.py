"""Signed pay and dispute links for customer notices: the partner's URL template filled with the invoice, the
customer, an expiry and an HMAC-SHA256 signature that the partner's portal checks with the same secret.

Pure (no clock, no I/O): the expiry counts from the notice's own time, so every attempt at one notice renders the
same link. docs/integration.md ("Pay and dispute links") gives the algorithm for the portal side.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import quote, urlsplit

Purpose = Literal["pay", "dispute"]
PURPOSES: tuple[Purpose, ...] = ("pay", "dispute")

# Every template carries all four: the portal needs each to recompute the signature.
PLACEHOLDERS = ("invoice_id", "customer_id", "expires", "signature")
# The first line of the signed text: a later change of the algorithm changes it, so old and new never mix.
VERSION = "billing-link-v1"
MIN_SECRET_LENGTH = 32
DEFAULT_VALIDITY = timedelta(days=60)
# Plain http only where no network sits between the customer and the portal: a local portal under development.
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")


def check_template(template: str) -> str:
    """`template` as given, or a ValueError saying what is wrong with it."""
    if not template or template != template.strip() or any(ch.isspace() for ch in template):
        raise ValueError("must be one URL without spaces or line breaks")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError:
        raise ValueError("has an unmatched { or }: write {{ or }} for a literal brace") from None
    named = [(name, spec, conversion) for name, spec, conversion in fields if name is not None]
    for name, spec, conversion in named:
        if name not in PLACEHOLDERS or spec or conversion:
            raise ValueError(f"has the placeholder {{{name}}}; the known ones are " + _placeholder_list())
    missing = [name for name in PLACEHOLDERS if name not in {name for name, _, _ in named}]
    if missing:
        raise ValueError(
            "lacks "
            + ", ".join(f"{{{name}}}" for name in missing)
            + ": the portal needs all of "
            + _placeholder_list()
            + " to check a link"
        )
    # The scheme and host are the partner's own: no value of a customer's may ever choose where a link leads.
    head = template.partition("{")[0]
    scheme, _, rest = head.partition("://")
    if not rest or not re.search(r"[/?#]", rest):
        raise ValueError(
            "must start with the portal's address, placeholders only after it, e.g. "
            "https://portal.example.cn/pay?invoice={invoice_id}&customer={customer_id}"
            "&expires={expires}&signature={signature}"
        )
    host = urlsplit(head).hostname or ""
    if scheme != "https" and not (scheme == "http" and host in _LOCAL_HOSTS):
        raise ValueError("must be an https:// URL (http:// only for localhost)")
    return template


def _placeholder_list() -> str:
    return ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)


def expiry(at: datetime, validity: timedelta) -> int:
    """The moment a link made at `at` stops working, as Unix seconds (whole seconds, rounded down)."""
    if at.tzinfo is None:
        raise ValueError("the notice's time needs a time zone")
    return int((at + validity).timestamp())


def signed_text(purpose: Purpose, customer_id: str, invoice_id: str, expires: int) -> bytes:
    """What the signature covers: five lines, UTF-8, no line break at the end."""
    if purpose not in PURPOSES:
        raise ValueError(f"a link is for one of {', '.join(PURPOSES)}, not {purpose!r}")
    for value in (customer_id, invoice_id):
        if not value or "\n" in value or "\r" in value:
            raise ValueError("a linked customer or invoice id is one non-empty line")
    return "\n".join([VERSION, purpose, customer_id, invoice_id, str(expires)]).encode("utf-8")


def sign(secret: str, purpose: Purpose, customer_id: str, invoice_id: str, expires: int) -> str:
    """HMAC-SHA256 of `signed_text` with the secret's UTF-8 bytes, URL-safe base64 without padding (43 characters)."""
    digest = hmac.new(
        secret.encode("utf-8"), signed_text(purpose, customer_id, invoice_id, expires), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def link(template: str, secret: str, purpose: Purpose, customer_id: str, invoice_id: str, expires: int) -> str:
    """The template filled in: every value percent-encoded (UTF-8), so '/', '&' or Chinese characters in an id
    cannot change the URL's shape."""
    values = {
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "expires": str(expires),
        "signature": sign(secret, purpose, customer_id, invoice_id, expires),
    }
    return template.format(**{name: quote(value, safe="") for name, value in values.items()})


def verify(
    secret: str,
    purpose: Purpose,
    customer_id: str,
    invoice_id: str,
    expires: str | int,
    signature: str,
    now: datetime,
) -> bool:
    """Whether a link's values (as the portal decoded them from the URL) were signed with `secret` for this
    purpose, customer and invoice, and `now` is before their expiry."""
    expires_text = str(expires)
    if not _EXPIRES.fullmatch(expires_text) or not _SIGNATURE.fullmatch(signature):
        return False
    if now.tzinfo is None or now.timestamp() >= int(expires_text):
        return False
    try:
        expected = sign(secret, purpose, customer_id, invoice_id, int(expires_text))
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))


@dataclass(frozen=True)
class NoticeLinks:
    """The partner's link settings (BILLING_PAY_URL_TEMPLATE, BILLING_DISPUTE_URL_TEMPLATE, BILLING_LINK_SECRET,
    BILLING_LINK_VALIDITY); either template may be left out."""

    secret: str = field(repr=False)  # never in a log line or a traceback's locals
    pay_template: str | None = None
    dispute_template: str | None = None
    validity: timedelta = DEFAULT_VALIDITY

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the link secret must be at least {MIN_SECRET_LENGTH} characters")
        if self.validity <= timedelta(0):
            raise ValueError("the link validity must be positive")
        for template in (self.pay_template, self.dispute_template):
            if template is not None:
                check_template(template)

    def expires(self, at: datetime) -> int:
        return expiry(at, self.validity)

    def link(self, purpose: Purpose, customer_id: str, invoice_id: str, at: datetime) -> str | None:
        """The link of that purpose for a notice made at `at`; None when the partner has no such template."""
        template = self.pay_template if purpose == "pay" else self.dispute_template
        if template is None:
            return None
        return link(template, self.secret, purpose, customer_id, invoice_id, self.expires(at))
