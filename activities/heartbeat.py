"""Heartbeats while an activity waits on an outside system, so that a worker killed mid-call is noticed within
the heartbeat timeout and another worker retries in seconds, not after the whole start-to-close timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from temporalio import activity

# Beat this often; the workflows give these activities a heartbeat timeout of a few times that.
EVERY_SECONDS = 2.0


@contextlib.asynccontextmanager
async def heartbeating(details: Callable[[], Sequence[Any]] = tuple) -> AsyncIterator[None]:
    """Heartbeat every EVERY_SECONDS while the block runs, each time with `details()` (what the next attempt
    must know, e.g. how many answers Partner Center already gave)."""

    async def beat() -> None:
        # The first beat only once the call has taken EVERY_SECONDS: a heartbeat that reaches the server is a
        # Temporal Cloud action, and most calls are over long before (the heartbeat timeout is a few beats).
        while True:
            await asyncio.sleep(EVERY_SECONDS)
            activity.heartbeat(*details())

    # A preview or a test calling the method directly: nobody to tell. A local activity: the worker running it
    # runs the workflow too, and a lost worker is noticed by its workflow task's timeout.
    if not activity.in_activity() or activity.info().is_local:
        yield
        return
    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
