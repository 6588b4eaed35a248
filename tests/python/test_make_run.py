"""`make run` (scripts/run-local.sh) as the README describes it: the access log and the program
log in their own files, the previous run's logs kept, "Stack is up" only once everything is
ready, a busy port refused up front, and the canary section's commands: `make run
CONFIG=conf/examples/canary.toml` with the new version on :3002 (`NEW_BACKEND`), the forced
canary, the pool label, and the reload lines (the wrong file refused, the right one applied)."""

from __future__ import annotations

import json
import re
import shlex
import socket
import ssl
import subprocess
import urllib.request


import make_run
from conftest import REPO, bin_path

ADMIN = "http://127.0.0.1:9464"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(make_run.CERT))
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def tool_call(token: str, extra: dict[str, str]) -> None:
    done = subprocess.run(
        ["curl", "-sS", "-f", "--cacert", str(make_run.CERT), "https://localhost:8443/mcp",
         "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
         *[a for k, v in extra.items() for a in ("-H", f"{k}: {v}")],
         "-d", '{"tool":"change.list","input":{}}'],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert '"type":"result"' in done.stdout, done.stdout


def test_logs_apart_kept_across_runs():
    first = make_run.start()
    try:
        token = make_run.token()
        tool_call(token, {"X-Request-ID": "first-run-marker"})
        make_run.wait_for("the access log line",
                          lambda: "first-run-marker" in make_run.log("access.log"))
    finally:
        first.stop()
    second = make_run.start()
    try:
        access, program = make_run.log("access.log"), make_run.log("gateway.log")
        # The previous run's access log is one generation back, not overwritten.
        assert "first-run-marker" in make_run.log("access.log.1")
        assert "first-run-marker" not in access
        assert make_run.log("gateway.log.1").strip()
        tool_call(token, {})
        make_run.wait_for("an access log line", lambda: make_run.log("access.log").strip())
        access = make_run.log("access.log")
        for line in access.splitlines():
            assert isinstance(json.loads(line), dict), line  # only JSON objects
        assert "starting" in program, program
        assert not [l for l in program.splitlines() if l.startswith("{")], program
    finally:
        second.stop()


def test_a_backend_that_never_gets_ready_means_no_stack_is_up(tmp_path):
    # The "new version" lives but never listens: make run must not say the stack is up.
    never = tmp_path / "never-ready"
    never.write_text("#!/bin/sh\nexec sleep 600\n")
    never.chmod(0o755)
    stack = make_run.Stack({"NEW_BACKEND": str(never)})
    try:
        assert not stack.wait_up(timeout=60)
        code = stack.finish()
    finally:
        stack.stop()
    assert code == 1, stack.output
    assert "Stack is up" not in stack.output
    assert "not ready within 15 s: http://127.0.0.1:3002/readyz" in stack.output
    assert "==> " in stack.output  # the logs' last lines (tail's headers)
    assert not make_run.busy(9464) and not make_run.busy(3001), "the script stops what it started"


def test_a_port_in_use_is_named_before_anything_starts():
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the last stack's TIME_WAIT
        s.bind(("127.0.0.1", 9464))
        s.listen()
        # Stack() refuses to start on busy ports itself; run the script directly.
        done = subprocess.run(["bash", str(REPO / "scripts/run-local.sh")], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "127.0.0.1:9464 is already in use" in done.stderr
    assert "Stack is up" not in done.stdout


def canary_commands() -> tuple[dict[str, str], str]:
    """From the README's canary section: the `make run CONFIG=...` line's variables, and the
    gateway reload lines of the block that follows."""
    text = make_run.readme()
    section = text[text.index("### Canary and blue-green"):text.index("### Scaling")]
    run_lines = [l for l in re.findall(r"^.*make run CONFIG=.*$", section, re.M)
                 if not l.startswith("Locally")]
    assert run_lines, "the canary section has a `make run CONFIG=` line"
    words = shlex.split(run_lines[0].split("#")[0])
    env = dict(w.split("=", 1) for w in words[:words.index("make")])
    env.update(w.split("=", 1) for w in words[words.index("run") + 1:])
    reload_lines = [l for l in re.findall(r"^target/release/gateway -t .*-s reload.*$", section,
                                          re.M) if "conf/examples/canary.toml" in l]
    assert len(reload_lines) == 1, "the canary section has the reload line for canary.toml"
    return env, reload_lines[0]


def test_the_readme_canary_section_runs_locally(tmp_path):
    env, reload_line = canary_commands()
    assert env["CONFIG"] == "conf/examples/canary.toml"
    assert "NEW_BACKEND" in env
    # The README's NEW_BACKEND is another checkout's build; here the "new version" is this
    # build serving the todo family as well, so each pool's answers tell which one served.
    new = tmp_path / "new-backend"
    new.write_text(f"#!/bin/sh\nTOOLS=openspec,todo exec {bin_path('backend')} \"$@\"\n")
    new.chmod(0o755)
    env["NEW_BACKEND"] = str(new)
    stack = make_run.start(env)
    try:
        assert stack.read_until("Config "), stack.output
        assert "Config           conf/examples/canary.toml" in stack.output, stack.output
        token = make_run.token()
        auth = {"Authorization": f"Bearer {token}"}
        tools = {}
        for pool in ("stable", "canary"):
            status, body = get("https://localhost:8443/tools", {**auth, "X-Gateway-Pool": pool})
            assert status == 200, body
            tools[pool] = {t["name"] for t in json.loads(body)["tools"]}
        assert "list_tasks" in tools["canary"] and "list_tasks" not in tools["stable"]
        assert "change.list" in tools["stable"]

        tool_call(token, {"X-Gateway-Pool": "canary"})
        _, metrics = get(f"{ADMIN}/metrics")
        line = [l for l in metrics.splitlines()
                if l.startswith("gateway_requests_total{") and 'route="mcp"' in l
                and 'pool="canary"' in l and 'status_class="2xx"' in l]
        assert line and float(line[0].rsplit(" ", 1)[1]) >= 1, metrics

        st = json.loads(get(f"{ADMIN}/status")[1])
        weights = {p["pool"]: p["weight"] for p in st["splits"][0]["pools"]}
        assert weights == {"stable": 90, "canary": 10}
        assert st["config_file"] == str(REPO / "conf/examples/canary.toml")

        # The README's reload line for this file: applied (the generation goes up)...
        done = make_run.run_shell(reload_line)
        assert done.returncode == 0, done.stderr
        make_run.wait_for("the reload", lambda: json.loads(get(f"{ADMIN}/status")[1])
                          ["generation"] == st["generation"] + 1)
        # ...while the make run default's reload line names both files and changes nothing.
        wrong = subprocess.run([str(bin_path("gateway")), "-s", "reload", "-c", "conf/local.toml"],
                               cwd=REPO, capture_output=True, text=True, timeout=30)
        assert wrong.returncode == 1, wrong.stderr
        assert "not reloading" in wrong.stderr
        assert str(REPO / "conf/local.toml") in wrong.stderr
        assert str(REPO / "conf/examples/canary.toml") in wrong.stderr
    finally:
        stack.stop()
