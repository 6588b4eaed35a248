"""docker-compose.yml with its optional services: the profiles `postgres` and `redis` on, two
backend replicas with TOOLS=openspec,todo,memory on the PostgreSQL item store and RATE_LIMIT
counted in Redis, the images from tests/containers/images.sh (Debian's packages).

One stack for the module, in a scratch copy of the compose file and conf/ under its own
project name and .env, on free ports (not 80/443/9090). The steps build on each other, in file
order: up with both profiles; a task made through the gateway is seen by each replica; the
rate limit holds across replicas; PostgreSQL stopped and started again; down/up keeps the
data. The teardown removes the project's containers, network and volumes.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from harness import COMPOSE_SH, REPO, podman, podman_env

PROJECT = "mcpgwsvc"
ACCEPT = "application/json, text/event-stream"
RATE_LIMIT = 30
# Named callers (AUTH_TOKENS name:token): each token has its own RATE_LIMIT bucket, and the
# todo/memory items are kept per caller.
TOKENS = {name: f"{name}-{secrets.token_hex(12)}" for name in ("alice", "bob", "carol", "dave")}
POSTGRES_PASSWORD = secrets.token_hex(16)
REDIS_PASSWORD = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, root: Path):
        self.root = root
        self.https_port = free_port()
        self.env = {**podman_env(), "COMPOSE_DIR": str(root), "COMPOSE_PROJECT_NAME": PROJECT,
                    "COMPOSE_FILE": "docker-compose.yml"}
        for var in ("COMPOSE_PROFILES", "HTTPS_PORT", "AUTH_TOKENS"):
            self.env.pop(var, None)  # .env decides
        self._cert: Path | None = None
        # Anonymous volumes of containers that `down` (without -v) removed along the way.
        self.seen_anonymous: set[str] = set()

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", str(COMPOSE_SH), *args], env=self.env, capture_output=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout.decode(errors='replace')[-3000:]}\n"
                                 f"{proc.stderr.decode(errors='replace')[-3000:]}")
        return proc

    def write_env(self) -> None:
        values = {
            # Both optional services, for every command (up, stop, down ...) of this stack.
            "COMPOSE_PROFILES": "postgres,redis",
            "AUTH_TOKENS": ",".join(f"{n}:{t}" for n, t in TOKENS.items()),
            "SEED_WORKSPACE": "example",
            "BACKEND_REPLICAS": "2",
            "TOOLS": "openspec,todo,memory",
            "RATE_LIMIT": str(RATE_LIMIT),
            "POSTGRES_PASSWORD": POSTGRES_PASSWORD,
            # ${...} is substituted from this file by both engines, as .env.example suggests.
            "DATABASE_URL": "postgres://mcp:${POSTGRES_PASSWORD}@postgres:5432/mcp?sslmode=disable",
            "DATABASE_POOL_SIZE": "4",
            "DATABASE_TIMEOUT_MS": "1500",
            "REDIS_PASSWORD": REDIS_PASSWORD,
            "REDIS_URL": "redis://:${REDIS_PASSWORD}@redis:6379/0",
            "ENABLE_DISTRIBUTED_RATE_LIMIT": "true",
            "RATE_LIMIT_REDIS_FAILURE": "open",
            "HTTP_PORT": str(free_port()),
            "HTTPS_PORT": str(self.https_port),
            "PROMETHEUS_PORT": str(free_port()),
            "ALERTMANAGER_PORT": str(free_port()),
            "POSTGRES_IMAGE": "localhost/mcp-postgres:latest",
            "REDIS_IMAGE": "localhost/mcp-redis:latest",
        }
        (self.root / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def containers(self, service: str | None = None, all_: bool = False) -> list[dict]:
        args = ["ps", "--format", "json", "--filter", f"label=com.docker.compose.project={PROJECT}"]
        if all_:
            args.insert(1, "-a")
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return json.loads(podman(*args).stdout or "[]")

    def names(self, service: str) -> list[str]:
        return sorted(c["Names"][0] for c in self.containers(service))

    def exec(self, container: str, *cmd: str, check: bool = True) -> str:
        return podman("exec", container, *cmd, check=check).stdout

    # --- clients -------------------------------------------------------------------------
    def cert(self) -> Path:
        if self._cert is None:
            (gw,) = self.names("gateway")
            self._cert = self.root / "gateway-cert.pem"
            self._cert.write_text(self.exec(gw, "cat", "/var/lib/gateway/tls/cert.pem"))
        return self._cert

    def client(self, caller: str) -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{self.https_port}",
                            verify=ssl.create_default_context(cafile=str(self.cert())),
                            timeout=20, headers={"Authorization": f"Bearer {TOKENS[caller]}"})

    def replica_get(self, container: str, path: str) -> tuple[int, str]:
        """GET on one replica's own port, from inside its container."""
        out = self.exec(container, "curl", "-sS", "-w", "\n%{http_code}",
                        f"http://127.0.0.1:3000{path}")
        body, code = out.rsplit("\n", 1)
        return int(code), body

    def replica_call(self, container: str, caller: str, tool: str, args: dict) -> dict:
        """A tools/call straight to one replica (not through the gateway)."""
        out = self.exec(container, "curl", "-sS", "-H", f"Authorization: Bearer {TOKENS[caller]}",
                        "-H", "Content-Type: application/json", "-H", f"Accept: {ACCEPT}",
                        "-d", json.dumps(call_body(tool, args)), "http://127.0.0.1:3000/mcp")
        return json.loads(out)


