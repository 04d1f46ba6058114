"""The mailer activity: renders a notice, sends it once (SMTP or an outbox folder), logs it in the ledger."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from billing import metrics
from billing.ledger.rejection import LedgerRejection
from billing.ledger_messages import NoticeLog, NoticeLogEntry
from billing.models import CUSTOMER_NOTICE_KINDS, NoticeKind
from billing.notice_request import NoticeReceipt, NoticeRequest
from billing.notices import Branding, NoticeRenderer, RenderedNotice
from billing.policy import CollectionsPolicy
from billing.policy_document import LOCALES as POLICY_LOCALES
from billing.policy_document import attachment_name as policy_attachment_name
from billing.policy_document import render_policy_document

log = structlog.get_logger(__name__)

DEFAULT_SMTP_TIMEOUT = 30.0
# Connections a worker keeps to the mail server: enough for the notices of a busy worker (a transaction on a
# kept connection takes a round trip or three), few enough for any relay's per-client connection limit.
DEFAULT_SMTP_POOL_SIZE = 4
# Reused within this many seconds of the last message, else closed: well inside the 5 minutes after which a
# server may drop an idle client (RFC 5321 section 4.5.3.2.7, https://www.rfc-editor.org/rfc/rfc5321).
DEFAULT_SMTP_MAX_IDLE = 60.0


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, making the class of each header name once: CPython's makes a new class
    (`type(...)`) every time a header is set or parsed, a sixth of the CPU of composing a notice."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# email.policy.default (what EmailMessage uses), with the header classes made once.
NOTICE_POLICY = policy.default.clone(header_factory=_HeaderClasses())


class MailRejected(Exception):
    """The mail server refused the message for good (a 5xx reply): sending it again cannot succeed."""

    def __init__(self, code: int, stage: str) -> None:
        super().__init__(f"the mail server refused the {stage} for good (SMTP {code})")
        self.code = code


class MailDeferred(Exception):
    """The mail server refused the message for now (a 4xx reply): a later attempt may succeed."""

    def __init__(self, code: int, stage: str) -> None:
        super().__init__(f"the mail server deferred the {stage} (SMTP {code})")
        self.code = code


Accepted = Callable[[], Awaitable[None]]


class MailTransport(Protocol):
    """Delivers one finished message. Raises `MailRejected` when delivery can never succeed.

    `accepted` runs the moment the message is handed over (the server's reply to DATA, the file in place),
    before anything else (QUIT) can fail or take time: the notice log is written there, so a crash between
    delivery and log is as short as it can be."""

    async def send(self, message: EmailMessage, accepted: Accepted) -> None: ...


class SmtpTransport:
    """Delivers through an SMTP server (BILLING_SMTP_*), over a few connections kept open between messages.

    At most `pool_size` messages are in flight at once, each on a connection of its own; a connection is put
    back after a message and used again for the next one, so a notice costs one transaction instead of a
    connection, a greeting, EHLO, STARTTLS and AUTH. Before reuse, NOOP checks that the server still listens
    (servers drop idle clients: RFC 5321 section 4.5.3.2.7); a connection it closed is replaced by a new one
    before anything of the message is sent, so the message still goes exactly once. One idle longer than
    `max_idle` seconds is closed instead of probed.
    """

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = DEFAULT_SMTP_TIMEOUT,
        pool_size: int = DEFAULT_SMTP_POOL_SIZE,
        max_idle: float = DEFAULT_SMTP_MAX_IDLE,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("an SMTP username and password go together: give both or neither")
        if pool_size < 1:
            raise ValueError("an SMTP pool needs at least one connection")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout = timeout
        self.max_idle = max_idle
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # (connection, time.monotonic() it was put back)
        self.connections_opened = 0

    async def send(self, message: EmailMessage, accepted: Accepted) -> None:
        # Only the reply code goes into the errors raised here: the server's text often repeats the
        # recipient's address, and activity failures end up in the worker's log.
        async with self._slots:
            smtp: aiosmtplib.SMTP | None = None
            reusable = False
            try:
                smtp = await self._connection()
                try:
                    await smtp.send_message(message)
                except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError):
                    # A refused transaction: aiosmtplib has reset the envelope (RSET), the session goes on.
                    reusable = True
                    raise
                reusable = True
                await accepted()
            except aiosmtplib.SMTPRecipientsRefused as error:
                codes = [refusal.code for refusal in error.recipients]
                if all(500 <= code < 600 for code in codes):
                    raise MailRejected(codes[0], "recipient") from None
                raise MailDeferred(codes[0], "recipient") from None
            except aiosmtplib.SMTPResponseException as error:
                # Any other reply with a code (the greeting, HELO, AUTH, MAIL FROM, DATA): 5xx is for good as well.
                stage = _STAGES.get(type(error), "session")
                if 500 <= error.code < 600:
                    raise MailRejected(error.code, stage) from None
                raise MailDeferred(error.code, stage) from None
            finally:
                # Anything else (a drop, a timeout, a cancellation mid-transaction) leaves the session in an
                # unknown state: that connection is closed, and the activity's retry sends on a new one.
                if smtp is not None:
                    if reusable and smtp.is_connected:
                        self._idle.append((smtp, time.monotonic()))
                    else:
                        smtp.close()

    async def _connection(self) -> aiosmtplib.SMTP:
        """The most recently used idle connection that still answers NOOP, or a new one."""
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and time.monotonic() - since < self.max_idle:
                try:
                    await smtp.noop()
                    return smtp
                except (aiosmtplib.SMTPException, OSError):
                    pass  # closed by the server (or 421 "closing"): replaced below
            smtp.close()
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            start_tls=self.starttls,
            timeout=self.timeout,
        )
        try:
            await smtp.connect()  # greeting, EHLO, STARTTLS and AUTH as configured
        except BaseException:
            smtp.close()
            raise
        self.connections_opened += 1
        return smtp

    async def aclose(self) -> None:
        """Say QUIT on every idle connection (the worker is stopping)."""
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()


_STAGES: dict[type[aiosmtplib.SMTPResponseException], str] = {
    aiosmtplib.SMTPDataError: "message",
    aiosmtplib.SMTPSenderRefused: "sender",
    aiosmtplib.SMTPAuthenticationError: "login",
    aiosmtplib.SMTPHeloError: "greeting",
    aiosmtplib.SMTPConnectResponseError: "connection",
}


class OutboxTransport:
    """Writes each message as `<Message-ID>.eml` into a folder (BILLING_OUTBOX_DIR) when no SMTP host is set.

    A retry of the same notice rewrites the same file, and a crash never leaves a partial one: the message is
    written to a temporary file in the same folder and renamed into place.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path_for(self, message_id: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9._@-]", "_", message_id.strip("<>"))
        return self.directory / f"{name}.eml"

    async def send(self, message: EmailMessage, accepted: Accepted) -> None:
        await asyncio.to_thread(self._write, message)
        await accepted()

    def _write(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path_for(str(message["Message-ID"]))
        data = message.as_bytes(policy=policy.SMTP)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".eml.tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def notice_message_id(customer_id: str, key: str, domain: str) -> str:
    """The Message-ID of a notice: the same for every attempt, so a receiver can drop a repeated delivery."""
    digest = hashlib.sha256(f"{customer_id}\n{key}".encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _address(display_name: str, addr_spec: str, what: str) -> Address:
    try:
        # A display name is one line: a line break in a header would end it.
        return Address(display_name=" ".join(display_name.split()), addr_spec=addr_spec.strip())
    except (ValueError, IndexError, HeaderParseError):
        raise ValueError(f"{what} is not a usable email address") from None


def _setting_address(value: str, setting: str) -> Address:
    """An address setting, bare (`desk@partner.cn`) or with a name (`Escalation desk <desk@partner.cn>`)."""
    return _address(*parseaddr(value), setting)


class MailerActivities:
    """Sends notices: each (customer, key) at most once, to the customer or to the partner's own staff."""

    def __init__(
        self,
        transport: MailTransport,
        notice_log: NoticeLog,
        mail_from: str,
        escalation_email: str | None = None,
        finance_email: str | None = None,
        *,
        renderer: NoticeRenderer | None = None,
        branding: Branding | None = None,
        collections_policy: CollectionsPolicy | None = None,
    ) -> None:
        """`branding` shows in every customer notice. Without a `policy_url` in it, invoice notices attach the
        `collections_policy` rendered in the customer's language (when one is given)."""
        self._transport = transport
        self._notice_log = notice_log
        self._from = _setting_address(mail_from, "BILLING_MAIL_FROM")
        if not self._from.domain:
            raise ValueError("BILLING_MAIL_FROM must be an address such as billing@partner.example.cn")
        self._escalation = _setting_address(escalation_email, "BILLING_ESCALATION_EMAIL") if escalation_email else None
        self._finance = _setting_address(finance_email, "BILLING_FINANCE_EMAIL") if finance_email else None
        self._renderer = renderer or NoticeRenderer()
        branding = branding or Branding()
        # Replies reach the sender's mailbox, so it is the support address when none is configured.
        self._branding = (
            branding if branding.support_email else branding.model_copy(update={"support_email": self._from.addr_spec})
        )
        # Rendered and encoded once, as the MIME part every invoice notice attaches: the policy and the branding
        # do not change while the worker runs.
        self._policy_attachments: dict[str, EmailMessage] = {}
        if collections_policy is not None and self._branding.policy_url is None:
            for locale in POLICY_LOCALES:
                document = render_policy_document(
                    collections_policy, locale, "html", branding=self._branding, renderer=self._renderer
                )
                # As `add_attachment` builds it: a part of the message's own class and policy.
                part = EmailMessage(policy=NOTICE_POLICY)
                part.set_content(document, subtype="html", charset="utf-8", filename=policy_attachment_name(locale))
                self._policy_attachments[locale] = part

    @activity.defn(name="send_notice")
    async def send_notice(self, request: NoticeRequest) -> NoticeReceipt:
        customer_id = request.account.customer_id
        message_id = notice_message_id(customer_id, request.key, self._from.domain)
        fields = {"kind": str(request.kind), "key": request.key, "customer_id": customer_id}
        try:
            logged = await asyncio.to_thread(self._notice_log.find_notice, customer_id, request.key)
        except LedgerRejection as rejection:
            raise _log_refused(f"the {request.kind} notice {request.key!r} was not sent", rejection) from None
        if logged is not None:
            log.info("notice_already_sent", message_id=logged.message_id, **fields)
            return NoticeReceipt(
                key=request.key,
                kind=logged.kind,
                message_id=logged.message_id,
                sent_at=logged.sent_at,
                already_sent=True,
            )

        sent_at = datetime.now(UTC)
        try:
            message = self.compose_notice(request, sent_at)
        except ValueError as error:
            # The request lacks what the notice must say, or holds text no mail header can carry: a retry of
            # the same request fails the same way.
            raise ApplicationError(str(error), type="InvalidNotice", non_retryable=True) from None
        entry = NoticeLogEntry(
            customer_id=customer_id,
            key=request.key,
            kind=request.kind,
            message_id=message_id,
            sent_at=sent_at,
            invoice_id=_invoice_of(request),
        )

        async def log_it() -> None:
            nonlocal entry
            # Counted the moment the transport hands the message over: a retry after that finds it logged (and
            # is not counted again), unless the log itself failed and the notice really goes out once more.
            metrics.count_in_activity(metrics.NOTICES_SENT, kind=str(request.kind))
            entry = await asyncio.to_thread(self._notice_log.log_notice, entry)

        try:
            async with heartbeating():
                await self._transport.send(message, accepted=log_it)
        except MailRejected as error:
            log.warning("notice_rejected", message_id=message_id, smtp_code=error.code, **fields)
            raise ApplicationError(
                f"{error}; the {request.kind} notice {request.key!r} was not delivered",
                type="MailRejected",
                non_retryable=True,
            ) from None
        except LedgerRejection as rejection:
            # Retrying at once would send it again every attempt; the workflow tries the step again later.
            raise _log_refused(
                f"the {request.kind} notice {request.key!r} was sent but not logged", rejection
            ) from None
        log.info("notice_sent", message_id=entry.message_id, **fields)
        return NoticeReceipt(
            key=request.key,
            kind=request.kind,
            message_id=entry.message_id,
            sent_at=entry.sent_at,
            already_sent=False,
        )

    def compose_notice(self, request: NoticeRequest, sent_at: datetime) -> EmailMessage:
        """The finished message for `request` as `send_notice` sends it (also what `notices preview` writes).

        Raises `ValueError` when the request lacks what its notice must say."""
        recipient = self._recipient(request)
        message_id = notice_message_id(request.account.customer_id, request.key, self._from.domain)
        locale = request.account.locale
        attachment = self._policy_attachments.get(locale) if request.kind is NoticeKind.INVOICE else None
        rendered = self._renderer.render(
            request,
            sender_name=self._from.display_name,
            branding=self._branding,
            policy_attachment=policy_attachment_name(locale) if attachment else None,
        )
        message = self._compose(request, rendered, recipient, message_id, sent_at)
        if attachment is not None:
            if message.get_content_type() != "multipart/mixed":
                message.make_mixed()
            # A shallow copy: the generator sets a part's policy while it writes it, the part itself is shared.
            message.attach(copy.copy(attachment))
        if request.escalation_case is not None:
            # The case as data too, so the desk (or a tool) can paste or import it exactly.
            case = request.escalation_case
            message.add_attachment(
                case.model_dump_json(indent=2).encode("utf-8"),
                maintype="application",
                subtype="json",
                filename=f"escalation-case-{case.dispute_id}.json",
            )
        return message

    def _recipient(self, request: NoticeRequest) -> Address:
        if request.kind in CUSTOMER_NOTICE_KINDS:
            try:
                return _address(request.account.name, request.account.email, "the customer's email")
            except ValueError as error:
                raise ApplicationError(str(error), type="InvalidRecipient", non_retryable=True) from None
        setting, address = {
            NoticeKind.ESCALATION_CASE: ("BILLING_ESCALATION_EMAIL", self._escalation),
            NoticeKind.PARTNER_PAYABLE: ("BILLING_FINANCE_EMAIL", self._finance),
        }[request.kind]
        if address is None:
            raise ApplicationError(
                f"cannot send the {request.kind} notice {request.key!r}: {setting} is not set",
                type="MailerNotConfigured",
                non_retryable=True,
            )
        return address

    def _compose(
        self,
        request: NoticeRequest,
        rendered: RenderedNotice,
        recipient: Address,
        message_id: str,
        sent_at: datetime,
    ) -> EmailMessage:
        message = EmailMessage(policy=NOTICE_POLICY)
        message["From"] = self._from
        message["To"] = recipient
        message["Subject"] = rendered.subject
        message["Date"] = format_datetime(sent_at)
        message["Message-ID"] = message_id
        message["Content-Language"] = rendered.locale
        message["Auto-Submitted"] = "auto-generated"
        message["X-Billing-Notice"] = str(request.kind)
        message["X-Billing-Customer"] = request.account.customer_id
        message.set_content(rendered.text, charset="utf-8")
        message.add_alternative(rendered.html, subtype="html", charset="utf-8")
        return message


def _log_refused(what: str, rejection: LedgerRejection) -> ApplicationError:
    """The notice log (the ledger) refusing a value it cannot store: an answer, the same on every attempt."""
    return ApplicationError(f"{what}: {rejection}", rejection.code, type="LedgerRejection", non_retryable=True)


def _invoice_of(request: NoticeRequest) -> str | None:
    if request.dispute is not None:
        return request.dispute.invoice_id
    return request.invoices[0].invoice_id if len(request.invoices) == 1 else None
