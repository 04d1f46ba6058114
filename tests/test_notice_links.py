"""Pay and dispute links in customer notices: signed so a link works only for its customer, invoice and purpose
and only until it expires; in every notice kind that names an invoice, in both languages and both parts; the
same text on every attempt; the settings that turn them on; and the portal's side as docs/integration.md
writes it."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from activities.mailer import MailerActivities, OutboxTransport
from billing.ledger_messages import NoticeLogEntry
from billing.lifecycle import notice
from billing.lifecycle.next_step import decide
from billing.models import CUSTOMER_NOTICE_KINDS, CustomerAccount, Locale, NoticeKind
from billing.notice_links import (
    NoticeLinks,
    Purpose,
    check_template,
    expiry,
    link,
    sign,
    signed_text,
    verify,
)
from billing.notice_request import NoticeRequest
from billing.notices import NoticeRenderer, render_notice
from billing.notices.preview import sample_request
from billing.policy import CollectionsPolicy
from billing.settings import (
    ENVIRONMENT_NAMES,
    SettingsError,
    document_settings_from_environment,
    settings_from_environment,
)
from cli import main as starter
from tests.core_driver import CoreDriver, cny, days

LOCALES: tuple[Locale, ...] = ("zh-CN", "en-US")
SHANGHAI = ZoneInfo("Asia/Shanghai")
SECRET = "test-secret-0123456789-abcdefghijklmnop"
PAY = "https://pay.partner.example.cn/pay?invoice={invoice_id}&customer={customer_id}&expires={expires}&sig={signature}"
DISPUTE = "https://portal.partner.example.cn/dispute?i={invoice_id}&c={customer_id}&e={expires}&s={signature}"
LINKS = NoticeLinks(secret=SECRET, pay_template=PAY, dispute_template=DISPUTE)
NOTICE_AT = datetime(2026, 12, 28, 9, 0, tzinfo=SHANGHAI)
EXPIRES = expiry(NOTICE_AT, timedelta(days=60))
ISSUED_ON = date(2026, 11, 24)
# The notices that name invoices the customer may still pay or question: both links.
DUNNING_KINDS = [
    NoticeKind.INVOICE,
    NoticeKind.REMINDER,
    NoticeKind.FINAL_NOTICE,
    NoticeKind.SUSPENSION,
    NoticeKind.DATA_DELETION_WARNING,
]
URL = re.compile(r"https://[^\s\"<]+")
PARTNER_CENTER = {
    "BILLING_PARTNER_CENTER_TOKEN_URL": "https://login.partner.microsoftonline.cn/t/oauth2/token",
    "BILLING_PARTNER_CENTER_CLIENT_ID": "id",
    "BILLING_PARTNER_CENTER_CLIENT_SECRET": "secret",
}
LINK_ENVIRONMENT = {
    "BILLING_PAY_URL_TEMPLATE": PAY,
    "BILLING_DISPUTE_URL_TEMPLATE": DISPUTE,
    "BILLING_LINK_SECRET": SECRET,
}


def values_of(url: str) -> dict[str, str]:
    """The four values of one of this file's templates, decoded as the portal's web framework decodes them."""
    query = {name: values[0] for name, values in parse_qs(urlsplit(url).query, strict_parsing=True).items()}
    if "invoice" in query:
        return {
            "invoice_id": query["invoice"],
            "customer_id": query["customer"],
            "expires": query["expires"],
            "signature": query["sig"],
        }
    return {"invoice_id": query["i"], "customer_id": query["c"], "expires": query["e"], "signature": query["s"]}


def checks(url: str, purpose: Purpose, now: datetime = NOTICE_AT) -> bool:
    return verify(SECRET, purpose, now=now, **values_of(url))


def request_at(kind: NoticeKind, locale: Locale, at: datetime | None = NOTICE_AT) -> NoticeRequest:
    return sample_request(kind, locale, CollectionsPolicy(), ISSUED_ON).model_copy(update={"at": at})


def links_in(text: str) -> list[str]:
    """This file's pay and dispute links in a text or HTML part."""
    portals = ("https://pay.partner.example.cn/", "https://portal.partner.example.cn/")
    return [html.unescape(url) for url in URL.findall(text) if url.startswith(portals)]


