"""`starter.py sweep`: the daily sweep's schedule, and a sweep now."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import time, timedelta
from typing import TextIO
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from billing.sweep import SWEEP_SCHEDULE_ID, SweepReport, sweep_time_of_day, sweep_time_zone
from billing.sweep_schedule import SweepSchedule, ensure_sweep_schedule, next_sweeps, start_sweep_now

# How often `sweep run` asks the sweep how far it is.
PROGRESS_EVERY_SECONDS = 1.0


def _sweep_time_argument(value: str) -> time:
    try:
        return sweep_time_of_day(time.fromisoformat(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r}: {error}") from None


def _sweep_zone_argument(value: str) -> str:
    try:
        return sweep_time_zone(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def sweep_task_queue(args: argparse.Namespace) -> str:
    """The sweep's own task queue, as the worker derives it (BILLING_SWEEP_TASK_QUEUE or "{task queue}-sweep")."""
    return os.environ.get("BILLING_SWEEP_TASK_QUEUE") or f"{args.task_queue}-sweep"


async def sweep_command(client: Client, args: argparse.Namespace) -> None:
    if args.sweep_command == "schedule":
        change = await ensure_sweep_schedule(client, SweepSchedule(args.at, args.time_zone, sweep_task_queue(args)))
        zone = ZoneInfo(args.time_zone)
        upcoming = ", ".join(f"{moment.astimezone(zone):%Y-%m-%d %H:%M}" for moment in await next_sweeps(client))
        print(f"schedule {SWEEP_SCHEDULE_ID} {change}: daily at {args.at:%H:%M} {args.time_zone}; next: {upcoming}")
        return
    report = await sweep_with_progress(client, sweep_task_queue(args), sys.stderr)
    print(report.details().replace("**", "").replace("\n\n", "\n"))


async def sweep_with_progress(
    client: Client, task_queue: str, out: TextIO, every: float = PROGRESS_EVERY_SECONDS
) -> SweepReport:
    """Start (or join) a manual sweep and wait for its report, writing a line to `out` whenever its `status`
    query shows it got further."""
    handle = await start_sweep_now(client, task_queue)
    result = asyncio.ensure_future(handle.result())
    latest = client.get_workflow_handle(handle.id)  # a continued-as-new sweep answers under its newest run
    shown = None
    try:
        while True:
            try:
                report = await latest.query("status", result_type=SweepReport, rpc_timeout=timedelta(seconds=10))
            except (RPCError, WorkflowQueryFailedError):
                report = None  # no worker free to answer just now: ask again
            if report is not None and report.progress() != shown:
                shown = report.progress()
                print(shown, file=out, flush=True)
            if result.done():
                return result.result()
            await asyncio.wait({result}, timeout=every)
    finally:
        result.cancel()


def add_sweep_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = commands.add_parser("sweep", help="the daily sweep that reconciles the ledger with the lifecycles")
    sweep_commands = sweep.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    schedule = sweep_commands.add_parser(
        "schedule",
        help="create the daily sweep's schedule, or bring it up to date (safe to run on every deployment)",
    )
    schedule.add_argument(
        "--at",
        type=_sweep_time_argument,
        default=os.environ.get("BILLING_SWEEP_TIME") or "06:00",
        help="local time of day, HH:MM (default: BILLING_SWEEP_TIME or 06:00)",
    )
    schedule.add_argument(
        "--time-zone",
        type=_sweep_zone_argument,
        default=os.environ.get("BILLING_SWEEP_TIME_ZONE") or "Asia/Shanghai",
        help="IANA zone of --at (default: BILLING_SWEEP_TIME_ZONE or Asia/Shanghai)",
    )
    sweep_commands.add_parser(
        "run",
        help="sweep now, showing how far it is on standard error, and print what it did (joins a manual sweep "
        "already running)",
    )
