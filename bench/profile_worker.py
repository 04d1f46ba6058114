"""Where the billing worker's CPU and memory go under the lifecycle benchmark's load, beside the trivial worker's.

    python -m bench.profile_worker [--cpu] [--memory] [--runs 50] [--rounds 2] [--open 200] [--out DIR] [--raw DIR]

CPU (`--cpu`): the benchmark's stack (bench.lifecycle_bench.start_stack), a warm-up, then rounds of the
benchmark's three kinds; each round py-spy samples the worker it loads (`py-spy record --threads --gil --idle
--nonblocking -r 200 -f raw`: at each sample the stack of the thread holding the GIL, so a sample is 5 ms of
Python running) while /proc/<pid>/task/*/stat gives every thread's CPU, the Rust core's threads included,
which py-spy cannot see into. Activations run in the SDK's `temporal_workflow_*` thread pool, so cProfile on
the main thread would miss them; py-spy reads every thread. Written: DIR/worker-cpu.txt; with --raw, py-spy's
stacks and the rounds' figures (meta.json) stay in that folder, and `--from-raw DIR` writes the summary again.

Memory (`--memory`): both workers under bench/traced_worker.py. M runs are opened and cached: RSS and a census
of the objects the garbage collector tracks, before and after; then tracemalloc starts and a few more runs are
opened: what they allocated and still hold, by line and by the innermost frame of ours or the SDK. Written:
DIR/worker-memory.txt.

Figures are per workflow task or per cached run, so they can be set beside the benchmark's; the machine is
shared, so compare the billing worker with the trivial one of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.lifecycle_bench import (
    KINDS,
    RESULTS,
    TRIVIAL_WORKER,
    Driver,
    Setting,
    Stack,
    _commit,
    bounded,
    measure_round,
    quiet,
    start_stack,
    stop_stack,
    within,
)
from bench.stack import WORKER, machine, rss_bytes

PY_SPY = Path(sys.executable).parent / "py-spy"
RATE = 200  # samples per second: one sample of a running thread is 5 ms of CPU
PROFILES = RESULTS / "profiles"

# --- whose code a frame is -------------------------------------------------------------------------------------

# py-spy shortens a file to its path below its sys.path entry (`temporalio/worker/_workflow.py`,
# `billing/lifecycle/status.py`).
OURS = ("billing/", "workflows/", "activities/", "worker.py", "cli/")
# Frames of ours that only start the process or its loop: everything below them would count as ours.
ROOTS = {"worker.py", "bench/traced_worker.py", "bench/trivial_worker.py"}

CATEGORIES = (
    ("billing/encryption.py", "codec (ours, billing/encryption.py)"),
    ("workflows/", "ours: workflows/"),
    ("billing/lifecycle/", "ours: billing/lifecycle/"),
    ("billing/", "ours: billing/ (other)"),
    ("activities/", "ours: activities/"),
    ("worker.py", "ours: worker.py"),
    ("bench/", "bench (trivial workflow)"),
    ("temporalio/worker/workflow_sandbox/", "SDK: sandbox"),
    ("temporalio/worker/_workflow_instance.py", "SDK: workflow instance"),
    ("temporalio/worker/_workflow.py", "SDK: workflow worker"),
    ("temporalio/worker/_activity.py", "SDK: activity worker"),
    ("temporalio/worker/", "SDK: worker (other)"),
    ("temporalio/converter.py", "SDK: data converter"),
    ("temporalio/contrib/pydantic.py", "SDK: data converter"),
    ("temporalio/bridge/", "SDK: bridge to the Rust core"),
    ("temporalio/", "SDK: other"),
    ("pydantic_core/", "pydantic"),
    ("pydantic/", "pydantic"),
    ("google/protobuf/", "protobuf"),
    ("cryptography/", "cryptography"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("sqlite3/", "sqlite3"),
    ("jinja2/", "mail: jinja2"),
    ("markupsafe/", "mail: jinja2"),
    ("email/", "mail: email package"),
    ("aiosmtplib/", "mail: aiosmtplib"),
    ("httpx/", "http: httpx"),
    ("httpcore/", "http: httpx"),
    ("h11/", "http: httpx"),
    ("anyio/", "http: httpx"),
    ("structlog/", "logging"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio"),
    ("selectors.py", "asyncio"),
    ("concurrent/", "threads"),
    ("threading.py", "threads"),
    ("importlib/", "imports"),
    ("<frozen importlib", "imports"),
    ("zoneinfo/", "stdlib: datetime/zoneinfo"),
    ("_strptime.py", "stdlib: datetime/zoneinfo"),
    ("decimal.py", "stdlib: decimal"),
    ("typing.py", "stdlib: typing"),
    ("copy.py", "stdlib: copy"),
    ("json/", "stdlib: json"),
    ("dataclasses.py", "stdlib: dataclasses"),
    ("inspect.py", "stdlib: inspect"),
)


def frame_file(frame: str) -> str:
    """`function (file:line)` -> `file`."""
    inside = frame[frame.rfind(" (") + 2 : -1] if frame.endswith(")") and " (" in frame else frame
    return inside.rsplit(":", 1)[0]


def frame_function(frame: str) -> str:
    """`function (file:line)` -> `function (file)`."""
    return f"{frame[: frame.rfind(' (')]} ({frame_file(frame)})" if " (" in frame else frame


def category(file: str) -> str:
    for prefix, name in CATEGORIES:
        if file.startswith(prefix):
            return name
    return "stdlib/other"


def is_ours(file: str) -> bool:
    return file.startswith(OURS) and file not in ROOTS


def owner(frames: Sequence[str]) -> str:
    """Whose request a sample's CPU served: the innermost frame that is ours or the SDK's (libraries and the
    standard library work for whoever called them)."""
    for frame in reversed(frames):
        file = frame_file(frame)
        if is_ours(file) or file == "billing/encryption.py":
            return category(file)
        if file.startswith("temporalio/"):
            return category(file)
    return "no frame of ours or the SDK (loop, threads)"


# --- a py-spy raw profile ----------------------------------------------------------------------------------------


@dataclass
class Profile:
    """py-spy's raw lines: `thread (tid): name;frame;...;frame count`, root first."""

    samples: list[tuple[int, str, list[str], int]] = field(default_factory=list)  # tid, thread name, frames, n

    @classmethod
    def read(cls, paths: Iterable[Path]) -> Profile:
        profile = cls()
        for path in paths:
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                thread, *frames = stack.split(";")
                tid_text, _, name = thread.partition(": ")
                frames = frames or ["(no Python frame) (?)"]  # caught between frames (--nonblocking)
                tid = int(tid_text.removeprefix("thread (").removesuffix(")"), 0)
                profile.samples.append((tid, name, frames, int(count)))
        return profile

    @property
    def total(self) -> int:
        return sum(n for *_, n in self.samples)

    def threads(self) -> dict[int, str]:
        return {tid: name for tid, name, _, _ in self.samples}

    def by(self, key: Any) -> Counter[str]:
        counts: Counter[str] = Counter()
        for tid, name, frames, n in self.samples:
            for value in key(tid, name, frames):
                counts[value] += n
        return counts