def pay_links(text: str) -> list[str]:
    return [url for url in links_in(text) if url.startswith("https://pay.")]


def dispute_links(text: str) -> list[str]:
    return [url for url in links_in(text) if url.startswith("https://portal.")]


# --- signing and checking ------------------------------------------------------------------------------------


def test_a_link_fills_the_template_with_percent_encoded_values_the_portal_decodes_back() -> None:
    invoice_id = "INV/2026/十二月 0042&x=1#a"

    url = link(PAY, SECRET, "pay", "C-10/01", invoice_id, EXPIRES)

    assert url.startswith("https://pay.partner.example.cn/pay?invoice=INV%2F2026%2F%E5%8D%81%E4%BA%8C%E6%9C%88%200042")
    assert "#" not in url and " " not in url
    assert values_of(url) == {
        "invoice_id": invoice_id,
        "customer_id": "C-10/01",
        "expires": str(EXPIRES),
        "signature": sign(SECRET, "pay", "C-10/01", invoice_id, EXPIRES),
    }
    assert checks(url, "pay")


def test_the_signature_covers_version_purpose_customer_invoice_and_expiry_as_five_lines() -> None:
    assert signed_text("dispute", "C-1", "INV-1", 1803603600) == b"billing-link-v1\ndispute\nC-1\nINV-1\n1803603600"
    signature = sign(SECRET, "pay", "C-1", "INV-1", 1803603600)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", signature)


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("another customer", {"customer_id": "C-1002"}),
        ("another invoice", {"invoice_id": "INV-202611-0043"}),
        ("a later expiry", {"expires": str(EXPIRES + 86_400)}),
        ("a changed signature", {"signature": "A" * 43}),
        ("a truncated signature", {"signature": sign(SECRET, "pay", "C-1001", "INV-202611-0042", EXPIRES)[:-1]}),
        ("an expiry that is no number", {"expires": "１８０３６０３６００"}),
    ],
)
def test_a_changed_link_is_refused(what: str, change: dict[str, str]) -> None:
    values = values_of(link(PAY, SECRET, "pay", "C-1001", "INV-202611-0042", EXPIRES))
    assert verify(SECRET, "pay", now=NOTICE_AT, **values)

    assert not verify(SECRET, "pay", now=NOTICE_AT, **(values | change)), what


def test_a_pay_link_does_not_open_the_dispute_page_nor_the_other_way_round() -> None:
    pay = values_of(link(PAY, SECRET, "pay", "C-1001", "INV-1", EXPIRES))
    dispute = values_of(link(DISPUTE, SECRET, "dispute", "C-1001", "INV-1", EXPIRES))

    assert not verify(SECRET, "dispute", now=NOTICE_AT, **pay)
    assert not verify(SECRET, "pay", now=NOTICE_AT, **dispute)
    assert verify(SECRET, "dispute", now=NOTICE_AT, **dispute)


def test_a_link_signed_with_another_secret_is_refused() -> None:
    url = link(PAY, "another-secret-of-the-same-length-0123456", "pay", "C-1001", "INV-1", EXPIRES)

    assert not checks(url, "pay")


def test_a_link_works_until_it_expires_and_not_from_that_second_on() -> None:
    url = link(PAY, SECRET, "pay", "C-1001", "INV-1", EXPIRES)
    expires_at = datetime.fromtimestamp(EXPIRES, UTC)

    assert checks(url, "pay", now=expires_at - timedelta(seconds=1))
    assert not checks(url, "pay", now=expires_at)
    assert not checks(url, "pay", now=expires_at + timedelta(days=1))


