"""The collections policy the worker was started with, handed to each lifecycle run through history."""

from __future__ import annotations

from temporalio import activity

from billing.policy import CollectionsPolicy, LifecycleSettings


class PolicyActivities:
    def __init__(
        self, policy: CollectionsPolicy, history_event_limit: int = 10_000, partner_center_task_queue: str | None = None
    ) -> None:
        self._settings = LifecycleSettings(
            policy=policy, history_event_limit=history_event_limit, partner_center_task_queue=partner_center_task_queue
        )

    @activity.defn(name="load_lifecycle_settings")
    async def load_lifecycle_settings(self) -> LifecycleSettings:
        return self._settings
