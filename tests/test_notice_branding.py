"""The partner's branding, support channels and payment details: settings and their validation, what every
notice shows, the collections policy linked or attached to invoice notices, and the two document commands."""

from __future__ import annotations

from datetime import date, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from activities.mailer import MailerActivities, SmtpTransport
from billing.ledger import LedgerStore
from billing.models import CUSTOMER_NOTICE_KINDS, Locale, NoticeKind
from billing.notices import BankAccount, Branding, NoticeRenderer, render_notice
from billing.notices.formatting import format_duration
from billing.notices.preview import sample_request
from billing.policy import CollectionsPolicy
from billing.policy_document import DocumentFormat, example_schedule, render_policy_document
from billing.settings import (
    ENVIRONMENT_NAMES,
    SettingsError,
    document_settings_from_environment,
    settings_from_environment,
)
from cli import main as starter
from tests.conftest import SmtpSink

LOCALES: tuple[Locale, ...] = ("zh-CN", "en-US")
README = Path(__file__).parent.parent / "README.md"
PARTNER_CENTER = {
    "BILLING_PARTNER_CENTER_TOKEN_URL": "https://login.partner.microsoftonline.cn/t/oauth2/token",
    "BILLING_PARTNER_CENTER_CLIENT_ID": "id",
    "BILLING_PARTNER_CENTER_CLIENT_SECRET": "secret",
}
BRANDING_ENVIRONMENT = {
    "BILLING_PARTNER_NAME": "Contoso Cloud 示例云",
    "BILLING_PARTNER_LOGO_URL": "https://partner.example.cn/logo.png",
    "BILLING_SUPPORT_PHONE": "+86 400-820-1234",
    "BILLING_SUPPORT_EMAIL": "support@partner.example.cn",
    "BILLING_SUPPORT_HOURS": "24/7",
    "BILLING_BANK_NAME": "招商银行北京分行",
    "BILLING_BANK_ACCOUNT_NAME": "示例云（北京）科技有限公司",
    "BILLING_BANK_ACCOUNT_NUMBER": "1109 0812 3456 789",
    "BILLING_BANK_SWIFT": "cmbccnbs",
    "BILLING_POLICY_URL": "https://partner.example.cn/billing/policy",
    "BILLING_FAPIAO_NOTE": "付款后7个工作日内开具电子发票 / e-fapiao within 7 working days of payment",
}
BRANDING = Branding(
    partner_name="Contoso Cloud",
    support_phone="400-820-1234",
    support_email="support@partner.example.cn",
    support_hours="24/7",
    bank=BankAccount(
        bank_name="招商银行北京分行", account_name="示例云（北京）科技有限公司", account_number="1109081234"
    ),
)


# --- settings ------------------------------------------------------------------------------------------------


def test_branding_settings_are_optional_so_a_local_run_needs_none_of_them() -> None:
    settings = settings_from_environment(PARTNER_CENTER)

    assert settings.branding() == Branding()
    assert settings.template_dirs == []


def test_branding_settings_become_the_branding_every_notice_shows(tmp_path: Path) -> None:
    settings = settings_from_environment(
        {**PARTNER_CENTER, **BRANDING_ENVIRONMENT, "BILLING_TEMPLATE_DIR": str(tmp_path)}
    )

    branding = settings.branding()
    assert branding.partner_name == "Contoso Cloud 示例云"
    assert branding.logo_url == "https://partner.example.cn/logo.png"
    assert (branding.support_phone, branding.support_email, branding.support_hours) == (
        "+86 400-820-1234",
        "support@partner.example.cn",
        "24/7",
    )
    assert branding.bank == BankAccount(
        bank_name="招商银行北京分行",
        account_name="示例云（北京）科技有限公司",
        account_number="1109 0812 3456 789",
        swift="CMBCCNBS",
    )
    assert branding.policy_url == "https://partner.example.cn/billing/policy"
    assert branding.fapiao_note == "付款后7个工作日内开具电子发票 / e-fapiao within 7 working days of payment"
    assert settings.template_dirs == [tmp_path]


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("BILLING_PARTNER_LOGO_URL", "javascript:alert(1)", "not an http(s) URL"),
        ("BILLING_POLICY_URL", "partner.example.cn/policy", "not an http(s) URL"),
        ("BILLING_SUPPORT_PHONE", "call us", "not a phone number"),
        ("BILLING_SUPPORT_PHONE", "110", "not a phone number"),
        ("BILLING_SUPPORT_EMAIL", "support", "not an email address"),
        ("BILLING_SUPPORT_HOURS", "   ", "must not be empty"),
        ("BILLING_FAPIAO_NOTE", "发票\n随后寄出", "single line"),
        ("BILLING_PARTNER_NAME", "Contoso\nBcc: x@example.cn", "single line"),
        ("BILLING_BANK_ACCOUNT_NUMBER", "see invoice", "not a bank account number"),
        ("BILLING_BANK_SWIFT", "CMB", "not a SWIFT/BIC code"),
    ],
)
def test_a_wrong_branding_variable_is_named_with_what_is_wrong(variable: str, value: str, complaint: str) -> None:
    environment = {**PARTNER_CENTER, **BRANDING_ENVIRONMENT, variable: value}

    with pytest.raises(SettingsError) as refused:
        settings_from_environment(environment)

    assert f"{variable}: " in str(refused.value)
    assert complaint in str(refused.value)


