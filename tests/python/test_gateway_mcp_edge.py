"""The gateway's MCP-aware edge with the official Python SDK, in both eras (the 2025-11-25
initialize handshake and 2026-07-28 server/discover), over HTTPS in front of real backends:
named callers and their grants (tools/list filtered, a denied tool refused with a JSON-RPC error
naming it), per-tool limits (JSON-RPC error, HTTP 429, Retry-After), the audit log, per-tool
metrics, JWT access tokens (valid, expired, wrong audience, wrong key, alg none), RFC 9728
metadata, Origin/Host checks, and a canary rolled back by its tool-error ratio while every
status it answers is 200."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import time
from pathlib import Path

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import Proc, free_port, run_gateway

pytestmark = pytest.mark.anyio

READER = "reader-token-0123456789abcdef"
ADMIN = "admin-token-fedcba9876543210"
BACKEND_SECRET = "backend-secret-5555"
ISSUER = "https://auth.example.test"
ALL_TOOLS = {"change.list", "change.open", "change.archive", "spec.list", "spec.open"}
READER_TOOLS = {"change.list", "change.open", "spec.list", "spec.open"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def ports(n: int) -> list[int]:
    found: set[int] = set()
    while len(found) < n:
        found.add(free_port())
    return sorted(found)


class Keys:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": [jwk]})

    def token(self, audience: str, *, key=None, exp_in: int = 300, sub: str = "alice",
              scope: str = "mcp:read") -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "sub": sub, "scope": scope,
                  "iat": now, "exp": now + exp_in}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": "k1"})


def unsigned(audience: str) -> str:
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(
        {"iss": ISSUER, "aud": audience, "sub": "mallory", "scope": "mcp:read mcp:admin",
         "exp": now + 300}) + "."


class Edge:
    def __init__(self, proc: Proc, https_port: int, admin_port: int, cert: Path, tmp: Path):
        self.proc = proc
        self.base = f"https://127.0.0.1:{https_port}"
        self.url = f"{self.base}/mcp"
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.cert = cert
        self.audit = tmp / "audit.log"
        self.access = tmp / "access.log"

    def client(self, token: str | None, **kw) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        return httpx2.AsyncClient(verify=ssl.create_default_context(cafile=str(self.cert)),
                                  headers=headers, timeout=httpx2.Timeout(30, read=60), **kw)

    def metrics(self) -> str:
        return httpx2.get(f"{self.admin}/metrics").text

    def audit_lines(self, at_least: int) -> list[dict]:
        """The audit log's lines once it holds `at_least` of them (its writer thread flushes
        every 20 ms; under load a line may take longer), or what it holds after 5 s."""
        deadline = time.monotonic() + 5
        while True:
            lines = ([json.loads(l) for l in self.audit.read_text().splitlines()]
                     if self.audit.exists() else [])
            if len(lines) >= at_least or time.monotonic() > deadline:
                time.sleep(0.1)  # a line more than expected would show now
                return ([json.loads(l) for l in self.audit.read_text().splitlines()]
                        if self.audit.exists() else [])
            time.sleep(0.05)


def counter(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_edge(procs, tmp: Path, tls_cert, backends: list, *, routes: str, extra: str = "",
               split: str = "", auth_keys: str = "") -> Edge:
    cert, key = tls_cert
    http_port, https_port, admin_port = ports(3)
    keys: Keys = start_edge.keys
    (tmp / "jwks.json").write_text(keys.jwks())
    (tmp / "callers.txt").write_text(f"# name:token\nreader:{READER}\nadmin:{ADMIN}\n")
    # Each pool: one backend, or a list of replicas.
    servers = lambda b: ", ".join(f'"127.0.0.1:{x.port}"' for x in (b if isinstance(b, list) else [b]))
    pools = "\n".join(
        f'[pools.{name}]\nservers = [{servers(b)}]\n' for name, b in backends)
    conf = tmp / "gateway.toml"
    conf.write_text(f"""
[server]
pid_file = "{tmp}/gateway.pid"
upgrade_sock = "{tmp}/upgrade.sock"
access_log = "{tmp}/access.log"
audit_log = "audit.log"

