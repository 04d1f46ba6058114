"""Every recorded history in tests/histories/ must replay against today's workflow code: a change that
alters commands without `workflow.patched` fails here before it breaks running lifecycles."""

from __future__ import annotations

import base64
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.record_histories import HISTORY_DATA_CONVERTER
from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_is_a_recorded_history_to_replay():
    assert HISTORIES, "tests/histories/ holds no recorded history: run python -m tests.record_histories"


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_recorded_history_replays_against_current_code(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))
    # With the recorded histories' key: the encrypted ones decrypt, the plain ones pass the codec unchanged.
    replayer = Replayer(workflows=WORKFLOWS, data_converter=HISTORY_DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


ENCRYPTED_HISTORIES = [path for path in HISTORIES if "_encrypted_" in path.stem]


@pytest.mark.parametrize("path", ENCRYPTED_HISTORIES, ids=[path.stem for path in ENCRYPTED_HISTORIES])
def test_the_encrypted_full_ladder_history_holds_no_customer_name_or_email_in_clear(path: Path):
    """As the Temporal server stored it with encryption on: every payload's bytes, base64-decoded (v2: the books
    and the mailer as local activities, their results in markers)."""
    assert "full_ladder" in path.stem
    text = path.read_text(encoding="utf-8")
    decoded = b"".join(base64.b64decode(value) for value in re.findall(r'"data":\s*"([A-Za-z0-9+/=]*)"', text))
    assert len(decoded) > 1000, "the history's payloads went missing"
    for personal in (b"Lotus Trading", b"ap@lotus.example.cn", b"lotus"):
        assert personal not in decoded and personal not in text.encode()
    assert '"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="' in text or "YmluYXJ5L2VuY3J5cHRlZA==" in text  # binary/encrypted


# --- a run recorded before business days followed China's calendar, moved onto National Day ----------------

QUIET_HOURS_HISTORY = Path(__file__).parent / "histories" / "customer_billing_quiet_hours_v1.json"
NATIONAL_DAY_2026 = [date(2026, 10, 1) + timedelta(days=n) for n in range(7)]  # 1-7 October, all off
ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})(?=T|\b)")


def shifted(node: Any, by: timedelta) -> Any:
    """The history `by` days earlier or later: every event time and every date in every payload. A whole number
    of weeks keeps each moment's weekday and (in a zone without daylight saving) its local time."""

    def move(text: str) -> str:
        return ISO_DATE.sub(lambda match: str(date.fromisoformat(match[1]) + by), text)

    if isinstance(node, list):
        return [shifted(item, by) for item in node]
    if not isinstance(node, dict):
        return node
    moved = {key: shifted(value, by) for key, value in node.items()}
    if isinstance(node.get("eventTime"), str):
        moved["eventTime"] = move(node["eventTime"])
    if isinstance(node.get("data"), str) and "metadata" in node:
        moved["data"] = base64.b64encode(move(base64.b64decode(node["data"]).decode()).encode()).decode()
    return moved


def reminder_sent_at(events: list[dict[str, Any]]) -> datetime:
    for event in events:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == "send_notice":
            request = json.loads(base64.b64decode(scheduled["input"]["payloads"][0]["data"]))
            if request["kind"] == "reminder":
                return datetime.fromisoformat(event["eventTime"])
    raise AssertionError("the recorded run sent no reminder")


async def test_a_run_recorded_before_china_calendar_replays_though_its_reminder_went_out_on_national_day():
    """The run skipped weekends only: moved onto National Day, its reminder went out on a public holiday. The
    core would now hold that reminder back a week; the run must keep the weekends it was recorded with, or its
    replay meets the reminder where it would start a timer, and the lifecycle stops on a nondeterminism error."""
    recorded = json.loads(QUIET_HOURS_HISTORY.read_text(encoding="utf-8"))
    sent_on = reminder_sent_at(recorded["events"]).astimezone(ZoneInfo("Asia/Shanghai")).date()
    holiday = next(day for day in NATIONAL_DAY_2026 if day.weekday() == sent_on.weekday())
    moved = shifted(recorded, holiday - sent_on)
    assert reminder_sent_at(moved["events"]).astimezone(ZoneInfo("Asia/Shanghai")).date() == holiday

    history = WorkflowHistory.from_json("customer-billing-history-6", json.dumps(moved))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=HISTORY_DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, result.replay_failure