def test_bank_details_go_together() -> None:
    with pytest.raises(SettingsError, match="BILLING_BANK_ACCOUNT_NUMBER go together"):
        settings_from_environment({**PARTNER_CENTER, "BILLING_BANK_NAME": "招商银行"})
    with pytest.raises(SettingsError, match="BILLING_BANK_SWIFT needs the bank account"):
        settings_from_environment({**PARTNER_CENTER, "BILLING_BANK_SWIFT": "CMBCCNBS"})


def test_a_template_dir_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"BILLING_TEMPLATE_DIR: .* is not a directory"):
        settings_from_environment({**PARTNER_CENTER, "BILLING_TEMPLATE_DIR": str(tmp_path / "missing")})


def test_document_settings_need_no_temporal_or_partner_center_settings() -> None:
    settings = document_settings_from_environment(BRANDING_ENVIRONMENT)

    assert settings.branding().partner_name == "Contoso Cloud 示例云"
    with pytest.raises(SettingsError, match="BILLING_SUPPORT_EMAIL"):
        document_settings_from_environment({"BILLING_SUPPORT_EMAIL": "nobody"})


def test_every_new_variable_is_read_from_the_environment() -> None:
    for variable in [*BRANDING_ENVIRONMENT, "BILLING_TEMPLATE_DIR"]:
        assert variable in ENVIRONMENT_NAMES


def test_policy_offsets_read_as_plain_durations_in_both_languages() -> None:
    assert [format_duration(timedelta(days=n), "zh-CN") for n in (-3, 1, 21)] == ["3天", "1天", "21天"]
    assert [format_duration(timedelta(days=n), "en-US") for n in (-3, 1, 21)] == ["3 days", "1 day", "21 days"]
    assert format_duration(timedelta(days=1, hours=12), "zh-CN") == "1天12小时"
    assert format_duration(timedelta(days=1, hours=12), "en-US") == "1 day 12 hours"
    assert format_duration(timedelta(seconds=-5), "en-US") == "5 seconds"  # the demo policy's -PT5S


# --- what every notice shows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", sorted(CUSTOMER_NOTICE_KINDS))
def test_every_customer_notice_gives_the_support_channels(kind: NoticeKind, locale: Locale) -> None:
    rendered = render_notice(sample_request(kind, locale, issued_on=date(2026, 11, 24)), branding=BRANDING)

    for part in (rendered.text, rendered.html):
        assert "400-820-1234" in part
        assert "support@partner.example.cn" in part
        assert "24/7" in part
        assert sample_request(kind, locale).account.customer_id in part


SUPPORT_HOURS_DEFAULT = {"zh-CN": "7×24小时", "en-US": "24 hours a day, 7 days a week"}
SUPPORT_HOURS_LABEL = {"zh-CN": "服务时间：", "en-US": "Hours: "}


def support_hours_shown(part: str, locale: Locale) -> set[str]:
    label = SUPPORT_HOURS_LABEL[locale]
    return {line.split(label, 1)[1].split("<", 1)[0] for line in part.splitlines() if label in line}


@pytest.mark.parametrize("locale", LOCALES)
def test_without_support_hours_every_notice_and_the_policy_promise_the_same_hours_in_both_languages(
    locale: Locale,
) -> None:
    parts = [render_policy_document(CollectionsPolicy(), locale, document_format) for document_format in ("md", "html")]
    for kind in sorted(CUSTOMER_NOTICE_KINDS):
        rendered = render_notice(sample_request(kind, locale), branding=Branding())
        parts += [rendered.text, rendered.html]

    for part in parts:
        assert support_hours_shown(part, locale) == {SUPPORT_HOURS_DEFAULT[locale]}
    [documented] = [line for line in README.read_text(encoding="utf-8").splitlines() if "BILLING_SUPPORT_HOURS" in line]
    assert f'"{SUPPORT_HOURS_DEFAULT["zh-CN"]}" / "{SUPPORT_HOURS_DEFAULT["en-US"]}"' in documented


