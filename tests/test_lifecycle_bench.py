"""The lifecycle benchmark's smallest setting (`python -m bench.lifecycle_bench --smoke`), end to end on a dev
server with `worker.py` and the trivial worker, so that it keeps running and its report keeps every figure.
No timing is asserted: only that each figure was measured."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.lifecycle_bench import KINDS, LATENCY_ROWS, PLAIN_FIGURES, RATIO_FIGURES, ROWS
from tests.devserver_fixtures import REPO, clean_environment

pytestmark = pytest.mark.devserver


def test_smallest_setting_reports_every_figure(tmp_path: Path) -> None:
    # The account of the targets not met, kept by hand beside the results, goes into the results file.
    (tmp_path / "lifecycle-targets.md").write_text("## Targets: met, or how far and why\n\n- smoke\n", "utf-8")
    finished = subprocess.run(
        [sys.executable, "-m", "bench.lifecycle_bench", "--smoke", "--out", str(tmp_path), "--label", "smoke"],
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads((tmp_path / "lifecycle-smoke.json").read_text(encoding="utf-8"))
    summary = result["summary"]
    for figure in (*RATIO_FIGURES, *PLAIN_FIGURES):
        for kind in KINDS:
            assert math.isfinite(summary[figure][kind]["median"]), (figure, kind)
    for figure in RATIO_FIGURES:
        for kind in KINDS[1:]:
            assert summary[f"{figure}_ratio"][kind]["median"] > 0, (figure, kind)
    # Every kind did what it is named for: one start and activities each; the ladder mailed and suspended.
    for kind in KINDS:
        assert summary["actions_per_run"][kind]["median"] >= 2, kind
        assert summary["workflow_tasks_per_run"][kind]["median"] >= 2, kind
    assert (
        summary["smtp_messages_per_run"]["full_ladder"]["median"]
        > summary["smtp_messages_per_run"]["paid_on_time"]["median"]
    )
    assert summary["partner_center_calls_per_run"]["full_ladder"]["median"] > 0
    memory = result["memory_and_latency"]
    for name in ("payment_to_reinstatement_s", "payment_to_close_the_loop_s"):
        assert 0 < memory[name]["p50"] <= memory[name]["p99"], name
    assert memory["rss_kib_per_cached_lifecycle"] is not None and memory["rss_kib_per_cached_trivial"] is not None
    assert result["machine"]["nproc"] and result["command"].startswith("python -m bench.lifecycle_bench")

    markdown = (tmp_path / "lifecycle.md").read_text(encoding="utf-8")
    for row in ROWS:
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row.title} |"))
        assert "—" not in line.split("|")[3], row.title
    for title, _ in LATENCY_ROWS:
        assert f"| {title} |" in markdown
    assert 0 < markdown.index("## Targets: met, or how far and why\n\n- smoke") < markdown.index("## Runs")
