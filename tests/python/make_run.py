"""`make run`'s stack for the tests of the README's first steps: scripts/run-local.sh (what
`make run` runs after building) on its fixed ports, started from the repository root and
stopped by its pid (the script stops its own processes by pid on SIGTERM)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import pytest

from conftest import REPO

PORTS = (8080, 8443, 9464, 3001, 3002)  # make run's fixed ports
RUN = REPO / "run"
TOKEN = RUN / "token"
CERT = RUN / "tls" / "cert.pem"


def busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def readme() -> str:
    return (REPO / "README.md").read_text()


def readme_block(lang: str, marker: str) -> str:
    """The one fenced `lang` block of the README that contains `marker`."""
    blocks = [b for b in re.findall(rf"```{lang}\n(.*?)```", readme(), re.S) if marker in b]
    assert len(blocks) == 1, f"the README has one ```{lang} block with {marker!r}: {len(blocks)}"
    return blocks[0]


class Stack:
    """One run of scripts/run-local.sh; `output` is what it printed so far."""

    def __init__(self, env: dict[str, str] | None = None):
        taken = [p for p in PORTS if busy(p)]
        if taken:
            pytest.fail(f"ports {taken} are in use: stop `make run` before these tests")
        full = {k: v for k, v in os.environ.items() if k != "AUTH_TOKENS"}
        full.update(env or {})
        self.proc = subprocess.Popen(["bash", str(REPO / "scripts/run-local.sh")], cwd=REPO,
                                     env=full, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.output = ""

    def read_until(self, text: str, timeout: float = 60) -> bool:
        """Reads the script's output up to a line with `text` (True) or its end (False)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                return False
            self.output += line
            if text in line:
                return True
        return False

    def wait_up(self, timeout: float = 60) -> bool:
        return self.read_until("Stack is up", timeout)

    def finish(self, timeout: float = 60) -> int:
        """Waits for the script to exit by itself; its exit code, the rest of its output read."""
        assert self.proc.stdout is not None
        self.output += self.proc.stdout.read()
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start(env: dict[str, str] | None = None) -> Stack:
    stack = Stack(env)
    if not stack.wait_up():
        stack.stop()
        pytest.fail("make run's stack did not come up:\n" + stack.output)
    return stack


def token() -> str:
    return TOKEN.read_text().strip()


def log(name: str) -> str:
    path = RUN / "logs" / name
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for(what: str, cond, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def run_shell(script: str, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """`script` as a user types it into bash at the repository root."""
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=timeout)