PHASES = (
    ("_create_workflow_instance", "creating a workflow instance (sandbox, workflow module executed again)"),
    ("_Instance.activate", "running an activation (workflow code)"),
    ("get_serialization_context", "a payload's serialisation context (the sandbox runs code for each payload)"),
    ("_handle_start_activity_task", "running an activity"),
    ("complete_workflow_activation", "sending a completion to the Rust core"),
    ("complete_activity_task", "sending an activity result to the Rust core"),
    ("_handle_activation", "decoding and encoding an activation's payloads"),
    ("poll_", "polling the Rust core"),
)


def phase_of(frames: Sequence[str]) -> str:
    for marker, phase in PHASES:
        if any(marker in frame for frame in frames):
            return phase
    return "other"


def thread_group(name: str) -> str:
    if name.startswith("temporal_workflow_"):
        return "workflow activations (temporal_workflow_* threads)"
    if name.startswith("ledger_"):
        return "sync activities (ledger_* threads)"
    if name.startswith("asyncio_"):
        return "asyncio.to_thread threads (the mailer's notice log in the ledger)"
    if name == "MainThread":
        return "asyncio loop (MainThread: polling, payload conversion, async activities)"
    return f"other Python thread ({name.split(' ')[0]})"


# --- per-thread CPU from /proc --------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Every thread of `pid`: its name (comm) and user + system CPU seconds so far."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        threads[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / _TICKS)
    return threads


