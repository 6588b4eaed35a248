"""The production shape, for real: the image and docker-compose.yml run with podman and
podman-compose (scripts/compose.sh picks the engine), as a user runs them.

One stack for the whole module, in a scratch copy of the compose file and conf/ (so the test
can edit the gateway's mounted config and keep its own .env), under its own project name, on
the standard ports 80/443 like the user's. The steps build on each other, in file order:
up from a clean state, SDK calls over HTTPS, Prometheus targets, scaling under load, canary
reload, stop with an open stream, down/up persistence, backup and restore.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness import COMPOSE_SH, REPO, podman, podman_env

PROJECT = "mcpgwtest"
TOKEN = "t-" + secrets.token_hex(12)
CANARY_FILE = "conf/examples/compose-canary/docker-compose.canary.yml"
ACCEPT = "application/json, text/event-stream"


class Stack:
    def __init__(self, root: Path):
        self.root = root
        self.env = {**podman_env(), "COMPOSE_DIR": str(root), "COMPOSE_PROJECT_NAME": PROJECT}
        self.compose_file = "docker-compose.yml"
        # Anonymous volumes of containers that `down` (without -v) removed along the way.
        self.seen_volumes: set[str] = set()

    def compose(self, *args: str, check: bool = True, timeout: float = 300,
                input: bytes | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, "COMPOSE_FILE": self.compose_file}
        if args and args[0] in ("down", "up", "scale"):
            self.seen_volumes |= self.anonymous_volumes()
        proc = subprocess.run(["bash", str(COMPOSE_SH), *args], env=env, capture_output=True,
                              timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout.decode(errors='replace')[-3000:]}\n"
                                 f"{proc.stderr.decode(errors='replace')[-3000:]}")
        return proc

    def exec(self, service: str, *cmd: str, check: bool = True) -> str:
        return self.compose("exec", "-T", service, *cmd, check=check).stdout.decode()

    def containers(self, service: str | None = None, all_: bool = False) -> list[dict]:
        args = ["ps", "--format", "json", "--filter", f"label=com.docker.compose.project={PROJECT}"]
        if all_:
            args.insert(1, "-a")
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return json.loads(podman(*args).stdout or "[]")

    def anonymous_volumes(self) -> set[str]:
        """The image's VOLUME gives every container that mounts nothing there an anonymous
        volume; `compose down -v` leaves those behind, so the teardown removes them."""
        ids = [c["Id"] for c in self.containers(all_=True)]
        if not ids:
            return set()
        found = set()
        for info in json.loads(podman("inspect", *ids).stdout or "[]"):
            for m in info.get("Mounts", []):
                name = m.get("Name", "")
                if m.get("Type") == "volume" and re.fullmatch(r"[0-9a-f]{64}", name):
                    found.add(name)
        return found

    def write_env(self, **extra: str) -> None:
        values = {
            "AUTH_TOKENS": TOKEN,
            "SEED_WORKSPACE": "example",
            # The call loops below run ~8 calls/s for a minute: above the per-token default.
            "RATE_LIMIT": "0",
            "BACKEND_REPLICAS": "3",
            **extra,
        }
        (self.root / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    # --- clients -------------------------------------------------------------------------
    def cert(self) -> Path:
        path = self.root / "gateway-cert.pem"
        path.write_text(self.exec("gateway", "cat", "/var/lib/gateway/tls/cert.pem"))
        return path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="https://127.0.0.1", verify=str(self.cert()), timeout=20,
                            headers={"Authorization": f"Bearer {TOKEN}"})

    def admin(self, path: str) -> str:
        return self.exec("gateway", "curl", "-fsS", f"http://127.0.0.1:9464{path}")

    def status(self) -> dict:
        return json.loads(self.admin("/status"))

    def pool_backends(self, pool: str) -> list[str]:
        pools = self.status()["pools"]
        entry = pools[pool] if isinstance(pools, dict) else next(p for p in pools if p["name"] == pool)
        return sorted(b["address"] for b in entry["backends"])

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the series of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.admin("/metrics").splitlines():
            if not line.startswith(name + "{"):
                continue
            series, value = line.rsplit(" ", 1)
            found = dict(re.findall(r'(\w+)="([^"]*)"', series))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(value)
        return total


def call_body(tool: str, args: dict, id_: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
            "params": {"name": tool, "arguments": args}}


def tool_call(client: httpx.Client, tool: str, args: dict, headers: dict | None = None) -> dict:
    r = client.post("/mcp", json=call_body(tool, args),
                    headers={"Accept": ACCEPT, **(headers or {})})
    assert r.status_code == 200, f"{tool}: HTTP {r.status_code} {r.text[:300]}"
    body = r.json()
    assert "result" in body and not body["result"].get("isError"), body
    return body["result"]


def wait_until(what: str, predicate, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # the stack may still be coming up
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    for port in (80, 443, 9090, 9093):
        assert port_free(port), f"port {port} is in use: the container test publishes 80/443/9090/9093 like the user's stack (stop `make compose-up` first)"
    root = tmp_path_factory.mktemp("compose")
    shutil.copy(REPO / "docker-compose.yml", root / "docker-compose.yml")
    shutil.copytree(REPO / "conf", root / "conf")
    s = Stack(root)
    s.write_env()
    s.compose("down", "-v", check=False)  # a clean state, even after an interrupted run
    yield s
    logs = s.compose("logs", "--tail", "30", check=False)
    print(logs.stdout.decode(errors="replace")[-6000:])
    s.compose_file = f"docker-compose.yml:{CANARY_FILE}"
    anonymous = s.anonymous_volumes() | s.seen_volumes
    s.compose("down", "-v", check=False)
    if anonymous:
        podman("volume", "rm", "-f", *sorted(anonymous), check=False)


# --- the steps -------------------------------------------------------------------------------

def test_up_from_clean_state_serves_the_sdk_over_https(stack: Stack):
    started = time.monotonic()
    stack.compose("up")
    names = sorted(c["Labels"]["com.docker.compose.service"] for c in stack.containers())
    assert names == ["alertmanager", "backend", "backend", "backend", "gateway", "prometheus"], names
    # The gateway sees all three replicas (DNS of the compose service name).
    wait_until("3 replicas in the gateway's pool", lambda: len(stack.pool_backends("backend")) == 3, 30)

    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    cert = stack.cert()

    async def sdk() -> tuple[list[str], dict]:
        client = httpx2.AsyncClient(verify=ssl.create_default_context(cafile=str(cert)), headers={"Authorization": f"Bearer {TOKEN}"})
        async with client, streamable_http_client("https://127.0.0.1/mcp", http_client=client) as (r, w):
            async with ClientSession(r, w) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool("change.list", {})
                return [t.name for t in tools.tools], result.structured_content

    tools, listed = anyio.run(sdk)
    print(f"figure: compose up to first SDK tool call {time.monotonic() - started:.1f} s")
    assert {"change.list", "change.open", "change.archive", "task.update", "spec.list"} <= set(tools)
    assert any(c["slug"] == "add-two-factor-auth" for c in listed["changes"]), listed


def test_http_redirects_and_security_headers(stack: Stack):
    r = httpx.get("http://127.0.0.1/mcp?x=1", follow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["location"] == "https://127.0.0.1/mcp?x=1"
    with stack.client() as c:
        r = c.get("/health")
    assert r.status_code == 200
    h = r.headers
    assert h["strict-transport-security"].startswith("max-age=")
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "strict-origin-when-cross-origin"
    assert h["server"] == "gateway"
    assert h.get("x-request-id")
    # No token, no tools: the backend's auth holds through the gateway.
    r = httpx.post("https://127.0.0.1/mcp", verify=str(stack.cert()), timeout=10,
                   json=call_body("change.list", {}), headers={"Accept": ACCEPT})
    assert r.status_code == 401 and "bearer" in r.headers["www-authenticate"].lower()


def test_prometheus_scrapes_gateway_and_every_replica(stack: Stack):
    assert len(stack.containers("backend")) == 3

    def targets():
        data = httpx.get("http://127.0.0.1:9090/api/v1/targets", timeout=5).json()["data"]
        up = [(t["labels"]["job"], t["labels"]["instance"]) for t in data["activeTargets"]
              if t["health"] == "up"]
        jobs = {job: sum(1 for j, _ in up if j == job) for job in ("gateway", "backend")}
        return jobs if jobs["gateway"] == 1 and jobs["backend"] == 3 else None

    wait_until("Prometheus: gateway and 3 backend targets up", targets, 90, 2)

    def has_data(query: str):
        res = httpx.get("http://127.0.0.1:9090/api/v1/query", params={"query": query},
                        timeout=5).json()
        return res["status"] == "success" and res["data"]["result"]

    assert wait_until("a gateway series", lambda: has_data("gateway_requests_total"), 60, 2)
    series = wait_until("a backend series on every replica",
                        lambda: (lambda r: r if r and len(r) == 3 else None)(
                            has_data('sum by (instance) (http_server_requests_total)')), 60, 2)
    assert len(series) == 3


def test_prometheus_loads_the_slo_rules_and_sends_to_alertmanager(stack: Stack):
    def groups():
        data = httpx.get("http://127.0.0.1:9090/api/v1/rules", timeout=5).json()["data"]
        found = {g["name"]: g for g in data["groups"]}
        wanted = {"slo_availability", "slo_http_latency", "slo_tool_latency", "gateway", "backend",
                  "slo_burn_rate"}
        if not wanted <= set(found):
            return None
        # Evaluated at least once, without errors.
        rules = [r for name in wanted for r in found[name]["rules"]]
        return rules if all(r.get("health") == "ok" for r in rules) else None

    rules = wait_until("Prometheus: recording and alert rules loaded and healthy", groups, 60, 2)
    assert any(r["name"] == "gateway:slo_availability_errors:ratio_rate5m" for r in rules)

    def alertmanagers():
        data = httpx.get("http://127.0.0.1:9090/api/v1/alertmanagers", timeout=5).json()["data"]
        return data["activeAlertmanagers"]

    active = wait_until("Prometheus: Alertmanager discovered", alertmanagers, 60, 2)
    assert [a["url"] for a in active] == ["http://alertmanager:9093/api/v2/alerts"], active
    status = httpx.get("http://127.0.0.1:9093/api/v2/status", timeout=5).json()
    assert status["cluster"]["status"] == "disabled", status["cluster"]
    assert 'receiver: critical' in status["config"]["original"]


class CallLoop:
    """Tool calls at a steady pace (under the shipped zone's 10 r/s per client), counting
    every failure, until stopped."""

    def __init__(self, stack: Stack, pace: float = 0.12):
        self.client = stack.client()
        self.pace = pace
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                r = self.client.post("/mcp", json=call_body("change.list", {}, n),
                                     headers={"Accept": ACCEPT})
                if r.status_code == 200 and "result" in r.json():
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except Exception as e:
                self.failures.append(repr(e))
            time.sleep(self.pace)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        self.client.close()


def test_scale_up_and_down_under_load_loses_no_call(stack: Stack):
    with CallLoop(stack) as loop:
        time.sleep(2)
        stack.compose("scale", "4")
        four = wait_until("4 replicas in /status", lambda: (lambda b: b if len(b) == 4 else None)(
            stack.pool_backends("backend")), 30)
        time.sleep(3)
        stack.compose("scale", "2")
        two = wait_until("2 replicas in /status", lambda: (lambda b: b if len(b) == 2 else None)(
            stack.pool_backends("backend")), 30)
        time.sleep(3)
    assert set(two) < set(four)
    assert len(stack.containers("backend")) == 2
    print(f"figure: {loop.ok} tool calls while scaling 3 -> 4 -> 2, {len(loop.failures)} failed")
    assert loop.ok > 50
    assert loop.failures == []


def canary_share(stack: Stack, client_count: int) -> float:
    """Share of `client_count` new clients (no split cookie) the canary pool served."""
    before = stack.metric("gateway_requests_total", route="mcp", pool="canary")
    before_all = stack.metric("gateway_requests_total", route="mcp")
    for i in range(client_count):
        with stack.client() as c:  # a new client each time: no sticky cookie
            tool_call(c, "change.list", {})
        time.sleep(0.1)  # under the zone's 10 r/s
    canary = stack.metric("gateway_requests_total", route="mcp", pool="canary") - before
    total = stack.metric("gateway_requests_total", route="mcp") - before_all
    assert total == client_count, (total, client_count)
    return canary / total


def set_weights(stack: Stack, text: str) -> None:
    conf = stack.root / "conf/examples/compose-canary/gateway.toml"
    body = conf.read_text()
    body = re.sub(r"(?m)^pools = \{ stable = .*\}$", text, body)
    # Save like an editor does: a new file renamed over the old one.
    tmp = conf.with_suffix(".tmp")
    tmp.write_text(body)
    tmp.rename(conf)


def test_canary_weights_follow_a_reload_and_an_invalid_edit_changes_nothing(stack: Stack):
    podman("tag", "localhost/mcp-gateway:latest", "localhost/mcp-gateway:canary")
    stack.write_env(GATEWAY_CONF_DIR="./conf/examples/compose-canary",
                    CANARY_IMAGE="localhost/mcp-gateway:canary", BACKEND_REPLICAS="2")
    stack.compose_file = f"docker-compose.yml:{CANARY_FILE}"
    stack.compose("up")
    wait_until("the canary pool is up", lambda: stack.pool_backends("canary"), 30)
    assert len(stack.pool_backends("stable")) == 2

    set_weights(stack, "pools = { stable = 0, canary = 100 }")
    check = stack.compose("exec", "-T", "gateway", "gateway", "-t", check=False)
    assert check.returncode == 0, check.stderr
    stack.exec("gateway", "gateway", "-s", "reload")
    assert canary_share(stack, 10) == 1.0

    set_weights(stack, "pools = { stable = 100, canary = 0 }")
    stack.exec("gateway", "gateway", "-s", "reload")
    assert canary_share(stack, 10) == 0.0

    # An invalid edit: `gateway -t` names the problem, and even a SIGHUP sent straight to the
    # process changes nothing.
    set_weights(stack, "pools = { stable = 0, canary = 100, nosuchpool = 5 }")
    check = stack.compose("exec", "-T", "gateway", "gateway", "-t", check=False)
    out = check.stdout.decode() + check.stderr.decode()
    assert check.returncode != 0 and "nosuchpool" in out, out
    errors_before = stack.metric("gateway_config_reloads_total", result="error")
    reload = stack.compose("exec", "-T", "gateway", "gateway", "-s", "reload", check=False)
    assert reload.returncode != 0
    stack.exec("gateway", "sh", "-c", "kill -HUP $(cat /run/gateway/gateway.pid)")
    wait_until("the failed reload is counted",
               lambda: stack.metric("gateway_config_reloads_total", result="error") > errors_before, 10)
    assert canary_share(stack, 10) == 0.0


def test_stop_ends_an_open_stream_cleanly_and_every_container_exits_0(stack: Stack):
    events: list[str] = []
    outcome: dict = {}

    def stream():
        try:
            with stack.client() as c, c.stream("GET", "/sse", headers={"Accept": "text/event-stream"},
                                               timeout=httpx.Timeout(10, read=90)) as r:
                outcome["status"] = r.status_code
                for line in r.iter_lines():
                    events.append(line)
            outcome["end"] = "clean"
        except Exception as e:
            outcome["end"] = repr(e)
        outcome["at"] = time.monotonic()

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    wait_until("the SSE endpoint event", lambda: any(e.startswith("event: endpoint") for e in events), 15, 0.2)
    stopped = time.monotonic()
    stack.compose("stop", timeout=120)
    t.join(60)
    assert outcome.get("status") == 200
    assert outcome.get("end") == "clean", outcome
    took = outcome["at"] - stopped
    print(f"figure: open SSE stream ended {took:.1f} s after `compose stop`")
    assert took < 45, "the stream must end within the grace period"
    codes = {c["Names"][0]: c["ExitCode"] for c in stack.containers(all_=True)}
    assert codes and all(code == 0 for code in codes.values()), codes


def test_down_then_up_keeps_the_workspace_and_backup_restore_brings_it_back(stack: Stack):
    def task_states(c) -> dict[str, bool]:
        tasks = tool_call(c, "task.list", {"slug": "add-two-factor-auth"})["structuredContent"]
        return {t["id"]: t["done"] for t in tasks["tasks"]}

    # The canary step left an invalid file behind on purpose: a gateway started on it would
    # refuse to run, so put a valid one back first.
    set_weights(stack, "pools = { stable = 100, canary = 0 }")
    stack.compose("up")
    with stack.client() as c:
        tool_call(c, "task.update", {"slug": "add-two-factor-auth", "id": "1.1", "done": False})
    stack.compose("down")
    stack.compose("up")
    with stack.client() as c:
        assert task_states(c)["1.1"] is False, "the workspace volume must survive down/up"

    backup = stack.compose("exec", "-T", "backend", "backend", "backup", "-").stdout
    assert backup[:2] == b"\x1f\x8b", "a gzip archive on stdout"
    with stack.client() as c:
        tool_call(c, "task.update", {"slug": "add-two-factor-auth", "id": "1.1", "done": True})
        tool_call(c, "task.update", {"slug": "add-two-factor-auth", "id": "1.2", "done": False})
        assert (task_states(c)["1.1"], task_states(c)["1.2"]) == (True, False)
    stack.compose("exec", "-T", "backend", "backend", "restore", "-", input=backup)
    with stack.client() as c:
        done = task_states(c)
    assert (done["1.1"], done["1.2"]) == (False, True), "the backup's state is back"

    # A damaged archive is refused and changes nothing.
    damaged = backup[: len(backup) // 2]
    bad = stack.compose("exec", "-T", "backend", "backend", "restore", "-", input=damaged, check=False)
    assert bad.returncode != 0 and bad.stderr.strip(), bad
    with stack.client() as c:
        assert task_states(c) == done
