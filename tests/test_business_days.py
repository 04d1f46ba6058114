"""China's working calendar: customer-facing steps skip its public holidays and may fall on its make-up working
days (调休) for customers in mainland China; a year the calendar does not know counts Monday to Friday."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from billing.business_days import KNOWN_YEARS, calendar_for, is_business_day, unknown_years
from billing.lifecycle.steps import StepKind
from billing.models import CustomerAccount
from billing.policy import CollectionsPolicy, QuietHours
from billing.policy_document import render_policy_document
from billing.quiet_hours import next_business_moment
from tests.builders import SHANGHAI, cny
from tests.core_driver import CoreDriver, days

# A year the package will not know for a long time: its calendar is published a few weeks ahead.
UNKNOWN_YEAR = 2099


def shanghai_customer(zone: str = "Asia/Shanghai") -> CustomerAccount:
    return CustomerAccount(customer_id="C-CN", name="示例", email="ap@example.cn", time_zone=zone)


def local(at: datetime, zone: ZoneInfo = SHANGHAI) -> datetime:
    return at.astimezone(zone)


def final_notice_at(policy: CollectionsPolicy, due: datetime, zone: str = "Asia/Shanghai") -> datetime:
    d = CoreDriver(policy=policy, account=shanghai_customer(zone), now=due - days(30))
    d.issue("INV-1", cny("5000.00"), due)
    d.run_until(due + days(40))
    [at] = [at for at, step in d.performed if step.kind is StepKind.SEND_FINAL_NOTICE]
    return at


def test_final_notice_due_on_national_day_goes_out_on_the_first_working_day_after_the_holiday():
    due = datetime(2026, 9, 17, 0, 0, tzinfo=SHANGHAI)  # end of 16 September: P14D later is 1 October, 00:00
    assert due + CollectionsPolicy().final_notice == datetime(2026, 10, 1, tzinfo=SHANGHAI)

    at = final_notice_at(CollectionsPolicy(), due)

    assert local(at) == datetime(2026, 10, 8, 9, 0, tzinfo=SHANGHAI)  # National Day runs 1-7 October


def test_calendar_weekends_turns_china_calendar_off_and_cn_turns_it_on_for_any_zone():
    due = datetime(2026, 9, 17, 0, 0, tzinfo=SHANGHAI)
    weekends = CollectionsPolicy(quiet_hours=QuietHours(calendar="weekends"))
    assert local(final_notice_at(weekends, due)) == datetime(2026, 10, 1, 9, 0, tzinfo=SHANGHAI)  # a Thursday

    berlin = ZoneInfo("Europe/Berlin")
    due_in_berlin = datetime(2026, 9, 17, 0, 0, tzinfo=berlin)
    assert local(final_notice_at(CollectionsPolicy(), due_in_berlin, "Europe/Berlin"), berlin) == datetime(
        2026, 10, 1, 9, 0, tzinfo=berlin
    )
    china = CollectionsPolicy(quiet_hours=QuietHours(calendar="CN"))
    assert local(final_notice_at(china, due_in_berlin, "Europe/Berlin"), berlin) == datetime(
        2026, 10, 8, 9, 0, tzinfo=berlin
    )


def test_spring_festival_2026_holds_a_step_until_the_24th_and_its_make_up_saturday_carries_one():
    quiet = QuietHours()
    # 15-23 February are off; Saturday 14 February is a make-up working day.
    assert next_business_moment(datetime(2026, 2, 16, 10, tzinfo=SHANGHAI), SHANGHAI, quiet) == datetime(
        2026, 2, 24, 9, tzinfo=SHANGHAI
    )
    assert next_business_moment(datetime(2026, 2, 13, 19, tzinfo=SHANGHAI), SHANGHAI, quiet) == datetime(
        2026, 2, 14, 9, tzinfo=SHANGHAI
    )
    assert next_business_moment(datetime(2026, 2, 14, 19, tzinfo=SHANGHAI), SHANGHAI, quiet) == datetime(
        2026, 2, 24, 9, tzinfo=SHANGHAI
    )


def test_a_year_the_calendar_does_not_know_counts_monday_to_friday_without_raising():
    assert UNKNOWN_YEAR not in KNOWN_YEARS
    friday_night = datetime(UNKNOWN_YEAR, 10, 2, 19, tzinfo=SHANGHAI)  # 1-2 October 2099: Thursday, Friday
    assert friday_night.weekday() == 4

    assert next_business_moment(friday_night, SHANGHAI, QuietHours()) == datetime(
        UNKNOWN_YEAR, 10, 5, 9, tzinfo=SHANGHAI
    )
    assert is_business_day(date(UNKNOWN_YEAR, 10, 1), "CN")
    assert not is_business_day(date(UNKNOWN_YEAR, 10, 3), "CN")
    assert unknown_years([2026, UNKNOWN_YEAR, UNKNOWN_YEAR]) == [UNKNOWN_YEAR]


def test_a_week_off_at_the_end_of_a_known_year_runs_into_the_unknown_one():
    """The last days of the table's last year and the first of the next: the search crosses the edge."""
    last = KNOWN_YEARS[-1]
    new_years_eve = datetime(last, 12, 31, 19, tzinfo=SHANGHAI)
    moment = local(next_business_moment(new_years_eve, SHANGHAI, QuietHours()))
    assert moment.year == last + 1
    assert moment.weekday() < 5


