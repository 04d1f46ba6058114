"""The collections policy the worker was started with, handed to each lifecycle run through history."""

from __future__ import annotations

from temporalio import activity

from billing.policy import CollectionsPolicy, LifecycleSettings


class PolicyActivities:
    def __init__(self, policy: CollectionsPolicy, history_event_limit: int = 10_000) -> None:
        self._settings = LifecycleSettings(policy=policy, history_event_limit=history_event_limit)

    @activity.defn(name="load_lifecycle_settings")
    async def load_lifecycle_settings(self) -> LifecycleSettings:
        return self._settings
