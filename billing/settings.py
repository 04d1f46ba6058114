"""The engine's settings, read from the environment (names per `shared/CONTRACT.md`) and checked at start."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import time, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator, model_validator

from billing.encryption_keys import KEY_BYTES, EncryptionKey, EncryptionKeys
from billing.notice_links import DEFAULT_VALIDITY, MIN_SECRET_LENGTH, NoticeLinks, check_template
from billing.notices.branding import (
    BankAccount,
    Branding,
    account_number,
    email_address,
    one_line,
    phone_number,
    swift_code,
    web_url,
)
from billing.policy import CollectionsPolicy, load_policy
from billing.sweep import sweep_time_of_day, sweep_time_zone

PRODUCTION_PARTNER_CENTER_URL = "https://partner.partnercenterapi.microsoftonline.cn"
# The Azure AD resource a Partner Center token is asked for. The PartnerCenter PowerShell module uses one constant,
# `ChinaPartnerCenterEndpoint`, both as the API's root and as the token's resource (microsoft/Partner-Center-
# PowerShell, src/PowerShell/Models/Authentication/EnvironmentConstants.cs and Commands/ConnectPartnerCenter.cs).
PRODUCTION_PARTNER_CENTER_RESOURCE = PRODUCTION_PARTNER_CENTER_URL
PRODUCTION_TOKEN_URL_TEMPLATE = "https://login.partner.microsoftonline.cn/{tenant}/oauth2/token"
# The dev server's Web UI (`temporal server start-dev` serves it on port 8233); reports link each customer there.
DEFAULT_TEMPORAL_UI_URL = "http://localhost:8233"

# Environment variable → field. Everything else in the environment is ignored here; the Temporal connection
# (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_*, ...) is the SDK's environment configuration, read by
# `billing.temporal_connection`.
ENVIRONMENT_NAMES: dict[str, str] = {
    "BILLING_TASK_QUEUE": "task_queue",
    "BILLING_LEDGER_URL": "ledger_url",
    "BILLING_SMTP_HOST": "smtp_host",
    "BILLING_SMTP_PORT": "smtp_port",
    "BILLING_SMTP_USERNAME": "smtp_username",
    "BILLING_SMTP_PASSWORD": "smtp_password",
    "BILLING_SMTP_STARTTLS": "smtp_starttls",
    "BILLING_OUTBOX_DIR": "outbox_dir",
    "BILLING_MAIL_FROM": "mail_from",
    "BILLING_ESCALATION_EMAIL": "escalation_email",
    "BILLING_FINANCE_EMAIL": "finance_email",
    "BILLING_PARTNER_CENTER_URL": "partner_center_url",
    "BILLING_PARTNER_CENTER_TOKEN_URL": "partner_center_token_url",
    "BILLING_PARTNER_CENTER_CLIENT_ID": "partner_center_client_id",
    "BILLING_PARTNER_CENTER_CLIENT_SECRET": "partner_center_client_secret",
    "BILLING_PARTNER_CENTER_RESOURCE": "partner_center_resource",
    "BILLING_POLICY_FILE": "policy_file",
    "BILLING_HISTORY_EVENT_LIMIT": "history_event_limit",
    "BILLING_SWEEP_TIME": "sweep_time",
    "BILLING_SWEEP_TIME_ZONE": "sweep_time_zone",
    "BILLING_SWEEP_TASK_QUEUE": "sweep_task_queue",
    # Worker tuning (SDK worker options), printed when the worker starts.
    "BILLING_MAX_CACHED_WORKFLOWS": "max_cached_workflows",
    "BILLING_MAX_CONCURRENT_WORKFLOW_TASKS": "max_concurrent_workflow_tasks",
    "BILLING_MAX_CONCURRENT_ACTIVITIES": "max_concurrent_activities",
    "BILLING_WORKFLOW_SANDBOX": "workflow_sandbox",
    "BILLING_PARTNER_CENTER_TASK_QUEUE": "partner_center_task_queue",
    "BILLING_PARTNER_CENTER_CALLS_PER_SECOND": "partner_center_calls_per_second",
    "BILLING_METRICS_PORT": "metrics_port",
    "BILLING_METRICS_HOST": "metrics_host",
    "BILLING_CONNECT_ATTEMPTS": "connect_attempts",
    # What customers read (billing.notices.Branding) and where a partner's own templates live.
    "BILLING_PARTNER_NAME": "partner_name",
    "BILLING_PARTNER_LOGO_URL": "partner_logo_url",
    "BILLING_SUPPORT_PHONE": "support_phone",
    "BILLING_SUPPORT_EMAIL": "support_email",
    "BILLING_SUPPORT_HOURS": "support_hours",
    "BILLING_BANK_NAME": "bank_name",
    "BILLING_BANK_ACCOUNT_NAME": "bank_account_name",
    "BILLING_BANK_ACCOUNT_NUMBER": "bank_account_number",
    "BILLING_BANK_SWIFT": "bank_swift",
    "BILLING_POLICY_URL": "policy_url",
    "BILLING_FAPIAO_NOTE": "fapiao_note",
    "BILLING_TEMPLATE_DIR": "template_dir",
    # Signed pay and dispute links in customer notices (billing.notice_links).
    "BILLING_PAY_URL_TEMPLATE": "pay_url_template",
    "BILLING_DISPUTE_URL_TEMPLATE": "dispute_url_template",
    "BILLING_LINK_SECRET": "link_secret",
    "BILLING_LINK_VALIDITY": "link_validity",
    # Where reports link each customer's lifecycle: {url}/namespaces/{namespace}/workflows/customer-billing-{id}.
    "BILLING_TEMPORAL_UI_URL": "temporal_ui_url",
}


class SettingsError(ValueError):
    """The environment is incomplete or contradictory; the message names the variables."""


class DocumentSettings(BaseModel):
    """What customer-facing texts need: the partner's branding and template folder. All optional: left out,
    the texts leave the line out (no logo, no phone) or fall back (reply to the sender, "around the clock", a
    fapiao on request after payment).

    `starter.py policy render` and `notices preview` read only these, so they need no Temporal or Partner
    Center settings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    partner_name: str | None = None
    partner_logo_url: str | None = None
    support_phone: str | None = None
    support_email: str | None = None
    support_hours: str | None = None
    bank_name: str | None = None
    bank_account_name: str | None = None
    bank_account_number: str | None = None
    bank_swift: str | None = None
    policy_url: str | None = None
    fapiao_note: str | None = None
    template_dir: Path | None = None
    pay_url_template: str | None = None
    dispute_url_template: str | None = None
    link_secret: SecretStr | None = None  # SecretStr: shown as ********** in any repr or log of the settings
    link_validity: timedelta = DEFAULT_VALIDITY  # ISO 8601, e.g. P60D

    @field_validator("partner_name", "support_hours", "bank_name", "bank_account_name", "fapiao_note")
    @classmethod
    def _printed(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value)

    @field_validator("partner_logo_url", "policy_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        return None if value is None else web_url(value)

    @field_validator("support_phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None else phone_number(value)

    @field_validator("support_email")
    @classmethod
    def _support_email(cls, value: str | None) -> str | None:
        return None if value is None else email_address(value)

    @field_validator("bank_account_number")
    @classmethod
    def _account_number(cls, value: str | None) -> str | None:
        return None if value is None else account_number(value)

    @field_validator("bank_swift")
    @classmethod
    def _swift(cls, value: str | None) -> str | None:
        return None if value is None else swift_code(value)

    @field_validator("template_dir")
    @classmethod
    def _template_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory (it holds <locale>/<template> overrides)")
        return value

    @field_validator("pay_url_template", "dispute_url_template")
    @classmethod
    def _link_template(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @field_validator("link_secret")
    @classmethod
    def _link_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_LENGTH} characters, e.g. the output of "
                '`python3 -c "import secrets; print(secrets.token_urlsafe(32))"`'
            )
        return value

    @field_validator("link_validity", mode="before")
    @classmethod
    def _link_validity_written_as_iso(cls, value: object) -> object:
        # pydantic would also read "60" as 60 seconds: a partner meaning days would send dead links.
        if isinstance(value, str) and not value.strip().upper().startswith("P"):
            raise ValueError(f"{value!r} is not an ISO 8601 duration such as P60D or P30DT12H")
        return value

    @field_validator("link_validity")
    @classmethod
    def _link_validity(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive ISO 8601 duration such as P60D")
        return value

    @model_validator(mode="after")
    def _links_signed(self) -> DocumentSettings:
        if (self.pay_url_template or self.dispute_url_template) and self.link_secret is None:
            raise ValueError(
                "BILLING_LINK_SECRET is required with BILLING_PAY_URL_TEMPLATE or BILLING_DISPUTE_URL_TEMPLATE: "
                "the secret the links are signed with, shared with the portal that checks them"
            )
        return self

    def notice_links(self) -> NoticeLinks | None:
        """The signed links customer notices carry; None when no URL template is set (the texts then read as
        they always did)."""
        if self.link_secret is None or not (self.pay_url_template or self.dispute_url_template):
            return None
        return NoticeLinks(
            secret=self.link_secret.get_secret_value(),
            pay_template=self.pay_url_template,
            dispute_template=self.dispute_url_template,
            validity=self.link_validity,
        )

    @model_validator(mode="after")
    def _bank_details_complete(self) -> DocumentSettings:
        bank = (self.bank_name, self.bank_account_name, self.bank_account_number)
        if any(bank) and not all(bank):
            raise ValueError(
                "BILLING_BANK_NAME, BILLING_BANK_ACCOUNT_NAME and BILLING_BANK_ACCOUNT_NUMBER go together: "
                "set all three or none"
            )
        if self.bank_swift and not all(bank):
            raise ValueError("BILLING_BANK_SWIFT needs the bank account it belongs to (BILLING_BANK_NAME, ...)")
        return self

    def branding(self) -> Branding:
        bank = None
        if self.bank_name and self.bank_account_name and self.bank_account_number:
            bank = BankAccount(
                bank_name=self.bank_name,
                account_name=self.bank_account_name,
                account_number=self.bank_account_number,
                swift=self.bank_swift,
            )
        return Branding(
            partner_name=self.partner_name,
            logo_url=self.partner_logo_url,
            support_phone=self.support_phone,
            support_email=self.support_email,
            support_hours=self.support_hours,
            bank=bank,
            policy_url=self.policy_url,
            fapiao_note=self.fapiao_note,
        )

    @property
    def template_dirs(self) -> list[Path]:
        return [self.template_dir] if self.template_dir else []


class Settings(DocumentSettings):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    task_queue: str = "billing"
    ledger_url: str = "sqlite:///var/ledger.db"
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    outbox_dir: Path = Path("var/outbox")
    mail_from: str = "billing@localhost"
    escalation_email: str | None = None
    finance_email: str | None = None
    partner_center_url: str = PRODUCTION_PARTNER_CENTER_URL
    partner_center_token_url: str | None = None
    partner_center_client_id: str | None = None
    partner_center_client_secret: str | None = None
    partner_center_resource: str = PRODUCTION_PARTNER_CENTER_RESOURCE
    policy_file: Path | None = None
    history_event_limit: int = 10_000  # a lifecycle continues as new past this many history events
    sweep_time: time = time(6, 0)  # the daily sweep's local time, HH:MM
    sweep_time_zone: str = "Asia/Shanghai"
    # BILLING_ENCRYPTION_KEYS or BILLING_ENCRYPTION_KEYS_FILE (encryption_keys_from_environment); None: plain JSON.
    encryption_keys: EncryptionKeys | None = None
    # The daily sweep's own task queue (None: "{task_queue}-sweep"): a sweep never waits behind the lifecycles
    # it wakes, nor they behind it.
    sweep_task_queue: str | None = None
    # Lifecycles kept in the worker's cache; beyond it every wake-up replays the whole history in a fresh
    # sandbox. Size it for the open lifecycles (about 150-400 KiB each: bench/results/lifecycle.md).
    max_cached_workflows: int = 2_000
    max_concurrent_workflow_tasks: int | None = None  # None: the SDK's default
    max_concurrent_activities: int | None = None  # None: the SDK's default
    # "shared": the workflow modules are imported once per worker and shared by the sandboxes of every run (a
    # cached lifecycle costs about half the memory: bench/results/lifecycle.md); "strict": each run's sandbox
    # executes them afresh, and the sandbox's determinism checks (no clock, no randomness, no I/O) cover their
    # code as well. The test suite and the replay of recorded histories run "strict", so a check that would
    # fail is found there; "strict" in production is for chasing a non-determinism error.
    workflow_sandbox: Literal["shared", "strict"] = "shared"
    # Partner Center's rate limit is per partner tenant, so it is kept by the Temporal server for every worker at
    # once: its calls run on their own task queue (None: "{task_queue}-partner-center") with a task-queue-wide
    # activity rate limit.
    partner_center_task_queue: str | None = None
    partner_center_calls_per_second: float = 8.0

    @field_validator("max_cached_workflows")
    @classmethod
    def _cache_size(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (no cache) or more")
        return value

    @field_validator("max_concurrent_workflow_tasks", "max_concurrent_activities")
    @classmethod
    def _slots(cls, value: int | None) -> int | None:
        if value is not None and value < 2:
            raise ValueError("must be at least 2 (the SDK needs one slot per poller)")
        return value

    @field_validator("partner_center_calls_per_second")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be a positive number of calls per second")
        return value

    metrics_port: int | None = None  # the SDK's Prometheus endpoint http://metrics_host:metrics_port/metrics
    # The worker runs in a container or pod that Prometheus scrapes from outside.
    metrics_host: str = "0.0.0.0"
    connect_attempts: int = 30  # the worker waits this many seconds for a Temporal server that is starting

    @field_validator("connect_attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    temporal_ui_url: str = DEFAULT_TEMPORAL_UI_URL

    @field_validator("sweep_time")
    @classmethod
    def _sweep_time(cls, value: time) -> time:
        return sweep_time_of_day(value)

    @field_validator("sweep_time_zone")
    @classmethod
    def _sweep_zone(cls, value: str) -> str:
        return sweep_time_zone(value)

    @field_validator("history_event_limit")
    @classmethod
    def _history_limit(cls, value: int) -> int:
        if value < 20:
            raise ValueError("must be at least 20 events")
        return value

    @field_validator("smtp_port", "metrics_port")
    @classmethod
    def _port(cls, value: int | None) -> int | None:
        if value is not None and not 0 < value < 65536:
            raise ValueError("must be a TCP port between 1 and 65535")
        return value

    @field_validator("mail_from", "escalation_email", "finance_email")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and "@" not in value:
            raise ValueError(f"{value!r} is not an email address")
        return value

    @field_validator("partner_center_url", "partner_center_token_url", "temporal_ui_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("BILLING_SMTP_USERNAME and BILLING_SMTP_PASSWORD go together: set both or neither")
        if not self.partner_center_client_id or not self.partner_center_client_secret:
            raise ValueError(
                "BILLING_PARTNER_CENTER_CLIENT_ID and BILLING_PARTNER_CENTER_CLIENT_SECRET are required "
                "(the app registration the engine uses to suspend and reinstate subscriptions)"
            )
        if not self.partner_center_token_url:
            raise ValueError(
                "BILLING_PARTNER_CENTER_TOKEN_URL is required, e.g. "
                + PRODUCTION_TOKEN_URL_TEMPLATE.format(tenant="<your partner tenant id>")
            )
        # The worker runs one SDK worker per queue, and the SDK refuses two of one process on the same queue
        # (it would stop at start with a traceback); a sweep there would also wait among the lifecycles' tasks.
        own_queues = {
            "BILLING_SWEEP_TASK_QUEUE": self.sweep_queue,
            "BILLING_PARTNER_CENTER_TASK_QUEUE": self.partner_center_queue,
        }
        for name, queue in own_queues.items():
            if queue == self.task_queue:
                raise ValueError(
                    f"{name} is BILLING_TASK_QUEUE's {queue!r}: it needs a task queue of its own (unset, it is "
                    f"{self.task_queue!r} with a suffix)"
                )
        if self.sweep_queue == self.partner_center_queue:
            raise ValueError(
                f"BILLING_SWEEP_TASK_QUEUE and BILLING_PARTNER_CENTER_TASK_QUEUE are both {self.sweep_queue!r}: "
                "each needs a task queue of its own"
            )
        return self

    @property
    def sweep_queue(self) -> str:
        return self.sweep_task_queue or f"{self.task_queue}-sweep"

    @property
    def partner_center_queue(self) -> str:
        return self.partner_center_task_queue or f"{self.task_queue}-partner-center"

    def policy(self) -> CollectionsPolicy:
        return load_policy(self.policy_file) if self.policy_file else CollectionsPolicy()


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check the settings; a `SettingsError` lists every problem by variable name."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {
        field: environ[name] for name, field in ENVIRONMENT_NAMES.items() if environ.get(name, "") != ""
    }
    problems = []
    try:
        values["encryption_keys"] = encryption_keys_from_environment(environ)
    except SettingsError as error:
        problems.append(str(error))
    try:
        settings = Settings.model_validate(values)
    except ValidationError as error:
        by_field = {field: name for name, field in ENVIRONMENT_NAMES.items()}
        for detail in error.errors():
            field = str(detail["loc"][0]) if detail["loc"] else ""
            where = by_field.get(field, "settings")
            problems.append(f"{where}: {detail['msg'].removeprefix('Value error, ')}")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
    try:
        settings.policy()
    except ValueError as error:
        raise SettingsError(f"invalid settings:\n  BILLING_POLICY_FILE: {error}") from None
    return settings


def document_settings_from_environment(environ: Mapping[str, str] | None = None) -> DocumentSettings:
    """Only the settings of customer-facing texts, checked like `settings_from_environment` checks them all."""
    environ = os.environ if environ is None else environ
    names = {name: field for name, field in ENVIRONMENT_NAMES.items() if field in DocumentSettings.model_fields}
    values = {field: environ[name] for name, field in names.items() if environ.get(name, "") != ""}
    try:
        return DocumentSettings.model_validate(values)
    except ValidationError as error:
        by_field = {field: name for name, field in names.items()}
        problems = [
            f"{by_field.get(str(detail['loc'][0]) if detail['loc'] else '', 'settings')}: "
            f"{detail['msg'].removeprefix('Value error, ')}"
            for detail in error.errors()
        ]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


# --- payload encryption and the codec server ---------------------------------------------------------------

ENCRYPTION_KEYS = "BILLING_ENCRYPTION_KEYS"
ENCRYPTION_KEYS_FILE = "BILLING_ENCRYPTION_KEYS_FILE"


def parse_encryption_keys(text: str, source: str = ENCRYPTION_KEYS) -> EncryptionKeys:
    """`key_id:base64-of-32-bytes` entries, comma-separated or one per line (the first encrypts, all decrypt).
    A `SettingsError` names the entry by its position or key id: never a key's text, which may be a secret."""
    entries = [entry.strip() for entry in re.split(r"[,\n]", text) if entry.strip()]
    if not entries:
        raise SettingsError(f"{source}: no key given (key_id:base64-of-32-bytes, comma-separated)")
    keys: list[EncryptionKey] = []
    for position, entry in enumerate(entries, start=1):
        key_id, colon, encoded = (part.strip() for part in entry.partition(":"))
        if not colon or not key_id:
            raise SettingsError(f"{source}: entry {position} is not key_id:base64-of-32-bytes")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise SettingsError(f"{source}: key {key_id!r} (entry {position}) is not valid base64") from None
        if any(key.key_id == key_id for key in keys):
            raise SettingsError(f"{source}: key id {key_id!r} appears more than once")
        if len(secret) != KEY_BYTES:
            raise SettingsError(
                f"{source}: key {key_id!r} is {len(secret)} bytes; AES-256 needs {KEY_BYTES} "
                "(make one with `python -m billing.encryption new-key --id ID`)"
            )
        try:
            keys.append(EncryptionKey(key_id, secret))
        except ValueError as error:
            raise SettingsError(f"{source}: {error}") from None
    return EncryptionKeys(keys)


def encryption_keys_from_environment(environ: Mapping[str, str] | None = None) -> EncryptionKeys | None:
    """The keys of `BILLING_ENCRYPTION_KEYS`, or of the file `BILLING_ENCRYPTION_KEYS_FILE` names (same form,
    e.g. a mounted secret); None when neither is set: payloads are then plain JSON."""
    environ = os.environ if environ is None else environ
    text, file = environ.get(ENCRYPTION_KEYS, "").strip(), environ.get(ENCRYPTION_KEYS_FILE, "").strip()
    if text and file:
        raise SettingsError(f"{ENCRYPTION_KEYS} and {ENCRYPTION_KEYS_FILE} are both set: set one")
    if file:
        try:
            content = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"{ENCRYPTION_KEYS_FILE}: cannot read {file}: {type(error).__name__}") from None
        return parse_encryption_keys(content, f"{ENCRYPTION_KEYS_FILE} ({file})")
    return parse_encryption_keys(text) if text else None


CODEC_ENVIRONMENT_NAMES = {
    "BILLING_CODEC_HOST": "host",
    "BILLING_CODEC_PORT": "port",
    "BILLING_CODEC_TOKEN": "token",
    "BILLING_CODEC_CORS_ORIGINS": "cors_origins",
}


class CodecServerSettings(BaseModel):
    """`python -m billing.codec_server`: where it listens, the bearer token it asks for, the origins (the Temporal
    Web UI's) whose pages may call it, and the keys. Loopback by default; elsewhere a token is required."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    host: str = "127.0.0.1"
    port: int = 8081
    token: SecretStr | None = None
    cors_origins: tuple[str, ...] = ("http://localhost:8233",)
    encryption_keys: EncryptionKeys

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value < 65536:
            raise ValueError("must be a TCP port between 1 and 65535 (0: any free port)")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())
        for origin in value if isinstance(value, tuple | list) else ():
            if not re.fullmatch(r"https?://[^/\s]+", str(origin)):
                raise ValueError(f"{origin!r} is not an origin like http://localhost:8233 (scheme, host, port)")
        return value

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @model_validator(mode="after")
    def _token_off_loopback(self) -> CodecServerSettings:
        if not self.loopback and not (self.token and self.token.get_secret_value()):
            raise ValueError(
                f"BILLING_CODEC_TOKEN is required when BILLING_CODEC_HOST is not loopback ({self.host}): "
                "anyone who reaches the port could decrypt every payload"
            )
        return self


def codec_server_settings_from_environment(environ: Mapping[str, str] | None = None) -> CodecServerSettings:
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {
        field: environ[name] for name, field in CODEC_ENVIRONMENT_NAMES.items() if environ.get(name, "") != ""
    }
    problems = []
    try:
        keys = encryption_keys_from_environment(environ)
    except SettingsError as error:
        problems.append(str(error))
    else:
        if keys is None:
            problems.append(f"{ENCRYPTION_KEYS} or {ENCRYPTION_KEYS_FILE} is required: the keys it decrypts with")
        values["encryption_keys"] = keys
    try:
        settings = CodecServerSettings.model_validate(values)
    except ValidationError as error:
        by_field = {field: name for name, field in CODEC_ENVIRONMENT_NAMES.items()}
        for detail in error.errors():
            field = str(detail["loc"][0]) if detail["loc"] else ""
            if field == "encryption_keys":
                continue  # said above
            problems.append(f"{by_field.get(field, 'settings')}: {detail['msg'].removeprefix('Value error, ')}")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    return settings
