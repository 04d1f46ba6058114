"""The mailer activity against a real SMTP server (aiosmtpd), an outbox folder and the ledger's notice log."""

from __future__ import annotations

import asyncio
import re
import socket
from datetime import UTC, date, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import structlog
from sqlalchemy import URL
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.mailer import MailDeferred, MailerActivities, OutboxTransport, SmtpTransport
from billing.ledger import LedgerStore
from billing.ledger_messages import InvoiceBalance, NoticeLogEntry
from billing.models import CustomerAccount, NextActionKind, NoticeKind
from billing.notice_request import NoticeDispute, NoticeNextStep, NoticeRequest
from tests.builders import cny
from tests.conftest import SmtpSink, _LoopbackController

MAIL_FROM = "Fabrikam 账务部 <billing@partner.example.cn>"
ESCALATION_DESK = "Escalation desk <desk@partner.example.cn>"
FINANCE = "finance@partner.example.cn"
CUSTOMER_EMAIL = "ap@contoso.example.cn"
CUSTOMER_NAME = "康托索（北京）科技有限公司"
MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}@partner\.example\.cn>$")


def request(kind: NoticeKind = NoticeKind.REMINDER, key: str = "reminder-1-INV-1", **changes: object) -> NoticeRequest:
    due_on = date(2026, 11, 24)
    fields: dict[str, object] = {
        "key": key,
        "kind": kind,
        "account": CustomerAccount(customer_id="C-42", name=CUSTOMER_NAME, email=CUSTOMER_EMAIL),
        "workflow_id": "customer-billing-C-42",
        "invoices": [
            InvoiceBalance(
                invoice_id="INV-1",
                amount=cny("1234.50"),
                paid=cny("0"),
                credited=cny("0"),
                written_off=cny("0"),
                outstanding=cny("1234.50"),
                issued_on=date(2026, 10, 25),
                due_on=due_on,
                due_at=datetime(2026, 11, 24, 23, 59, 59, tzinfo=timezone(timedelta(hours=8))),
            )
        ],
        "amount_due": cny("1234.50"),
        "overdue_amount": cny("1234.50"),
        "next_step": NoticeNextStep(kind=NextActionKind.SUSPENSION, on=date(2026, 12, 15)),
    }
    if kind is NoticeKind.ESCALATION_CASE:
        fields["dispute"] = NoticeDispute(
            dispute_id="D-1", invoice_id="INV-1", reason="licence count is wrong", amount=cny("234.50")
        )
    fields.update(changes)
    return NoticeRequest.model_validate(fields)


@pytest.fixture
def smtp(smtp_sink: SmtpSink) -> SmtpTransport:
    return SmtpTransport(smtp_sink.host, smtp_sink.port, starttls=False, timeout=5)


def mailer(transport: SmtpTransport | OutboxTransport, notice_log: LedgerStore) -> MailerActivities:
    return MailerActivities(transport, notice_log, MAIL_FROM, ESCALATION_DESK, FINANCE)


def parts(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}  # type: ignore[attr-defined]


async def test_notice_reaches_the_customer_with_billing_headers_and_both_parts(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    receipt = await mailer(smtp, sqlite_ledger).send_notice(request())

    [delivery] = smtp_sink.deliveries
    message = delivery.message
    assert delivery.rcpt_tos == [CUSTOMER_EMAIL]
    assert delivery.mail_from == "billing@partner.example.cn"
    assert message["To"].addresses[0].addr_spec == CUSTOMER_EMAIL
    assert message["To"].addresses[0].display_name == CUSTOMER_NAME
    assert message["From"].addresses[0].display_name == "Fabrikam 账务部"
    assert message["X-Billing-Notice"] == "reminder"
    assert message["X-Billing-Customer"] == "C-42"
    assert MESSAGE_ID.match(message["Message-ID"])
    assert message["Date"].datetime == receipt.sent_at.replace(microsecond=0)
    assert message["Subject"] == "付款提醒：¥1,234.50 已逾期未付"
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)["text/plain"], parts(message)["text/html"]
    assert "2026年12月15日" in text and "2026年12月15日" in html
    assert all(part.get_content_charset() == "utf-8" for part in message.iter_parts())  # type: ignore[attr-defined]

    assert receipt.message_id == message["Message-ID"]
    assert receipt.already_sent is False
    logged = sqlite_ledger.find_notice("C-42", "reminder-1-INV-1")
    assert logged is not None
    assert logged.message_id == receipt.message_id
    assert logged.kind is NoticeKind.REMINDER
    assert logged.invoice_id == "INV-1"