@pytest.mark.parametrize("kind", [NoticeKind.ESCALATION_CASE, NoticeKind.PARTNER_PAYABLE])
def test_staff_notices_do_not_carry_the_customer_support_footer(kind: NoticeKind) -> None:
    rendered = render_notice(sample_request(kind, "en-US"), branding=BRANDING)

    assert "400-820-1234" not in rendered.text
    assert "CONTACT US" not in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(
    "kind", [NoticeKind.INVOICE, NoticeKind.REMINDER, NoticeKind.FINAL_NOTICE, NoticeKind.SUSPENSION]
)
def test_notices_that_ask_for_payment_give_the_bank_account_and_the_invoice_as_reference(
    kind: NoticeKind, locale: Locale
) -> None:
    request = sample_request(kind, locale, issued_on=date(2026, 11, 24))

    rendered = render_notice(request, branding=BRANDING)

    reference = {"zh-CN": "转账附言中注明账单号 ", "en-US": "quote invoice number "}[locale]
    for part in (rendered.text, rendered.html):
        assert "招商银行北京分行" in part
        assert "1109081234" in part
    assert reference + request.invoices[0].invoice_id in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
def test_without_bank_details_the_notice_points_to_the_account_on_the_invoice(locale: Locale) -> None:
    rendered = render_notice(sample_request(NoticeKind.REMINDER, locale), branding=Branding())

    assert {"zh-CN": "请按账单上载明的收款账户付款", "en-US": "bank account shown on the invoice"}[
        locale
    ] in rendered.text


FAPIAO_DEFAULT = {
    "zh-CN": "本邮件为付款通知，并非发票。如需发票，请在付款后与我们联系并提供开票信息（单位名称、纳税人识别号等），"
    "我们将按开票流程为贵公司开具。",
    "en-US": "This email is a request for payment, not a tax invoice (fapiao). If you need a fapiao, please contact us "
    "after payment with your invoicing details (company name, taxpayer identification number), and we will issue "
    "it following our invoicing process.",
}


@pytest.mark.parametrize("locale", LOCALES)
def test_invoice_notice_says_it_is_no_fapiao_and_how_the_fapiao_is_issued(locale: Locale) -> None:
    rendered = render_notice(sample_request(NoticeKind.INVOICE, locale), branding=BRANDING)

    assert FAPIAO_DEFAULT[locale] in rendered.text
    assert FAPIAO_DEFAULT[locale] in rendered.html


@pytest.mark.parametrize("locale", LOCALES)
def test_the_partners_fapiao_note_replaces_the_default_and_is_shown_as_written(locale: Locale) -> None:
    note = "付款后7个工作日内开具电子发票 / e-fapiao within 7 working days of payment"
    branding = BRANDING.model_copy(update={"fapiao_note": note})

    rendered = render_notice(sample_request(NoticeKind.INVOICE, locale), branding=branding)

    not_a_fapiao = {"zh-CN": "本邮件为付款通知，并非发票。", "en-US": "not a tax invoice (fapiao). "}[locale]
    for part in (rendered.text, rendered.html):
        assert not_a_fapiao + note in part
        assert FAPIAO_DEFAULT[locale] not in part


@pytest.mark.parametrize("locale", LOCALES)
def test_close_the_loop_says_when_21vianet_reviewed_and_what_was_credited(locale: Locale) -> None:
    request = sample_request(NoticeKind.DISPUTE_RESOLVED, locale)
    assert request.dispute is not None
    reviewed = request.model_copy(
        update={
            "kind": NoticeKind.CLOSE_THE_LOOP,
            "resolution": "21vianet_review, credit",
            "subscription_ids": [],
            "dispute": request.dispute.model_copy(update={"escalation_reference": "21V-CASE-314"}),
        }
    )

    rendered = render_notice(reviewed)

    expected = {
        "zh-CN": ("世纪互联已完成对贵公司账单问题的审核（案例编号 21V-CASE-314）", "我们已为您开具贷项 ¥2,345.60"),
        "en-US": (
            "21Vianet has completed its review of your billing issue (case 21V-CASE-314)",
            "credit note of ¥2,345.60",
        ),
    }[locale]
    for phrase in expected:
        assert phrase in rendered.text
        assert phrase in rendered.html


