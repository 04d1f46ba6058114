"""`starter.py policy render` and `starter.py notices preview`: what customers read, rendered from the policy and
the BILLING_* branding settings, without Temporal."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from email import policy as email_policy
from pathlib import Path

from activities.mailer import MailerActivities, OutboxTransport
from billing.ledger_messages import NoticeLogEntry
from billing.models import NoticeKind
from billing.notice_request import NoticeRequest
from billing.notices.preview import sample_request
from billing.notices.rendering import NoticeRenderer
from billing.policy import CollectionsPolicy, PolicyError, load_policy
from billing.policy_document import example_schedule, render_policy_document
from billing.settings import Settings, SettingsError, document_settings_from_environment
from cli.common import DAY_HELP, CommandError, CustomerClock, typed_day, zone_named


def add_preview_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # What customers read, rendered here from the policy and the BILLING_* branding settings: no Temporal needed.
    policy = commands.add_parser("policy", help="the collections policy as customers read it")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    render = policy_commands.add_parser(
        "render", help="render the policy document (zh-CN or en-US, Markdown or HTML) from the policy file"
    )
    render.add_argument("--locale", choices=["zh-CN", "en-US"], default="zh-CN")
    render.add_argument("--format", choices=["md", "html"], default="md")
    render.add_argument("--invoice-due", type=typed_day, default=None, help=f"{DAY_HELP}: add that invoice's dates")
    render.add_argument("--issued-on", type=typed_day, default=None, help=f"{DAY_HELP} (default: 30 days before due)")
    render.add_argument("--time-zone", default="Asia/Shanghai", help="IANA zone of the dates")
    render.add_argument("--policy", default=None, help="policy TOML (default: BILLING_POLICY_FILE or built-in)")
    render.add_argument("--out", default=None, help="file to write (default: standard output)")

    notices = commands.add_parser("notices", help="preview the notices customers and staff receive")
    notice_commands = notices.add_subparsers(dest="notices_command", required=True, metavar="ACTION")
    preview = notice_commands.add_parser(
        "preview", help="write a sample notice as the .eml the mailer sends and as an HTML file"
    )
    preview.add_argument(
        "kind",
        choices=[*(kind.value for kind in NoticeKind), "all"],
        metavar="KIND",
        help=f"{', '.join(NoticeKind)}, or all of them",
    )
    preview.add_argument("--locale", choices=["zh-CN", "en-US"], default="zh-CN")
    preview.add_argument("--out", default="var/preview", help="folder for the files (default: var/preview)")
    preview.add_argument("--policy", default=None, help="policy TOML (default: BILLING_POLICY_FILE or built-in)")


def policy_command(args: argparse.Namespace) -> int:
    """Render the policy to `--out` or standard output; 2 for bad input or settings, as starter.py does."""
    try:
        settings = document_settings_from_environment()
        policy_file = args.policy or os.environ.get("BILLING_POLICY_FILE") or None
        policy = load_policy(policy_file) if policy_file else CollectionsPolicy()
        schedule = None
        if args.invoice_due is not None:
            clock = CustomerClock(zone_named(args.time_zone), datetime.now(UTC))
            issued_on = clock.day(args.issued_on) if args.issued_on else None
            schedule = example_schedule(policy, clock.day(args.invoice_due), args.time_zone, issued_on)
        document = render_policy_document(
            policy,
            args.locale,
            args.format,
            branding=settings.branding(),
            schedule=schedule,
            renderer=NoticeRenderer(settings.template_dirs),
        )
    except (SettingsError, PolicyError, ValueError, CommandError) as error:
        print(f"starter.py policy render: {error}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(document)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    print(f"wrote {out}")
    return 0


class _NothingLogged:
    """A preview is never sent, so nothing is ever logged as sent."""

    def find_notice(self, customer_id: str, key: str) -> NoticeLogEntry | None:
        return None

    def log_notice(self, entry: NoticeLogEntry) -> NoticeLogEntry:
        return entry


def write_preview(
    request: NoticeRequest, mailer: MailerActivities, out_dir: Path, sent_at: datetime
) -> tuple[Path, Path]:
    """`<kind>.<locale>.eml` (the message as sent, attachments included) and `<kind>.<locale>.html`."""
    message = mailer.compose_notice(request, sent_at)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{request.kind}.{request.account.locale}"
    eml = out_dir / f"{stem}.eml"
    eml.write_bytes(message.as_bytes(policy=email_policy.SMTP))
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    html = out_dir / f"{stem}.html"
    html.write_text(body.get_content(), encoding="utf-8")
    return eml, html


def preview_command(args: argparse.Namespace) -> int:
    """Write the preview files of `args.kind` (or every kind) in `args.locale`; 2 for bad settings."""
    defaults = Settings.model_fields
    try:
        settings = document_settings_from_environment()
        policy_file = args.policy or os.environ.get("BILLING_POLICY_FILE") or None
        policy = load_policy(policy_file) if policy_file else CollectionsPolicy()
        mail_from = os.environ.get("BILLING_MAIL_FROM") or str(defaults["mail_from"].default)
        domain = mail_from.rpartition("@")[2].rstrip(">") or "localhost"
        mailer = MailerActivities(
            OutboxTransport(args.out),
            _NothingLogged(),
            mail_from,
            os.environ.get("BILLING_ESCALATION_EMAIL") or f"escalation-desk@{domain}",
            os.environ.get("BILLING_FINANCE_EMAIL") or f"finance@{domain}",
            renderer=NoticeRenderer(settings.template_dirs, links=settings.notice_links()),
            branding=settings.branding(),
            collections_policy=policy,
        )
    except (SettingsError, PolicyError, ValueError) as error:
        print(f"starter.py notices preview: {error}", file=sys.stderr)
        return 2
    kinds = list(NoticeKind) if args.kind == "all" else [NoticeKind(args.kind)]
    now = datetime.now(UTC)
    for kind in kinds:
        request = sample_request(kind, args.locale, policy, now.date())
        for path in write_preview(request, mailer, Path(args.out), now):
            print(f"wrote {path}")
    return 0