def test_the_expiry_counts_from_the_notices_time_in_whole_seconds() -> None:
    at = datetime(2026, 12, 28, 9, 0, 0, 999_999, tzinfo=SHANGHAI)

    assert expiry(at, timedelta(days=60)) == int(datetime(2027, 2, 26, 1, 0, tzinfo=UTC).timestamp())
    with pytest.raises(ValueError, match="time zone"):
        expiry(datetime(2026, 12, 28, 9, 0), timedelta(days=60))


def test_an_id_with_a_line_break_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="one non-empty line"):
        sign(SECRET, "pay", "C-1001", "INV-1\npay", EXPIRES)


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("https://p.example.cn/pay?i={invoice}&c={customer_id}&e={expires}&s={signature}", "{invoice}"),
        ("https://p.example.cn/pay?i={invoice_id!r}&c={customer_id}&e={expires}&s={signature}", "{invoice_id}"),
        ("https://p.example.cn/pay?i={invoice_id}&c={customer_id}", "lacks {expires}, {signature}"),
        ("https://p.example.cn/pay?i={invoice_id}&c={customer_id}&e={expires}&s={signature", "unmatched"),
        ("http://p.example.cn/pay?i={invoice_id}&c={customer_id}&e={expires}&s={signature}", "https://"),
        ("javascript:alert('{invoice_id}{customer_id}{expires}{signature}')", "portal's address"),
        ("https://{customer_id}.example.cn/pay?i={invoice_id}&e={expires}&s={signature}", "portal's address"),
        ("https://p.example.cn/pay?i={invoice_id} &c={customer_id}&e={expires}&s={signature}", "without spaces"),
    ],
)
def test_a_bad_template_is_refused_with_what_is_wrong(template: str, complaint: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_template(template)

    assert complaint in str(refused.value)


def test_a_local_portal_may_use_plain_http() -> None:
    for host in ("localhost:8080", "127.0.0.1"):
        template = f"http://{host}/pay?i={{invoice_id}}&c={{customer_id}}&e={{expires}}&s={{signature}}"
        assert check_template(template) == template


# --- in the notices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", DUNNING_KINDS)
def test_every_notice_naming_an_invoice_carries_a_valid_pay_and_dispute_link_in_both_parts(
    kind: NoticeKind, locale: Locale
) -> None:
    request = request_at(kind, locale)
    (invoice,) = request.invoices

    rendered = render_notice(request, links=LINKS)

    for part in (rendered.text, rendered.html):
        (pay,) = pay_links(part)
        (dispute,) = dispute_links(part)
        assert values_of(pay)["invoice_id"] == values_of(dispute)["invoice_id"] == invoice.invoice_id
        assert values_of(pay)["customer_id"] == request.account.customer_id
        assert checks(pay, "pay") and checks(dispute, "dispute")
        assert ("2027年2月26日 09:00" if locale == "zh-CN" else "26 Feb 2027 09:00") in part  # valid until
    assert f'href="{html.escape(pay_links(rendered.html)[0])}"' in rendered.html


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", [NoticeKind.DISPUTE_RECEIVED, NoticeKind.DISPUTE_RESOLVED])
def test_dispute_notices_carry_the_pay_link_while_money_is_owed_and_no_second_dispute_link(
    kind: NoticeKind, locale: Locale
) -> None:
    rendered = render_notice(request_at(kind, locale), links=LINKS)

    for part in (rendered.text, rendered.html):
        (pay,) = pay_links(part)
        assert checks(pay, "pay")
        assert dispute_links(part) == []


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", [NoticeKind.CLOSE_THE_LOOP, NoticeKind.ESCALATION_CASE, NoticeKind.PARTNER_PAYABLE])
def test_notices_with_nothing_to_pay_or_for_staff_carry_no_link(kind: NoticeKind, locale: Locale) -> None:
    request = request_at(kind, locale)

    rendered = render_notice(request, links=LINKS)

    assert rendered == render_notice(request)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", list(NoticeKind))
def test_without_link_settings_or_the_notices_time_every_notice_reads_as_before(
    kind: NoticeKind, locale: Locale
) -> None:
    unconfigured = render_notice(request_at(kind, locale))
    # Requests made before notices carried their time: nothing to count an expiry from, so no link.
    from_before = render_notice(request_at(kind, locale, at=None), links=LINKS)

    assert from_before == unconfigured
    assert links_in(unconfigured.text + unconfigured.html) == []


def test_only_the_configured_link_appears() -> None:
    request = request_at(NoticeKind.REMINDER, "en-US")

    pay_only = render_notice(request, links=NoticeLinks(secret=SECRET, pay_template=PAY))
    dispute_only = render_notice(request, links=NoticeLinks(secret=SECRET, dispute_template=DISPUTE))

    assert len(pay_links(pay_only.text)) == 1 and dispute_links(pay_only.text) == []
    assert pay_links(dispute_only.text) == [] and len(dispute_links(dispute_only.text)) == 1


@pytest.mark.parametrize("locale", LOCALES)
def test_several_invoices_get_a_link_each_and_only_those_with_something_to_pay_a_pay_link(locale: Locale) -> None:
    request = request_at(NoticeKind.REMINDER, locale)
    (first,) = request.invoices
    settled = first.model_copy(
        update={"invoice_id": "INV/2026/十二月-0043", "paid": first.amount, "outstanding": cny("0")}
    )
    request = request.model_copy(update={"invoices": [first, settled]})

    rendered = render_notice(request, links=LINKS)

    for part in (rendered.text, rendered.html):
        assert [values_of(url)["invoice_id"] for url in pay_links(part)] == [first.invoice_id]
        assert [values_of(url)["invoice_id"] for url in dispute_links(part)] == [first.invoice_id, settled.invoice_id]
        assert all(checks(url, "dispute") for url in dispute_links(part))
    assert "INV%2F2026%2F%E5%8D%81%E4%BA%8C%E6%9C%88-0043" in rendered.text


def test_the_links_expiry_follows_the_notices_time_not_the_clock() -> None:
    request = request_at(NoticeKind.REMINDER, "en-US")
    later = request.model_copy(update={"at": NOTICE_AT + timedelta(days=1)})

    (pay,) = pay_links(render_notice(request, links=LINKS).text)
    (later_pay,) = pay_links(render_notice(later, links=LINKS).text)

    assert values_of(pay)["expires"] == str(EXPIRES)
    assert values_of(later_pay)["expires"] == str(EXPIRES + 86_400)


def test_the_validity_setting_sets_how_long_links_work() -> None:
    links = NoticeLinks(secret=SECRET, pay_template=PAY, validity=timedelta(days=7))

    (pay,) = pay_links(render_notice(request_at(NoticeKind.REMINDER, "en-US"), links=links).text)

    assert values_of(pay)["expires"] == str(expiry(NOTICE_AT, timedelta(days=7)))


def test_the_lifecycle_stamps_each_notice_with_the_workflow_time() -> None:
    d = CoreDriver(
        policy=CollectionsPolicy(),
        account=CustomerAccount(customer_id="C-1", name="Lotus Trading", email="ap@lotus.example.cn"),
        now=datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI),
    )
    d.issue("INV-1", cny("1234.50"), datetime(2026, 12, 16, 0, 0, tzinfo=SHANGHAI))
    step = decide(d.state, d.policy, d.now).step
    assert step is not None

    request = notice.notice_request(d.state, d.policy, step, d.now + days(1), "customer-billing-C-1")

    assert request.at == d.now + days(1)


