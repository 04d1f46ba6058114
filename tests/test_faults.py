"""The fault suite's small setting (`python -m bench.faults`), so that it keeps running: worker SIGKILL, an SMTP
outage, a Partner Center 429/5xx storm and malformed messages, on the dev server with `worker.py`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.devserver_fixtures import REPO, clean_environment

pytestmark = pytest.mark.devserver


def test_fault_suite_small_setting_finds_no_defect() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.faults"],
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # The figure line is the last; the SDK's core may log retries to standard output before it.
    figures = finished.stdout.strip().splitlines()[-1] if finished.stdout.strip() else ""
    assert finished.returncode == 0, f"{figures}\n{finished.stderr[-3000:]}"
    assert figures.startswith("faults setting=small") and " stuck=0 " in figures and " replay_failures=0 " in figures
