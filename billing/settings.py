"""The engine's settings, read from the environment (names per `shared/CONTRACT.md`) and checked at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

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

# Environment variable → field. Everything else in the environment is ignored.
ENVIRONMENT_NAMES: dict[str, str] = {
    "TEMPORAL_ADDRESS": "temporal_address",
    "TEMPORAL_NAMESPACE": "temporal_namespace",
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
    model_config = ConfigDict(frozen=True, extra="forbid")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
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

    @field_validator("smtp_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 < value < 65536:
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
        return self

    def policy(self) -> CollectionsPolicy:
        return load_policy(self.policy_file) if self.policy_file else CollectionsPolicy()


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check the settings; a `SettingsError` lists every problem by variable name."""
    environ = os.environ if environ is None else environ
    values = {field: environ[name] for name, field in ENVIRONMENT_NAMES.items() if environ.get(name, "") != ""}
    try:
        settings = Settings.model_validate(values)
    except ValidationError as error:
        by_field = {field: name for name, field in ENVIRONMENT_NAMES.items()}
        problems = []
        for detail in error.errors():
            field = str(detail["loc"][0]) if detail["loc"] else ""
            where = by_field.get(field, "settings")
            problems.append(f"{where}: {detail['msg'].removeprefix('Value error, ')}")
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