class _NothingLogged:
    def find_notice(self, customer_id: str, key: str) -> NoticeLogEntry | None:
        return None

    def log_notice(self, entry: NoticeLogEntry) -> NoticeLogEntry:
        return entry


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())


@pytest.mark.parametrize("locale", LOCALES)
def test_every_attempt_at_a_notice_sends_the_same_body_with_the_same_links(tmp_path: Path, locale: Locale) -> None:
    mailer = MailerActivities(
        OutboxTransport(tmp_path), _NothingLogged(), "billing@partner.example.cn", renderer=NoticeRenderer(links=LINKS)
    )
    request = request_at(NoticeKind.FINAL_NOTICE, locale)

    # The mailer stamps each attempt with the worker's clock (the Date header); the body must not follow it.
    first = mailer.compose_notice(request, datetime(2026, 12, 28, 1, 0, tzinfo=UTC))
    retry = mailer.compose_notice(request, datetime(2027, 3, 1, 8, 30, tzinfo=UTC))

    assert first["Message-ID"] == retry["Message-ID"]
    assert body(first, "plain") == body(retry, "plain")
    assert body(first, "html") == body(retry, "html")
    assert len(pay_links(body(first, "plain"))) == 1


# --- settings ------------------------------------------------------------------------------------------------


def test_link_settings_become_the_links_notices_carry() -> None:
    settings = settings_from_environment({**PARTNER_CENTER, **LINK_ENVIRONMENT, "BILLING_LINK_VALIDITY": "P30D"})

    assert settings.notice_links() == NoticeLinks(
        secret=SECRET, pay_template=PAY, dispute_template=DISPUTE, validity=timedelta(days=30)
    )
    assert document_settings_from_environment(LINK_ENVIRONMENT).notice_links() == LINKS


