"""Shared fixtures: a ledger on a real SQLite file, the real PostgreSQL test server (skipped if absent), the
local Partner Center emulator and an SMTP sink."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from billing.devtools.partner_center_emulator import PartnerCenterEmulator
from billing.ledger import LedgerStore

POSTGRES_URL = os.environ.get("BILLING_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> URL:
    """The PostgreSQL test server; unreachable, its tests skip, or fail when BILLING_REQUIRE_POSTGRES=1."""
    url = make_url(POSTGRES_URL)
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        reason = f"PostgreSQL at {url.render_as_string()} is unreachable ({error.orig})"
        if os.environ.get("BILLING_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}, and BILLING_REQUIRE_POSTGRES=1 requires it")
        pytest.skip(f"{reason}; set BILLING_TEST_POSTGRES_URL to run these tests")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres_schema_url(postgres_url: URL) -> Iterator[URL]:
    """A URL whose connections work in a schema of their own, dropped afterwards, so that tests and
    parallel test sessions never see each other's tables."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield postgres_url.update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[LedgerStore]:
    """A migrated ledger in a fresh SQLite file."""
    store = LedgerStore.from_url(f"sqlite:///{tmp_path}/ledger.db")
    yield store
    store.close()


@pytest.fixture
def partner_center_emulator() -> Iterator[PartnerCenterEmulator]:
    """The Partner Center emulator on a free loopback port, fresh for each test."""
    with PartnerCenterEmulator() as emulator:
        yield emulator


@dataclass(frozen=True)
class Delivery:
    """One message as the SMTP sink received it: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) on a loopback port that keeps every message it accepts.

    `refuse` maps a recipient address to the reply RCPT gets instead of 250 (e.g. "550 5.1.1 no such user");
    `refuse_sender`, when set, is the reply MAIL FROM gets. AUTH is offered without TLS and accepts
    `credentials`; logins are recorded in `logins`.
    """

    host: str = "127.0.0.1"
    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    refuse_sender: str | None = None
    credentials: tuple[str, str] = ("billing", "sink-password")
    logins: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # "accepted" per message, "quit" per session, in order
    peers: list[Any] = field(default_factory=list)  # the client's (host, port) per message: a port per connection

    @property
    def messages(self) -> list[EmailMessage]:
        return [delivery.message for delivery in self.deliveries]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.refuse_sender is not None:
            return self.refuse_sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.refuse.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        self.deliveries.append(Delivery(str(envelope.mail_from), list(envelope.rcpt_tos), message))
        self.peers.append(session.peer)
        self.events.append("accepted")
        return "250 OK: queued"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.events.append("quit")
        return "221 Bye"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if (login, password) == self.credentials:
                self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class _LoopbackController(Controller):
    """Binds port 0 and reads back the port the system chose, so parallel sinks never collide."""

    def _create_server(self) -> Any:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server: asyncio.AbstractServer = await super()._create_server()
        self.port = server.sockets[0].getsockname()[1]
        return server


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """An SMTP server without TLS on a free loopback port, collecting what it receives (fresh per test)."""
    sink = SmtpSink()
    controller = _LoopbackController(
        sink,
        hostname=sink.host,
        port=0,
        authenticator=sink.authenticate,
        auth_require_tls=False,
        enable_SMTPUTF8=True,
    )
    controller.start()
    sink.port = controller.port
    try:
        yield sink
    finally:
        controller.stop()


# Temporal fixtures live in their own modules; importing them here makes them visible to every test.
from tests.devserver_fixtures import billing_worker_process, dev_server  # noqa: E402, F401
from tests.temporal_fixtures import engine_factory, own_time_skipping_env, time_skipping_env  # noqa: E402, F401