def cpu_by_thread_group(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], python_threads: dict[int, str]
) -> Counter[str]:
    groups: Counter[str] = Counter()
    for tid, (comm, seconds) in after.items():
        spent = seconds - before.get(tid, (comm, 0.0))[1]
        if tid in python_threads:
            group = thread_group(python_threads[tid])
        elif comm.startswith("python") or comm == "py-spy":
            group = "Python threads py-spy saw no work on"
        else:
            group = f"Rust core and other native threads ({comm.split('-')[0]}*)"
        groups[group] += spent
    return groups


# --- the CPU run ---------------------------------------------------------------------------------------------


@dataclass
class KindProfile:
    kind: str
    raw: list[Path] = field(default_factory=list)
    tasks: int = 0
    runs: int = 0
    cpu_s: float = 0.0
    threads: Counter[str] = field(default_factory=Counter)
    python_threads: dict[int, str] = field(default_factory=dict)


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    command = [str(PY_SPY), "record", "--threads", "--gil", "--idle", "--nonblocking", "-r", str(RATE), "-f", "raw"]
    command += ["-o", str(out)]
    return subprocess.Popen([*command, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=60)
    if spy.returncode not in (0, -signal.SIGINT, 130):
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-1000:]}")


async def profile_cpu(setting: Setting, raw_dir: Path, env: dict[str, str]) -> dict[str, KindProfile]:
    folder = Path(tempfile.mkdtemp(prefix="profile-cpu-"))
    stack: Stack | None = None
    profiles = {kind: KindProfile(kind) for kind in KINDS}
    try:
        stack = await start_stack(folder, extra_env=env)
        driver = Driver(stack)
        warm = Setting("warm-up", 2, 1, 0, 0, setting.deadline)
        for kind in KINDS:
            await measure_round(stack, driver, kind, 0, warm)
        for round_no in range(1, setting.rounds + 1):
            for kind in KINDS:
                pid = stack.trivial_pid if kind == "trivial" else stack.billing_pid
                await quiet(pid)
                out = raw_dir / f"{kind}-{round_no}.txt"
                spy = _spy(pid, out)
                await asyncio.sleep(1.0)  # py-spy attached
                before = thread_cpu(pid)
                measured = await measure_round(stack, driver, kind, round_no, setting)
                after = thread_cpu(pid)
                _stop_spy(spy)
                profile = profiles[kind]
                profile.raw.append(out)
                python_threads = Profile.read([out]).threads()
                profile.python_threads |= python_threads
                profile.threads += cpu_by_thread_group(before, after, python_threads)
                tasks = round(measured["workflow_tasks_per_s"] * measured["seconds"])
                profile.tasks += tasks
                profile.runs += measured["runs"]
                profile.cpu_s += measured["worker_cpu_ms_per_run"] * measured["runs"] / 1000
                print(
                    f"round {round_no} {kind}: {measured['worker_cpu_ms_per_task']:.1f} ms CPU per workflow task",
                    file=sys.stderr,
                )
    finally:
        if stack is not None:
            stop_stack(stack)
        shutil.rmtree(folder, ignore_errors=True)
    return profiles


def _plumbing(function: str) -> bool:
    """A frame every stack of its thread has: the event loop, a thread's start, the process's start."""
    file = function[function.rfind(" (") + 2 : -1]
    return file in ROOTS or category(file) in ("asyncio", "threads") or file.startswith("<frozen runpy")


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    —"


