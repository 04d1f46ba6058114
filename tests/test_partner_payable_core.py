"""The partner's bill from 21Vianet: due date, late charge, reminder ladder and payment checks (pure, fast)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.models import BillingStage
from billing.money import Money
from billing.partner_payable import (
    PartnerCenterPaid,
    PartnerCenterVoided,
    PartnerInvoice,
    PartnerPayment,
    PayableRefused,
    PayableState,
    ReminderKind,
    build_status,
    check_payment,
    current_details,
    decide,
    late_charge,
    mark_done,
    monthly_late_charge,
    payment_registered_by_21vianet,
    record_void,
    stage,
)
from billing.policy import PartnerPayableRules, PolicyError, parse_policy
from tests.builders import SHANGHAI

RULES = PartnerPayableRules()


def invoice(amount: str = "30000.00", currency: str = "CNY", paid: str = "0", on: date = date(2026, 11, 1)):
    return PartnerInvoice(
        invoice_id="G000123456",
        invoice_date=on,
        amount=Money.of(amount, currency),
        paid=Money.of(paid, currency),
    )


def state(**fields: object) -> PayableState:
    return PayableState(invoice=fields.pop("invoice", invoice()), **fields)  # type: ignore[arg-type]


def payment(payment_id: str, amount: str, paid_on: date, currency: str = "CNY") -> PartnerPayment:
    return PartnerPayment(payment_id=payment_id, amount=Money.of(amount, currency), paid_on=paid_on)


def local(day: date, hour: int = 9) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=SHANGHAI)


# --- due date and stage -------------------------------------------------------------------------------------


def test_a_21vianet_invoice_falls_due_30_days_after_its_date_at_the_end_of_that_day_in_shanghai() -> None:
    payable = state()

    assert payable.invoice.due_on == date(2026, 12, 1)
    assert payable.due_at == datetime(2026, 12, 2, 0, 0, tzinfo=SHANGHAI)


def test_stage_is_current_before_the_due_moment_overdue_after_and_resolved_once_paid() -> None:
    payable = state()

    assert stage(payable, local(date(2026, 12, 1), 23)) is BillingStage.CURRENT
    assert stage(payable, local(date(2026, 12, 2), 0)) is BillingStage.OVERDUE
    payable.payments = [payment("P-1", "30000.00", date(2026, 12, 3))]
    assert stage(payable, local(date(2026, 12, 3))) is BillingStage.RESOLVED


# --- the late charge ----------------------------------------------------------------------------------------


def rules(**terms: object) -> PartnerPayableRules:
    return PartnerPayableRules.model_validate(terms)


ON_OUTSTANDING = rules(late_charge_basis="outstanding")


def test_no_late_charge_up_to_and_on_the_due_date() -> None:
    assert late_charge(state(), RULES, date(2026, 12, 1)) == Money.of("0", "CNY")


def test_the_default_late_charge_is_21vianets_term_one_and_a_half_percent_of_the_invoice_amount_a_month() -> None:
    assert RULES.late_charge_percent_per_month == Decimal("1.5")
    assert RULES.late_charge_basis == "invoice_amount"
    assert RULES.late_charge_cap_percent is None and RULES.late_charge_cap_amount is None
    # 30 days after the due date: exactly one month at 1.5% of 30,000.00.
    assert late_charge(state(), RULES, date(2026, 12, 31)) == Money.of("450.00", "CNY")


def test_the_late_charge_rate_is_the_policys() -> None:
    assert late_charge(state(), rules(late_charge_percent_per_month="1"), date(2026, 12, 31)) == Money.of(
        "300.00", "CNY"
    )
    assert late_charge(state(), rules(late_charge_percent_per_month="0"), date(2027, 6, 1)) == Money.of("0", "CNY")


def test_late_charge_is_pro_rated_per_day_and_rounded_half_up_to_the_fen() -> None:
    payable = state(invoice=invoice("12345.67"))

    # 7 days × 12,345.67 × 0.015 / 30 = 43.209845 → 43.21
    assert late_charge(payable, RULES, date(2026, 12, 8)) == Money.of("43.21", "CNY")


def test_on_the_invoice_amount_a_part_payment_does_not_lower_the_charge_but_paying_in_full_stops_it() -> None:
    part_paid = state(payments=[payment("P-1", "20000.00", date(2026, 12, 11))])
    paid = state(
        payments=[payment("P-1", "20000.00", date(2026, 12, 11)), payment("P-2", "10000.00", date(2026, 12, 21))]
    )

    # 29 days (2–30 Dec) on the whole 30,000: 870,000 × 0.0005
    assert late_charge(part_paid, RULES, date(2026, 12, 30)) == Money.of("435.00", "CNY")
    # 19 days (2–20 Dec), then nothing: 570,000 × 0.0005
    assert late_charge(paid, RULES, date(2027, 3, 1)) == Money.of("285.00", "CNY")


def test_on_what_is_outstanding_a_part_payment_stops_the_charge_on_its_part_from_the_day_it_was_paid() -> None:
    payable = state(payments=[payment("P-1", "20000.00", date(2026, 12, 11))])

    # 9 days on 30,000 (2–10 Dec), then 20 days on 10,000 (11–30 Dec): (270,000 + 200,000) × 0.0005
    assert late_charge(payable, ON_OUTSTANDING, date(2026, 12, 30)) == Money.of("235.00", "CNY")


@pytest.mark.parametrize("terms", [RULES, ON_OUTSTANDING], ids=["invoice amount", "outstanding"])
def test_the_charge_stops_growing_once_paid_in_full_but_what_accrued_stays(terms: PartnerPayableRules) -> None:
    payable = state(payments=[payment("P-1", "30000.00", date(2026, 12, 5))])

    accrued = late_charge(payable, terms, date(2026, 12, 5))
    assert accrued == Money.of("45.00", "CNY")  # 3 days (2–4 Dec) × 30,000 × 0.0005
    assert late_charge(payable, terms, date(2027, 3, 1)) == accrued


def test_a_cap_as_a_share_of_the_invoice_amount_bounds_the_whole_charge() -> None:
    capped = rules(late_charge_cap_percent="10")

    assert late_charge(state(), capped, date(2027, 5, 30)) == Money.of("2700.00", "CNY")  # 6 months: below the cap
    assert late_charge(state(), capped, date(2027, 12, 1)) == Money.of("3000.00", "CNY")  # 10% of 30,000.00
    # 10% of 12,345.67 is 1,234.567: a cap is rounded down, never up.
    assert late_charge(state(invoice=invoice("12345.67")), capped, date(2029, 1, 1)) == Money.of("1234.56", "CNY")


def test_a_cap_as_an_amount_bounds_invoices_in_its_currency_only() -> None:
    capped = rules(late_charge_cap_amount={"amount": "500.00", "currency": "CNY"})

    assert late_charge(state(), capped, date(2027, 3, 1)) == Money.of("500.00", "CNY")
    in_dollars = state(invoice=invoice("30000.00", "USD"))
    assert late_charge(in_dollars, capped, date(2027, 3, 1)) == Money.of("1350.00", "USD")  # 90 days, uncapped
    both = rules(late_charge_cap_percent="1", late_charge_cap_amount={"amount": "500.00", "currency": "CNY"})
    assert late_charge(state(), both, date(2027, 3, 1)) == Money.of("300.00", "CNY")  # the lower cap


def test_what_a_further_month_costs_follows_the_basis_and_what_the_cap_leaves() -> None:
    part_paid = state(payments=[payment("P-1", "20000.00", date(2026, 11, 20))])

    assert monthly_late_charge(part_paid, RULES, date(2026, 12, 10)) == Money.of("450.00", "CNY")
    assert monthly_late_charge(part_paid, ON_OUTSTANDING, date(2026, 12, 10)) == Money.of("150.00", "CNY")
    capped = rules(late_charge_cap_amount={"amount": "500.00", "currency": "CNY"})
    # 9 days late (2–10 Dec) accrued 135.00 of the 500.00: a further month costs at most the 365.00 left.
    assert monthly_late_charge(state(), capped, date(2026, 12, 10)) == Money.of("365.00", "CNY")
    assert monthly_late_charge(state(), capped, date(2027, 3, 1)) == Money.of("0", "CNY")
    assert monthly_late_charge(
        state(payments=[payment("P-1", "30000.00", date(2026, 12, 5))]), RULES, date(2026, 12, 10)
    ).is_zero


def test_the_late_charge_is_in_the_invoice_currency_with_its_minor_units() -> None:
    payable = state(invoice=invoice("1000001", "JPY"))

    charge = late_charge(payable, RULES, date(2026, 12, 2))
    assert charge == Money.of("500", "JPY")  # 1,000,001 × 0.0005 = 500.0005 → 500 yen, no decimals
    assert late_charge(state(invoice=invoice("1000.00", "USD")), RULES, date(2026, 12, 2)).currency == "USD"


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10000000"), places=2)


@settings(max_examples=200, deadline=None)
@given(
    amount=amounts,
    parts=st.lists(st.tuples(st.integers(1, 100), st.integers(0, 120)), max_size=5),
    days_late=st.integers(0, 400),
    basis=st.sampled_from(["invoice_amount", "outstanding"]),
    cap_percent=st.none() | st.decimals(min_value=Decimal("0.1"), max_value=Decimal("50"), places=1),
)
def test_late_charge_never_negative_never_more_than_the_full_rate_or_the_cap_and_never_falls_with_time(
    amount: Decimal, parts: list[tuple[int, int]], days_late: int, basis: str, cap_percent: Decimal | None
) -> None:
    total = Money.of(amount, "CNY")
    payments = []
    left = total.amount
    for n, (share, day) in enumerate(parts):
        part = (left * share / 100).quantize(Decimal("0.01"))
        if part <= 0:
            continue
        left -= part
        payments.append(payment(f"P-{n}", str(part), date(2026, 11, 1) + timedelta(days=day)))
    payable = state(invoice=invoice(str(amount)), payments=payments)
    on = date(2026, 12, 1) + timedelta(days=days_late)

    terms = rules(late_charge_basis=basis, late_charge_cap_percent=cap_percent)

    charge = late_charge(payable, terms, on)
    later = late_charge(payable, terms, on + timedelta(days=1))

    assert charge.currency == "CNY"
    assert Decimal(0) <= charge.amount
    # Never more than 1.5% a month on the whole invoice, give or take the final rounding.
    assert charge.amount <= amount * Decimal("0.015") * days_late / 30 + Decimal("0.005")
    if cap_percent is not None:
        assert charge.amount <= amount * cap_percent / 100
    assert later >= charge
    if basis == "outstanding":
        assert charge <= late_charge(payable, RULES, on)  # what is outstanding is never more than the invoice


@settings(max_examples=200, deadline=None)
@given(amount=amounts, first=st.integers(1, 99), paid_day=st.integers(0, 60))
def test_recorded_payments_and_outstanding_always_add_up_to_the_invoice(
    amount: Decimal, first: int, paid_day: int
) -> None:
    payable = state(invoice=invoice(str(amount)))
    part = (amount * first / 100).quantize(Decimal("0.01"))
    today = date(2027, 6, 1)
    for n, value in enumerate([part, amount - part]):
        if value <= 0:
            continue
        candidate = payment(f"P-{n}", str(value), date(2026, 11, 1) + timedelta(days=paid_day))
        assert check_payment(payable, candidate, today)
        payable.payments = [*payable.payments, candidate]
        assert payable.paid + payable.outstanding == payable.invoice.amount

    assert payable.outstanding.is_zero
    with pytest.raises(PayableRefused):
        check_payment(payable, payment("P-late", "0.01", today), today)


# --- the reminder ladder ------------------------------------------------------------------------------------


def test_reminders_go_7_days_and_1_day_before_the_due_date_then_weekly_while_overdue() -> None:
    payable = state()
    sent = []
    now = datetime(2026, 11, 1, tzinfo=UTC)
    while len(sent) < 5:
        decision = decide(payable, RULES, now)
        assert decision.step is not None and decision.wake_at is not None
        now = max(now, decision.wake_at)
        mark_done(payable, decision.step)
        sent.append((decision.step.kind, decision.step.at))

    assert sent == [
        (ReminderKind.BEFORE_DUE, local(date(2026, 11, 24))),
        (ReminderKind.BEFORE_DUE, local(date(2026, 11, 30))),
        (ReminderKind.OVERDUE, local(date(2026, 12, 8))),
        (ReminderKind.OVERDUE, local(date(2026, 12, 15))),
        (ReminderKind.OVERDUE, local(date(2026, 12, 22))),
    ]


def test_an_invoice_found_late_gets_one_reminder_now_not_a_burst_of_stale_ones() -> None:
    payable = state()
    now = local(date(2026, 12, 20), 14)

    decision = decide(payable, RULES, now)

    assert decision.step is not None
    assert decision.step.kind is ReminderKind.OVERDUE
    assert decision.step.at == local(date(2026, 12, 15))
    mark_done(payable, decision.step)
    following = decide(payable, RULES, now)
    assert following.step is not None and following.step.at == local(date(2026, 12, 22))


def test_paid_in_full_sends_the_closing_notice_once_and_then_finishes() -> None:
    payable = state(payments=[payment("P-1", "30000.00", date(2026, 11, 20))])
    now = local(date(2026, 11, 20))

    decision = decide(payable, RULES, now)
    assert decision.step is not None and decision.step.kind is ReminderKind.PAID
    mark_done(payable, decision.step)

    assert decide(payable, RULES, now).finished


def voided(as_of: datetime = datetime(2026, 12, 9, 17, 0, tzinfo=UTC), invoice_id: str = "G000123456"):
    return PartnerCenterVoided(invoice_id=invoice_id, as_of=as_of)


def test_an_invoice_21vianet_voided_stops_the_reminders_tells_finance_once_and_finishes() -> None:
    payable = state(payments=[payment("P-1", "10000.00", date(2026, 11, 28))])
    now = local(date(2026, 12, 10))
    assert decide(payable, RULES, now).step.kind is ReminderKind.OVERDUE  # type: ignore[union-attr]

    assert record_void(payable, voided(), date(2026, 12, 10)) is True

    assert payable.voided_on == date(2026, 12, 10)  # 17:00 UTC is the next day in Shanghai
    assert payable.outstanding == Money.of("0", "CNY")
    assert stage(payable, now) is BillingStage.RESOLVED
    assert late_charge(payable, RULES, date(2027, 1, 31)) == Money.of("0", "CNY")  # a void invoice is no bill
    decision = decide(payable, RULES, now)
    assert decision.step is not None and decision.step.kind is ReminderKind.VOIDED
    assert decision.step.key == "partner-payable-G000123456/voided"
    mark_done(payable, decision.step)
    assert decide(payable, RULES, now + timedelta(days=30)).finished
    assert record_void(payable, voided(), date(2026, 12, 11)) is False  # told again: nothing changes
    assert payable.voided_on == date(2026, 12, 10)


def test_a_void_reported_for_another_invoice_is_refused_and_changes_nothing() -> None:
    payable = state()

    with pytest.raises(PayableRefused, match="about invoice G9"):
        record_void(payable, voided(invoice_id="G9"), date(2026, 12, 10))
    assert payable.voided_on is None


def test_a_payment_against_a_voided_invoice_is_refused_with_a_reason() -> None:
    payable = state()
    record_void(payable, voided(), date(2026, 12, 10))

    with pytest.raises(PayableRefused, match="21Vianet voided invoice G000123456: Partner Center lists it as a void"):
        check_payment(payable, payment("TT-1", "100.00", date(2026, 12, 10)), date(2026, 12, 10))
    with pytest.raises(PayableRefused, match="21Vianet voided invoice G000123456"):  # the void, not the currency
        check_payment(payable, payment("TT-1", "100.00", date(2026, 12, 10), "USD"), date(2026, 12, 10))
    assert payment_registered_by_21vianet(payable, reported("30000.00"), date(2026, 12, 10)) is None


def test_the_status_of_a_voided_invoice_says_so_and_owes_nothing() -> None:
    payable = state()
    record_void(payable, voided(), date(2026, 12, 10))

    status = build_status(payable, RULES, local(date(2026, 12, 31)))

    assert status.voided_on == date(2026, 12, 10)
    assert status.amount_due == Money.of("0", "CNY") and status.late_charge == Money.of("0", "CNY")
    assert status.days_overdue == 0 and status.next_reminder_at is None
    assert "**Voided by 21Vianet:** Partner Center lists it as a void note (seen 2026-12-10)" in current_details(status)


def test_a_failed_reminder_waits_for_its_retry_time() -> None:
    from billing.partner_payable import reminder_failed

    payable = state()
    first = decide(payable, RULES, local(date(2026, 11, 24)))
    assert first.step is not None
    failure = reminder_failed(payable, first.step, "smtp down", local(date(2026, 11, 24), 10))
    assert failure.retry_at == local(date(2026, 11, 24), 10) + timedelta(minutes=15)

    again = decide(payable, RULES, local(date(2026, 11, 24), 10) + timedelta(minutes=5))

    assert again.step == first.step
    assert again.wake_at == failure.retry_at
    second = reminder_failed(payable, first.step, "smtp down", failure.retry_at)
    assert (second.attempts, second.retry_at - failure.retry_at) == (2, timedelta(minutes=30))


def test_the_ladder_is_read_from_the_policy_files_partner_payable_table() -> None:
    policy = parse_policy({"partner_payable": {"reminders": ["-P3D"], "overdue_every": "P1D", "remind_at": "10:00"}})
    rules = policy.partner_payable
    payable = state()

    first = decide(payable, rules, datetime(2026, 11, 1, tzinfo=UTC))
    assert first.step is not None and first.step.at == local(date(2026, 11, 28), 10)
    mark_done(payable, first.step)
    second = decide(payable, rules, first.step.at)
    assert second.step is not None and second.step.at == local(date(2026, 12, 2), 10)


def test_a_policy_reminding_after_the_due_date_is_refused_with_the_key_named() -> None:
    with pytest.raises(PolicyError, match=r"partner_payable\.reminders"):
        parse_policy({"partner_payable": {"reminders": ["P1D"]}})
    with pytest.raises(PolicyError, match=r"partner_payable\.overdue_every"):
        parse_policy({"partner_payable": {"overdue_every": "PT0S"}})


def test_the_late_charge_terms_are_read_from_the_policy_files_partner_payable_table() -> None:
    import tomllib

    written = tomllib.loads(
        """
        [partner_payable]
        late_charge_percent_per_month = "1.25"
        late_charge_basis = "outstanding"
        late_charge_cap_percent = "10"
        late_charge_cap_amount = { amount = "5000.00", currency = "CNY" }
        """
    )
    terms = parse_policy(written).partner_payable

    assert terms.late_charge_rate_per_month == Decimal("0.0125")
    assert terms.late_charge_basis == "outstanding"
    assert terms.late_charge_cap_percent == Decimal("10")
    assert terms.late_charge_cap_amount == Money.of("5000.00", "CNY")
    assert parse_policy({}).partner_payable == PartnerPayableRules()  # a file without them keeps the defaults


@pytest.mark.parametrize(
    ("terms", "problem"),
    [
        ({"late_charge_percent_per_month": 1.5}, r"late_charge_percent_per_month: write the percentage as a string"),
        ({"late_charge_percent_per_month": "150"}, r"late_charge_percent_per_month: must be a percentage between"),
        ({"late_charge_percent_per_month": "-1"}, r"late_charge_percent_per_month: must be a percentage between"),
        ({"late_charge_basis": "balance"}, r"late_charge_basis: Input should be 'invoice_amount' or 'outstanding'"),
        ({"late_charge_cap_percent": "0"}, r"late_charge_cap_percent: must be a positive percentage"),
        ({"late_charge_cap_amount": {"amount": "0", "currency": "CNY"}}, r"late_charge_cap_amount: must be a positive"),
        ({"late_charge_per_month": "1.5"}, r"late_charge_per_month: unknown key"),
    ],
    ids=["float", "above 100%", "negative", "unknown basis", "zero cap", "zero cap amount", "misspelt key"],
)
def test_impossible_late_charge_terms_are_refused_with_the_key_named(terms: dict[str, object], problem: str) -> None:
    with pytest.raises(PolicyError, match=rf"partner_payable\.{problem}"):
        parse_policy({"partner_payable": terms})


# --- recording payments -------------------------------------------------------------------------------------

TODAY = date(2026, 12, 10)


def test_a_payment_in_another_currency_is_refused_naming_the_invoice_currency() -> None:
    with pytest.raises(PayableRefused, match="in USD, but 21Vianet's invoice G000123456 is in CNY"):
        check_payment(state(), payment("P-1", "100.00", TODAY, "USD"), TODAY)


def test_a_payment_above_what_is_outstanding_is_refused() -> None:
    payable = state(invoice=invoice(paid="29000.00"))

    with pytest.raises(PayableRefused, match=r"only 1000\.00 CNY is outstanding"):
        check_payment(payable, payment("P-1", "1000.01", TODAY), TODAY)


def test_a_repeated_payment_id_counts_once_and_with_another_amount_is_refused() -> None:
    payable = state(payments=[payment("P-1", "100.00", TODAY)])

    assert check_payment(payable, payment("P-1", "100.00", TODAY), TODAY) is False
    with pytest.raises(PayableRefused, match=r"already recorded as 100\.00 CNY"):
        check_payment(payable, payment("P-1", "200.00", TODAY), TODAY)


def test_a_payment_dated_in_the_future_or_before_the_invoice_is_refused() -> None:
    with pytest.raises(PayableRefused, match="in the future"):
        check_payment(state(), payment("P-1", "1.00", TODAY + timedelta(days=1)), TODAY)
    with pytest.raises(PayableRefused, match="before the invoice date"):
        check_payment(state(), payment("P-1", "1.00", date(2026, 10, 31)), TODAY)


def test_non_positive_payments_and_blank_ids_never_make_a_payment() -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        payment("P-1", "0", TODAY)
    with pytest.raises(ValueError, match="payment_id must not be empty"):
        payment(" ", "1.00", TODAY)


def test_an_invoice_whose_paid_amount_is_in_another_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="paid is in USD"):
        PartnerInvoice(
            invoice_id="G1",
            invoice_date=TODAY,
            amount=Money.of("1.00", "CNY"),
            paid=Money.of("0", "USD"),
        )


# --- status -------------------------------------------------------------------------------------------------


def test_status_states_the_outstanding_amount_days_overdue_and_the_accrued_late_charge() -> None:
    payable = state(payments=[payment("P-1", "10000.00", date(2026, 11, 28))])

    status = build_status(payable, RULES, local(date(2026, 12, 31), 12))

    assert status.stage is BillingStage.OVERDUE
    assert status.amount_due == Money.of("20000.00", "CNY")
    assert status.days_overdue == 30
    assert status.late_charge == Money.of("450.00", "CNY")  # 1.5% of the invoice amount, 30 days
    assert status.late_charge_rate_per_month == Decimal("0.015") and status.late_charge_basis == "invoice_amount"
    assert status.next_reminder_at == local(date(2026, 12, 29))  # the latest one due, not yet sent
    details = current_details(status)
    assert (
        "**Late charge accrued (estimate):** 450.00 CNY by 2026-12-31 (30 days overdue, 1.5% a month of the invoice "
        "amount)"
    ) in details
    assert "P-1: 10000.00 CNY on 2026-11-28" in details


# --- 21Vianet registered a payment in Partner Center ----------------------------------------------------


def reported(paid: str, currency: str = "CNY", as_of: datetime = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)):
    return PartnerCenterPaid(invoice_id="G000123456", paid=Money.of(paid, currency), as_of=as_of)


def test_partner_center_showing_more_paid_books_the_difference_on_the_day_it_was_seen_in_the_partners_zone() -> None:
    known = state(invoice=invoice(paid="1000.00"), payments=[payment("TT-1", "4000.00", date(2026, 12, 1))])

    booked = payment_registered_by_21vianet(known, reported("12000.00"), date(2026, 12, 8))

    assert booked is not None
    assert booked.amount == Money.of("7000.00", "CNY")  # 12000 shown, 1000 at tracking + 4000 recorded
    assert booked.paid_on == date(2026, 12, 6)  # 23:30 UTC is the next morning in Shanghai
    assert booked.payment_id == "21vianet-G000123456-paid-12000.00-CNY"
    assert booked.reference == "registered by 21Vianet in Partner Center"
    known.payments = [*known.payments, booked]
    details = current_details(build_status(known, RULES, datetime(2026, 12, 8, tzinfo=UTC)))
    assert "- 7000.00 CNY registered by 21Vianet in Partner Center, seen there on 2026-12-06" in details
    assert "- TT-1: 4000.00 CNY on 2026-12-01" in details


def test_partner_center_showing_no_more_than_is_known_never_lowers_what_is_paid() -> None:
    known = state(payments=[payment("TT-1", "4000.00", date(2026, 12, 1))])

    assert payment_registered_by_21vianet(known, reported("4000.00"), date(2026, 12, 8)) is None
    assert payment_registered_by_21vianet(known, reported("0"), date(2026, 12, 8)) is None


def test_a_payment_21vianet_registered_makes_finance_recording_the_same_money_refused_with_a_reason() -> None:
    known = state()
    booked = payment_registered_by_21vianet(known, reported("30000.00"), date(2026, 12, 8))
    assert booked is not None
    known.payments = [booked]

    with pytest.raises(PayableRefused, match=r"21Vianet already registered payments of 30000\.00 CNY in Partner"):
        check_payment(known, payment("TT-9", "30000.00", date(2026, 12, 7)), date(2026, 12, 8))


def test_a_partner_center_report_in_another_currency_or_for_another_invoice_is_refused() -> None:
    with pytest.raises(PayableRefused, match="is in USD, but invoice G000123456 is in CNY"):
        payment_registered_by_21vianet(state(), reported("100.00", "USD"), date(2026, 12, 8))
    other = PartnerCenterPaid(invoice_id="G9", paid=Money.of("1.00", "CNY"), as_of=datetime(2026, 12, 5, tzinfo=UTC))
    with pytest.raises(PayableRefused, match="about invoice G9"):
        payment_registered_by_21vianet(state(), other, date(2026, 12, 8))