[listeners.http]
address = "127.0.0.1:{http_port}"
https_port = {https_port}

[listeners.https]
address = "127.0.0.1:{https_port}"
cert = "{cert}"
key = "{key}"

[listeners.admin]
address = "127.0.0.1:{admin_port}"

{pools}
{split}

[zones.per_caller]
key = "caller"
rate = "1r/m"

[auth]
tokens_file = "callers.txt"
upstream_token = "{BACKEND_SECRET}"
{auth_keys}

[[auth.grants]]
callers = ["reader"]
scopes = ["mcp:read"]
methods = ["tools/list", "tools/call"]
tools = ["change.list", "change.open", "spec.*"]

[[auth.grants]]
callers = ["admin"]
scopes = ["mcp:admin"]

[auth.oauth]
resource = "https://127.0.0.1:{https_port}/mcp"
authorization_servers = ["{ISSUER}"]
jwks_file = "jwks.json"
scopes_supported = ["mcp:read", "mcp:admin"]
{extra}
{routes}
""")
    proc = run_gateway(procs, conf, admin_port)
    return Edge(proc, https_port, admin_port, cert, tmp)


start_edge.keys = Keys()

MCP_ROUTE = """
[[routes]]
name = "mcp"
path = "/mcp"
pool = "backend"
stream = true
mcp = true
auth = true
allowed_origins = ["https://app.example.test"]
allowed_hosts = ["127.0.0.1", "localhost"]
mcp_limits = [{ tool = "spec.list", zone = "per_caller", burst = 0, nodelay = true }]
"""


@pytest.fixture
def edge(procs, start_backend, tls_cert, tmp_path) -> Edge:
    backend = start_backend(env={"AUTH_TOKENS": BACKEND_SECRET,
                                 "ALLOWED_ORIGINS": "https://app.example.test"})
    return start_edge(procs, tmp_path, tls_cert, [("backend", backend)], routes=MCP_ROUTE)


async def connect(session: ClientSession, era: str):
    if era == "2026-07-28":
        result = await session.discover()
        assert "2026-07-28" in result.supported_versions
    else:
        result = await session.initialize()
        assert result.protocol_version == "2025-11-25"


ERAS = ["2025-11-25", "2026-07-28"]


@pytest.mark.parametrize("era", ERAS)
async def test_grants_filter_tools_and_refuse_a_denied_tool(edge: Edge, era: str):
    async with edge.client(READER) as http:
        async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await connect(s, era)
                listed = {t.name for t in (await s.list_tools()).tools}
                assert listed == READER_TOOLS, listed
                ok = await s.call_tool("change.list", {})
                assert not ok.is_error, ok
                with pytest.raises(MCPError) as denied:
                    await s.call_tool("change.archive", {"slug": "add-webhooks"})
                assert denied.value.error.code == -32003
                assert "change.archive" in denied.value.error.message
    async with edge.client(ADMIN) as http:
        async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await connect(s, era)
                everything = {t.name for t in (await s.list_tools()).tools}
                assert everything >= ALL_TOOLS, everything
                assert {t for t in everything
                        if t in ("change.list", "change.open") or t.startswith("spec.")} == READER_TOOLS

    # One audit line per tool call, naming the caller, never its token.
    calls = [l for l in edge.audit_lines(2) if l["method"] == "tools/call"]
    assert [(l["caller"], l["tool"], l["outcome"], l["status"]) for l in calls] == [
        ("reader", "change.list", "ok", 200),
        ("reader", "change.archive", "denied", 403),
    ], calls
    assert all(READER not in json.dumps(l) for l in calls)
    assert all(l["request_id"] and l["duration_ms"] >= 0 and l["bytes_out"] > 0 for l in calls)

    m = edge.metrics()
    assert counter(m, "gateway_mcp_requests_total", method="tools/call", tool="change.list",
                   outcome="ok", pool="backend") == 1
    assert counter(m, "gateway_mcp_requests_total", method="tools/call",
                   tool="change.archive", outcome="denied") == 1
    assert counter(m, "gateway_mcp_requests_total", method="tools/list") == 2


@pytest.mark.parametrize("era", ERAS)
async def test_a_per_tool_limit_refuses_the_second_call_in_its_window(edge: Edge, era: str):
    async with edge.client(READER) as http:
        async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await connect(s, era)
                first = await s.call_tool("spec.list", {})
                assert not first.is_error
                with pytest.raises(MCPError) as limited:
                    await s.call_tool("spec.list", {})
                assert limited.value.error.code == -32029
                assert "spec.list" in limited.value.error.message
                # Other tools are not limited.
                assert not (await s.call_tool("change.list", {})).is_error
    # On the wire: HTTP 429, Retry-After, a JSON-RPC error with the request's id.
    async with edge.client(READER) as http:
        r = await http.post(edge.url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                            "params": {"name": "spec.list", "arguments": {}}},
                            headers={"Accept": "application/json, text/event-stream"})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        body = r.json()
        assert body["id"] == 7 and body["error"]["code"] == -32029
    # The admin has its own bucket (the zone's key is the caller).
    async with edge.client(ADMIN) as http:
        async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await connect(s, era)
                assert not (await s.call_tool("spec.list", {})).is_error
    outcomes = [l["outcome"] for l in edge.audit_lines(5) if l["tool"] == "spec.list"]
    assert outcomes == ["ok", "limited", "limited", "ok"], outcomes


async def test_jwt_access_tokens(edge: Edge):
    keys: Keys = start_edge.keys
    audience = edge.url
    # RFC 9728 metadata: public, served by the gateway.
    async with edge.client(None) as http:
        for path in ("/.well-known/oauth-protected-resource/mcp",
                     "/.well-known/oauth-protected-resource"):
            meta = await http.get(edge.base + path)
            assert meta.status_code == 200, path
            doc = meta.json()
            assert doc["resource"] == audience
            assert doc["authorization_servers"] == [ISSUER]
            assert doc["scopes_supported"] == ["mcp:read", "mcp:admin"]
        missing = await http.post(edge.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert missing.status_code == 401
        challenge = missing.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert (f'resource_metadata="{edge.base}/.well-known/oauth-protected-resource/mcp"'
                in challenge)

    bad = {
        "expired": keys.token(audience, exp_in=-3600),
        "wrong audience": keys.token("https://other.example.test/mcp"),
        "wrong key": keys.token(audience, key=keys.other),
        "alg none": unsigned(audience),
        "garbage": "not.a.jwt",
    }
    for what, token in bad.items():
        async with edge.client(token) as http:
            r = await http.post(edge.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                headers={"Accept": "application/json, text/event-stream"})
            assert r.status_code == 401, what
            assert 'error="invalid_token"' in r.headers["www-authenticate"], what

    # A valid token: its scope grants the reader's tools; its subject is the caller.
    async with edge.client(keys.token(audience, sub="alice")) as http:
        async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await s.initialize()
                assert {t.name for t in (await s.list_tools()).tools} == READER_TOOLS
                assert not (await s.call_tool("change.list", {})).is_error
                with pytest.raises(MCPError):
                    await s.call_tool("change.archive", {"slug": "add-webhooks"})
        # Refused by its grants, the JWT caller learns which scope would allow the call.
        r = await http.post(edge.url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                            "params": {"name": "change.archive",
                                                       "arguments": {"slug": "add-webhooks"}}},
                            headers={"Accept": "application/json, text/event-stream"})
        assert r.status_code == 403 and r.json()["error"]["code"] == -32003
        challenge = r.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and 'scope="mcp:admin"' in challenge
        assert "resource_metadata=" in challenge
    calls = [(l["caller"], l["tool"], l["outcome"]) for l in edge.audit_lines(3)]
    assert calls == [("alice", "change.list", "ok"), ("alice", "change.archive", "denied"),
                     ("alice", "change.archive", "denied")]


async def test_origin_and_host_are_checked_before_the_backend(edge: Edge):
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}
    async with edge.client(READER) as http:
        evil = await http.post(edge.url, json=ping,
                               headers={**accept, "Origin": "https://evil.example.test"})
        assert evil.status_code == 403
        assert evil.json()["error"]["code"] == "FORBIDDEN"
        rebound = await http.post(edge.url, json=ping,
                                  headers={**accept, "Host": "attacker.example.test"})
        assert rebound.status_code == 403
        assert "attacker.example.test" in rebound.json()["error"]["message"]
        good = await http.post(edge.url, json=ping,
                               headers={**accept, "Origin": "https://app.example.test"})
        assert good.status_code == 200, good.text


async def test_a_canary_breaking_a_tool_is_rolled_back_on_its_tool_errors(
        procs, start_backend, workspace, tls_cert, tmp_path):
    # The canary's workspace lacks one change: change.open of it answers isError (HTTP 200).
    canary_ws = tmp_path / "canary-ws"
    shutil.copytree(workspace, canary_ws, symlinks=True)
    shutil.rmtree(canary_ws / "openspec" / "changes" / "add-webhooks")
    stable = start_backend(env={"AUTH_TOKENS": BACKEND_SECRET})
    canary = start_backend(env={"AUTH_TOKENS": BACKEND_SECRET}, workspace_dir=canary_ws)
    split = """
