"""The README's Python SDK example, taken from the README itself (not a copy), run as a user
runs it: from the repository root while `make run`'s stack (scripts/run-local.sh) is up."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO

PORTS = (8080, 8443, 9464, 3001, 3002)  # make run's fixed ports


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    examples = [b for b in blocks if "streamable_http_client" in b]
    assert len(examples) == 1, "the README has one Python SDK example"
    return examples[0]


def busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def make_run():
    taken = [p for p in PORTS if busy(p)]
    if taken:
        pytest.fail(f"ports {taken} are in use: stop `make run` before the test suite")
    env = {k: v for k, v in os.environ.items() if k != "AUTH_TOKENS"}
    proc = subprocess.Popen(["bash", str(REPO / "scripts/run-local.sh")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if "Stack is up" in line:
            break
    if not any("Stack is up" in l for l in out):
        proc.kill()
        pytest.fail("make run's stack did not come up:\n" + "".join(out))
    yield
    proc.send_signal(signal.SIGTERM)  # run-local.sh stops its processes by pid
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_the_readme_python_example_runs_as_written(make_run, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tools: change.list" in done.stdout
    assert "add-two-factor-auth" in done.stdout
