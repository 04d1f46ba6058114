"""The decision core: the ladder, quiet hours, suspension rules and their invariants (hypothesis)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.lifecycle import notice, transitions
from billing.lifecycle.forecast import forecast
from billing.lifecycle.next_step import decide, stage
from billing.lifecycle.steps import CUSTOMER_FACING_STEPS, DESK_STEPS, PACED_STEPS, StepKind
from billing.models import BillingStage, CustomerAccount, Dispute, DunningPause, EscalateDispute, ResolveDispute
from billing.money import Money
from billing.notices import render_notice
from billing.policy import CollectionsPolicy, QuietHours
from billing.quiet_hours import is_business_moment, next_business_moment
from tests.builders import SHANGHAI
from tests.core_driver import CoreDriver, cny, days

ACCOUNT = CustomerAccount(customer_id="C-1", name="Lotus Trading", email="ap@lotus.example.cn")
# Tuesday 2026-12-01 10:00 in Shanghai.
MONDAY_MORNING = datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI)
DUE = datetime(2026, 12, 16, 0, 0, tzinfo=SHANGHAI)  # end of Tuesday 15 December


def driver(policy: CollectionsPolicy | None = None, account: CustomerAccount = ACCOUNT) -> CoreDriver:
    return CoreDriver(policy=policy or CollectionsPolicy(), account=account, now=MONDAY_MORNING)


def test_invoice_paid_on_time_ends_without_close_the_loop():
    d = driver()
    d.issue("INV-1", cny("1234.50"), DUE)
    d.run_until(DUE - days(1))
    d.pay_everything()
    d.run_until(DUE + days(60))
    assert d.kinds() == [StepKind.SEND_INVOICE, StepKind.SEND_REMINDER]
    assert decide(d.state, d.policy, d.now).finished
    assert stage(d.state, d.now) is BillingStage.RESOLVED


def test_full_ladder_to_suspension_then_payment_reinstates_and_closes_the_loop():
    d = driver()
    d.issue("INV-1", cny("1234.50"), DUE)
    d.run_until(DUE + days(55))
    assert d.kinds() == [
        StepKind.SEND_INVOICE,
        StepKind.SEND_REMINDER,
        StepKind.SEND_REMINDER,
        StepKind.SEND_REMINDER,
        StepKind.SEND_FINAL_NOTICE,
        StepKind.SUSPEND,
        StepKind.SEND_SUSPENSION_NOTICE,
        StepKind.SEND_DATA_DELETION_WARNING,
    ]
    assert stage(d.state, d.now) is BillingStage.SUSPENDED
    d.pay_everything()
    d.run_until(d.now + days(5))
    assert d.kinds()[-2:] == [StepKind.REINSTATE, StepKind.CLOSE_THE_LOOP]
    assert decide(d.state, d.policy, d.now).finished


def _performed_after(d: CoreDriver, moment: datetime) -> list[tuple[datetime, StepKind]]:
    return [(at, step.kind) for at, step in d.performed if at >= moment]


def test_a_new_due_date_after_the_final_notice_restarts_the_ladder_and_warns_again_before_suspension():
    d = driver()
    d.issue("INV-1", cny("2400.00"), DUE)
    d.run_until(DUE + days(16))
    assert StepKind.SEND_FINAL_NOTICE in d.kinds()
    extended_at, new_due = d.now, DUE + days(30)
    d.extend("INV-1", new_due)
    d.run_until(new_due + days(40))
    after = _performed_after(d, extended_at)
    kinds = [kind for _, kind in after]
    assert kinds.count(StepKind.SEND_FINAL_NOTICE) == 1 and StepKind.SUSPEND in kinds
    final_at = next(at for at, kind in after if kind is StepKind.SEND_FINAL_NOTICE)
    suspended_at = next(at for at, kind in after if kind is StepKind.SUSPEND)
    assert new_due < final_at < suspended_at
    assert suspended_at >= final_at + d.policy.final_notice_warning
    assert kinds.index(StepKind.SEND_REMINDER) < kinds.index(StepKind.SEND_FINAL_NOTICE)


def test_dunning_resumed_after_the_final_notice_warns_again_before_suspension():
    d = driver()
    d.issue("INV-1", cny("2400.00"), DUE)
    d.run_until(DUE + days(16))
    transitions.dunning_paused(d.state, DunningPause(reason="payment plan talks"))
    d.run_until(DUE + days(60))
    assert StepKind.SUSPEND not in d.kinds()
    resumed_at = d.now
    transitions.dunning_resumed(d.state)
    d.run_until(resumed_at + days(30))
    after = _performed_after(d, resumed_at)
    # The overdue rungs are due at once: one fresh final notice stands for them, then the full warning period.
    assert [kind for _, kind in after][:2] == [StepKind.SEND_FINAL_NOTICE, StepKind.SUSPEND]
    assert after[1][0] >= after[0][0] + d.policy.final_notice_warning


def test_an_upheld_dispute_after_the_final_notice_warns_again_before_suspension():
    d = driver()
    d.issue("INV-1", cny("2400.00"), DUE)
    d.run_until(DUE + days(16))
    dispute = Dispute(dispute_id="D-1", customer_id=ACCOUNT.customer_id, invoice_id="INV-1", reason="seats")
    transitions.dispute_opened(d.state, dispute, cny("2400.00"), d.now)
    d.run_until(DUE + days(30))
    upheld_at = d.now
    uphold = ResolveDispute(dispute_id="D-1", outcome="uphold", note="the seats were used")
    transitions.dispute_resolved(
        d.state,
        uphold,
        upheld_at,
        by_21vianet=False,
        balance=None,
        grace_after_uphold=d.policy.dispute.grace_after_uphold,
    )
    d.run_until(upheld_at + days(40))
    after = [
        (at, kind)
        for at, kind in _performed_after(d, upheld_at)
        if kind in (StepKind.SEND_FINAL_NOTICE, StepKind.SUSPEND)
    ]
    assert [kind for _, kind in after] == [StepKind.SEND_FINAL_NOTICE, StepKind.SUSPEND]
    assert after[1][0] >= after[0][0] + d.policy.final_notice_warning


def test_close_the_loop_after_an_extension_names_the_extension_not_a_payment():
    d = driver()
    d.issue("INV-1", cny("2400.00"), DUE)
    d.run_until(DUE + days(3))
    d.extend("INV-1", DUE + days(30))
    transitions.time_passed(d.state, d.now)
    step = decide(d.state, d.policy, d.now).step
    assert step is not None and step.kind is StepKind.CLOSE_THE_LOOP
    request = notice.notice_request(d.state, d.policy, step, d.now, "customer-billing-C-1")
    assert request.resolution == "extension"
    for locale, paid, extended in (
        ("en-US", "received your payment", "new due date"),
        ("zh-CN", "收到您的付款", "新的付款期限"),
    ):
        text = render_notice(
            request.model_copy(update={"account": request.account.model_copy(update={"locale": locale})})
        ).text
        assert extended in text and paid not in text


def test_ladder_counts_from_the_due_moment_in_business_hours():
    d = driver()
    d.issue("INV-1", cny(500), DUE)
    d.run_until(DUE + days(30))
    moments = {step.key: at.astimezone(SHANGHAI) for at, step in d.performed}
    # -P3D from Wednesday 00:00 is Sunday 00:00: moved to Monday 09:00.
    assert moments["reminder-1-INV-1"] == datetime(2026, 12, 14, 9, 0, tzinfo=SHANGHAI)
    assert moments["reminder-2-INV-1"] == datetime(2026, 12, 17, 9, 0, tzinfo=SHANGHAI)
    assert moments["final-notice-INV-1"] == datetime(2026, 12, 30, 9, 0, tzinfo=SHANGHAI)
    assert moments["suspension-INV-1-1"] == datetime(2027, 1, 6, 9, 0, tzinfo=SHANGHAI)


def test_partial_payment_lowers_the_amount_without_resetting_the_ladder():
    d = driver()
    d.issue("INV-1", cny(1000), DUE)
    d.run_until(DUE + days(3))
    d.pay(cny(400))
    d.run_until(DUE + days(30))
    assert d.state.balance.amount_due == cny(600)
    keys = d.keys()
    assert keys.count("reminder-2-INV-1") == 1
    assert "final-notice-INV-1" in keys
    assert "suspension-INV-1-1" in keys


def test_below_minimum_is_reminded_but_never_warned_of_or_suspended():
    d = driver()
    d.issue("INV-1", cny("99.99"), DUE)
    d.run_until(DUE + days(90))
    assert StepKind.SUSPEND not in d.kinds()
    assert StepKind.SEND_FINAL_NOTICE not in d.kinds()
    assert d.kinds().count(StepKind.SEND_REMINDER) == 3
    assert stage(d.state, d.now) is BillingStage.OVERDUE


def test_partial_payment_below_minimum_stops_the_suspension():
    d = driver()
    d.issue("INV-1", cny(300), DUE)
    d.run_until(DUE + days(15))
    d.pay(cny(250))
    d.run_until(DUE + days(40))
    assert StepKind.SUSPEND not in d.kinds()


def test_invoice_that_arrives_long_overdue_gets_one_catch_up_notice_not_the_whole_ladder():
    d = driver()
    d.now = DUE + days(10)
    d.issue("INV-1", cny(800), DUE)  # arrives on a Saturday: the notices wait for Monday morning
    d.run_until(DUE + days(16))
    sent = [(at, step) for at, step in d.performed]
    # The catch-up is paced: the one dunning notice comes the policy's gap (half the shortest distance between
    # rungs) after the invoice notice; by then the final notice is due and stands for the reminders.
    assert d.policy.notice_gap == days(2)
    assert [step.kind for _, step in sent] == [StepKind.SEND_INVOICE, StepKind.SEND_FINAL_NOTICE]
    assert set(sent[1][1].superseded_keys) == {"reminder-2-INV-1", "reminder-3-INV-1"}
    assert sent[1][0] == sent[0][0] + days(2)


def test_a_catch_up_after_an_outage_spaces_its_dunning_notices_and_suspension_still_follows_the_final_notice():
    """The worker was down from before the due date until long after: when it is back, the ladder's overdue
    rungs do not arrive in one burst (the fault run saw an invoice notice and a final notice 0.2 s apart)."""
    policy = CollectionsPolicy(quiet_hours=QuietHours(enabled=False))
    d = driver(policy)
    d.issue("INV-1", cny(800), DUE)  # booked, then the worker was down before its invoice notice went out
    d.now = DUE + days(18)  # back after the outage: the invoice notice and every rung but suspension are due
    d.run_until(DUE + days(60))
    notices = [(at, step) for at, step in d.performed if step.kind in (StepKind.SEND_INVOICE, *PACED_STEPS)]
    assert [step.kind for _, step in notices][:2] == [StepKind.SEND_INVOICE, StepKind.SEND_FINAL_NOTICE]
    for (earlier, _), (later, _) in itertools.pairwise(notices):
        assert later - earlier >= policy.notice_gap
    [(final_at, _)] = [(at, step) for at, step in notices if step.kind is StepKind.SEND_FINAL_NOTICE]
    [suspended_at] = [at for at, step in d.performed if step.kind is StepKind.SUSPEND]
    assert suspended_at >= final_at + policy.final_notice_warning


def test_suspension_never_comes_sooner_than_the_final_notice_promised():
    d = driver()
    d.now = DUE + days(30)
    d.issue("INV-1", cny(800), DUE)
    d.run_until(DUE + days(60))
    performed = {step.kind: at for at, step in d.performed}
    final_at = performed[StepKind.SEND_FINAL_NOTICE]
    assert performed[StepKind.SUSPEND] - final_at >= d.policy.final_notice_warning


def test_second_invoice_joins_and_the_ladder_moves_to_it_once_the_first_is_paid():
    d = driver()
    d.issue("INV-1", cny(500), DUE)
    d.run_until(DUE + days(2))
    d.issue("INV-2", cny(700), DUE + days(30))
    d.pay(cny(500))
    d.run_until(DUE + days(80))
    keys = d.keys()
    assert "invoice-INV-2" in keys
    assert "final-notice-INV-2" in keys
    assert "final-notice-INV-1" not in keys


def test_close_the_loop_waits_for_business_hours():
    d = driver()
    d.issue("INV-1", cny(500), DUE)
    d.run_until(DUE + days(2))
    saturday_night = datetime(2026, 12, 19, 23, 0, tzinfo=SHANGHAI)
    d.run_until(saturday_night)
    d.pay_everything()
    d.run_until(saturday_night + days(3))
    at, step = d.performed[-1]
    assert step.kind is StepKind.CLOSE_THE_LOOP
    assert at.astimezone(SHANGHAI) == datetime(2026, 12, 21, 9, 0, tzinfo=SHANGHAI)


def test_reinstatement_does_not_wait_for_business_hours():
    d = driver()
    d.issue("INV-1", cny(500), DUE)
    d.run_until(DUE + days(25))
    assert d.state.suspension is not None
    sunday_night = datetime(2027, 1, 10, 23, 30, tzinfo=SHANGHAI)
    d.run_until(sunday_night)
    d.pay_everything()
    d.run_until(sunday_night + timedelta(minutes=1))
    reinstated = [at for at, step in d.performed if step.kind is StepKind.REINSTATE]
    assert reinstated == [sunday_night]


def test_data_deletion_warnings_carry_the_deletion_date_sixty_days_after_suspension():
    d = driver()
    d.issue("INV-1", cny(500), DUE)
    d.run_until(DUE + days(80))
    suspended_at = next(at for at, step in d.performed if step.kind is StepKind.SUSPEND)
    warnings = [step for _, step in d.performed if step.kind is StepKind.SEND_DATA_DELETION_WARNING]
    assert len(warnings) == 2
    for warning in warnings:
        assert warning.then is not None
        assert warning.then.on == (suspended_at + days(60)).astimezone(SHANGHAI).date()


def test_customer_time_zone_decides_business_hours():
    berlin = CustomerAccount(customer_id="C-2", name="Kunde", email="ap@kunde.example.de", time_zone="Europe/Berlin")
    d = driver(account=berlin)
    d.issue("INV-1", cny(500), DUE)
    d.run_until(DUE + days(30))
    zone = ZoneInfo("Europe/Berlin")
    for at, step in d.performed:
        if step.kind is not StepKind.REINSTATE:
            assert time(9) <= at.astimezone(zone).time() < time(18), step.key


def test_quiet_hours_move_a_night_moment_to_the_next_business_morning():
    quiet = QuietHours()
    friday_night = datetime(2026, 12, 18, 20, 0, tzinfo=SHANGHAI)
    assert next_business_moment(friday_night, SHANGHAI, quiet) == datetime(2026, 12, 21, 9, tzinfo=SHANGHAI)
    weekend_allowed = QuietHours(business_days_only=False)
    assert next_business_moment(friday_night, SHANGHAI, weekend_allowed) == datetime(2026, 12, 19, 9, tzinfo=SHANGHAI)
    inside = datetime(2026, 12, 18, 10, 30, tzinfo=SHANGHAI)
    assert next_business_moment(inside, SHANGHAI, quiet) == inside
    assert next_business_moment(friday_night, SHANGHAI, QuietHours(enabled=False)) == friday_night


# --- properties ----------------------------------------------------------------------------------------

zones = st.sampled_from(["Asia/Shanghai", "Asia/Hong_Kong", "Europe/Berlin", "America/New_York", "UTC"])
amounts = st.decimals(min_value="0.01", max_value="50000", places=2).map(cny)
moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC))
payment_plans = st.lists(st.tuples(st.integers(min_value=-5, max_value=90), amounts), max_size=4)


@st.composite
def lifecycles(
    draw: st.DrawFn, zones: st.SearchStrategy[str] = zones, starts: st.SearchStrategy[datetime] = moments
) -> CoreDriver:
    zone = draw(zones)
    account = CustomerAccount(customer_id="C-P", name="P", email="p@p.example.cn", time_zone=zone)
    start = draw(starts)
    d = CoreDriver(policy=CollectionsPolicy(), account=account, now=start)
    for number in range(draw(st.integers(min_value=1, max_value=3))):
        offset = draw(st.integers(min_value=-10, max_value=40))
        d.issue(f"INV-{number}", draw(amounts), start + days(offset))
    return d


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifecycles(), payment_plans)
def test_property_lifecycle_invariants(d: CoreDriver, plan: list[tuple[int, object]]):
    start = d.now
    for day, amount in sorted(plan, key=lambda item: item[0]):
        d.run_until(max(d.now, start + days(day)))
        before = d.state.overdue_amount(d.now)
        d.pay(amount.min(d.state.balance.amount_due) if d.state.balance.amount_due.is_positive else amount)
        assert d.state.overdue_amount(d.now) <= before
    d.run_until(start + days(120))
    zone = d.account.zone
    # No notice twice.
    keys = d.keys()
    assert len(keys) == len(set(keys))
    for (at, step), overdue in zip(d.performed, d.overdue_when_performed, strict=True):
        if step.kind in (StepKind.SUSPEND, StepKind.SEND_FINAL_NOTICE):
            # Never suspend (or threaten to) a paid-up or below-minimum account.
            assert overdue >= d.policy.minimum_to_suspend, (step.key, overdue)
        if step.kind is not StepKind.REINSTATE and step.kind not in DESK_STEPS:
            # Quiet hours respected for every customer-facing step (the desk is told at any hour).
            assert is_business_moment(at, zone, d.policy.quiet_hours), (step.key, at.astimezone(zone))
    # Every suspension ends in reinstatement once everything is paid.
    d.pay_everything()
    d.run_until(d.now + days(7))
    assert d.state.suspension is None
    assert decide(d.state, d.policy, d.now).finished
    suspensions = d.kinds().count(StepKind.SUSPEND)
    assert d.kinds().count(StepKind.REINSTATE) == suspensions


def test_property_never_suspends_a_paid_up_or_below_minimum_account():
    """At the moment a suspension falls due, after a part payment on any day, what is overdue reaches the
    policy's minimum. The check runs inside the step loop, before the step is performed; the count makes sure
    the examples reach suspensions at all (after run_until every due step is already done)."""
    suspensions_due: list[str] = []

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(lifecycles(), st.integers(min_value=0, max_value=60), amounts)
    def check(d: CoreDriver, day: int, part: Money) -> None:
        d.run_until(d.now + days(day))
        if d.state.balance.amount_due.is_positive:
            d.pay(part.min(d.state.balance.amount_due))
        until = d.now + days(90)
        for _ in range(200):
            transitions.time_passed(d.state, d.now)
            decision = decide(d.state, d.policy, d.now)
            if decision.step is not None and decision.step.at <= d.now:
                if decision.step.kind is StepKind.SUSPEND:
                    suspensions_due.append(decision.step.key)
                    assert d.state.overdue_amount(d.now) >= d.policy.minimum_to_suspend
                d.perform(decision.step)
                continue
            if decision.wake_at is None or decision.wake_at > until:
                return
            d.now = decision.wake_at

    check()
    assert suspensions_due, "no example reached a suspension: the property checked nothing"


# China's calendar as the package itself answers, for the years the tests draw from: the oracle for mainland
# customers (Monday to Friday in a year it does not know yet).
CHINA_KNOWN = range(2024, 2027)
CHINA_DAYS_OFF = sorted(day for day in chinese_calendar.holidays if day.year in CHINA_KNOWN)
MAKE_UP_WORKING_DAYS = sorted(
    day for day in chinese_calendar.workdays if day.year in CHINA_KNOWN and day.weekday() >= 5
)
# The longest run of days off in those years: Spring Festival 2026, 15-23 February.
CHINA_LONGEST_BREAK = days(9)


def works(day: date, zone: str) -> bool:
    if zone == "Asia/Shanghai":
        try:
            return chinese_calendar.is_workday(day)
        except NotImplementedError:  # a year the package does not know yet
            pass
    return day.weekday() < 5


around_days_off = st.builds(
    lambda day, minutes: datetime.combine(day, time(0), tzinfo=SHANGHAI) + timedelta(minutes=minutes),
    st.sampled_from(CHINA_DAYS_OFF + MAKE_UP_WORKING_DAYS),
    st.integers(min_value=-24 * 60, max_value=24 * 60),
).map(lambda at: at.astimezone(UTC))


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "Pacific/Auckland", "America/Los_Angeles"])
@given(at=st.one_of(moments, around_days_off))
def test_property_next_business_moment_is_the_first_moment_inside_business_hours_on_a_working_day(
    zone: str, at: datetime
):
    quiet = QuietHours()
    moment = next_business_moment(at, ZoneInfo(zone), quiet)
    local = moment.astimezone(ZoneInfo(zone))
    start = at.astimezone(ZoneInfo(zone))
    assert moment >= at
    assert works(local.date(), zone), local
    assert quiet.start <= local.time() < quiet.end
    # Nothing earlier would do: the day of `at` was off or already closed, and every day between was off.
    if local.date() > start.date():
        assert not works(start.date(), zone) or start.time() >= quiet.end, start
        between = (start.date() + timedelta(days=n) for n in range(1, (local.date() - start.date()).days))
        assert not any(works(day, zone) for day in between), (start, local)
    # A weekend at most; in mainland China the longest break of the calendar (and the evening before it).
    assert moment - at < (CHINA_LONGEST_BREAK + days(2) if zone == "Asia/Shanghai" else days(4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lifecycles(
        zones=st.just("Asia/Shanghai"),
        starts=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 8, 31), timezones=st.just(UTC)),
    ),
    payment_plans,
)
def test_property_no_customer_facing_step_falls_on_a_china_holiday_for_a_shanghai_customer(
    d: CoreDriver, plan: list[tuple[int, Money]]
):
    start = d.now
    for day, amount in sorted(plan, key=lambda item: item[0]):
        d.run_until(max(d.now, start + days(day)))
        d.pay(amount.min(d.state.balance.amount_due) if d.state.balance.amount_due.is_positive else amount)
    d.run_until(start + days(120))
    checked = 0
    for at, step in d.performed:
        day = at.astimezone(SHANGHAI).date()
        if step.kind in CUSTOMER_FACING_STEPS and day.year in CHINA_KNOWN:
            assert not chinese_calendar.is_holiday(day), (step.key, at.astimezone(SHANGHAI))
            checked += 1
    assert checked, "no customer-facing step in the years the calendar knows: the property checked nothing"


@settings(deadline=None)
@given(day=st.sampled_from(MAKE_UP_WORKING_DAYS), minutes=st.integers(min_value=0, max_value=18 * 60 - 1))
def test_property_a_make_up_working_day_carries_the_step_planned_for_it(day: date, minutes: int):
    """A weekend day China's calendar makes a working day (调休): a reminder falling due on it goes out then."""
    planned = datetime.combine(day, time(0), tzinfo=SHANGHAI) + timedelta(minutes=minutes)
    due = planned - CollectionsPolicy().reminders[1]  # the reminder one day after payment fell due
    account = CustomerAccount(customer_id="C-M", name="M", email="m@m.example.cn", time_zone="Asia/Shanghai")
    # No gap between notices: this property is about the calendar, not about pacing a catch-up.
    policy = CollectionsPolicy(minimum_notice_gap=timedelta(0))
    d = CoreDriver(policy=policy, account=account, now=due - days(30))
    d.issue("INV-1", cny(500), due)

    d.run_until(planned + days(1))

    [at] = [at for at, step in d.performed if step.key == "reminder-2-INV-1"]
    assert at == max(planned, datetime.combine(day, time(9), tzinfo=SHANGHAI))
    assert at.astimezone(SHANGHAI).weekday() >= 5


