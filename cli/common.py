"""What every command shares: connecting to Temporal, the error a user can act on, ids, and the dates and
money a user types."""

from __future__ import annotations

import argparse
from datetime import date, datetime

from temporalio.client import Client
from temporalio.converter import DataConverter

from billing import encryption, temporal_connection
from billing.settings import SettingsError, encryption_keys_from_environment
from billing.temporal_connection import TemporalConnectionError, temporal_target


class CommandError(Exception):
    """A failure the user can act on: printed without a traceback, exit status 1."""


def workflow_id(customer_id: str) -> str:
    return f"customer-billing-{customer_id}"


def data_converter() -> DataConverter:
    """The worker's converter: with BILLING_ENCRYPTION_KEYS (or _FILE) set, what the command sends is encrypted
    and what it reads is decrypted, as the worker does."""
    try:
        return encryption.data_converter(encryption_keys_from_environment())
    except SettingsError as error:
        raise CommandError(str(error)) from None


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


def money_payload(amount: str, currency: str) -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def optional(**fields: object) -> dict[str, object]:
    return {name: value for name, value in fields.items() if value is not None}


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def parse_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 datetime") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs an offset, e.g. 2026-12-24T18:00:00+08:00")
    return moment
