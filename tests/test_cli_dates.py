"""Dates and moments as a finance user types them (`billing/finance_dates.py`) and what `starter.py` makes of
them before sending anything; `choose from` lists names. Fast tier: no Temporal, no SQL."""

from __future__ import annotations

import argparse
import enum
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from billing.finance_dates import TypedDateError, parse_day, parse_typed_moment
from cli.common import CommandError, CustomerClock
from cli.main import build_parser
from cli.operator_actions import OPERATOR_COMMANDS_BY_NAME
from tests.builders import SHANGHAI

BERLIN = ZoneInfo("Europe/Berlin")
TODAY = date(2026, 11, 24)
# 20:30 on 2026-11-24 in Shanghai, 13:30 the same day in Berlin.
NOW = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("typed", "day"),
    [
        ("2026-12-20", date(2026, 12, 20)),
        ("2026/12/20", date(2026, 12, 20)),
        ("2026/1/5", date(2026, 1, 5)),
        ("today", TODAY),
        ("Today", TODAY),
        ("tomorrow", date(2026, 11, 25)),
        ("yesterday", date(2026, 11, 23)),
        ("today+30", date(2026, 12, 24)),
        ("today + 30d", date(2026, 12, 24)),
        ("today-3", date(2026, 11, 21)),
        ("+30d", date(2026, 12, 24)),
        ("+30", date(2026, 12, 24)),
        ("+2w", date(2026, 12, 8)),
        ("-1w", date(2026, 11, 17)),
    ],
)
def test_a_typed_day_is_a_calendar_day_counted_from_the_customers_today(typed: str, day: date) -> None:
    assert parse_day(typed, TODAY) == day


@pytest.mark.parametrize("typed", ["", "2026-13-01", "2026/02/30", "next week", "30d", "today*2", "12/20/2026"])
def test_what_is_not_a_day_is_refused_with_the_forms_that_are(typed: str) -> None:
    with pytest.raises(TypedDateError) as refused:
        parse_day(typed, TODAY)
    assert "2026" in str(refused.value) or "today+30" in str(refused.value)


def test_a_bare_day_is_its_start_or_its_end_in_the_customers_zone() -> None:
    # The end of a day is the first moment of the next, as a due day's end is (billing/due_dates.py).
    assert parse_typed_moment("2026-12-20", SHANGHAI, NOW, "end") == datetime(2026, 12, 21, 0, 0, tzinfo=SHANGHAI)
    assert parse_typed_moment("2026-12-20", BERLIN, NOW, "start") == datetime(2026, 12, 20, 0, 0, tzinfo=BERLIN)
    # Relative days count from the customer's today: 23:30 UTC on the 24th is already the 25th in Shanghai and
    # Berlin, still the 24th in New York.
    late = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    assert parse_typed_moment("today", SHANGHAI, late, "start").date() == date(2026, 11, 25)
    assert parse_typed_moment("today", BERLIN, late, "start").date() == date(2026, 11, 25)
    assert parse_typed_moment("today", ZoneInfo("America/New_York"), late, "start").date() == date(2026, 11, 24)


def test_a_datetime_without_offset_is_in_the_customers_zone_and_an_explicit_offset_is_kept() -> None:
    assert parse_typed_moment("2026-12-20T18:00", BERLIN, NOW, "end") == datetime(2026, 12, 20, 18, 0, tzinfo=BERLIN)
    assert parse_typed_moment("2026-12-20 18:00", SHANGHAI, NOW, "end") == datetime(
        2026, 12, 20, 18, 0, tzinfo=SHANGHAI
    )
    kept = parse_typed_moment("2026-12-20T18:00:00+05:30", BERLIN, NOW, "end")
    assert kept.utcoffset() == timedelta(hours=5, minutes=30)
    assert parse_typed_moment("2026-12-20T10:00:00Z", BERLIN, NOW, "end") == datetime(2026, 12, 20, 10, 0, tzinfo=UTC)
    with pytest.raises(TypedDateError):
        parse_typed_moment("at noon", BERLIN, NOW, "end")


def test_the_end_of_a_day_survives_a_daylight_saving_change() -> None:
    # Berlin leaves summer time on 2026-10-25: that day has 25 hours, and it ends at midnight CET, 25 hours after
    # it began at midnight CEST.
    start = parse_typed_moment("2026-10-25", BERLIN, NOW, "start")
    end = parse_typed_moment("2026-10-25", BERLIN, NOW, "end")
    assert (start.utcoffset(), end.utcoffset()) == (timedelta(hours=2), timedelta(hours=1))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=25)