def test_forecast_is_what_the_core_then_does():
    d = driver()
    d.issue("INV-1", cny(5000), DUE)
    predicted = [(step.key, step.at) for step in forecast(d.state, d.policy, d.now)]
    d.run_until(DUE + days(90))
    assert predicted == [(step.key, at) for at, step in d.performed]
    assert predicted[-1][0].startswith("data-deletion-warning-2-")


def test_a_notices_suspension_date_is_the_forecasts_found_without_deciding_past_the_suspension(monkeypatch):
    """The invoice, every reminder and the final notice quote the suspension date: the forecast behind it stops
    at the suspension instead of running the core on through every data deletion warning."""
    d = driver()
    d.issue("INV-1", cny(5000), DUE)
    full = forecast(d.state, d.policy, d.now)
    suspension = next(step for step in full if step.kind is StepKind.SUSPEND)
    decisions = []
    counted = lambda state, policy, now: decisions.append(now) or decide(state, policy, now)  # noqa: E731
    monkeypatch.setattr("billing.lifecycle.forecast.decide", counted)
    forecast(d.state, d.policy, d.now)
    every_step = len(decisions)
    decisions.clear()

    outlook = notice.suspension_outlook(d.state, d.policy, d.now)

    assert outlook is not None and outlook.on == suspension.at.astimezone(SHANGHAI).date()
    assert max(decisions) == suspension.at  # the last decision is the one that named the suspension
    assert len(decisions) < every_step


