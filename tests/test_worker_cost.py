"""What a worker pays for each lifecycle it takes up: the sandbox imports the workflow's module afresh for every
instance, so that import must not compile source (bytecode on disk) nor re-run modules that can be shared."""

from __future__ import annotations

import builtins
import collections
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.temporal_fixtures import EngineFactory
from tests.test_customer_billing_workflow import account, invoice, payment
from worker import WORKFLOWS, compile_workflow_modules
from workflows.customer_billing import CustomerBilling

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def compiled_sources() -> Iterator[collections.Counter[str]]:
    """The source files compiled while the test runs, by file name."""
    counts: collections.Counter[str] = collections.Counter()
    original = builtins.compile

    def counting(source: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
        counts[Path(str(filename)).name] += 1
        return original(source, filename, *args, **kwargs)

    builtins.compile = counting
    try:
        yield counts
    finally:
        builtins.compile = original


def test_the_worker_writes_the_bytecode_of_its_workflow_modules_once(tmp_path: Path) -> None:
    module = Path(__import__(CustomerBilling.__module__, fromlist=["x"]).__file__ or "")
    cached = Path(__import__("importlib.util").util.cache_from_source(str(module)))
    cached.unlink(missing_ok=True)
    assert compile_workflow_modules(WORKFLOWS)[module.name] == "compiled"
    assert cached.exists()
    assert compile_workflow_modules(WORKFLOWS)[module.name] == "present"


async def test_a_lifecycle_taken_up_again_and_again_compiles_no_workflow_source(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, compiled_sources: collections.Counter[str]
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    # No cache: every workflow task of the run builds a new sandbox instance and imports the module again.
    async with engine_factory(env.client, max_cached_workflows=0) as engine:
        compiled_sources.clear()
        handle = await engine.issue(account("cost"), invoice("cost", "INV-C-1", "100.00", now + timedelta(days=5)))
        await handle.signal("payment_received", payment("cost", "PAY-C-1", "100.00", now))
        await handle.result()
        tasks = sum(
            1
            for event in (await handle.fetch_history()).events
            if event.HasField("workflow_task_started_event_attributes")
        )
    assert tasks >= 2  # so the module was imported into more than one sandbox instance
    shared = ["customer_billing.py", "inbox.py", "activity_options.py", "__init__.py"]
    assert {name: compiled_sources[name] for name in shared} == dict.fromkeys(shared, 0)


# Executions of a module's code (the `exec` audit event, which importing a module raises with the module's code
# object), by module file name, while `counting` is on. An audit hook cannot be removed, so it stays installed
# and idle outside these tests.
_module_executions: collections.Counter[str] = collections.Counter()
_counting: list[bool] = []


def _count_module_executions(event: str, args: tuple[Any, ...]) -> None:
    if _counting and event == "exec" and args and getattr(args[0], "co_name", "") == "<module>":
        _module_executions[Path(args[0].co_filename).name] += 1


sys.addaudithook(_count_module_executions)


@pytest.mark.parametrize(("sandbox", "executed_again"), [("shared", False), ("strict", True)])
async def test_a_worker_sharing_its_workflow_modules_executes_them_once_not_per_run(
    time_skipping_env: WorkflowEnvironment, engine_factory: EngineFactory, sandbox: str, executed_again: bool
) -> None:
    # As shipped ("shared") the sandbox of a run the worker takes up reuses the module imported at start: a
    # cached lifecycle holds no copy of its code and classes. "strict" (the suite's) executes it afresh.
    env = time_skipping_env
    now = await env.get_current_time()
    async with engine_factory(env.client, max_cached_workflows=0, workflow_sandbox=sandbox) as engine:
        _module_executions.clear()
        _counting.append(True)
        try:
            handle = await engine.issue(
                account(f"share-{sandbox}"), invoice(f"share-{sandbox}", "INV-S-1", "100.00", now + timedelta(days=5))
            )
            await handle.signal("payment_received", payment(f"share-{sandbox}", "PAY-S-1", "100.00", now))
            await handle.result()
        finally:
            _counting.clear()
    executions = _module_executions["customer_billing.py"]
    # strict: once for each workflow task (one, when the payment arrives with the start, as it may)
    assert (executions >= 1) if executed_again else (executions == 0), executions
