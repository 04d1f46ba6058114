"""Structured JSON logs: one line per event, workflow and activity ids bound, no personal data."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from temporalio import activity, workflow

# Fields a log line must never carry: they are personal data of the customer.
PERSONAL_FIELDS = frozenset({"name", "email", "recipient", "to", "address", "customer_name", "phone"})


def _temporal_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Bind the workflow and activity ids of the activity we are in (workflow.logger adds its own)."""
    if activity.in_activity():
        info = activity.info()
        event.setdefault("workflow_id", info.workflow_id)
        event.setdefault("workflow_run_id", info.workflow_run_id)
        event.setdefault("activity_id", info.activity_id)
        event.setdefault("activity_type", info.activity_type)
        event.setdefault("attempt", info.attempt)
    temporal_workflow = event.pop("temporal_workflow", None)
    if isinstance(temporal_workflow, dict):
        event.setdefault("workflow_id", temporal_workflow.get("workflow_id"))
        event.setdefault("workflow_run_id", temporal_workflow.get("run_id"))
        event.setdefault("workflow_type", temporal_workflow.get("workflow_type"))
    temporal_activity = event.pop("temporal_activity", None)
    if isinstance(temporal_activity, dict):
        event.setdefault("activity_id", temporal_activity.get("activity_id"))
        event.setdefault("activity_type", temporal_activity.get("activity_type"))
    return event


def _drop_personal_data(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for field in PERSONAL_FIELDS & event.keys():
        event[field] = "[redacted]"
    return event


def configure_logging(level: str = "INFO") -> None:
    """Send structlog and the standard library (Temporal SDK, workflow.logger) through one JSON renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _temporal_ids,
        _drop_personal_data,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The ids are separate fields already (_temporal_ids); keep the event text readable.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