def test_without_a_template_there_are_no_links_even_with_a_secret() -> None:
    assert settings_from_environment(PARTNER_CENTER).notice_links() is None
    assert settings_from_environment({**PARTNER_CENTER, "BILLING_LINK_SECRET": SECRET}).notice_links() is None


@pytest.mark.parametrize("template", ["BILLING_PAY_URL_TEMPLATE", "BILLING_DISPUTE_URL_TEMPLATE"])
def test_a_template_needs_the_secret(template: str) -> None:
    with pytest.raises(SettingsError, match=f"BILLING_LINK_SECRET is required with .*{template}"):
        settings_from_environment({**PARTNER_CENTER, template: LINK_ENVIRONMENT[template]})


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("BILLING_PAY_URL_TEMPLATE", "https://p.example.cn/pay?i={invoice_id}", "lacks {customer_id}"),
        ("BILLING_DISPUTE_URL_TEMPLATE", PAY.replace("https://", "http://"), "must be an https:// URL"),
        ("BILLING_DISPUTE_URL_TEMPLATE", PAY.replace("{expires}", "{expiry}"), "has the placeholder {expiry}"),
        ("BILLING_LINK_SECRET", "short-secret", "at least 32 characters"),
        ("BILLING_LINK_VALIDITY", "60", "not an ISO 8601 duration"),
        ("BILLING_LINK_VALIDITY", "P0D", "must be a positive ISO 8601 duration"),
        ("BILLING_LINK_VALIDITY", "P60X", "timedelta"),
    ],
)
def test_a_wrong_link_setting_is_named_with_what_is_wrong(variable: str, value: str, complaint: str) -> None:
    with pytest.raises(SettingsError) as refused:
        settings_from_environment({**PARTNER_CENTER, **LINK_ENVIRONMENT, variable: value})

    assert f"{variable}: " in str(refused.value)
    assert complaint in str(refused.value)


def test_the_secret_never_shows_in_the_settings_or_their_errors() -> None:
    settings = settings_from_environment({**PARTNER_CENTER, **LINK_ENVIRONMENT})
    short = "x" * 31
    with pytest.raises(SettingsError) as refused:
        settings_from_environment({**PARTNER_CENTER, **LINK_ENVIRONMENT, "BILLING_LINK_SECRET": short})

    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in repr(settings.notice_links())
    assert short not in str(refused.value)


def test_every_link_variable_is_read_from_the_environment() -> None:
    for variable in [*LINK_ENVIRONMENT, "BILLING_LINK_VALIDITY"]:
        assert variable in ENVIRONMENT_NAMES


