"""`starter.py sweep`: the daily sweep's schedule, and a sweep now."""

from __future__ import annotations

import argparse
import os
from datetime import time
from zoneinfo import ZoneInfo

from temporalio.client import Client

from billing.sweep import SWEEP_SCHEDULE_ID, sweep_time_of_day, sweep_time_zone
from billing.sweep_schedule import SweepSchedule, ensure_sweep_schedule, next_sweeps, run_sweep_now


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
    report = await run_sweep_now(client, sweep_task_queue(args))
    print(report.details().replace("**", "").replace("\n\n", "\n"))


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
    sweep_commands.add_parser("run", help="sweep now and print what it did (joins a manual sweep already running)")