def payload(command: str, *options: str, zone: ZoneInfo = SHANGHAI) -> dict[str, object]:
    """The update payload `starter.py COMMAND --customer-id C-1 OPTIONS` sends, at NOW in `zone`."""
    args = build_parser().parse_args([command, "--customer-id", "C-1", *options])
    return OPERATOR_COMMANDS_BY_NAME[command].payload(args, CustomerClock(zone, NOW))


def test_pause_until_a_day_means_the_end_of_that_day_in_the_customers_zone() -> None:
    sent = payload("pause-dunning", "--reason", "talks", "--until", "2026-12-20", zone=BERLIN)
    assert sent == {"reason": "talks", "until": "2026-12-21T00:00:00+01:00"}
    assert payload("pause-dunning", "--reason", "talks", "--until", "today+14")["until"] == (
        "2026-12-09T00:00:00+08:00"
    )
    assert payload("pause-dunning", "--reason", "talks", "--until", "2026-12-01T09:00")["until"] == (
        "2026-12-01T09:00:00+08:00"
    )


@pytest.mark.parametrize("until", ["2026-11-23", "yesterday", "2026-11-24T08:00", "2026-11-24T12:00:00Z"])
def test_a_past_until_is_refused_before_anything_is_sent(until: str) -> None:
    with pytest.raises(CommandError) as refused:
        payload("pause-dunning", "--reason", "talks", "--until", until)
    assert "already past" in str(refused.value)
    assert "nothing was sent" in str(refused.value)


def test_today_is_not_past_until_its_end() -> None:
    assert payload("pause-dunning", "--reason", "talks", "--until", "today")["until"] == ("2026-11-25T00:00:00+08:00")


def test_due_on_and_received_at_are_read_in_the_customers_zone() -> None:
    extended = payload("extend-due-date", "--invoice-id", "INV-1", "--due-on", "+30d", "--reason", "budget")
    assert extended["due_on"] == "2026-12-24"
    paid = payload("record-payment", "--payment-id", "P-1", "--amount", "10", "--received-at", "today", zone=BERLIN)
    assert paid["received_at"] == "2026-11-24T00:00:00+01:00"
    with pytest.raises(CommandError, match="in the future"):
        payload("record-payment", "--payment-id", "P-1", "--amount", "10", "--received-at", "tomorrow")


def test_a_mistyped_date_is_an_argument_error_naming_the_forms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_status:
        build_parser().parse_args(["pause-dunning", "--customer-id", "C-1", "--reason", "x", "--until", "soon"])
    assert exit_status.value.code == 2
    assert "today+30" in capsys.readouterr().err


def every_parser(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(every_parser(sub))
    return found


def test_every_choice_is_a_plain_name_so_choose_from_lists_names() -> None:
    offending = [
        f"{parser.prog} {action.dest}"
        for parser in every_parser(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and action.choices
        and any(isinstance(choice, enum.Enum) or not isinstance(choice, str) for choice in action.choices)
    ]
    assert offending == []


def test_choose_from_names_the_notice_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["notices", "preview", "nope"])
    error = capsys.readouterr().err
    assert "choose from 'invoice', 'reminder'" in error
    assert "NoticeKind" not in error


def test_a_moment_as_python_and_other_services_write_it_keeps_its_fraction_of_a_second() -> None:
    typed = parse_typed_moment("2026-12-02T09:52:13.551727+08:00", BERLIN, NOW, "end")
    assert typed == datetime(2026, 12, 2, 9, 52, 13, 551727, tzinfo=SHANGHAI)


def test_the_status_table_gives_every_time_in_the_customers_zone_and_names_it() -> None:
    from billing.models import BillingStage, BillingStatus, NextAction, NextActionKind
    from billing.money import Money
    from cli.customers import status_table

    status = BillingStatus(
        customer_id="C-1",
        stage=BillingStage.CURRENT,
        amount_due=Money.of("100.00", "CNY"),
        next_action=NextAction(kind=NextActionKind.REMINDER, at=datetime(2026, 12, 30, 1, 0, tzinfo=UTC)),
    )
    table = status_table(status, SHANGHAI)
    assert "(times in Asia/Shanghai)" in table
    assert "reminder at 2026-12-30 09:00" in table
    assert "+00:00" not in table
