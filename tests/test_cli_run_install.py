"""`./dev run` installs pyproject's extra `run` only: nothing that running imports (the launcher, the worker, the
Partner Center emulator, `starter.py`) may come from the extra `test`. Checked in fresh interpreters with
`python -X importtime`, which lists every module a process imports, against the test extra's import names."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What `./dev run` starts (billing/devtools/local_stack.py): the launcher itself, the emulator, the worker and
# `starter.py sweep schedule` / `starter.py demo`. `--help` runs each entry point's parser without a server;
# the worker has no --help, so its module (and every module it loads at start) is imported instead.
ENTRY_POINTS = {
    "./dev run --help": ["-m", "billing.devtools.local_stack", "--help"],
    "starter.py --help": ["starter.py", "--help"],
    "starter.py sweep run --help": ["starter.py", "sweep", "run", "--help"],
    "worker.py": ["-c", "import worker, billing.devtools.partner_center_emulator"],
}


def names_of_the_test_extra() -> set[str]:
    """The top-level modules the distributions of pyproject's extra `test` provide."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = {
        re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in pyproject["project"]["optional-dependencies"]["test"]
    }
    names = {
        module
        for module, distributions in packages_distributions().items()
        if any(distribution.lower().replace("_", "-") in wanted for distribution in distributions)
    }
    return names | {"_pytest"}  # pytest's own package is `_pytest`, beside the `pytest` shim


def imported_modules(argv: list[str]) -> set[str]:
    finished = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in finished.stderr.splitlines()
        if line.startswith("import time:") and "|" in line and not line.rstrip().endswith("imported package")
    }


def test_the_extra_test_names_the_test_tools() -> None:
    names = names_of_the_test_extra()
    assert {"pytest", "hypothesis", "playwright", "aiosmtpd", "jsonschema"} <= names


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_running_imports_nothing_from_the_test_extra(entry: str) -> None:
    modules = imported_modules(ENTRY_POINTS[entry])
    assert "temporalio" in modules  # the probe sees what the process imports
    assert sorted(modules & names_of_the_test_extra()) == []


def test_dev_run_bootstraps_the_run_extra_and_dev_test_the_test_extra() -> None:
    script = (ROOT / "dev").read_text(encoding="utf-8")
    commands = dict(re.findall(r"^\s+(run|test)\)\n\s+bootstrap (\w+)", script, flags=re.MULTILINE))
    assert commands == {"run": "run", "test": "test"}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert extras["run"] == []
    assert extras["dev"] == ["billing-support-engine[run,test]"]  # the union, for those who installed ".[dev]"