@pytest.mark.parametrize("document_format", ["md", "html"])
def test_the_chinese_policy_calls_our_bill_a_bill_never_a_fapiao(document_format: DocumentFormat) -> None:
    schedule = example_schedule(CollectionsPolicy(), date(2026, 12, 24))

    document = render_policy_document(CollectionsPolicy(), "zh-CN", document_format, schedule=schedule)

    assert "账单" in document
    assert "发票" not in document


# --- escaping --------------------------------------------------------------------------------------------------

HOSTILE_BRANDING = Branding(
    partner_name="<b>Contoso</b> & Co",
    logo_url='https://partner.example.cn/logo.png"onerror="alert(1)',
    support_hours="<i>24/7</i>",
    fapiao_note="<u>fapiao</u> on request",
    bank=BankAccount(bank_name="<script>bank()</script>", account_name="A & B", account_number="1109081234"),
    policy_url='https://partner.example.cn/"><script>x()</script>',
)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", sorted(CUSTOMER_NOTICE_KINDS))
def test_html_escapes_the_partners_settings_as_well_as_the_customers_text(kind: NoticeKind, locale: Locale) -> None:
    request = sample_request(kind, locale)
    request = request.model_copy(update={"account": request.account.model_copy(update={"name": "<svg onload=x()>"})})

    rendered = render_notice(request, branding=HOSTILE_BRANDING)

    for raw in ("<svg", "<b>Contoso", "<i>24/7", "<u>fapiao", "<script>", '"onerror="'):
        assert raw not in rendered.html
    assert "&lt;svg onload=x()&gt;" in rendered.html
    assert "<svg onload=x()>" in rendered.text  # plain text is not HTML: the name reads as written


@pytest.mark.parametrize("locale", LOCALES)
def test_the_policy_document_in_html_escapes_the_partners_settings(locale: Locale) -> None:
    document = render_policy_document(CollectionsPolicy(), locale, "html", branding=HOSTILE_BRANDING)

    for raw in ("<b>Contoso", "<i>24/7", "<script>", '"onerror="'):
        assert raw not in document
    assert "&lt;b&gt;Contoso&lt;/b&gt; &amp; Co" in document


# --- the policy with invoice notices ------------------------------------------------------------------------------


def mailer(smtp_sink: SmtpSink, ledger: LedgerStore, branding: Branding) -> MailerActivities:
    return MailerActivities(
        SmtpTransport(smtp_sink.host, smtp_sink.port, starttls=False, timeout=5),
        ledger,
        "示例云 账务部 <billing@partner.example.cn>",
        branding=branding,
        collections_policy=CollectionsPolicy(),
    )


def attachments(message: EmailMessage) -> dict[str, str]:
    return {part.get_filename() or "": part.get_content() for part in message.iter_attachments()}


@pytest.mark.parametrize("locale", LOCALES)
async def test_invoice_notice_attaches_the_policy_in_the_customers_language_when_it_is_not_published(
    smtp_sink: SmtpSink, sqlite_ledger: LedgerStore, locale: Locale
) -> None:
    await mailer(smtp_sink, sqlite_ledger, BRANDING).send_notice(sample_request(NoticeKind.INVOICE, locale))

    [message] = smtp_sink.messages
    attached = attachments(message)
    assert list(attached) == [f"collections-policy.{locale}.html"]
    policy = attached[f"collections-policy.{locale}.html"]
    assert f'<html lang="{locale}">' in policy
    assert {"zh-CN": "付款与催收政策", "en-US": "Payment and collections policy"}[locale] in policy
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert f"collections-policy.{locale}.html" in body.get_content()


async def test_invoice_notice_links_the_published_policy_instead_of_attaching_it(
    smtp_sink: SmtpSink, sqlite_ledger: LedgerStore
) -> None:
    published = BRANDING.model_copy(update={"policy_url": "https://partner.example.cn/billing/policy"})

    await mailer(smtp_sink, sqlite_ledger, published).send_notice(sample_request(NoticeKind.INVOICE, "zh-CN"))

    [message] = smtp_sink.messages
    assert attachments(message) == {}
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "https://partner.example.cn/billing/policy" in text.get_content()
    assert 'href="https://partner.example.cn/billing/policy"' in html.get_content()


async def test_only_the_invoice_notice_carries_the_policy(smtp_sink: SmtpSink, sqlite_ledger: LedgerStore) -> None:
    await mailer(smtp_sink, sqlite_ledger, BRANDING).send_notice(sample_request(NoticeKind.REMINDER, "zh-CN"))

    [message] = smtp_sink.messages
    assert message.get_content_type() == "multipart/alternative"
    assert attachments(message) == {}


