"""The benchmark's ceiling: a workflow that does nothing but start and run one no-op activity (and, when told
to hold, stay open until released, so that its memory in the worker's cache can be measured)."""

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop() -> None:
    """Nothing: the cost of an activity round trip alone."""


@workflow.defn(name="TrivialWorkflow")
class TrivialWorkflow:
    def __init__(self) -> None:
        self._released = False

    @workflow.signal(name="release")
    def release(self) -> None:
        self._released = True

    @workflow.run
    async def run(self, hold: bool) -> None:
        await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))
        if hold:
            await workflow.wait_condition(lambda: self._released)
