"""The worker of the benchmark's ceiling: `TrivialWorkflow` and its no-op activity, with the SDK worker
settings `worker.py` uses (the same activity thread pool, shutdown grace and, when set, the same
BILLING_MAX_CACHED_WORKFLOWS / BILLING_MAX_CONCURRENT_WORKFLOW_TASKS / BILLING_MAX_CONCURRENT_ACTIVITIES), on
BILLING_TASK_QUEUE of the server at TEMPORAL_ADDRESS.

    python -m bench.trivial_worker
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.trivial_workflow import TrivialWorkflow, noop

# Environment variable -> the SDK's `Worker` argument; unset: the SDK's default, as for worker.py.
TUNING = {
    "BILLING_MAX_CACHED_WORKFLOWS": "max_cached_workflows",
    "BILLING_MAX_CONCURRENT_WORKFLOW_TASKS": "max_concurrent_workflow_tasks",
    "BILLING_MAX_CONCURRENT_ACTIVITIES": "max_concurrent_activities",
}


def tuning(environ: dict[str, str]) -> dict[str, Any]:
    return {argument: int(environ[name]) for name, argument in TUNING.items() if environ.get(name)}


async def run() -> None:
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"], data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    options = tuning(dict(os.environ))
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="ledger") as threads:
        worker = Worker(
            client,
            task_queue=os.environ["BILLING_TASK_QUEUE"],
            workflows=[TrivialWorkflow],
            activities=[noop],
            activity_executor=threads,
            graceful_shutdown_timeout=timedelta(seconds=10),
            **options,
        )
        print(f"worker started (trivial) {options}", file=sys.stderr, flush=True)
        running = asyncio.create_task(worker.run())
        await stop.wait()
        await worker.shutdown()
        await running


if __name__ == "__main__":
    asyncio.run(run())
