"""Where the worker and `starter.py` connect to Temporal, and the one-line error when they cannot.

The address, namespace, TLS, mTLS and API key come from the SDK's own environment configuration
(`temporalio.envconfig`): `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS`,
`TEMPORAL_TLS_*`, `TEMPORAL_GRPC_META_*`, and a profile (`TEMPORAL_PROFILE`) of the TOML file in
`TEMPORAL_CONFIG_FILE` (default `~/.config/temporalio/temporal.toml`), the same settings the `temporal` CLI
reads (https://docs.temporal.io/develop/environment-configuration). What they leave unset is the contract's
default: `localhost:7233`, namespace `default`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.runtime import Runtime

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"
# One attempt's limit: a server that accepts TCP but never answers (a wrong port behind a load balancer, a
# firewall that drops) fails in seconds instead of hanging the command.
CONNECT_TIMEOUT = timedelta(seconds=5)
HINT = (
    "set TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE (and TEMPORAL_TLS_*, TEMPORAL_API_KEY or TEMPORAL_PROFILE "
    "for a secured cluster); see README 'Connecting to a cluster'"
)


class TemporalConnectionError(Exception):
    """Temporal cannot be reached or the connection settings are unusable; the message is one line."""


@dataclass(frozen=True)
class TemporalTarget:
    """What to connect to: the keyword arguments of `Client.connect` as the environment configuration gives
    them, with the contract's defaults filled in."""

    connect_config: ClientConnectConfig

    @property
    def address(self) -> str:
        return self.connect_config["target_host"]

    @property
    def namespace(self) -> str:
        return self.connect_config["namespace"]

    @property
    def tls(self) -> bool:
        return bool(self.connect_config.get("tls"))

    @property
    def api_key(self) -> bool:
        return bool(self.connect_config.get("api_key"))

    def log_fields(self) -> dict[str, Any]:
        """For a log line: where, and how secured; never the key or a certificate."""
        return {
            "temporal_address": self.address,
            "namespace": self.namespace,
            "tls": self.tls,
            "api_key": self.api_key,
        }

    def describe(self) -> str:
        how = ", ".join(what for what, used in (("TLS", self.tls), ("API key", self.api_key)) if used)
        return f"{self.address} (namespace {self.namespace}{', ' + how if how else ''})"


def temporal_target(
    environ: Mapping[str, str] | None = None, *, address: str | None = None, namespace: str | None = None
) -> TemporalTarget:
    """The connection the environment configures (`environ`, default this process's environment);
    `address` and `namespace` (the command line's `--address`, `--namespace`) win over it."""
    try:
        profile = ClientConfigProfile.load(override_env_vars=environ)
        config = profile.to_client_connect_config()
    except (OSError, RuntimeError) as error:
        # A certificate file that does not exist, a profile the file does not have, a TOML file that is not.
        raise TemporalConnectionError(
            "invalid Temporal connection settings (TEMPORAL_TLS_*, TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE): "
            + _one_line(error)
        ) from None
    config["target_host"] = address or config.get("target_host") or DEFAULT_ADDRESS
    config["namespace"] = namespace or config.get("namespace") or DEFAULT_NAMESPACE
    return TemporalTarget(config)


async def connect(
    target: TemporalTarget,
    *,
    data_converter: DataConverter = pydantic_data_converter,
    runtime: Runtime | None = None,
    attempts: int = 1,
    on_retry: Callable[[int, str], None] | None = None,
) -> Client:
    """A client for `target`. With several `attempts` (a worker started with its server) it waits a second
    between them, calling `on_retry(attempt, reason)`; the last failure is a `TemporalConnectionError` whose
    message says where it tried, why it failed and what to set."""
    reason = ""
    for attempt in range(1, attempts + 1):
        try:
            return await Client.connect(
                **target.connect_config,
                data_converter=data_converter,
                runtime=runtime,
                connect_timeout=CONNECT_TIMEOUT,
            )
        except RuntimeError as error:  # the SDK's connection failures (refused, TLS, timeout, auth) are these
            reason = _one_line(error)
        if attempt < attempts:
            if on_retry is not None:
                on_retry(attempt, reason)
            await asyncio.sleep(1)
    raise TemporalConnectionError(f"cannot reach Temporal at {target.describe()}: {reason}; {HINT}")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