def call_body(tool: str, args: dict, id_: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
            "params": {"name": tool, "arguments": args}}


def call(client: httpx.Client, tool: str, args: dict) -> dict:
    """The JSON-RPC result of a tools/call through the gateway (isError or not)."""
    r = client.post("/mcp", json=call_body(tool, args), headers={"Accept": ACCEPT})
    assert r.status_code == 200, f"{tool}: HTTP {r.status_code} {r.text[:300]}"
    body = r.json()
    assert "result" in body, body
    return body["result"]


def ok(result: dict) -> dict:
    assert not result.get("isError"), result
    return result["structuredContent"]


def error_text(result: dict) -> str:
    assert result.get("isError"), result
    return result["content"][0]["text"]


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


def project_leftovers() -> dict[str, list[str]]:
    """What podman still holds of this project: containers, volumes, networks."""
    containers = [c["Names"][0] for c in json.loads(podman(
        "ps", "-a", "--format", "json", "--filter",
        f"label=com.docker.compose.project={PROJECT}").stdout or "[]")]
    volumes = [v for v in podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
               if v.startswith(f"{PROJECT}_")]
    networks = [n for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split()
                if n.startswith(f"{PROJECT}_")]
    return {k: v for k, v in (("containers", containers), ("volumes", volumes),
                              ("networks", networks)) if v}


def anonymous_volumes(stack: Stack) -> set[str]:
    """The gateway image's VOLUME gives its container an anonymous volume (see test_compose)."""
    ids = [c["Id"] for c in stack.containers(all_=True)]
    found: set[str] = set()
    if ids:
        for info in json.loads(podman("inspect", *ids).stdout or "[]"):
            for m in info.get("Mounts", []):
                if m.get("Type") == "volume" and re.fullmatch(r"[0-9a-f]{64}", m.get("Name", "")):
                    found.add(m["Name"])
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("compose-services")
    shutil.copy(REPO / "docker-compose.yml", root / "docker-compose.yml")
    shutil.copytree(REPO / "conf", root / "conf")
    # The build contexts the compose file names (the images come from images.sh).
    shutil.copytree(REPO / "deploy" / "postgres", root / "deploy" / "postgres")
    shutil.copytree(REPO / "deploy" / "redis", root / "deploy" / "redis")
    s = Stack(root)
    s.write_env()
    s.compose("down", "-v", check=False)  # a clean state, even after an interrupted run
    yield s
    logs = s.compose("logs", "--tail", "20", check=False)
    print(logs.stdout.decode(errors="replace")[-6000:])
    seen = s.seen_anonymous | anonymous_volumes(s)
    s.compose("down", "-v", check=False)
    if seen:
        podman("volume", "rm", "-f", *sorted(seen), check=False)
    left = project_leftovers()
    for name in left.get("containers", []):
        podman("rm", "-f", "-v", "-t", "0", name, check=False)
    for name in left.get("volumes", []):
        podman("volume", "rm", "-f", name, check=False)
    for name in left.get("networks", []):
        podman("network", "rm", "-f", name, check=False)
    assert not left, f"`compose down -v` left these behind: {left}"