def test_desk_steps_go_out_at_night_while_customer_notices_wait_for_business_hours():
    d = driver()
    d.issue("INV-1", cny(500), DUE)
    d.run_until(DUE - days(2))
    friday_night = datetime(2026, 12, 18, 22, 0, tzinfo=SHANGHAI)
    d.now = friday_night
    dispute = Dispute(dispute_id="D-1", customer_id=ACCOUNT.customer_id, invoice_id="INV-1", reason="r")
    transitions.dispute_opened(d.state, dispute, cny(500), friday_night)
    transitions.dispute_escalated(d.state, EscalateDispute(dispute_id="D-1", note="n"), friday_night)
    d.run_until(friday_night + days(3))
    moments: dict[StepKind, datetime] = {}
    for at, step in d.performed:
        moments.setdefault(step.kind, at.astimezone(SHANGHAI))  # the first of each kind
    assert moments[StepKind.SEND_ESCALATION_CASE] == friday_night  # the desk: at once, Friday night
    assert moments[StepKind.CHASE_ESCALATION_DESK] == friday_night + days(1)  # Saturday night too
    # The customer hears of the dispute on Monday morning.
    assert moments[StepKind.SEND_DISPUTE_RECEIVED] == datetime(2026, 12, 21, 9, 0, tzinfo=SHANGHAI)


