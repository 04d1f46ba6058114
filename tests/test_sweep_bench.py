"""The sweep benchmark's smallest setting (`python -m bench.sweep_bench --smoke`), end to end: ledger paging, the
sweep on the time-skipping server, and the sweep on its own task queue against the lifecycle queue on a dev
server with `worker.py`, so that it keeps running, keeps every figure and keeps the results file's earlier runs.
No timing is asserted: only that each figure was measured and each check made."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.sweep_bench import QUEUE_CONFIGS, QUEUE_FIGURES, SMOKE
from tests.devserver_fixtures import REPO, clean_environment

pytestmark = pytest.mark.devserver

EARLIER = """\
## Run `earlier`: 2026-11-24 13:55 UTC

A run recorded before, which a new run keeps as it is.
"""


def test_smallest_setting_reports_every_figure_and_keeps_earlier_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep.md"
    out.write_text("# Daily sweep benchmark\n\n## Run `smoke`: replaced\n\nold figures\n\n" + EARLIER, encoding="utf-8")

    finished = subprocess.run(
        [sys.executable, "-m", "bench.sweep_bench", "--smoke", "--out", str(out), "--label", "smoke"],
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads((tmp_path / "sweep-smoke.json").read_text(encoding="utf-8"))
    paging, sweep, queues = result["paging"], result["sweep"], result["queues"]
    for name in ("small_books_ms_per_page", "large_books_ms_per_page", "large_books_unindexed_ms_per_page"):
        assert math.isfinite(paging[name]) and paging[name] > 0, name
    assert sweep["lifecycles_started"] == SMOKE.owing
    assert sweep["runs"] >= 1 and len(sweep["events_per_run"]) == sweep["runs"]

    assert len(queues["rounds"]) == SMOKE.rounds
    for measured in queues["rounds"]:
        assert set(measured) == set(QUEUE_CONFIGS)
        for config, figures in measured.items():
            assert figures["lifecycles_started"] == SMOKE.queue_owing, config
            assert figures["probe_samples"] >= 1, config
    for key, *_ in QUEUE_FIGURES:
        for config in QUEUE_CONFIGS:
            assert math.isfinite(queues["summary"][key][config]["median"]), (key, config)
    checks = queues["checks"]
    lifecycle_queue, sweep_queue = checks["announced"]["task_queue"], checks["announced"]["sweep_task_queue"]
    assert sweep_queue != lifecycle_queue
    # Started on the queue each configuration names, with every activity; the worker polls both queues.
    own, shared = queues["rounds"][0]["own"], queues["rounds"][0]["shared"]
    assert own["sweep_workflow_queue"] == sweep_queue and set(own["sweep_activity_queues"]) == {sweep_queue}
    assert shared["sweep_workflow_queue"] == lifecycle_queue and set(shared["sweep_activity_queues"]) == {
        lifecycle_queue
    }
    worker = f"{checks['worker_pid']}@"
    for queue in (lifecycle_queue, sweep_queue):
        for kind in ("workflow", "activity"):
            assert any(identity.startswith(worker) for identity in checks["pollers"][queue][kind]), (queue, kind)
    schedule = checks["schedule"]
    assert (schedule["before"], schedule["after"]) == (lifecycle_queue, sweep_queue)
    assert "updated" in schedule["starter_output"]
    assert result["machine"]["nproc"] and result["command"].startswith("python -m bench.sweep_bench")

    markdown = out.read_text(encoding="utf-8")
    assert markdown.count("## Run `smoke`") == 1 and "old figures" not in markdown
    assert markdown.rstrip().endswith(EARLIER.rstrip())
    for heading in ("### Ledger paging", "### The sweep (time-skipping", "### The sweep's own task queue"):
        assert heading in markdown
    for _, title, _, _ in QUEUE_FIGURES:
        assert f"| {title} |" in markdown