@pytest.mark.parametrize(
    ("zone", "calendar"),
    [
        ("Asia/Shanghai", "CN"),
        ("Asia/Urumqi", "CN"),
        ("Asia/Chongqing", "CN"),
        ("Asia/Harbin", "CN"),
        ("PRC", "CN"),
        ("Asia/Hong_Kong", "weekends"),
        ("Asia/Macau", "weekends"),
        ("Asia/Taipei", "weekends"),
        ("Europe/Berlin", "weekends"),
        ("UTC", "weekends"),
    ],
)
def test_without_the_key_mainland_china_zones_get_china_calendar_and_others_weekends(zone: str, calendar: str):
    assert calendar_for(ZoneInfo(zone), None) == calendar
    assert calendar_for(ZoneInfo(zone), "weekends") == "weekends"
    assert calendar_for(ZoneInfo(zone), "CN") == "CN"


def test_every_day_stays_every_day_whatever_the_calendar():
    national_day = datetime(2026, 10, 1, 10, tzinfo=SHANGHAI)
    every_day = QuietHours(business_days_only=False, calendar="CN")
    assert next_business_moment(national_day, SHANGHAI, every_day) == national_day
    assert next_business_moment(national_day + timedelta(days=2), SHANGHAI, every_day) == national_day + days(2)


@pytest.mark.parametrize(
    ("quiet", "says", "does_not_say"),
    [
        (QuietHours(), "In the time zones of mainland China, working days are China's working days", "wherever"),
        (QuietHours(calendar="CN"), "on China's working days (", "Monday to Friday, and public holidays"),
        (QuietHours(calendar="weekends"), "Monday to Friday (default time zone", "调休"),
        (QuietHours(business_days_only=False), "every day (default time zone", "调休"),
    ],
)
def test_the_policy_document_names_the_calendar_the_engine_counts_business_days_by(
    quiet: QuietHours, says: str, does_not_say: str
):
    document = render_policy_document(CollectionsPolicy(quiet_hours=quiet), "en-US", "md")
    assert says in document
    assert does_not_say not in document
    if quiet.business_days_only and quiet.calendar != "weekends":
        assert f"knows that calendar up to {KNOWN_YEARS[-1]}" in document


def test_the_core_falls_back_to_weekends_without_logging_so_replays_say_nothing():
    """The decision core runs in workflow code on every replay: the warning is the worker's, at start-up
    (tests/test_customer_billing_workflow.py)."""
    due = datetime(UNKNOWN_YEAR, 9, 17, tzinfo=SHANGHAI)
    with capture_logs() as logs:
        at = final_notice_at(CollectionsPolicy(), due)
    assert local(at) == datetime(UNKNOWN_YEAR, 10, 1, 9, 0, tzinfo=SHANGHAI)  # a Thursday; the holiday not known
    assert logs == []
