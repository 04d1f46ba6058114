"""The policy file, Money and the contract models: what they accept and how they refuse."""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing.models import CustomerAccount, Invoice, Payment
from billing.money import CurrencyMismatch, Money
from billing.policy import DEMO_POLICY_TOML, CollectionsPolicy, PolicyError, load_policy, parse_policy
from billing.settings import SettingsError, settings_from_environment

CONTRACT_POLICY = """\
currency = "CNY"
minimum_amount_to_suspend = "100.00"
reminders = ["-P3D", "P1D", "P7D"]
final_notice = "P14D"
suspend_after = "P21D"
data_deletion_warnings = ["P30D", "P50D"]
[quiet_hours]
enabled = true
start = "09:00"
end = "18:00"
business_days_only = true
[dispute]
grace_after_uphold = "P7D"
remind_desk_after = "P5D"
[escalation]
chase_after = "P1D"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_contract_policy_file_loads_and_equals_the_built_in_default(tmp_path: Path):
    policy = load_policy(write(tmp_path, CONTRACT_POLICY))
    assert policy == CollectionsPolicy()
    assert policy.reminders == (timedelta(days=-3), timedelta(days=1), timedelta(days=7))
    assert policy.minimum_to_suspend == Money.of("100.00", "CNY")


def test_business_day_calendar_is_chosen_by_zone_unless_the_policy_names_one(tmp_path: Path):
    assert load_policy(write(tmp_path, CONTRACT_POLICY)).quiet_hours.calendar is None
    for calendar in ("CN", "weekends"):
        text = CONTRACT_POLICY.replace("\nend = ", f'\ncalendar = "{calendar}"\nend = ')
        assert load_policy(write(tmp_path, text)).quiet_hours.calendar == calendar


def test_demo_policy_runs_the_ladder_in_seconds():
    policy = parse_policy(tomllib.loads(DEMO_POLICY_TOML))
    assert policy.suspend_after <= timedelta(minutes=1)
    assert not policy.quiet_hours.enabled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'final_notice = "P30D"\nsuspend_after = "P21D"',
            "suspend_after: P21D must come after final_notice (P30D)",
        ),
        ('reminders = ["P7D", "P1D"]', "reminders: reminders must be distinct and in ascending order"),
        ('final_notice = "fortnight"', "final_notice:"),
        ("minimum_amount_to_suspend = 100.5", "minimum_amount_to_suspend: write the amount as a string"),
        ('data_deletion_warnings = ["P70D"]', "data_deletion_warnings: P70D is not between suspension"),
        (
            '[quiet_hours]\nstart = "18:00"\nend = "09:00"',
            "quiet_hours: start 18:00 must be before end 09:00",
        ),
        ('[quiet_hours]\ncalendar = "China"', "quiet_hours.calendar: Input should be 'CN' or 'weekends'"),
        ('[dispute]\ngrace = "P7D"', "dispute.grace: unknown key"),
        ('currency = "yuan"', "currency: currency 'yuan' is not an ISO 4217 code"),
    ],
)
def test_policy_errors_name_the_file_the_key_and_the_problem(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert str(path) in str(refused.value)
    assert expected in str(refused.value)


def test_unreadable_policy_files_are_named(tmp_path: Path):
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(write(tmp_path, "reminders = ["))


def test_money_is_exact_and_refuses_what_it_cannot_represent():
    assert Money.of("0.10", "CNY") + Money.of("0.20", "CNY") == Money.of("0.30", "CNY")
    assert Money.model_validate_json('{"amount": 1234.5, "currency": "cny"}') == Money.of("1234.50", "CNY")
    assert Money.of("1234.50", "CNY").model_dump(mode="json") == {"amount": "1234.50", "currency": "CNY"}
    with pytest.raises(ValidationError, match="more than 2 decimals"):
        Money.of("1.005", "CNY")
    with pytest.raises(ValidationError, match="not a decimal number"):
        Money.model_validate({"amount": "lots", "currency": "CNY"})
    with pytest.raises(CurrencyMismatch):
        _ = Money.of(1, "CNY") + Money.of(1, "USD")
    assert Money.of(5, "JPY").amount == Decimal(5)


def test_customer_account_defaults_tenant_and_zone_and_refuses_unknown_zones():
    account = CustomerAccount(customer_id="C-1", name="Lotus", email="ap@lotus.example.cn")
    assert (account.tenant_id, account.time_zone, account.locale) == ("C-1", "Asia/Shanghai", "zh-CN")
    with pytest.raises(ValidationError, match="IANA time zone"):
        CustomerAccount(customer_id="C-1", name="Lotus", email="ap@lotus.example.cn", time_zone="Beijing")


def test_invoice_and_payment_refuse_impossible_values():
    base = {
        "invoice_id": "I",
        "customer_id": "C",
        "amount": {"amount": "10", "currency": "CNY"},
        "issued_on": "2026-11-01",
        "due_on": "2026-12-01",
    }
    assert Invoice.model_validate(base).due_on == date(2026, 12, 1)
    with pytest.raises(ValidationError, match="greater than zero"):
        Invoice.model_validate({**base, "amount": {"amount": "0", "currency": "CNY"}})
    with pytest.raises(ValidationError, match="before issued_on"):
        Invoice.model_validate({**base, "due_on": "2026-10-01"})
    with pytest.raises(ValidationError, match="with an offset"):
        Invoice.model_validate({**base, "due_at": "2026-12-01T18:00:00"})
    with pytest.raises(ValidationError, match="with an offset"):
        Payment(payment_id="P", customer_id="C", amount=Money.of(1, "CNY"), received_at=datetime(2026, 1, 1))


def test_settings_name_every_wrong_variable():
    with pytest.raises(SettingsError) as refused:
        settings_from_environment({"BILLING_SMTP_PORT": "smtp", "BILLING_MAIL_FROM": "nobody"})
    message = str(refused.value)
    assert "BILLING_SMTP_PORT" in message
    assert "BILLING_MAIL_FROM" in message
    with pytest.raises(SettingsError, match="BILLING_PARTNER_CENTER_CLIENT_ID"):
        settings_from_environment({})
    settings = settings_from_environment(
        {
            "BILLING_PARTNER_CENTER_TOKEN_URL": "https://login.partner.microsoftonline.cn/t/oauth2/token",
            "BILLING_PARTNER_CENTER_CLIENT_ID": "id",
            "BILLING_PARTNER_CENTER_CLIENT_SECRET": "secret",
            "BILLING_SMTP_STARTTLS": "false",
        }
    )
    assert settings.smtp_starttls is False
    assert settings.partner_center_url == "https://partner.partnercenterapi.microsoftonline.cn"
