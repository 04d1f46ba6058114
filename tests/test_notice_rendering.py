"""Notices as the customer (or the partner's staff) reads them: every kind in both locales, amounts, dates,
escaping, and the partner's template overrides."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.ledger_messages import InvoiceBalance
from billing.models import (
    CUSTOMER_NOTICE_KINDS,
    CustomerAccount,
    Locale,
    NextActionKind,
    NoticeKind,
    NoticeRecord,
    Payment,
)
from billing.money import Money
from billing.notice_request import NoticeDispute, NoticeNextStep, NoticeRequest
from billing.notices import IncompleteNotice, NoticeRenderer, render_notice
from billing.notices.formatting import (
    format_amount,
    format_date,
    format_datetime,
    format_formal_money,
    format_money,
)
from billing.notices.preview import sample_request
from tests.builders import cny

LOCALES: tuple[Locale, ...] = ("zh-CN", "en-US")
SHANGHAI = timezone(timedelta(hours=8))


def invoice(
    invoice_id: str = "INV-2026-1107",
    amount: str = "1234.50",
    outstanding: str | None = None,
    due_on: date = date(2026, 11, 24),
    description: str | None = "Microsoft 365 商业标准版 2026年11月",
) -> InvoiceBalance:
    owed = cny(outstanding or amount)
    return InvoiceBalance(
        invoice_id=invoice_id,
        amount=cny(amount),
        paid=cny(amount) - owed,
        credited=cny("0"),
        written_off=cny("0"),
        outstanding=owed,
        issued_on=date(2026, 10, 25),
        due_on=due_on,
        due_at=datetime(due_on.year, due_on.month, due_on.day, 23, 59, 59, tzinfo=SHANGHAI),
        description=description,
    )


def notice(kind: NoticeKind, locale: Locale = "zh-CN", **changes: Any) -> NoticeRequest:
    """A plausible request of each kind: what the workflow would send at that point of the lifecycle."""
    account = CustomerAccount(customer_id="C-1001", name="北京示例科技有限公司", email="ap@example.cn", locale=locale)
    fields: dict[str, Any] = {
        "key": f"{kind}-1",
        "kind": kind,
        "account": account,
        "workflow_id": "customer-billing-C-1001",
        "invoices": [invoice()],
        "amount_due": cny("1234.50"),
        "overdue_amount": cny("1234.50"),
        "next_step": NoticeNextStep(kind=NextActionKind.SUSPENSION, on=date(2026, 12, 15)),
    }
    if kind is NoticeKind.INVOICE:
        fields.update(overdue_amount=None, next_step=None)
    if kind in (NoticeKind.SUSPENSION, NoticeKind.DATA_DELETION_WARNING):
        fields.update(
            suspended_on=date(2026, 12, 15),
            data_deletion_on=date(2027, 2, 13),
            subscription_ids=["5f0a1c2e-sub-1", "9b7d3e4f-sub-2"],
            suspension_reason="non_payment",
            next_step=NoticeNextStep(kind=NextActionKind.DATA_DELETION_WARNING, on=date(2027, 2, 13)),
        )
    if kind is NoticeKind.CLOSE_THE_LOOP:
        fields.update(
            invoices=[invoice(outstanding="0")],
            amount_due=cny("0"),
            overdue_amount=cny("0"),
            next_step=None,
            resolution="payment",
            subscription_ids=["5f0a1c2e-sub-1"],
        )
    if kind in (NoticeKind.DISPUTE_RECEIVED, NoticeKind.DISPUTE_RESOLVED, NoticeKind.ESCALATION_CASE):
        fields["dispute"] = NoticeDispute(
            dispute_id="D-77",
            invoice_id="INV-2026-1107",
            reason="许可证数量与订单不符",
            amount=cny("234.50"),
            outcome="credit" if kind is NoticeKind.DISPUTE_RESOLVED else None,
            credit=cny("234.50") if kind is NoticeKind.DISPUTE_RESOLVED else None,
        )
    if kind is NoticeKind.ESCALATION_CASE:
        fields.update(
            payments=[
                Payment(
                    payment_id="PAY-1",
                    customer_id="C-1001",
                    amount=cny("1000.00"),
                    received_at=datetime(2026, 11, 20, 2, 30, tzinfo=UTC),
                    invoice_id="INV-2026-1107",
                )
            ],
            notices_sent=[
                NoticeRecord(
                    kind=NoticeKind.REMINDER,
                    at=datetime(2026, 11, 25, 1, 0, tzinfo=UTC),
                    invoice_id="INV-2026-1107",
                )
            ],
        )
    if kind is NoticeKind.PARTNER_PAYABLE:
        fields.update(
            invoices=[invoice("21V-2026-11", "98000.00", description=None)],
            amount_due=cny("98000.00"),
            overdue_amount=cny("98000.00"),
            next_step=NoticeNextStep(kind=NextActionKind.REMINDER, on=date(2026, 11, 27)),
        )
    fields.update(changes)
    return NoticeRequest(**fields)


# --- formatting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
def test_yuan_amounts_print_with_the_yuan_sign_grouping_and_two_decimals(locale: Locale) -> None:
    assert format_money(cny("1234.5"), locale) == "¥1,234.50"
    assert format_money(cny("1234567.89"), locale) == "¥1,234,567.89"
    assert format_money(cny("0"), locale) == "¥0.00"
    assert format_money(cny("-5"), locale) == "-¥5.00"


@pytest.mark.parametrize("locale", LOCALES)
def test_other_currencies_print_with_their_code_and_minor_units(locale: Locale) -> None:
    assert format_money(Money.of("1234.5", "USD"), locale) == "USD 1,234.50"
    assert format_money(Money.of("1234567", "JPY"), locale) == "JPY 1,234,567"


def test_decimal_sums_format_without_float_artefacts() -> None:
    assert format_amount(Decimal("0.10") + Decimal("0.20"), "CNY") == "0.30"
    assert format_money(cny("0.10") + cny("0.20"), "zh-CN") == "¥0.30"
    # A value far beyond float precision keeps every digit.
    assert format_amount(Decimal("12345678901234567.89"), "CNY") == "12,345,678,901,234,567.89"


def test_formal_chinese_amounts_name_the_currency_with_grouping_and_two_decimals() -> None:
    assert format_formal_money(cny("12345.6")) == "人民币12,345.60元"
    assert format_formal_money(cny("1234567.89")) == "人民币1,234,567.89元"
    assert format_formal_money(cny("0")) == "人民币0.00元"
    assert format_formal_money(cny("-5")) == "人民币-5.00元"
    assert format_formal_money(Money.of("1234.5", "USD")) == "美元1,234.50"
    assert format_formal_money(Money.of("1234567", "JPY")) == "日元1,234,567"
    assert format_formal_money(Money.of("1234.5", "SGD")) == "SGD 1,234.50"


def test_formal_chinese_amounts_are_exact_decimals_never_floats() -> None:
    assert format_formal_money(cny("0.10") + cny("0.20")) == "人民币0.30元"
    assert format_formal_money(cny("999999999999.99")) == "人民币999,999,999,999.99元"  # the largest amount


def test_dates_print_as_each_locale_writes_them() -> None:
    assert format_date(date(2026, 11, 24), "zh-CN") == "2026年11月24日"
    assert format_date(date(2026, 1, 5), "zh-CN") == "2026年1月5日"
    assert format_date(date(2026, 11, 24), "en-US") == "24 Nov 2026"
    assert format_date(date(2026, 1, 5), "en-US") == "5 Jan 2026"


def test_moments_print_in_the_readers_time_zone() -> None:
    moment = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)
    assert format_datetime(moment, "zh-CN", "Asia/Shanghai") == "2026年11月25日 00:30（Asia/Shanghai）"
    assert format_datetime(moment, "en-US", "Asia/Shanghai") == "25 Nov 2026 00:30 (Asia/Shanghai)"


# --- every kind ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_notice_kind_renders_subject_text_and_html_in_both_locales(kind: NoticeKind, locale: Locale) -> None:
    rendered = render_notice(notice(kind, locale))

    assert rendered.locale == locale
    assert rendered.subject and "\n" not in rendered.subject
    assert rendered.html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{locale}">' in rendered.html
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "None" not in part  # an optional value leaked into the wording
    assert "¥" in rendered.text
    # Customer notices say which invoice they are about; staff notices name theirs too.
    invoice_id = "21V-2026-11" if kind is NoticeKind.PARTNER_PAYABLE else "INV-2026-1107"
    assert invoice_id in rendered.text
    assert invoice_id in rendered.html
    assert "\n\n\n" not in rendered.text  # no holes left by optional paragraphs


# ASCII punctuation touching Chinese text, where Chinese takes the full-width form (`18:00 (Asia/Shanghai)到账`),
# or a space after full-width punctuation, which carries its own spacing (`18:00（Asia/Shanghai） 收到付款`).
HALF_WIDTH_IN_CHINESE = re.compile(
    r"[\u4e00-\u9fff\u3001-\u303f\uff01-\uff5e] ?[()\[\],;!?]"
    r"|[()\[\],;!?] ?[\u4e00-\u9fff]"
    r"|[\u3001-\u303f\uff01-\uff5e] "
)


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_chinese_notices_use_full_width_punctuation(kind: NoticeKind) -> None:
    requests = [sample_request(kind, "zh-CN", issued_on=date(2026, 11, 24))]
    if kind is NoticeKind.ESCALATION_CASE:
        request = requests[0]
        assert request.dispute is not None
        recorded = request.dispute.model_copy(update={"escalation_reference": "21V-CASE-314"})
        requests += [
            request.model_copy(update={"desk_purpose": "desk_reminder"}),
            request.model_copy(update={"desk_purpose": "chase", "dispute": recorded}),
            request.model_copy(update={"desk_purpose": "fraud_review", "dispute": None}),
        ]

    for request in requests:
        rendered = render_notice(request)

        for part in (rendered.subject, rendered.text):
            assert HALF_WIDTH_IN_CHINESE.search(part) is None, HALF_WIDTH_IN_CHINESE.search(part)


def test_chinese_escalation_subjects_carry_their_tag_in_full_width_brackets() -> None:
    request = sample_request(NoticeKind.ESCALATION_CASE, "zh-CN")

    rendered = render_notice(request)

    assert rendered.subject.startswith("【待提交世纪互联】客户 北京示例科技有限公司（C-1001）")


@pytest.mark.parametrize("locale", LOCALES)
def test_invoice_notice_lists_amount_issue_and_due_date(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.INVOICE, locale))

    due = format_date(date(2026, 11, 24), locale)
    expected = {
        "zh-CN": f"账单 INV-2026-1107：应付 ¥1,234.50，到期日{due}",
        "en-US": f"Invoice INV-2026-1107: ¥1,234.50 due {due}",
    }[locale]
    assert rendered.subject == expected
    assert format_date(date(2026, 10, 25), locale) in rendered.text
    assert "Microsoft 365 商业标准版 2026年11月" in rendered.text


@pytest.mark.parametrize("kind", [kind for kind in NoticeKind if kind is not NoticeKind.PARTNER_PAYABLE])
def test_chinese_notices_call_our_bill_a_bill_never_a_fapiao(kind: NoticeKind) -> None:
    # 发票 is the tax fapiao; what these notices list and ask to be paid is the partner's bill (账单). Only the
    # invoice notice's paragraph on the fapiao names it. The partner payable reminder is left out: it names
    # 21Vianet's invoice as Partner Center does.
    rendered = render_notice(notice(kind))

    for part in (rendered.subject, rendered.text, rendered.html):
        naming_a_fapiao = [line for line in part.splitlines() if "发票" in line or "开票" in line]
        about_the_fapiao = [
            line for line in naming_a_fapiao if "关于发票" in line or "本邮件为付款通知，并非发票。" in line
        ]
        assert naming_a_fapiao == about_the_fapiao


def test_reminder_shows_a_sum_of_tenths_as_exact_fen() -> None:
    request = notice(
        NoticeKind.REMINDER,
        invoices=[invoice("INV-A", "0.10"), invoice("INV-B", "0.20")],
        amount_due=cny("0.10") + cny("0.20"),
        overdue_amount=cny("0.10") + cny("0.20"),
    )

    rendered = render_notice(request)

    for part in (rendered.subject, rendered.text, rendered.html):
        assert "¥0.30" in part
        assert "0.30000000000000004" not in part
        assert "0.3 " not in part


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", [NoticeKind.REMINDER, NoticeKind.FINAL_NOTICE])
def test_dunning_notices_say_what_happens_next_and_on_which_date(kind: NoticeKind, locale: Locale) -> None:
    rendered = render_notice(notice(kind, locale))

    suspension_day = format_date(date(2026, 12, 15), locale)
    assert suspension_day in rendered.text
    assert suspension_day in rendered.html
    assert {"zh-CN": "暂停", "en-US": "suspended"}[locale] in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
def test_reminder_before_the_due_date_is_worded_as_upcoming_not_overdue(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.REMINDER, locale, overdue_amount=cny("0"), next_step=None))

    upcoming, overdue = {"zh-CN": ("即将到期", "逾期"), "en-US": ("due soon", "overdue")}[locale]
    assert upcoming in rendered.text
    assert overdue not in rendered.text
    assert overdue not in rendered.subject


@pytest.mark.parametrize("locale", LOCALES)
def test_final_notice_explains_suspension_before_it_happens(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.FINAL_NOTICE, locale))

    for phrase in {
        "zh-CN": ("无法登录", "管理员仍可登录", "60天后删除"),
        "en-US": ("can no longer sign in", "administrators keep access", "60 days after"),
    }[locale]:
        assert phrase in rendered.text
        assert phrase in rendered.html


@pytest.mark.parametrize("locale", LOCALES)
def test_suspension_notice_says_what_suspension_means_and_when_data_goes(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.SUSPENSION, locale))

    expected = {
        "zh-CN": ("用户已无法登录", "管理员仍可登录", "由世纪互联运营的合作伙伴中心", "暂停60天后删除"),
        "en-US": (
            "users can no longer sign in",
            "administrators keep access",
            "Partner Center operated by 21Vianet",
            "60 days after it was suspended",
        ),
    }[locale]
    for phrase in expected:
        assert phrase in rendered.text
    assert format_date(date(2026, 12, 15), locale) in rendered.text  # suspended on
    assert format_date(date(2027, 2, 13), locale) in rendered.text  # data deleted on
    assert "5f0a1c2e-sub-1" in rendered.text
    assert "9b7d3e4f-sub-2" in rendered.html


@pytest.mark.parametrize("kind", [NoticeKind.FINAL_NOTICE, NoticeKind.SUSPENSION])
def test_final_and_suspension_notices_state_the_overdue_amount_in_the_formal_chinese_form_too(
    kind: NoticeKind,
) -> None:
    rendered = render_notice(notice(kind, overdue_amount=cny("12345.6"), amount_due=cny("12345.6")))

    assert "¥12,345.60（人民币12,345.60元）" in rendered.text
    assert "¥12,345.60</strong>（人民币12,345.60元）" in rendered.html


def test_suspension_for_fraud_review_does_not_ask_for_payment() -> None:
    rendered = render_notice(notice(NoticeKind.SUSPENSION, "en-US", suspension_reason="fraud_review"))

    assert "review" in rendered.subject
    assert "To restore service" not in rendered.text
    assert "overdue" not in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
def test_data_deletion_warning_names_the_deletion_date(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.DATA_DELETION_WARNING, locale, data_deletion_on=date(2027, 2, 13)))

    deletion_day = format_date(date(2027, 2, 13), locale)
    assert deletion_day in rendered.subject
    assert deletion_day in rendered.text
    assert deletion_day in rendered.html


def test_deletion_date_falls_back_to_sixty_days_after_suspension() -> None:
    rendered = render_notice(
        notice(NoticeKind.DATA_DELETION_WARNING, suspended_on=date(2026, 12, 15), data_deletion_on=None)
    )

    assert "2027年2月13日" in rendered.subject


@pytest.mark.parametrize("locale", LOCALES)
def test_close_the_loop_says_the_issue_is_resolved_and_access_is_back(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.CLOSE_THE_LOOP, locale))

    resolved, payment, restored = {
        "zh-CN": ("问题现已解决", "我们已收到您的付款", "我们已恢复此前被暂停的以下订阅"),
        "en-US": (
            "is resolved",
            "we have received your payment",
            "We have restored the following subscriptions",
        ),
    }[locale]
    assert resolved in rendered.text
    assert payment in rendered.text
    assert restored in rendered.text
    assert "5f0a1c2e-sub-1" in rendered.html


@pytest.mark.parametrize("locale", LOCALES)
def test_close_the_loop_without_suspension_does_not_mention_restored_access(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.CLOSE_THE_LOOP, locale, subscription_ids=[]))

    assert {"zh-CN": "恢复", "en-US": "restored"}[locale] not in rendered.text
    assert {"zh-CN": "没有应付款项", "en-US": "Nothing is due"}[locale] in rendered.text


def test_dispute_upheld_says_the_invoice_stands_and_repeats_what_is_due() -> None:
    upheld = notice(
        NoticeKind.DISPUTE_RESOLVED,
        "en-US",
        dispute=NoticeDispute(
            dispute_id="D-77",
            invoice_id="INV-2026-1107",
            reason="too many licences",
            amount=cny("234.50"),
            outcome="uphold",
            note="The licence count matches the signed order form.",
            escalation_reference="21V-CASE-314",
        ),
    )

    rendered = render_notice(upheld)

    assert "the invoice stands" in rendered.subject
    assert "The licence count matches the signed order form." in rendered.text
    assert "21V-CASE-314" in rendered.text
    assert "¥1,234.50" in rendered.text
    assert "credit" not in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
def test_escalation_case_carries_what_the_desk_needs_to_file_it(locale: Locale) -> None:
    rendered = render_notice(notice(NoticeKind.ESCALATION_CASE, locale))

    for needed in ("C-1001", "ap@example.cn", "D-77", "许可证数量与订单不符", "PAY-1", "record_escalation"):
        assert needed in rendered.text
    assert format_datetime(datetime(2026, 11, 25, 1, 0, tzinfo=UTC), locale, "Asia/Shanghai") in rendered.text
    assert {"zh-CN": "待提交世纪互联", "en-US": "To submit to 21Vianet"}[locale] in rendered.subject


@pytest.mark.parametrize("locale", LOCALES)
def test_partner_payable_tells_finance_what_is_owed_to_21vianet_and_how_to_record_payment(
    locale: Locale,
) -> None:
    rendered = render_notice(notice(NoticeKind.PARTNER_PAYABLE, locale))

    assert "¥98,000.00" in rendered.subject
    assert "21V-2026-11" in rendered.text
    assert "record_partner_payment" in rendered.text
    assert format_date(date(2026, 11, 27), locale) in rendered.text


@pytest.mark.parametrize("locale", LOCALES)
def test_the_partner_payable_notice_states_the_policys_late_charge_terms_as_an_estimate(locale: Locale) -> None:
    from billing.notices.preview import sample_request
    from billing.policy import parse_policy

    terms = {"late_charge_percent_per_month": "1.2", "late_charge_basis": "outstanding"}
    policy = parse_policy({"partner_payable": {**terms, "late_charge_cap_percent": "0.5"}})

    rendered = render_notice(sample_request(NoticeKind.PARTNER_PAYABLE, locale, policy, date(2026, 11, 24)))

    # 15 days at 1.2% a month of the 78,000.00 outstanding: 468.00 so far. The cap, 0.5% of 98,000.00, is
    # 490.00: a further month (936.00 on its own) costs at most the 22.00 the cap leaves.
    expected = {
        "zh-CN": (
            "世纪互联可按未付金额每月 1.2% 收取滞纳金，累计最多 ¥490.00；据系统估算",
            "已产生约 ¥468.00，此后每逾期一个月约再增加 ¥22.00。应付金额以世纪互联账单为准。",
        ),
        "en-US": (
            "21Vianet may charge 1.2% of the amount outstanding a month, at most ¥490.00 in all: by the engine's",
            "about ¥468.00 has accrued by 24 Nov 2026, and every further month costs about ¥22.00. 21Vianet's",
        ),
    }[locale]
    for text in (rendered.text, rendered.html):
        for phrase in expected:
            assert phrase in text.replace("<strong>", "").replace("</strong>", "")


@pytest.mark.parametrize("locale", LOCALES)
def test_a_voided_21vianet_invoice_tells_finance_nothing_is_owed_and_where_money_paid_goes(locale: Locale) -> None:
    from billing.notice_request import NoticePayable
    from billing.partner_payable import PartnerInvoice, PartnerPayment, PayableState
    from billing.policy import PartnerPayableRules

    bill = PayableState(
        invoice=PartnerInvoice(
            invoice_id="21V-2026-11", invoice_date=date(2026, 10, 1), amount=cny("98000.00"), paid=cny("0")
        ),
        payments=[PartnerPayment(payment_id="TT-1", amount=cny("500.00"), paid_on=date(2026, 11, 20))],
        voided_on=date(2026, 11, 24),
    )
    request = notice(NoticeKind.PARTNER_PAYABLE, locale, amount_due=cny("0"), overdue_amount=cny("0"), next_step=None)
    request = request.model_copy(
        update={"partner_payable": NoticePayable.of(bill, date(2026, 11, 24), PartnerPayableRules(), settled=True)}
    )

    rendered = render_notice(request)

    expected = {
        "zh-CN": (
            "已作废：世纪互联发票 21V-2026-11（¥98,000.00），无需支付",
            "合作伙伴中心已将其列为作废单据",
            "抵扣其他发票或予以退款",
        ),
        "en-US": (
            "Voided by 21Vianet: invoice 21V-2026-11 (¥98,000.00), nothing to pay",
            "Partner Center lists it as a void note",
            "apply it to another invoice or to refund it",
        ),
    }[locale]
    assert rendered.subject == expected[0]
    for text in (rendered.text, rendered.html):
        assert expected[1] in text and expected[2] in text and "¥500.00" in text
        assert "record_partner_payment" not in text


# --- escaping -----------------------------------------------------------------------------------------------

HOSTILE_NAME = '<script>alert("name")</script> & Co'
HOSTILE_DESCRIPTION = "<img src=x onerror=alert(1)>"
HOSTILE_INVOICE_ID = "INV-<b>9</b>"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", list(NoticeKind))
def test_html_escapes_every_customer_provided_text(kind: NoticeKind, locale: Locale) -> None:
    request = notice(kind, locale)
    hostile_account = request.account.model_copy(update={"name": HOSTILE_NAME})
    hostile_invoices = [
        invoice.model_copy(update={"invoice_id": HOSTILE_INVOICE_ID, "description": HOSTILE_DESCRIPTION})
        for invoice in request.invoices
    ]
    hostile_dispute = (
        request.dispute.model_copy(update={"reason": "<script>steal()</script>", "note": "<u>note</u>"})
        if request.dispute
        else None
    )
    request = request.model_copy(
        update={"account": hostile_account, "invoices": hostile_invoices, "dispute": hostile_dispute}
    )

    rendered = render_notice(request)

    for raw in ("<script>", "<img", "<b>9</b>", "<u>note</u>"):
        assert raw not in rendered.html
    if kind not in (NoticeKind.PARTNER_PAYABLE,):
        assert "&lt;script&gt;" in rendered.html
    if kind in (NoticeKind.INVOICE, NoticeKind.REMINDER, NoticeKind.FINAL_NOTICE):
        assert "&lt;img src=x onerror=alert(1)&gt;" in rendered.html
        assert "INV-&lt;b&gt;9&lt;/b&gt;" in rendered.html


def test_plain_text_keeps_customer_text_as_written() -> None:
    request = notice(NoticeKind.REMINDER)
    request = request.model_copy(update={"account": request.account.model_copy(update={"name": HOSTILE_NAME})})

    rendered = render_notice(request)

    assert HOSTILE_NAME in rendered.text  # plain text is not HTML: escaping it would garble the name
    assert "&lt;" not in rendered.text


def test_subject_stays_one_line_whatever_the_customer_name_holds() -> None:
    request = notice(NoticeKind.ESCALATION_CASE)
    request = request.model_copy(
        update={"account": request.account.model_copy(update={"name": "Contoso\r\nBcc: victim@example.cn"})}
    )

    rendered = render_notice(request)

    assert "\n" not in rendered.subject and "\r" not in rendered.subject
    assert "Contoso Bcc: victim@example.cn" in rendered.subject


# --- templates ----------------------------------------------------------------------------------------------


def test_partner_template_overrides_the_built_in_one_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "zh-CN").mkdir()
    (tmp_path / "zh-CN" / "reminder.subject.txt").write_text(
        "【Fabrikam】请支付 {{ amount_due|money }}\n", encoding="utf-8"
    )

    rendered = NoticeRenderer(template_dirs=[tmp_path]).render(notice(NoticeKind.REMINDER))

    assert rendered.subject == "【Fabrikam】请支付 ¥1,234.50"
    assert "截至目前，我们尚未收到以下账单的付款" in rendered.text  # the built-in body still applies


@pytest.mark.parametrize("kind", sorted(CUSTOMER_NOTICE_KINDS))
def test_chinese_letters_close_with_cizhi_then_jingli_on_its_own_line_then_the_senders_name(kind: NoticeKind) -> None:
    rendered = render_notice(notice(kind), sender_name="Fabrikam 账务部")

    # 此致 indented two characters (two ideographic spaces), 敬礼 at the margin of the next line.
    assert "\n\n\u3000\u3000此致\n敬礼！\nFabrikam 账务部\n" in rendered.text
    assert "<p>\u3000\u3000此致<br>敬礼！<br>Fabrikam 账务部</p>" in rendered.html
    # The close follows the letter's last sentence; the contact details come after it, in both parts.
    assert rendered.text.index("敬礼！") < rendered.text.index("【联系我们】")
    assert rendered.html.index("敬礼！") < rendered.html.index("联系我们")


def test_staff_notices_are_signed_by_the_system_without_a_letters_close() -> None:
    for kind in (NoticeKind.ESCALATION_CASE, NoticeKind.PARTNER_PAYABLE):
        rendered = render_notice(notice(kind), sender_name="Fabrikam 账务部")

        assert rendered.text.endswith("\n\nFabrikam 账务部\n")
        assert "此致" not in rendered.text


@pytest.mark.parametrize(
    ("kind", "changes", "missing"),
    [
        (NoticeKind.DISPUTE_RECEIVED, {"dispute": None}, "dispute"),
        (NoticeKind.ESCALATION_CASE, {"dispute": None}, "dispute"),
        (NoticeKind.SUSPENSION, {"suspended_on": None}, "suspended_on"),
        (
            NoticeKind.DATA_DELETION_WARNING,
            {"suspended_on": None, "data_deletion_on": None},
            "data_deletion_on",
        ),
    ],
)
def test_a_request_missing_what_its_notice_must_say_is_refused(
    kind: NoticeKind, changes: dict[str, Any], missing: str
) -> None:
    with pytest.raises(IncompleteNotice, match=missing):
        render_notice(notice(kind, **changes))


def test_dispute_decision_without_an_outcome_is_refused() -> None:
    request = notice(NoticeKind.DISPUTE_RESOLVED)
    assert request.dispute is not None
    request = request.model_copy(update={"dispute": request.dispute.model_copy(update={"outcome": None})})

    with pytest.raises(IncompleteNotice, match="outcome"):
        render_notice(request)


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_the_close_the_loop_html_escapes_what_an_operator_typed_into_the_21vianet_reference(locale: Locale) -> None:
    """The resolution sentence comes from a text macro; the reference in it is typed by the desk."""
    request = notice(
        NoticeKind.CLOSE_THE_LOOP,
        locale,
        resolution="21vianet_review",
        dispute=NoticeDispute(
            dispute_id="D-77",
            invoice_id="INV-2026-1107",
            reason="r",
            amount=cny("234.50"),
            escalation_reference='<script>alert("x")</script>',
        ),
    )
    rendered = render_notice(request)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert '<script>alert("x")</script>' in rendered.text  # the plain-text part shows it as typed