[splits.release]
pools = { stable = 50, canary = 50 }
sticky = "none"
[splits.release.rollback]
pool = "canary"
max_5xx_ratio = 0.5
max_tool_error_ratio = 0.5
min_requests = 4
window = "60s"
"""
    routes = """
[[routes]]
name = "mcp"
path = "/mcp"
split = "release"
stream = true
mcp = true
auth = true
"""
    edge = start_edge(procs, tmp_path, tls_cert, [("stable", stable), ("canary", canary)],
                      routes=routes, split=split)
    async with edge.client(ADMIN) as http:
        async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await s.initialize()
                errors = 0
                for _ in range(40):
                    r = await s.call_tool("change.open", {"slug": "add-webhooks"})
                    errors += r.is_error
                    status = httpx2.get(f"{edge.admin}/status").json()
                    if status["splits"][0]["rollback"]["rolled_back"]:
                        break
                assert errors >= 2
                status = httpx2.get(f"{edge.admin}/status").json()
                rb = status["splits"][0]["rollback"]
                assert rb["rolled_back"], rb
                assert rb["tripped_at"]["errors_5xx"] == 0
                assert rb["tripped_at"]["tool_errors"] >= 2
                # Rolled back: every call now goes to stable and succeeds.
                for _ in range(6):
                    assert not (await s.call_tool("change.open", {"slug": "add-webhooks"})).is_error
    m = edge.metrics()
    assert counter(m, "gateway_split_rollback", split="release", pool="canary") == 1
    assert counter(m, "gateway_mcp_requests_total", pool="canary", outcome="tool_error") >= 2
    time.sleep(0.1)
    statuses = {json.loads(l)["status"] for l in edge.access.read_text().splitlines()}
    assert statuses <= {200, 202}, statuses


def reload_and_wait(edge: Edge, before: float) -> None:
    import os
    import signal
    os.kill(edge.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while counter(edge.metrics(), "gateway_config_reloads_total", result="ok") <= before:
        assert time.monotonic() < deadline, edge.proc.log()
        time.sleep(0.05)


async def test_the_tokens_file_is_read_again_on_reload(edge: Edge, tmp_path):
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}

    async def status(token: str) -> int:
        async with edge.client(token) as http:
            return (await http.post(edge.url, json=ping, headers=accept)).status_code

    assert await status(READER) == 200
    before = counter(edge.metrics(), "gateway_config_reloads_total", result="ok")
    (tmp_path / "callers.txt").write_text(f"reader:rotated-token-0000000000\nadmin:{ADMIN}\n")
    reload_and_wait(edge, before)
    assert await status(READER) == 401
    assert await status("rotated-token-0000000000") == 200
    # A broken file is refused by the reload and changes nothing.
    errors_before = counter(edge.metrics(), "gateway_config_reloads_total", result="error")
    (tmp_path / "callers.txt").write_text("reader rotated\n")
    import os
    import signal
    os.kill(edge.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while counter(edge.metrics(), "gateway_config_reloads_total", result="error") <= errors_before:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert await status("rotated-token-0000000000") == 200
    assert "auth.tokens_file: line 1: expected name:token" in edge.proc.log()


async def test_keys_from_a_jwks_url_follow_a_key_rotation(procs, start_backend, tls_cert,
                                                         tmp_path):
    import http.server
    import threading

    keys = Keys()
    served = {"body": keys.jwks().encode()}

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(served["body"])))
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = start_backend(env={"AUTH_TOKENS": BACKEND_SECRET})
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        edge = start_edge(procs, tmp_path, tls_cert, [("backend", backend)], routes=MCP_ROUTE,
                          extra="")
        conf = tmp_path / "gateway.toml"
        conf.write_text(conf.read_text().replace('jwks_file = "jwks.json"', f'jwks_url = "{url}"'))
        before = counter(edge.metrics(), "gateway_config_reloads_total", result="ok")
        reload_and_wait(edge, before)
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        accept = {"Accept": "application/json, text/event-stream"}

        async def status(token: str) -> int:
            async with edge.client(token) as http:
                return (await http.post(edge.url, json=ping, headers=accept)).status_code

        deadline = time.monotonic() + 10
        while await status(keys.token(edge.url)) != 200:
            assert time.monotonic() < deadline, edge.proc.log()
            time.sleep(0.2)
        # The authorization server rotates to a new key under a new kid: the first token
        # naming it makes the gateway fetch the set again.
        new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(new.public_key()))
        jwk.update({"kid": "k2", "use": "sig", "alg": "RS256"})
        served["body"] = json.dumps({"keys": [jwk]}).encode()
        now = int(time.time())
        rotated = jwt.encode({"iss": ISSUER, "aud": edge.url, "sub": "bob", "scope": "mcp:read",
                              "exp": now + 300}, new, algorithm="RS256", headers={"kid": "k2"})
        assert await status(rotated) == 200
        # The old key is gone from the set.
        assert await status(keys.token(edge.url)) == 401
    finally:
        server.shutdown()


async def test_backends_keep_items_per_caller_behind_the_gateway(procs, start_backend, tls_cert,
                                                                tmp_path):
    # The gateway names the caller it authenticated in caller_header; the backend believes
    # it (TRUSTED_CALLER_HEADER) from the gateway only, after the gateway's own token.
    backend = start_backend(env={"AUTH_TOKENS": f"gateway:{BACKEND_SECRET}",
                                 "TOOLS": "openspec,todo",
                                 "TRUSTED_CALLER_HEADER": "X-Gateway-Caller"})
    edge = start_edge(procs, tmp_path, tls_cert, [("backend", backend)], routes="""
[[routes]]
name = "mcp"
path = "/mcp"
pool = "backend"
stream = true
mcp = true
auth = true
""", auth_keys='caller_header = "X-Gateway-Caller"')

    async def titles(token: str, *, create: str | None = None, spoof: str | None = None):
        headers = {"X-Gateway-Caller": spoof} if spoof else {}
        async with edge.client(token, headers=headers) as http:
            async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    if create:
                        made = await s.call_tool("create_task", {"title": create})
                        assert not made.is_error, made
                    listed = await s.call_tool("list_tasks", {"status": "all"})
                    assert not listed.is_error, listed
                    return [t["title"] for t in listed.structured_content["tasks"]]

    keys: Keys = start_edge.keys
    alice = keys.token(edge.url, sub="alice", scope="mcp:admin")  # a JWT caller: its subject
    assert await titles(ADMIN, create="admin's task") == ["admin's task"]
    assert await titles(alice, create="alice's task") == ["alice's task"]
    # A client naming another caller in the header is not believed: the gateway replaces it.
    assert await titles(alice, spoof="admin") == ["alice's task"]
    assert await titles(ADMIN) == ["admin's task"]
