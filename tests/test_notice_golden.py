"""Golden files: every notice kind in both locales, and the collections policy document, exactly as rendered.

A deliberate wording change shows up here as a diff to review. Regenerate the files after one with
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_notice_golden.py` and review `git diff tests/golden`
(see tests/golden/README.md).
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from billing.models import Locale, NoticeKind
from billing.notice_links import NoticeLinks
from billing.notices import BankAccount, Branding, render_notice
from billing.notices.preview import sample_request
from billing.policy import CollectionsPolicy
from billing.policy_document import DocumentFormat, attachment_name, example_schedule, render_policy_document

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
LOCALES: tuple[Locale, ...] = ("zh-CN", "en-US")
ISSUED_ON = date(2026, 11, 24)  # a Tuesday: the invoice falls due on Thursday 24 December
SENDER = {"zh-CN": "示例云 账务部", "en-US": "Contoso Cloud Billing"}

BRANDING = Branding(
    partner_name="Contoso Cloud 示例云",
    logo_url="https://partner.example.cn/static/logo.png",
    support_phone="400-820-1234",
    support_email="support@partner.example.cn",
    support_hours="24/7",
    bank=BankAccount(
        bank_name="招商银行北京分行 China Merchants Bank, Beijing Branch",
        account_name="示例云（北京）科技有限公司",
        account_number="1109 0812 3456 789",
        swift="CMBCCNBSXXX",
    ),
)
# Pay and dispute links as a partner would configure them; the invoice id goes in the query, where '/' is safe.
LINKS = NoticeLinks(
    secret="golden-files-link-secret-0123456789",
    pay_template="https://portal.partner.example.cn/pay?invoice={invoice_id}&customer={customer_id}"
    "&expires={expires}&signature={signature}",
    dispute_template="https://portal.partner.example.cn/disputes/new?invoice={invoice_id}&customer={customer_id}"
    "&expires={expires}&signature={signature}",
)
LINKED_KIND = NoticeKind.REMINDER


def check_golden(path: Path, actual: str) -> None:
    expected = path.read_text(encoding="utf-8") if path.exists() else None
    if expected == actual:
        return
    if UPDATE:
        # Rewritten, and still a failure: a regenerated file passes only on the next run, after a review.
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        pytest.fail(f"REWROTE {path}: review `git diff {path}` and run again", pytrace=False)
    assert expected is not None, f"{path} is missing: write it with UPDATE_GOLDEN=1, then review it"
    assert actual == expected, f"{path} differs; if the change is deliberate, regenerate with UPDATE_GOLDEN=1"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_notice_reads_as_its_golden_file(kind: NoticeKind, locale: Locale) -> None:
    request = sample_request(kind, locale, CollectionsPolicy(), ISSUED_ON)
    attachment = attachment_name(locale) if kind is NoticeKind.INVOICE else None

    rendered = render_notice(request, sender_name=SENDER[locale], branding=BRANDING, policy_attachment=attachment)

    folder = GOLDEN / "notices" / locale
    check_golden(folder / f"{kind}.subject", rendered.subject + "\n")
    check_golden(folder / f"{kind}.txt", rendered.text)
    check_golden(folder / f"{kind}.html", rendered.html)


@pytest.mark.parametrize("locale", LOCALES)
def test_a_notice_with_pay_and_dispute_links_reads_as_its_golden_file(locale: Locale) -> None:
    request = sample_request(LINKED_KIND, locale, CollectionsPolicy(), ISSUED_ON)

    rendered = render_notice(request, sender_name=SENDER[locale], branding=BRANDING, links=LINKS)

    folder = GOLDEN / "links" / locale
    check_golden(folder / f"{LINKED_KIND}.txt", rendered.text)
    check_golden(folder / f"{LINKED_KIND}.html", rendered.html)


@pytest.mark.parametrize("document_format", ["md", "html"])
@pytest.mark.parametrize("locale", LOCALES)
def test_collections_policy_reads_as_its_golden_file(locale: Locale, document_format: DocumentFormat) -> None:
    policy = CollectionsPolicy()
    folder = GOLDEN / "policy" / locale
    general = render_policy_document(policy, locale, document_format, branding=BRANDING)
    for_invoice = render_policy_document(
        policy,
        locale,
        document_format,
        branding=BRANDING.model_copy(update={"policy_url": "https://partner.example.cn/billing/policy"}),
        schedule=example_schedule(policy, date(2026, 12, 24), "Asia/Shanghai"),
    )

    check_golden(folder / f"collections_policy.{document_format}", general)
    check_golden(folder / f"collections_policy.invoice-2026-12-24.{document_format}", for_invoice)


def test_no_golden_file_is_left_over_from_a_kind_or_locale_that_is_gone() -> None:
    expected = {
        GOLDEN / "notices" / locale / f"{kind}.{suffix}"
        for locale in LOCALES
        for kind in NoticeKind
        for suffix in ("subject", "txt", "html")
    }
    expected |= {
        GOLDEN / "links" / locale / f"{LINKED_KIND}.{suffix}" for locale in LOCALES for suffix in ("txt", "html")
    }
    present = set((GOLDEN / "notices").glob("*/*")) | set((GOLDEN / "links").glob("*/*"))
    assert present == expected