async def test_without_a_support_email_customers_are_sent_to_the_senders_address(
    smtp_sink: SmtpSink, sqlite_ledger: LedgerStore
) -> None:
    without = BRANDING.model_copy(update={"support_email": None})

    await mailer(smtp_sink, sqlite_ledger, without).send_notice(sample_request(NoticeKind.REMINDER, "zh-CN"))

    [message] = smtp_sink.messages
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert "客服邮箱：billing@partner.example.cn" in body.get_content()


def test_a_partners_template_dir_overrides_the_policy_document_too(tmp_path: Path) -> None:
    (tmp_path / "en-US").mkdir()
    (tmp_path / "en-US" / "collections_policy.md").write_text(
        "# {{ title }} of {{ branding.partner_name }}: suspension after {{ policy.suspend_after|duration }}\n",
        encoding="utf-8",
    )

    document = render_policy_document(
        CollectionsPolicy(), "en-US", "md", branding=BRANDING, renderer=NoticeRenderer([tmp_path])
    )

    assert document == "# Payment and collections policy of Contoso Cloud: suspension after 21 days\n"


# --- the commands -----------------------------------------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The commands read BILLING_*; a developer's own settings must not leak into these tests."""
    for variable in ENVIRONMENT_NAMES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_policy_render_writes_the_document_with_the_invoices_dates(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environment.setenv("BILLING_PARTNER_NAME", "Contoso Cloud")
    out = tmp_path / "policy.en-US.html"

    status = starter.main(
        ["policy", "render", "--locale", "en-US", "--format", "html", "--invoice-due", "2026-12-24", "--out", str(out)]
    )

    assert status == 0
    document = out.read_text(encoding="utf-8")
    assert document.startswith("<!DOCTYPE html>")
    assert "Contoso Cloud" in document
    assert "<td" in document and "15 Jan 2027" in document  # the suspension date of an invoice due 24 Dec 2026


def test_policy_render_reads_the_policy_file(clean_environment: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('minimum_amount_to_suspend = "500.00"\nsuspend_after = "P30D"\n', encoding="utf-8")
    clean_environment.setenv("BILLING_POLICY_FILE", str(policy_file))

    assert starter.main(["policy", "render", "--locale", "zh-CN"]) == 0

    printed = capsys.readouterr().out
    assert "逾期金额低于 ¥500.00 时" in printed
    assert "付款到期后30天：暂停订阅" in printed


def test_policy_render_refuses_bad_settings_and_input_with_status_2(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    clean_environment.setenv("BILLING_SUPPORT_PHONE", "call us")
    assert starter.main(["policy", "render"]) == 2
    assert "BILLING_SUPPORT_PHONE" in capsys.readouterr().err

    clean_environment.delenv("BILLING_SUPPORT_PHONE")
    assert starter.main(["policy", "render", "--invoice-due", "2026-12-24", "--time-zone", "Mars/Olympus"]) == 2
    assert "Mars/Olympus" in capsys.readouterr().err
    assert starter.main(["policy", "render", "--policy", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_notices_preview_writes_the_message_and_an_html_file(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environment.setenv("BILLING_MAIL_FROM", "Contoso 账务部 <billing@partner.example.cn>")
    clean_environment.setenv("BILLING_SUPPORT_PHONE", "400-820-1234")

    status = starter.main(["notices", "preview", "invoice", "--locale", "zh-CN", "--out", str(tmp_path)])

    assert status == 0
    message = BytesParser(policy=email_policy.default).parsebytes((tmp_path / "invoice.zh-CN.eml").read_bytes())
    assert isinstance(message, EmailMessage)
    assert message["X-Billing-Notice"] == "invoice"
    assert message["From"].addresses[0].addr_spec == "billing@partner.example.cn"
    assert list(attachments(message)) == ["collections-policy.zh-CN.html"]
    html = (tmp_path / "invoice.zh-CN.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "400-820-1234" in html


def test_notices_preview_of_all_kinds_writes_two_files_each(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert starter.main(["notices", "preview", "all", "--locale", "en-US", "--out", str(tmp_path)]) == 0

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"{kind}.en-US.{suffix}" for kind in NoticeKind for suffix in ("eml", "html")
    )


def test_notices_preview_refuses_an_unknown_kind() -> None:
    with pytest.raises(SystemExit) as refused:
        starter.main(["notices", "preview", "nudge"])

    assert refused.value.code == 2


def test_starter_whose_reader_went_away_ends_without_a_traceback(tmp_path: Path) -> None:
    """`starter.py ... | head`: the pipe closes before the output is written; the command ends quietly."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    command = [sys.executable, str(repo / "starter.py"), "policy", "render", "--locale", "en-US"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # long before the interpreter has started and written anything
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