def test_a_reinstatement_more_than_60_days_after_suspension_warns_the_desk_that_the_data_may_be_gone():
    d = driver()
    d.issue("INV-1", cny("2400.00"), DUE)
    d.run_until(DUE + days(30))
    assert d.state.suspension is not None
    suspended_at = d.state.suspension.suspended_at
    d.run_until(suspended_at + days(61))
    d.pay_everything()
    d.run_until(d.now + days(1))
    reports = [step for _, step in d.performed if step.kind is StepKind.REPORT_SUBSCRIPTIONS_TO_DESK]
    assert len(reports) == 1
    [report] = d.state.desk_reports
    assert report.late_reinstatement and report.problems == []
    assert d.kinds()[-3:] == [StepKind.REINSTATE, StepKind.REPORT_SUBSCRIPTIONS_TO_DESK, StepKind.CLOSE_THE_LOOP]


def test_a_reinstatement_within_60_days_tells_the_desk_nothing():
    d = driver()
    d.issue("INV-1", cny("2400.00"), DUE)
    d.run_until(DUE + days(30))
    d.pay_everything()
    d.run_until(d.now + days(1))
    assert StepKind.REPORT_SUBSCRIPTIONS_TO_DESK not in d.kinds() and d.state.desk_reports == []


def test_pausing_and_resuming_a_suspended_account_sends_no_second_final_notice():
    d = driver()
    d.issue("INV-1", cny("2400.00"), DUE)
    d.run_until(DUE + days(30))
    assert d.state.suspension is not None
    transitions.dunning_paused(d.state, DunningPause(reason="talks"))
    d.run_until(d.now + days(2))
    transitions.dunning_resumed(d.state)
    d.run_until(d.now + days(10))
    assert d.kinds().count(StepKind.SEND_FINAL_NOTICE) == 1
