"""What every command shares: connecting to Temporal, the error a user can act on, ids, and the dates and
money a user types."""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from billing import encryption, finance_dates, temporal_connection
from billing.encryption import PayloadDecryptionError
from billing.finance_dates import BareDate, TypedDateError
from billing.models import DEFAULT_TIME_ZONE, CustomerAccount
from billing.settings import ENCRYPTION_KEYS, ENCRYPTION_KEYS_FILE, SettingsError, encryption_keys_from_environment
from billing.temporal_connection import TemporalConnectionError, temporal_target


class CommandError(Exception):
    """A failure the user can act on: printed without a traceback, exit status 1."""


def workflow_id(customer_id: str) -> str:
    return f"customer-billing-{customer_id}"


# The key `./dev run` makes for the local engine; a command run in the same checkout uses it unless told otherwise.
DEV_RUN_KEY_FILE = Path(__file__).resolve().parents[1] / "var" / "encryption-keys"


def data_converter(environ: Mapping[str, str] | None = None) -> DataConverter:
    """The worker's converter: with BILLING_ENCRYPTION_KEYS (or _FILE) set, what the command sends is encrypted
    and what it reads is decrypted, as the worker does. With neither set, the key of `./dev run` in this
    checkout's var/, when there is one, so the local engine's commands work as the README shows them."""
    environ = dict(os.environ if environ is None else environ)
    if not environ.get(ENCRYPTION_KEYS) and not environ.get(ENCRYPTION_KEYS_FILE) and DEV_RUN_KEY_FILE.is_file():
        environ[ENCRYPTION_KEYS_FILE] = str(DEV_RUN_KEY_FILE)
    try:
        return encryption.data_converter(encryption_keys_from_environment(environ))
    except SettingsError as error:
        raise CommandError(str(error)) from None


def cannot_decrypt(error: Exception) -> str:
    """What to say when the engine answered with payloads this command cannot decrypt."""
    detail = f" ({error})" if isinstance(error, PayloadDecryptionError) else ""
    return (
        f"the engine's answer is encrypted and this command has no key for it{detail}: set "
        f"{ENCRYPTION_KEYS} or {ENCRYPTION_KEYS_FILE} as the worker has them (./dev run keeps its key in "
        "var/encryption-keys)"
    )


async def connect(args: argparse.Namespace, converter: DataConverter | None = None) -> Client:
    """The client for a command: the SDK's environment configuration (`billing.temporal_connection`), with
    `--address` and `--namespace` over it, and the worker's data converter. One attempt: a command fails in
    seconds, not after a worker's wait."""
    converter = converter or data_converter()
    try:
        target = temporal_target(address=args.address, namespace=args.namespace)
    except TemporalConnectionError as error:
        raise CommandError(str(error)) from None
    try:
        return await temporal_connection.connect(target, data_converter=converter)
    except TemporalConnectionError as error:
        raise CommandError(f"{error}. Is the engine running? Start it with ./dev run") from None


# An update waits for a worker to take it; without one it would wait for ever.
OPERATOR_ACTION_TIMEOUT_SECONDS = 60


OPERATOR_HELP = (
    "who acts, a name or login, kept with the reason in the audit trail and the timeline "
    "(default: BILLING_OPERATOR, else your login name)"
)


def add_operator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", default=None, help=OPERATOR_HELP)


def operator_name(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> str | None:
    """Who acts: `--operator`, else `BILLING_OPERATOR`, else the login name (none if the system knows none)."""
    given = getattr(args, "operator", None) or environ.get("BILLING_OPERATOR", "").strip()
    if given:
        return str(given)
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry for the uid (a bare container)
        return None


def money_payload(amount: str, currency: str) -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def optional(**fields: object) -> dict[str, object]:
    return {name: value for name, value in fields.items() if value is not None}


# What --help says about the dates and moments a user types (billing/finance_dates.py reads them).
DAY_HELP = f"{finance_dates.DAY_FORMS}; relative ones count from today in the customer's time zone"
MOMENT_HELP = (
    "a day or a date and time (2026-12-20T18:00); without an offset it is in the customer's time zone "
    "(the lifecycle's, default Asia/Shanghai), an explicit offset (+08:00, Z) is kept"
)


def parse_date(text: str) -> date:
    """A day typed for a report (`2026-12-20`, `2026/12/20`, `today-30`): relative forms count from today in
    Asia/Shanghai, the zone the reports' own dates are in."""
    try:
        return finance_dates.parse_day(text, datetime.now(ZoneInfo(DEFAULT_TIME_ZONE)).date())
    except TypedDateError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def typed_day(text: str) -> str:
    """argparse type of a day option: checked now, read later in the customer's zone (`day_in`)."""
    try:
        return finance_dates.check_day(text)
    except TypedDateError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def typed_moment(text: str) -> str:
    """argparse type of a moment option: checked now, read later in the customer's zone (`moment_in`)."""
    try:
        return finance_dates.check_moment(text)
    except TypedDateError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclass(frozen=True)
class CustomerClock:
    """The customer's time zone and "now": what a typed day or moment is read against."""

    zone: ZoneInfo
    now: datetime

    @property
    def today(self) -> date:
        return self.now.astimezone(self.zone).date()

    def day(self, text: str) -> date:
        try:
            return finance_dates.parse_day(text, self.today)
        except TypedDateError as error:
            raise CommandError(str(error)) from None

    def moment(self, text: str, bare_date: BareDate) -> datetime:
        try:
            return finance_dates.parse_typed_moment(text, self.zone, self.now, bare_date)
        except TypedDateError as error:
            raise CommandError(str(error)) from None

    def shown(self, moment: datetime) -> str:
        """A moment as the customer's clock shows it, the zone named."""
        return f"{moment.astimezone(self.zone).isoformat(timespec='seconds')} ({self.zone.key})"


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CommandError(f"{name!r} is not an IANA time zone such as Asia/Shanghai") from None


async def customer_zone(client: Client, customer_id: str) -> ZoneInfo:
    """The customer's time zone as their running lifecycle knows it (its run's input, the contract's
    `CustomerAccount`); Asia/Shanghai when there is no lifecycle or its input cannot be read."""
    handle = client.get_workflow_handle(workflow_id(customer_id))
    try:
        async for event in handle.fetch_history_events(page_size=1):
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                break
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [account] = await client.data_converter.decode(payloads, [CustomerAccount])
            return ZoneInfo(account.time_zone)
    except (RPCError, ValueError, TypeError, ZoneInfoNotFoundError):
        pass  # no lifecycle (the command says so itself) or an input this client cannot decode
    return ZoneInfo(DEFAULT_TIME_ZONE)