async def test_every_attempt_of_a_notice_carries_the_same_message_id_and_headers(
    smtp_sink: SmtpSink, smtp: SmtpTransport, tmp_path: Path
) -> None:
    # Two ledgers: the second attempt does not know of the first, as after a crash between sending and logging
    first_log = LedgerStore.from_url(f"sqlite:///{tmp_path}/first.db")
    second_log = LedgerStore.from_url(f"sqlite:///{tmp_path}/second.db")
    try:
        await mailer(smtp, first_log).send_notice(request())
        await mailer(smtp, second_log).send_notice(request())
        await mailer(smtp, second_log).send_notice(request(key="reminder-2-INV-1"))
    finally:
        first_log.close()
        second_log.close()

    first, retry, next_rung = smtp_sink.messages
    for header in ("Message-ID", "X-Billing-Notice", "X-Billing-Customer", "Subject", "To", "From"):
        assert first[header] == retry[header]
    assert next_rung["Message-ID"] != first["Message-ID"]


async def test_a_notice_already_logged_is_not_sent_again(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    activities = mailer(smtp, sqlite_ledger)
    first = await activities.send_notice(request())

    again = await activities.send_notice(request())

    assert len(smtp_sink.deliveries) == 1
    assert again.already_sent is True
    assert (again.message_id, again.sent_at) == (first.message_id, first.sent_at)


async def test_a_notice_logged_by_another_worker_is_not_sent(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    sent_at = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    sqlite_ledger.log_notice(
        NoticeLogEntry(
            customer_id="C-42",
            key="reminder-1-INV-1",
            kind=NoticeKind.REMINDER,
            message_id="<logged@partner.example.cn>",
            sent_at=sent_at,
        )
    )

    receipt = await mailer(smtp, sqlite_ledger).send_notice(request())

    assert smtp_sink.deliveries == []
    assert receipt.already_sent is True
    assert receipt.message_id == "<logged@partner.example.cn>"
    assert receipt.sent_at == sent_at


async def test_escalation_case_goes_to_the_escalation_desk_not_the_customer(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    await mailer(smtp, sqlite_ledger).send_notice(request(NoticeKind.ESCALATION_CASE, key="escalation-D-1"))

    [delivery] = smtp_sink.deliveries
    assert delivery.rcpt_tos == ["desk@partner.example.cn"]
    assert delivery.message["X-Billing-Notice"] == "escalation_case"
    assert delivery.message["X-Billing-Customer"] == "C-42"
    assert CUSTOMER_EMAIL in parts(delivery.message)["text/plain"]  # the desk needs the customer's contact
    logged = sqlite_ledger.find_notice("C-42", "escalation-D-1")
    assert logged is not None and logged.invoice_id == "INV-1"


async def test_partner_payable_goes_to_the_finance_team(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    await mailer(smtp, sqlite_ledger).send_notice(request(NoticeKind.PARTNER_PAYABLE, key="payable-21V-1"))

    [delivery] = smtp_sink.deliveries
    assert delivery.rcpt_tos == [FINANCE]
    assert delivery.message["X-Billing-Notice"] == "partner_payable"


@pytest.mark.parametrize(
    ("kind", "setting"),
    [
        (NoticeKind.ESCALATION_CASE, "BILLING_ESCALATION_EMAIL"),
        (NoticeKind.PARTNER_PAYABLE, "BILLING_FINANCE_EMAIL"),
    ],
)
async def test_a_staff_notice_without_its_address_fails_for_good_naming_the_setting(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore, kind: NoticeKind, setting: str
) -> None:
    activities = MailerActivities(smtp, sqlite_ledger, MAIL_FROM, escalation_email=None, finance_email=None)

    with pytest.raises(ApplicationError) as failure:
        await activities.send_notice(request(kind, key="staff-1"))

    assert failure.value.non_retryable
    assert failure.value.type == "MailerNotConfigured"
    assert setting in str(failure.value)
    assert smtp_sink.deliveries == []
    assert sqlite_ledger.find_notice("C-42", "staff-1") is None


async def test_permanent_refusal_of_the_recipient_is_not_retried_and_not_logged(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    smtp_sink.refuse[CUSTOMER_EMAIL] = "550 5.1.1 <ap@contoso.example.cn>: mailbox unavailable"

    with pytest.raises(ApplicationError) as failure:
        await mailer(smtp, sqlite_ledger).send_notice(request())

    assert failure.value.type == "MailRejected"
    assert failure.value.non_retryable
    assert "550" in str(failure.value)
    assert CUSTOMER_EMAIL not in str(failure.value)  # failures are logged by the worker: no addresses
    assert sqlite_ledger.find_notice("C-42", "reminder-1-INV-1") is None


async def test_temporary_refusal_raises_for_temporal_to_retry(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    smtp_sink.refuse[CUSTOMER_EMAIL] = "451 4.3.0 <ap@contoso.example.cn>: try again later"

    with pytest.raises(MailDeferred) as failure:
        await mailer(smtp, sqlite_ledger).send_notice(request())

    assert failure.value.code == 451
    assert CUSTOMER_EMAIL not in str(failure.value)
    assert sqlite_ledger.find_notice("C-42", "reminder-1-INV-1") is None

    smtp_sink.refuse.clear()  # the retry, once the server accepts again
    receipt = await mailer(smtp, sqlite_ledger).send_notice(request())
    assert receipt.already_sent is False
    assert len(smtp_sink.deliveries) == 1


async def test_a_sender_refused_for_good_is_not_retried_and_one_refused_for_now_is(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    smtp_sink.refuse_sender = "553 5.7.1 <billing@partner.example.cn>: sender address rejected"

    with pytest.raises(ApplicationError) as failure:
        await mailer(smtp, sqlite_ledger).send_notice(request())

    assert (failure.value.type, failure.value.non_retryable) == ("MailRejected", True)
    assert "the mail server refused the sender for good (SMTP 553)" in str(failure.value)

    smtp_sink.refuse_sender = "451 4.7.1 greylisted, try again later"
    with pytest.raises(MailDeferred, match=r"deferred the sender \(SMTP 451\)"):
        await mailer(smtp, sqlite_ledger).send_notice(request())
    assert smtp_sink.deliveries == []
    assert sqlite_ledger.find_notice("C-42", "reminder-1-INV-1") is None


async def test_a_login_refused_for_good_is_not_retried_and_names_no_password(
    smtp_sink: SmtpSink, sqlite_ledger: LedgerStore
) -> None:
    username, _ = smtp_sink.credentials
    transport = SmtpTransport(smtp_sink.host, smtp_sink.port, username=username, password="wrong-4a1e", starttls=False)

    with pytest.raises(ApplicationError) as failure:
        await mailer(transport, sqlite_ledger).send_notice(request())

    assert (failure.value.type, failure.value.non_retryable) == ("MailRejected", True)
    assert "refused the login for good (SMTP 535)" in str(failure.value)
    assert "wrong-4a1e" not in str(failure.value)
    assert smtp_sink.deliveries == []


@pytest.mark.postgres
async def test_a_notice_the_notice_log_cannot_store_is_refused_for_good_and_not_sent(
    smtp_sink: SmtpSink, smtp: SmtpTransport, postgres_schema_url: URL
) -> None:
    notice_log = LedgerStore.from_url(postgres_schema_url)
    try:
        with pytest.raises(ApplicationError) as failure:
            # A NUL byte PostgreSQL cannot hold, say in an id Partner Center sent: the lookup is refused.
            await mailer(smtp, notice_log).send_notice(request(key="partner-payable/VI-1\x00/before"))
    finally:
        notice_log.close()

    assert (failure.value.type, failure.value.non_retryable) == ("LedgerRejection", True)
    assert "was not sent: the ledger cannot look this up" in str(failure.value)
    assert smtp_sink.deliveries == []


@pytest.mark.postgres
async def test_a_notice_sent_but_refused_by_the_notice_log_is_not_retried_at_once(
    tmp_path: Path, postgres_schema_url: URL
) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")
    notice = request()
    notice = notice.model_copy(update={"invoices": [notice.invoices[0].model_copy(update={"invoice_id": "INV-1\x00"})]})
    notice_log = LedgerStore.from_url(postgres_schema_url)
    try:
        with pytest.raises(ApplicationError) as failure:
            await mailer(outbox, notice_log).send_notice(notice)
    finally:
        notice_log.close()

    # Each immediate retry would send it again (nothing was logged): the workflow tries the step again later.
    assert (failure.value.type, failure.value.non_retryable) == ("LedgerRejection", True)
    assert "was sent but not logged: the ledger cannot store this in notice_log" in str(failure.value)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


async def test_an_unreachable_mail_server_raises_for_temporal_to_retry(sqlite_ledger: LedgerStore) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    transport = SmtpTransport("127.0.0.1", closed_port, starttls=False, timeout=2)

    with pytest.raises(aiosmtplib.SMTPConnectError):
        await mailer(transport, sqlite_ledger).send_notice(request())

    assert sqlite_ledger.find_notice("C-42", "reminder-1-INV-1") is None


async def test_starttls_off_delivers_to_a_server_without_tls(smtp_sink: SmtpSink, sqlite_ledger: LedgerStore) -> None:
    transport = SmtpTransport(smtp_sink.host, smtp_sink.port, starttls=False)

    await mailer(transport, sqlite_ledger).send_notice(request())

    assert len(smtp_sink.deliveries) == 1


async def test_required_starttls_refuses_a_server_without_tls_and_retries(
    smtp_sink: SmtpSink, sqlite_ledger: LedgerStore
) -> None:
    transport = SmtpTransport(smtp_sink.host, smtp_sink.port, starttls=True, timeout=5)

    with pytest.raises(aiosmtplib.SMTPException) as failure:
        await mailer(transport, sqlite_ledger).send_notice(request())

    assert not isinstance(failure.value, ApplicationError)
    assert smtp_sink.deliveries == []


async def test_smtp_login_uses_the_configured_username_and_password(
    smtp_sink: SmtpSink, sqlite_ledger: LedgerStore
) -> None:
    username, password = smtp_sink.credentials
    transport = SmtpTransport(smtp_sink.host, smtp_sink.port, username=username, password=password, starttls=False)

    await mailer(transport, sqlite_ledger).send_notice(request())

    assert smtp_sink.logins == [username]
    assert len(smtp_sink.deliveries) == 1


def test_username_without_password_is_refused() -> None:
    with pytest.raises(ValueError, match="username and password"):
        SmtpTransport("smtp.example.cn", username="billing")


async def test_outbox_writes_one_parseable_eml_per_message_named_after_its_message_id(
    tmp_path: Path, sqlite_ledger: LedgerStore
) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")

    receipt = await mailer(outbox, sqlite_ledger).send_notice(request())

    [written] = list((tmp_path / "outbox").iterdir())
    assert written == outbox.path_for(receipt.message_id)
    assert written.name == receipt.message_id.strip("<>") + ".eml"
    message = BytesParser(policy=policy.default).parsebytes(written.read_bytes())
    assert isinstance(message, EmailMessage)
    assert message["Message-ID"] == receipt.message_id
    assert message["X-Billing-Notice"] == "reminder"
    assert message["To"].addresses[0].addr_spec == CUSTOMER_EMAIL
    assert "¥1,234.50" in parts(message)["text/plain"]
    assert "¥1,234.50" in parts(message)["text/html"]


async def test_outbox_retry_of_the_same_notice_replaces_its_file(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")
    first_log = LedgerStore.from_url(f"sqlite:///{tmp_path}/first.db")
    second_log = LedgerStore.from_url(f"sqlite:///{tmp_path}/second.db")
    try:
        await mailer(outbox, first_log).send_notice(request())
        await mailer(outbox, second_log).send_notice(request())
    finally:
        first_log.close()
        second_log.close()

    assert len(list((tmp_path / "outbox").iterdir())) == 1  # one file, no temporary leftovers


async def test_send_notice_runs_as_a_temporal_activity(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    receipt = await ActivityEnvironment().run(mailer(smtp, sqlite_ledger).send_notice, request())

    assert receipt.already_sent is False
    assert len(smtp_sink.deliveries) == 1


async def test_logs_carry_ids_never_the_customers_address_or_name(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    activities = mailer(smtp, sqlite_ledger)
    with structlog.testing.capture_logs() as logs:
        await activities.send_notice(request())
        await activities.send_notice(request())

    assert [entry["event"] for entry in logs] == ["notice_sent", "notice_already_sent"]
    for entry in logs:
        assert {"kind", "key", "message_id", "customer_id"} <= entry.keys()
        assert CUSTOMER_EMAIL not in repr(entry)
        assert CUSTOMER_NAME not in repr(entry)


async def test_the_notice_is_logged_the_moment_the_server_accepts_it_before_quit(smtp_sink: Any) -> None:
    """The crash window of a notice is as short as it can be: between the server's 250 to DATA and the notice
    log's write nothing else happens (QUIT comes after), so a kill can resend only a message whose stable
    Message-ID the receiver can drop as a repeat."""
    transport = SmtpTransport(smtp_sink.host, smtp_sink.port, starttls=False, timeout=5)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "billing@partner.example.cn", "ap@example.cn", "x"
    message["Message-ID"] = "<crash-window@partner.example.cn>"
    message.set_content("x")

    async def logged() -> None:
        smtp_sink.events.append("logged")

    await transport.send(message, accepted=logged)
    assert smtp_sink.events == ["accepted", "logged"]  # the connection stays open for the next notice

    await transport.aclose()
    assert smtp_sink.events == ["accepted", "logged", "quit"]


def start_sink(sink: SmtpSink) -> _LoopbackController:
    controller = _LoopbackController(sink, hostname=sink.host, port=sink.port, auth_require_tls=False)
    controller.start()
    sink.port = controller.port
    return controller


async def test_several_notices_go_over_one_connection(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    activities = mailer(smtp, sqlite_ledger)
    for n in range(3):
        await activities.send_notice(request(key=f"reminder-{n}-INV-1"))

    assert len(smtp_sink.deliveries) == 3
    assert len(set(smtp_sink.peers)) == 1  # one client port: one connection, greeted once
    assert "quit" not in smtp_sink.events


async def test_notices_sent_at_once_share_at_most_the_pools_connections(
    smtp_sink: SmtpSink, sqlite_ledger: LedgerStore
) -> None:
    transport = SmtpTransport(smtp_sink.host, smtp_sink.port, starttls=False, timeout=5, pool_size=2)
    activities = mailer(transport, sqlite_ledger)

    await asyncio.gather(*(activities.send_notice(request(key=f"reminder-{n}-INV-1")) for n in range(6)))

    assert len(smtp_sink.deliveries) == 6
    assert len(set(smtp_sink.peers)) <= 2


async def test_a_connection_the_server_closed_is_replaced_and_the_notice_goes_once(
    sqlite_ledger: LedgerStore,
) -> None:
    sink = SmtpSink()
    controller = start_sink(sink)
    transport = SmtpTransport(sink.host, sink.port, starttls=False, timeout=5)
    activities = mailer(transport, sqlite_ledger)
    try:
        await activities.send_notice(request(key="reminder-1-INV-1"))
        # The server goes away and comes back on the same port: the connection the transport kept is dead.
        controller.stop()
        controller = start_sink(sink)

        receipt = await activities.send_notice(request(key="reminder-2-INV-1"))
    finally:
        controller.stop()

    assert receipt.already_sent is False
    message_ids = [str(message["Message-ID"]) for message in sink.messages]
    assert len(message_ids) == 2 and len(set(message_ids)) == 2  # each notice once
    assert len(set(sink.peers)) == 2  # the second over a new connection


async def test_a_refusal_for_good_leaves_the_connection_usable_for_the_next_notice(
    smtp_sink: SmtpSink, smtp: SmtpTransport, sqlite_ledger: LedgerStore
) -> None:
    activities = mailer(smtp, sqlite_ledger)
    await activities.send_notice(request(key="reminder-1-INV-1"))
    smtp_sink.refuse[CUSTOMER_EMAIL] = "550 5.1.1 <ap@contoso.example.cn>: mailbox unavailable"
    with pytest.raises(ApplicationError) as failure:
        await activities.send_notice(request(key="reminder-2-INV-1"))
    assert failure.value.type == "MailRejected"

    smtp_sink.refuse.clear()
    await activities.send_notice(request(key="reminder-3-INV-1"))

    assert len(smtp_sink.deliveries) == 2
    assert len(set(smtp_sink.peers)) == 1
