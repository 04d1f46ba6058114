"""The daily sweep's Temporal Schedule: created or brought up to date idempotently, by the run command at
start and by `starter.py sweep schedule` in deployments.

Daily at a local time (default 06:00 Asia/Shanghai); a sweep still running when the next is due is skipped,
and a day missed while Temporal was down is caught up once it is back (within a day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy

from billing.sweep import SWEEP_SCHEDULE_ID, SWEEP_WORKFLOW_ID, SWEEP_WORKFLOW_TYPE, SweepInput, SweepReport

# A sweep stuck for most of a day ends before the next one is due.
SWEEP_RUN_TIMEOUT = timedelta(hours=23)
CATCHUP_WINDOW = timedelta(days=1)
MANUAL_SWEEP_WORKFLOW_ID = f"{SWEEP_WORKFLOW_ID}-manual"

ScheduleChange = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class SweepSchedule:
    """When the sweep runs and where its workflow goes."""

    at: time
    time_zone: str
    task_queue: str

    @property
    def note(self) -> str:
        # The schedule's note says what it was made from, so an unchanged schedule is recognised as such.
        return f"Daily sweep at {self.at:%H:%M} {self.time_zone}, task queue {self.task_queue}"

    def schedule(self) -> Schedule:
        return Schedule(
            action=ScheduleActionStartWorkflow(
                SWEEP_WORKFLOW_TYPE,
                SweepInput(),
                id=SWEEP_WORKFLOW_ID,
                task_queue=self.task_queue,
                execution_timeout=SWEEP_RUN_TIMEOUT,
                static_summary="Daily sweep: the ledger against the billing lifecycles",
            ),
            spec=ScheduleSpec(
                calendars=[
                    ScheduleCalendarSpec(
                        second=[ScheduleRange(0)],
                        minute=[ScheduleRange(self.at.minute)],
                        hour=[ScheduleRange(self.at.hour)],
                        comment="daily",
                    )
                ],
                time_zone_name=self.time_zone,
            ),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
            state=ScheduleState(note=self.note),
        )


async def ensure_sweep_schedule(client: Client, wanted: SweepSchedule) -> ScheduleChange:
    """Create the schedule, or update it when it was made for another time, zone or task queue (keeping it
    paused if an operator paused it)."""
    try:
        await client.create_schedule(SWEEP_SCHEDULE_ID, wanted.schedule())
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(SWEEP_SCHEDULE_ID)
    current = await handle.describe()
    if current.schedule.state.note == wanted.note:
        return "unchanged"

    def replace(update: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = wanted.schedule()
        # An operator who paused the sweep in the UI decided that; a new time does not overrule them.
        schedule.state.paused = update.description.schedule.state.paused
        return ScheduleUpdate(schedule=schedule)

    await handle.update(replace)
    return "updated"


async def run_sweep_now(client: Client, task_queue: str) -> SweepReport:
    """A sweep outside the schedule (after an outage, say), waited for; a manual sweep already running is
    joined rather than doubled."""
    return await (await start_sweep_now(client, task_queue)).result()


async def start_sweep_now(client: Client, task_queue: str) -> WorkflowHandle[Any, SweepReport]:
    """Start a sweep outside the schedule, or join the manual sweep already running."""
    return await client.start_workflow(
        SWEEP_WORKFLOW_TYPE,
        SweepInput(),
        id=MANUAL_SWEEP_WORKFLOW_ID,
        task_queue=task_queue,
        execution_timeout=SWEEP_RUN_TIMEOUT,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="Manual sweep: the ledger against the billing lifecycles",
        result_type=SweepReport,
    )


async def next_sweeps(client: Client, count: int = 3) -> list[datetime]:
    """When the schedule will start the next sweeps (UTC)."""
    description = await client.get_schedule_handle(SWEEP_SCHEDULE_ID).describe()
    return list(description.info.next_action_times[:count])
