"""The policy file, Money and the contract models: what they accept and how they refuse."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from billing import refusals
from billing.lifecycle import operator_rules, transitions
from billing.lifecycle.schedule import single_invoice_state, unpaid_invoice
from billing.models import CustomerAccount, Dispute, Invoice, Payment
from billing.money import MAX_AMOUNT, AmountOutOfRange, CurrencyMismatch, Money, largest_amount, minor_units, total
from billing.policy import DEMO_POLICY_TOML, CollectionsPolicy, PolicyError, load_policy, parse_policy
from billing.refusals import Refused
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
    with pytest.raises(ValidationError, match="not a decimal number"):
        Money.of("lots", "CNY")
    with pytest.raises(CurrencyMismatch):
        _ = Money.of(1, "CNY") + Money.of(1, "USD")
    assert Money.of(5, "JPY").amount == Decimal(5)


# --- the bound: every amount is money the ledger can book, or a refusal with a sentence -------------------

LARGEST_CNY = "999,999,999,999.99 CNY"


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ("1e30", f"amount 1E+30 is larger than the largest amount this engine books ({LARGEST_CNY})"),
        (1e30, f"amount 1E+30 is larger than the largest amount this engine books ({LARGEST_CNY})"),
        ("9" * 30, f"amount {'9' * 30} is larger than the largest amount this engine books ({LARGEST_CNY})"),
        (10**30, f"amount 1{'0' * 30} is larger than the largest amount this engine books ({LARGEST_CNY})"),
        (
            "99999999999999999999.00",
            f"amount 99999999999999999999.00 is larger than the largest amount this engine books ({LARGEST_CNY})",
        ),
        ("1000000000000", f"amount 1000000000000 is larger than the largest amount this engine books ({LARGEST_CNY})"),
        (
            "-1000000000000",
            "amount -1000000000000 is smaller than the smallest amount this engine books (-999,999,999,999.99 CNY)",
        ),
        ("9" * 5000, f"amount 1.000000E+5000 is larger than the largest amount this engine books ({LARGEST_CNY})"),
        ("NaN", 'amount: must be a finite number such as "1234.50", not NaN'),
        (float("nan"), 'amount: must be a finite number such as "1234.50", not NaN'),
        ("-Infinity", 'amount: must be a finite number such as "1234.50", not -Infinity'),
        (float("inf"), 'amount: must be a finite number such as "1234.50", not Infinity'),
        ("sNaN", 'amount: must be a finite number such as "1234.50", not sNaN'),
        ("1e-30", "amount 1E-30 has more than 2 decimals for CNY"),
        (0.1 + 0.2, "amount 0.30000000000000004 has more than 2 decimals for CNY"),
        (True, 'amount: must be a decimal string such as "1234.50"'),
        ("1e999999999999999999999", "amount: '1e999999999999999999999' is not a decimal number"),
    ],
)
def test_an_absurd_amount_is_refused_with_a_sentence(amount: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Money.model_validate({"amount": amount, "currency": "CNY"})
    assert refusals.reason(refused.value) == reason


def test_the_bound_is_the_largest_amount_in_the_currency_either_side_of_zero() -> None:
    assert str(MAX_AMOUNT) == "999999999999.99"
    assert Money.of("999999999999.99", "CNY").amount == MAX_AMOUNT
    assert Money.of("-999999999999.99", "CNY").amount == -MAX_AMOUNT
    assert Money.model_validate_json('{"amount": 999999999999.99, "currency": "CNY"}').amount == MAX_AMOUNT
    assert Money.of("999999999999", "JPY").amount == largest_amount("JPY") == Decimal("999999999999")
    with pytest.raises(
        ValidationError, match=r"larger than the largest amount this engine books \(999,999,999,999 JPY\)"
    ):
        Money.of("1000000000000", "JPY")


def test_a_json_number_beyond_the_bound_is_refused_by_the_messages_that_carry_it() -> None:
    payment = {"payment_id": "P-1", "customer_id": "C-1", "received_at": "2026-11-25T10:00:00+08:00"}
    for amount in ("1e30", '"1e30"', "9" * 30, f'"{"9" * 30}"', '"99999999999999999999.00"'):
        document = json.dumps(payment)[:-1] + f', "amount": {{"amount": {amount}, "currency": "CNY"}}}}'
        with pytest.raises(ValidationError) as refused:
            Payment.model_validate_json(document)
        assert refusals.reason(refused.value).startswith("amount: ")
        assert f"is larger than the largest amount this engine books ({LARGEST_CNY})" in refusals.reason(refused.value)
        with pytest.raises(ValidationError, match="larger than the largest amount"):
            Invoice.model_validate(
                {
                    "invoice_id": "I-1",
                    "customer_id": "C-1",
                    "amount": json.loads(f'{{"amount": {amount}, "currency": "CNY"}}'),
                    "issued_on": "2026-11-01",
                    "due_on": "2026-12-01",
                }
            )


_ABSURD_AMOUNTS = st.one_of(
    st.sampled_from(
        ["1e30", "9" * 30, "99999999999999999999.00", "1E+999999999", "0e-1000000", "-0", "1_000", "١٢٣", "  7 "]
    ),
    st.from_regex(r"\A\s?[+-]?\d{0,32}(\.\d{0,32})?([eE][+-]?\d{1,24})?\s?\Z"),
    st.text(max_size=24),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.floats(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(amount=_ABSURD_AMOUNTS, currency=st.sampled_from(["CNY", "cny", "JPY", "KRW", "USD", "XYZ"]))
def test_any_amount_is_money_the_ledger_can_book_or_a_validation_error_with_a_sentence(
    amount: Any, currency: str
) -> None:
    try:
        money = Money.model_validate({"amount": amount, "currency": currency})
    except ValidationError as error:
        reason = refusals.reason(error)
        assert reason and "InvalidOperation" not in reason and "<class" not in reason
        return
    assert -largest_amount(money.currency) <= money.amount <= largest_amount(money.currency)
    assert money.amount.as_tuple().exponent == -minor_units(money.currency)


@settings(max_examples=100, deadline=None)
@given(
    number=st.one_of(
        st.sampled_from(["1e30", "9" * 30, "99999999999999999999.00", "1e400", "-1e400", "1e-400", "1000000000000"]),
        st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,5})?\Z"),
    )
)
def test_any_json_number_is_money_or_a_validation_error(number: str) -> None:
    try:
        money = Money.model_validate_json(f'{{"amount": {number}, "currency": "CNY"}}')
    except ValidationError as error:
        assert refusals.reason(error)
        return
    assert abs(money.amount) <= MAX_AMOUNT


def test_a_sum_beyond_the_bound_is_refused_never_clamped() -> None:
    largest = Money.of("999999999999.99", "CNY")
    assert largest - Money.of("0.01", "CNY") + Money.of("0.01", "CNY") == largest
    with pytest.raises(AmountOutOfRange) as refused:
        _ = largest + Money.of("0.01", "CNY")
    assert str(refused.value) == (
        f"the sum 1,000,000,000,000.00 CNY is larger than the largest amount this engine books ({LARGEST_CNY})"
    )
    with pytest.raises(AmountOutOfRange, match=r"^the difference -1,999,999,999,999\.98 CNY is smaller than"):
        _ = -largest - largest
    with pytest.raises(AmountOutOfRange, match=r"^the sum 1,200,000,000,000\.00 CNY is larger"):
        total([Money.of("400000000000", "CNY")] * 3, "CNY")
    # A refusal, so that a message whose arithmetic leaves the bound is refused rather than failing the workflow.
    assert isinstance(refused.value, Refused)


_AMOUNTS = st.one_of(
    st.sampled_from(["0", "-0", "0.01", "-0.01", "999999999999.99", "-999999999999.99", "1234.50"]).map(Decimal),
    st.decimals(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT, places=2, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(a=_AMOUNTS, b=_AMOUNTS, currency=st.sampled_from(["CNY", "JPY", "USD"]))
def test_sums_differences_and_negations_are_the_very_amounts_validation_gives(a: Decimal, b: Decimal, currency: str):
    """Arithmetic builds its results without validating them again: each must be what validating would give,
    to the exponent and the sign of a zero (they go into activity inputs: a replay compares those)."""
    places = Decimal(1).scaleb(-minor_units(currency))
    x = Money.of(a.quantize(places, rounding="ROUND_DOWN"), currency)
    y = Money.of(b.quantize(places, rounding="ROUND_DOWN"), currency)
    for what, result, exact in (
        ("sum", lambda: x + y, lambda: x.amount + y.amount),
        ("difference", lambda: x - y, lambda: x.amount - y.amount),
        ("negation", lambda: -x, lambda: -x.amount),
    ):
        try:
            validated = Money(amount=exact(), currency=currency)
        except ValidationError:
            with pytest.raises(AmountOutOfRange):
                result()
            continue
        got = result()
        assert got == validated, what
        assert got.amount.as_tuple() == validated.amount.as_tuple(), what
        assert got.model_dump_json() == validated.model_dump_json(), what


def test_arithmetic_and_zero_validate_no_amount_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision core adds and compares amounts thousands of times per decision: validating each result
    (three Python validators) was most of its time."""
    x, y = Money.of("1234.50", "CNY"), Money.of("0.50", "CNY")
    Money.zero("CNY")
    validations = []
    validator = Money.__pydantic_validator__

    class Counting:
        def validate_python(self, *args: Any, **kwargs: Any) -> Any:
            validations.append(args)
            return validator.validate_python(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(validator, name)

    monkeypatch.setattr(Money, "__pydantic_validator__", Counting())
    assert Money.of("1.00", "CNY").amount == Decimal("1.00") and len(validations) == 1  # counting works
    validations.clear()

    zero = Money.zero("CNY")
    results = [x + y, x - y, -x, x + zero, zero + y, x - zero, total([x, y], "CNY")]

    assert [str(result) for result in results] == [
        "1235.00 CNY",
        "1234.00 CNY",
        "-1234.50 CNY",
        "1234.50 CNY",
        "0.50 CNY",
        "1234.50 CNY",
        "1235.00 CNY",
    ]
    assert validations == []


def test_a_dispute_on_top_of_a_whole_disputed_invoice_of_the_largest_amount_is_refused() -> None:
    account = CustomerAccount(customer_id="C-1", name="Lotus", email="ap@lotus.example.cn")
    largest = Money.of("999999999999.99", "CNY")
    invoice = unpaid_invoice("INV-1", largest, date(2026, 11, 1), date(2026, 12, 1), ZoneInfo("Asia/Shanghai"))
    state = single_invoice_state(account, invoice, datetime(2026, 11, 1, tzinfo=UTC))
    whole = Dispute(dispute_id="D-1", customer_id="C-1", invoice_id="INV-1", reason="all of it")
    operator_rules.check_dispute(state, whole)
    transitions.dispute_opened(state, whole, largest, datetime(2026, 11, 2, tzinfo=UTC))

    more = whole.model_copy(update={"dispute_id": "D-2", "amount": Money.of("0.01", "CNY")})
    with pytest.raises(Refused, match="larger than the largest amount this engine books"):
        operator_rules.check_dispute(state, more)


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


def test_settings_refuse_a_sweep_or_partner_center_queue_that_is_the_lifecycle_queue():
    required = {
        "BILLING_PARTNER_CENTER_TOKEN_URL": "https://login.partner.microsoftonline.cn/t/oauth2/token",
        "BILLING_PARTNER_CENTER_CLIENT_ID": "id",
        "BILLING_PARTNER_CENTER_CLIENT_SECRET": "secret",
        "BILLING_TASK_QUEUE": "billing",
    }
    with pytest.raises(SettingsError, match="BILLING_SWEEP_TASK_QUEUE is BILLING_TASK_QUEUE's 'billing'"):
        settings_from_environment(required | {"BILLING_SWEEP_TASK_QUEUE": "billing"})
    with pytest.raises(SettingsError, match="BILLING_PARTNER_CENTER_TASK_QUEUE is BILLING_TASK_QUEUE's 'billing'"):
        settings_from_environment(required | {"BILLING_PARTNER_CENTER_TASK_QUEUE": "billing"})
    with pytest.raises(SettingsError, match="both 'billing-x'"):
        settings_from_environment(
            required | {"BILLING_SWEEP_TASK_QUEUE": "billing-x", "BILLING_PARTNER_CENTER_TASK_QUEUE": "billing-x"}
        )
    settings = settings_from_environment(required)
    assert (settings.sweep_queue, settings.partner_center_queue) == ("billing-sweep", "billing-partner-center")


def test_every_contract_model_is_complete_once_imported() -> None:
    """Not completed later by pydantic at first use, from wherever that is (inside a workflow's sandbox)."""
    probe = (
        "import pydantic, billing.models as m\n"
        "print([n for n, v in vars(m).items() if isinstance(v, type) and issubclass(v, pydantic.BaseModel)"
        " and v is not pydantic.BaseModel and not v.__pydantic_complete__])"
    )
    repo = Path(__file__).resolve().parent.parent
    finished = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, check=True)
    assert finished.stdout.strip() == "[]"