# --- the steps -------------------------------------------------------------------------------

def test_up_with_both_profiles_runs_postgres_and_redis_and_the_backends_are_ready(stack: Stack):
    started = time.monotonic()
    stack.compose("up")
    names = sorted(c["Labels"]["com.docker.compose.service"] for c in stack.containers())
    assert names == ["alertmanager", "backend", "backend", "gateway", "postgres", "prometheus", "redis"], names
    print(f"figure: compose up with postgres and redis until /health answers {time.monotonic() - started:.1f} s")
    for backend in stack.names("backend"):
        code, body = wait_until(f"{backend} /health/ready 200",
                                lambda: (lambda r: r if r[0] == 200 else None)(
                                    stack.replica_get(backend, "/health/ready")), 30)
        assert json.loads(body) == {"status": "ready", "store": "ok"}, body
        code, body = stack.replica_get(backend, "/health")
        store = json.loads(body)["store"]
        assert store["ok"] is True and "postgres" in store["backend"].lower(), store
    # Neither service publishes a port on the host.
    for service in ("postgres", "redis"):
        (c,) = stack.containers(service)
        assert not c.get("Ports"), (service, c.get("Ports"))


def test_a_task_made_through_the_gateway_is_seen_by_every_replica(stack: Stack):
    with stack.client("alice") as c:
        made = ok(call(c, "create_task", {"title": "shared across replicas", "due": "2027-01-31"}))
        task = made["task"]
        assert task["owner"] == "alice"
        ok(call(c, "memory_remember", {"key": "where", "value": "in postgres"}))
        # A few more calls through the gateway: whichever replica serves them, they agree.
        for _ in range(4):
            listed = ok(call(c, "list_tasks", {}))
            assert [t["id"] for t in listed["tasks"]] == [task["id"]], listed
    # Each replica on its own: the one that did not make the task lists it too.
    replicas = stack.names("backend")
    assert len(replicas) == 2
    for backend in replicas:
        result = stack.replica_call(backend, "alice", "list_tasks", {})["result"]
        assert [t["id"] for t in ok(result)["tasks"]] == [task["id"]], (backend, result)
        other = stack.replica_call(backend, "dave", "list_tasks", {})["result"]
        assert ok(other)["tasks"] == [], "another caller sees none of alice's tasks"


def test_rate_limit_is_counted_once_across_the_replicas(stack: Stack):
    """RATE_LIMIT=30 per minute for bob's token: 25 calls on one replica, then 25 on the other.
    Counted per replica, all 50 would pass; counted in Redis, about 30 do."""
    per_replica = 25
    script = (f"for i in $(seq {per_replica}); do curl -s -o /dev/null -w '%{{http_code}}\\n' "
              f"-H 'Authorization: Bearer {TOKENS['bob']}' -H 'Content-Type: application/json' "
              f"-H 'Accept: {ACCEPT}' -d '{json.dumps(call_body('change.list', {}))}' "
              "http://127.0.0.1:3000/mcp; done")
    codes: dict[str, list[str]] = {}
    started = time.monotonic()
    for backend in stack.names("backend"):
        codes[backend] = stack.exec(backend, "sh", "-c", script).split()
    took = time.monotonic() - started
    every = [code for cs in codes.values() for code in cs]
    passed = every.count("200")
    print(f"figure: {passed} of {len(every)} calls passed on 2 replicas in {took:.1f} s with RATE_LIMIT={RATE_LIMIT}")
    assert set(every) <= {"200", "429"}, codes
    # A token bucket of 30 refilled at 30/min: 30, plus what refills while the calls run.
    assert RATE_LIMIT <= passed <= RATE_LIMIT + 1 + int(took * RATE_LIMIT / 60), codes
    first, second = codes.values()
    assert first.count("200") == per_replica, "the first replica's 25 are under the limit"
    assert second.count("429") >= per_replica - (RATE_LIMIT - per_replica) - 2, second
    # Through the gateway, the same token is refused too (one call may find a refilled token).
    with stack.client("bob") as c:
        replies = [c.post("/mcp", json=call_body("change.list", {}), headers={"Accept": ACCEPT})
                   for _ in range(3)]
    statuses = [r.status_code for r in replies]
    assert statuses.count(429) >= 2 and set(statuses) <= {200, 429}, statuses
    limited = next(r for r in replies if r.status_code == 429)
    assert limited.headers.get("retry-after") and "RATE_LIMITED" in limited.text, limited.text[:300]