def save_meta(raw: Path, profiles: dict[str, KindProfile], setting: Setting, started: dict[str, str]) -> None:
    """The rounds' figures beside py-spy's stacks, so that `--from-raw` can write the summary again."""
    meta = {
        **started,
        "setting": {"runs": setting.runs, "rounds": setting.rounds},
        "kinds": {
            kind: {
                "raw": [path.name for path in p.raw],
                "tasks": p.tasks,
                "runs": p.runs,
                "cpu_s": p.cpu_s,
                "threads": dict(p.threads),
            }
            for kind, p in profiles.items()
        },
    }
    (raw / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_meta(raw: Path) -> tuple[dict[str, KindProfile], Setting, dict[str, str]]:
    meta = json.loads((raw / "meta.json").read_text(encoding="utf-8"))
    profiles = {
        kind: KindProfile(
            kind,
            raw=[raw / name for name in figures["raw"]],
            tasks=figures["tasks"],
            runs=figures["runs"],
            cpu_s=figures["cpu_s"],
            threads=Counter(figures["threads"]),
        )
        for kind, figures in meta["kinds"].items()
    }
    setting = Setting("profile", meta["setting"]["runs"], meta["setting"]["rounds"], 0, 0, 0)
    return profiles, setting, {name: meta[name] for name in ("date", "commit", "loadavg")}


def started_now() -> dict[str, str]:
    return {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "commit": _commit(), "loadavg": machine()["loadavg"]}


def cpu_report(profiles: dict[str, KindProfile], setting: Setting, started: dict[str, str]) -> str:
    lines = [
        "# Worker CPU profile under the lifecycle benchmark's load",
        "",
        f"python -m bench.profile_worker --cpu --runs {setting.runs} --rounds {setting.rounds}; "
        f"{started['date']}, commit {started['commit']}, load average at start "
        f"{started['loadavg'].split()[0]} (2 shared cores).",
        f"py-spy {RATE} Hz, --threads --gil --idle --nonblocking: each sample is the stack of the thread holding the",
        "GIL, 5 ms of Python running. Figures are ms per workflow task of the kind's rounds: CPU from /proc (every",
        "thread, the Rust core's too), py-spy's as samples × 5 ms ÷ workflow tasks (time with the GIL held there;",
        "C code that lets the GIL go, as SQLite and the Rust core do, is in the /proc figures only).",
        "",
    ]
    trivial = profiles["trivial"]
    trivial_ms = 1000 * trivial.cpu_s / max(trivial.tasks, 1)
    for kind in KINDS:
        p = profiles[kind]
        spy = Profile.read(p.raw)
        ms = 1000 * p.cpu_s / max(p.tasks, 1)
        per_sample_ms = 1000 / RATE / max(p.tasks, 1)  # one sample's CPU, per workflow task
        lines += [
            f"## {kind}: {p.runs} runs, {p.tasks} workflow tasks, {ms:.1f} ms worker CPU per workflow task "
            f"({ms / trivial_ms:.2f}× trivial's {trivial_ms:.1f}); py-spy: {spy.total} samples = "
            f"{spy.total * per_sample_ms:.1f} ms/task of Python threads",
            "",
            "CPU by thread (/proc, ms per workflow task):",
        ]
        thread_total = sum(p.threads.values())
        for group, seconds in p.threads.most_common():
            lines.append(f"  {1000 * seconds / max(p.tasks, 1):7.2f}  {_pct(seconds, thread_total)}  {group}")
        lines += ["", "Python samples by thread and what the SDK was doing there (ms per workflow task):"]
        for (group, phase), n in spy.by(lambda tid, name, frames: [(thread_group(name), phase_of(frames))]).most_common(
            12
        ):
            lines.append(f"  {n * per_sample_ms:7.2f}  {_pct(n, spy.total)}  {group.split(' (')[0]}: {phase}")
        lines += ["", "Python samples by whose request the CPU served (innermost frame of ours or the SDK):"]
        for name, n in spy.by(lambda tid, name, frames: [owner(frames)]).most_common():
            lines.append(f"  {n * per_sample_ms:7.2f}  {_pct(n, spy.total)}  {name}")
        lines += ["", "Python samples by where the CPU was spent (the leaf frame's package):"]
        for name, n in spy.by(lambda tid, name, frames: [category(frame_file(frames[-1]))]).most_common(16):
            lines.append(f"  {n * per_sample_ms:7.2f}  {_pct(n, spy.total)}  {name}")
        under_ours = spy.by(lambda tid, name, frames: ["under"] if any(is_ours(frame_file(f)) for f in frames) else [])[
            "under"
        ]
        lines += [
            "",
            f"Samples with a frame of ours on the stack (workflow code, rules, activities; worker.py's start-up frames "
            f"left out): {_pct(under_ours, spy.total).strip()} = {under_ours * per_sample_ms:.2f} ms/task",
            "",
            "Top 15 functions, inclusive (on the stack; the event loop's, threads' and start-up frames left out):",
        ]
        inclusive = spy.by(lambda tid, name, frames: {frame_function(f) for f in frames})
        shown = [(f, n) for f, n in inclusive.most_common() if not _plumbing(f)][:15]
        lines += [f"  {_pct(n, spy.total)}  {function}" for function, n in shown]
        lines += ["", "Top 15 functions, self (the leaf frame):"]
        for function, n in spy.by(lambda tid, name, frames: [frame_function(frames[-1])]).most_common(15):
            lines.append(f"  {_pct(n, spy.total)}  {function}")
        if kind != "trivial":
            lines += ["", "Top 15 functions of ours, inclusive:"]
            ours = [(f, n) for f, n in inclusive.most_common() if is_ours(f[f.rfind(" (") + 2 : -1])]
            for function, n in ours[:15]:
                lines.append(f"  {_pct(n, spy.total)}  {function}")
        lines.append("")
    return "\n".join(lines)


# --- the memory run ----------------------------------------------------------------------------------------------

TRACED = [sys.executable, "-m", "bench.traced_worker"]


TRACED_RUNS = 20  # runs opened under tracemalloc (few, a few at a time: tracing slows the worker several times)


async def _written(path: Path, within_s: float = 300) -> None:
    """Wait for the traced worker to write `path` (its signal handlers run between two of its bytecodes)."""
    deadline = time.monotonic() + within_s
    while not os.path.exists(path):  # noqa: ASYNC240 (a stat of a local file, between sleeps)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} was not written within {within_s:.0f} s")
        await asyncio.sleep(0.2)


async def _signal_and_wait(trace_dir: Path, pid: int, taken: int) -> Path:
    folder = trace_dir / str(pid)
    os.kill(pid, signal.SIGUSR1)
    await _written(folder / f"{taken}.done")
    return folder


async def _census(trace_dir: Path, pid: int, taken: int) -> dict[str, list[int]]:
    """type -> [count, bytes] of the objects the collector tracks."""
    folder = await _signal_and_wait(trace_dir, pid, taken)
    return dict(json.loads((folder / f"census-{taken}.json").read_text(encoding="utf-8")))


async def _traced(trace_dir: Path, pid: int, taken: int) -> tracemalloc.Snapshot:
    folder = await _signal_and_wait(trace_dir, pid, taken)
    return tracemalloc.Snapshot.load(str(folder / f"snapshot-{taken}.pickle"))


@dataclass
class MemoryProfile:
    kind: str
    cached: int  # runs opened without tracing: RSS and census
    rss_bytes: int
    census_before: dict[str, list[int]]
    census_after: dict[str, list[int]]
    traced_runs: int  # runs opened while tracing: tracemalloc
    traced_before: tracemalloc.Snapshot
    traced_after: tracemalloc.Snapshot


async def profile_memory(setting: Setting, trace_dir: Path) -> dict[str, MemoryProfile]:
    folder = Path(tempfile.mkdtemp(prefix="profile-memory-"))
    stack: Stack | None = None
    try:
        stack = await start_stack(
            folder,
            billing_command=[*TRACED, *WORKER[1:]],
            trivial_command=[*TRACED, *TRIVIAL_WORKER[1:]],
            extra_env={"BENCH_TRACEMALLOC_DIR": str(trace_dir)},
        )
        driver = Driver(stack)
        warm = Setting("warm-up", 2, 1, 0, 0, setting.deadline)
        for kind in KINDS:
            await measure_round(stack, driver, kind, 0, warm)
        m, tag = setting.open_lifecycles, uuid.uuid4().hex[:6].upper()

        def jobs(kind: str, names: Iterable[str]) -> list[Any]:
            if kind == "trivial":
                return [lambda wid=f"trivial-hold-{name}": driver.trivial(wid, hold=True) for name in names]
            return [lambda cid=f"B{name}": driver.open_lifecycle(cid) for name in names]

        results = {}
        for kind, pid in (("trivial", stack.trivial_pid), ("lifecycle", stack.billing_pid)):
            await quiet(pid)
            census_before, rss_before = await _census(trace_dir, pid, 1), rss_bytes(pid)
            opened = [f"{tag}-OPEN-{n}" for n in range(m)]
            await within(setting.deadline, f"opening {m} {kind} runs", bounded(jobs(kind, opened)))
            await quiet(pid)
            rss_after, census_after = rss_bytes(pid), await _census(trace_dir, pid, 2)
            os.kill(pid, signal.SIGUSR2)  # tracing from here on
            await _written(trace_dir / str(pid) / "tracing")
            traced_before = await _traced(trace_dir, pid, 3)
            traced = [f"{tag}-TRACED-{n}" for n in range(TRACED_RUNS)]
            await within(
                setting.deadline, f"opening {TRACED_RUNS} traced {kind} runs", bounded(jobs(kind, traced), at_once=4)
            )
            await quiet(pid)
            traced_after = await _traced(trace_dir, pid, 4)
            results[kind] = MemoryProfile(
                kind,
                min(m, stack.max_cached_workflows),
                rss_after - rss_before,
                census_before,
                census_after,
                TRACED_RUNS,
                traced_before,
                traced_after,
            )
        return results
    finally:
        if stack is not None:
            stop_stack(stack)
        shutil.rmtree(folder, ignore_errors=True)


def _traced_file(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    repo = str(Path(__file__).resolve().parent.parent) + "/"
    return filename.removeprefix(repo)


def memory_report(results: dict[str, MemoryProfile], setting: Setting) -> str:
    lines = [
        "# Worker memory per cached run (RSS, object census, tracemalloc)",
        "",
        f"python -m bench.profile_worker --memory --open {setting.open_lifecycles}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {_commit()}, load average at start "
        f"{machine()['loadavg'].split()[0]}.",
        "Both workers run under bench/traced_worker.py. M runs are opened and cached (lifecycles each waiting for",
        "a reminder a day away; trivial runs each holding after their activity): RSS and a census of the objects",
        f"the garbage collector tracks, before and after. Then tracemalloc starts and {TRACED_RUNS} more are opened:",
        "what they allocated and still hold, by allocating line and by the innermost frame of ours or the SDK.",
        "Figures are KiB per cached run. RSS also holds what Python's heap does not (the Rust core's workflow state",
        "and history cache, allocator slack).",
        "",
    ]
    trivial_rss = results["trivial"].rss_bytes / 1024 / results["trivial"].cached
    for kind, r in results.items():
        rss = r.rss_bytes / 1024 / r.cached
        per = 1024 * r.traced_runs
        by_file = r.traced_after.compare_to(r.traced_before, "filename")
        traced = sum(d.size_diff for d in by_file) / per
        grown = {
            name: (count - r.census_before.get(name, [0, 0])[0], size - r.census_before.get(name, [0, 0])[1])
            for name, (count, size) in r.census_after.items()
        }
        census_kib = sum(size for _, size in grown.values()) / 1024 / r.cached
        lines += [
            f"## {kind}: RSS {rss:.0f} KiB per cached run ({rss / trivial_rss:.2f}× trivial's, {r.cached} runs); "
            f"Python heap {traced:.0f} KiB per run (tracemalloc, {r.traced_runs} runs), so {rss - traced:.0f} KiB "
            "beyond Python's heap",
            "",
            "Python heap by where it was allocated (the allocating file's package; KiB per run, share):",
        ]
        categories: Counter[str] = Counter()
        for d in by_file:
            categories[category(_traced_file(d.traceback[0].filename))] += d.size_diff
        for name, size in categories.most_common():
            if abs(size) / per >= 0.5:
                lines.append(f"  {size / per:7.1f}  {_pct(size / per, traced)}  {name}")
        lines += ["", "Python heap by who asked (innermost frame of ours or the SDK; KiB per run, share):"]
        owners: Counter[str] = Counter()
        for d in r.traced_after.compare_to(r.traced_before, "traceback"):
            owners[_memory_owner(d.traceback)] += d.size_diff
        for name, size in owners.most_common(15):
            lines.append(f"  {size / per:7.1f}  {_pct(size / per, traced)}  {name}")
        lines += ["", "Top 15 allocating lines (KiB per run, blocks per run):"]
        for d in r.traced_after.compare_to(r.traced_before, "lineno")[:15]:
            frame = d.traceback[0]
            lines.append(
                f"  {d.size_diff / per:7.1f}  {d.count_diff / r.traced_runs:6.1f}  "
                f"{_traced_file(frame.filename)}:{frame.lineno}"
            )
        lines += [
            "",
            f"Objects the collector tracks, by type ({census_kib:.0f} KiB per run in all by sys.getsizeof, shallow: "
            "containers only, their strings and numbers not counted); per run: count, KiB:",
        ]
        for name, (count, size) in sorted(grown.items(), key=lambda item: -item[1][1])[:15]:
            lines.append(f"  {count / r.cached:7.1f}  {size / 1024 / r.cached:7.1f}  {name}")
        lines.append("")
    return "\n".join(lines)


def _memory_owner(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame of ours or of the SDK (`file:line`), tracemalloc's traceback being innermost first."""
    for frame in traceback:
        file = _traced_file(frame.filename)
        if is_ours(file) or file.startswith("temporalio/"):
            return f"{file}:{frame.lineno}"
    frame = traceback[0]
    return f"{_traced_file(frame.filename)}:{frame.lineno} (no frame of ours or the SDK)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="profile CPU (py-spy)")
    parser.add_argument("--memory", action="store_true", help="profile memory per cached run (tracemalloc)")
    parser.add_argument("--runs", type=int, default=50, help="runs of each kind per round (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three kinds (default 2)")
    parser.add_argument("--open", type=int, default=200, help="M runs opened for the memory profile (default 200)")
    parser.add_argument("--out", type=Path, default=PROFILES, help="folder of the summaries")
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here (default: a temporary folder)")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        metavar="NAME=VALUE",
        help="a setting for both workers of the CPU profile (BILLING_MAX_CACHED_WORKFLOWS=...), repeatable",
    )
    parser.add_argument("--from-raw", type=Path, help="write the CPU summary again from a --raw folder, run nothing")
    parser.add_argument("--label", default="", help="suffix of the summaries' names (worker-cpu-<label>.txt)")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # asyncio.run cancels the profile, whose cleanup stops every process it started


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if not (args.cpu or args.memory or args.from_raw):
        args.cpu = args.memory = True
    setting = Setting("profile", args.runs, args.rounds, args.open, 0, 900)
    suffix = f"-{args.label}" if args.label else ""
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="profile-worker-"))
    try:
        if args.from_raw:
            report = cpu_report(*load_meta(args.from_raw))
            (args.out / f"worker-cpu{suffix}.txt").write_text(report + "\n", encoding="utf-8")
            print(report)
        elif args.cpu:
            raw = args.raw or scratch / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            started = started_now()
            profiles = asyncio.run(profile_cpu(setting, raw, dict(args.worker_env)))
            save_meta(raw, profiles, setting, started)
            report = cpu_report(profiles, setting, started)
            (args.out / f"worker-cpu{suffix}.txt").write_text(report + "\n", encoding="utf-8")
            print(report)
        if args.memory:
            report = memory_report(asyncio.run(profile_memory(setting, scratch / "tracemalloc")), setting)
            (args.out / f"worker-memory{suffix}.txt").write_text(report + "\n", encoding="utf-8")
            print(report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