# --- the preview and the portal's side -----------------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in ENVIRONMENT_NAMES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_notices_preview_shows_the_links_when_configured(clean_environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert starter.main(["notices", "preview", "reminder", "--locale", "en-US", "--out", str(tmp_path / "a")]) == 0
    assert links_in((tmp_path / "a" / "reminder.en-US.html").read_text(encoding="utf-8")) == []
    for variable, value in LINK_ENVIRONMENT.items():
        clean_environment.setenv(variable, value)

    assert starter.main(["notices", "preview", "reminder", "--locale", "en-US", "--out", str(tmp_path / "b")]) == 0

    page = (tmp_path / "b" / "reminder.en-US.html").read_text(encoding="utf-8")
    (pay,) = pay_links(page)
    (dispute,) = dispute_links(page)
    assert values_of(pay)["customer_id"] == "C-1002"
    assert checks(pay, "pay", now=datetime.now(UTC)) and checks(dispute, "dispute", now=datetime.now(UTC))
    message = BytesParser(policy=email_policy.default).parsebytes((tmp_path / "b" / "reminder.en-US.eml").read_bytes())
    assert isinstance(message, EmailMessage)
    assert pay_links(body(message, "plain")) == [pay]


def test_notices_preview_refuses_a_template_without_the_secret(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_environment.setenv("BILLING_PAY_URL_TEMPLATE", PAY)

    assert starter.main(["notices", "preview", "reminder", "--out", str(tmp_path)]) == 2
    assert "BILLING_LINK_SECRET is required" in capsys.readouterr().err


DOC = Path(__file__).parent.parent / "docs" / "integration.md"


def doc_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Pay and dispute links in notices")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_documented_worked_example_is_what_the_engine_signs() -> None:
    section = doc_section()
    secret = re.search(r"With the secret `([^`]+)`", section)
    assert secret is not None
    template = "https://portal.partner.example.cn/pay?invoice={invoice_id}&customer={customer_id}&expires={expires}&signature={signature}"
    at = datetime(2026, 12, 28, 9, 0, tzinfo=SHANGHAI)
    expires = expiry(at, timedelta(days=60))

    url = link(template, secret.group(1), "pay", "C-1001", "INV/2026/十二月-0042", expires)

    assert f"`expires` = 2027-02-26 09:00 Asia/Shanghai = `{expires}`" in section
    assert f"`signature` = `{sign(secret.group(1), 'pay', 'C-1001', 'INV/2026/十二月-0042', expires)}`" in section
    assert f"`{url}`" in section
    assert f"`{template}`" in section


def test_the_documented_portal_check_accepts_the_engines_links_and_refuses_changed_ones() -> None:
    # A `py` block: tests/test_integration_doc.py runs the document's one `python` block against a dev server.
    (code,) = re.findall(r"^```py\n(.*?)^```$", doc_section(), re.MULTILINE | re.DOTALL)
    namespace: dict[str, object] = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # the document's own example
    link_is_valid = namespace["link_is_valid"]
    assert callable(link_is_valid)
    # The portal checks against its clock: a link that expires far ahead, then one already expired.
    expires = int(datetime.now(UTC).timestamp()) + 3600
    values = values_of(link(PAY, SECRET, "pay", "C-1001", "INV/2026/十二月-0042", expires))

    assert link_is_valid(SECRET, "pay", **values)
    assert not link_is_valid(SECRET, "dispute", **values)
    assert not link_is_valid(SECRET, "pay", **(values | {"customer_id": "C-1002"}))
    assert not link_is_valid(SECRET, "pay", **(values | {"invoice_id": "INV/2026/十二月-0043"}))
    assert not link_is_valid("another-secret-of-the-same-length-0123456", "pay", **values)
    expired = values_of(link(PAY, SECRET, "pay", "C-1001", "INV-1", int(datetime.now(UTC).timestamp()) - 1))
    assert not link_is_valid(SECRET, "pay", **expired)


def test_customer_notice_kinds_cover_the_kinds_tested_here() -> None:
    assert set(DUNNING_KINDS) | {
        NoticeKind.DISPUTE_RECEIVED,
        NoticeKind.DISPUTE_RESOLVED,
        NoticeKind.CLOSE_THE_LOOP,
    } == (CUSTOMER_NOTICE_KINDS)