def test_postgres_stopped_answers_unavailable_quickly_and_started_again_serves(stack: Stack):
    stack.compose("stop", "postgres", timeout=120)
    assert stack.containers("postgres") == []
    with stack.client("carol") as c:
        # The first call may spend one DATABASE_TIMEOUT_MS (1.5 s) on a pooled connection the
        # server closed; every call answers UNAVAILABLE, none hangs.
        for i in range(3):
            t0 = time.monotonic()
            text = error_text(call(c, "create_task", {"title": f"while down {i}"}))
            took = time.monotonic() - t0
            assert text.startswith("UNAVAILABLE"), text
            assert took < 4, f"UNAVAILABLE after {took:.1f} s"
            assert POSTGRES_PASSWORD not in text
        print(f"figure: todo call with PostgreSQL stopped answered UNAVAILABLE in {took:.2f} s")
        # The openspec family has no part in it.
        assert ok(call(c, "change.list", {}))["changes"]
    for backend in stack.names("backend"):
        code, body = stack.replica_get(backend, "/health/ready")
        assert code == 503 and json.loads(body)["store"] == "unavailable", (backend, code, body)

    stack.compose("start", "postgres", timeout=120)
    started = time.monotonic()
    with stack.client("carol") as c:
        # About one call a second: carol's bucket (30/min) never runs dry.
        made = wait_until("create_task works again",
                          lambda: (lambda r: r if not r.get("isError") else None)(
                              call(c, "create_task", {"title": "after the restart"})), 45, 1.5)
        print(f"figure: todo calls served again {time.monotonic() - started:.1f} s after `compose start postgres`")
        titles = [t["title"] for t in ok(call(c, "list_tasks", {}))["tasks"]]
        assert titles == ["after the restart"], "nothing of the failed calls was written"
    assert made["structuredContent"]["task"]["owner"] == "carol"
    for backend in stack.names("backend"):
        wait_until(f"{backend} ready again",
                   lambda: stack.replica_get(backend, "/health/ready")[0] == 200, 20)


def test_down_then_up_keeps_the_database_and_redis_data(stack: Stack):
    (redis,) = stack.names("redis")
    stack.exec(redis, "redis-cli", "--no-auth-warning", "-a", REDIS_PASSWORD, "set",
               "mcp-test-probe", "kept")
    stack.seen_anonymous |= anonymous_volumes(stack)
    # SIGTERM: PostgreSQL's fast shutdown and Redis's own, both exit 0 (so does the rest).
    stack.compose("stop", timeout=180)
    codes = {c["Labels"]["com.docker.compose.service"] + ":" + c["Names"][0]: c["ExitCode"]
             for c in stack.containers(all_=True)}
    assert codes and all(code == 0 for code in codes.values()), codes
    stack.compose("down", timeout=180)
    assert stack.containers(all_=True) == []
    stack.compose("up")
    with stack.client("alice") as c:
        tasks = ok(call(c, "list_tasks", {}))["tasks"]
        assert [t["title"] for t in tasks] == ["shared across replicas"], tasks
        memories = ok(call(c, "memory_recall", {"key": "where"}))["memories"]
        assert memories[0]["value"] == "in postgres", memories
    (redis,) = stack.names("redis")
    got = stack.exec(redis, "redis-cli", "--no-auth-warning", "-a", REDIS_PASSWORD, "get",
                     "mcp-test-probe").strip()
    assert got == "kept", "the append-only file in the volume redis-data survives down/up"
