"""The gateway's MCP edge with the official TypeScript client 2.x (@modelcontextprotocol/client,
tests/conformance/ts_client_edge.mjs on Node 22) in both eras (the 2025-11-25 initialize
handshake, and pinned to 2026-07-28: server/discover), over HTTPS in front of the real backend,
as test_gateway_mcp_edge.py does with the Python SDK: named callers and their grants, a per-tool
limit, the audit log, per-tool metrics, JWT access tokens.

How the 2.x client surfaces the gateway's refusals: a 403 or 429 answer is not turned into a
ProtocolError; the request rejects with an SdkHttpError (code CLIENT_HTTP_NOT_IMPLEMENTED, .status
the HTTP status) whose data.text is the body, the gateway's JSON-RPC error. A 403 to a JWT caller
also carries WWW-Authenticate: Bearer error="insufficient_scope", which the client takes as a
step-up challenge (an InsufficientScopeError, the body dropped). A 401 to a transport with an
AuthProvider (a bearer token) is an UnauthorizedError."""

from __future__ import annotations

import json
import ssl
import subprocess
import time

import httpx2
import pytest

from node_harness import CONFORMANCE_DIR, node, node_env
from test_gateway_mcp_edge import (ADMIN, ALL_TOOLS, BACKEND_SECRET, MCP_ROUTE, READER,
                                   READER_TOOLS, Edge, counter, start_edge)

ERAS = {
    # era: (protocol revision, the MCP method the connection starts with)
    "legacy": ("2025-11-25", "initialize"),
    "modern": ("2026-07-28", "server/discover"),
}


@pytest.fixture
def edge(procs, start_backend, tls_cert, tmp_path) -> Edge:
    backend = start_backend(env={"AUTH_TOKENS": BACKEND_SECRET,
                                 "ALLOWED_ORIGINS": "https://app.example.test"})
    return start_edge(procs, tmp_path, tls_cert, [("backend", backend)], routes=MCP_ROUTE)


def call(name: str, **arguments) -> dict:
    return {"op": "callTool", "name": name, "arguments": arguments}


LIST = {"op": "listTools"}


def run_ts(edge: Edge, *sessions: dict) -> list[dict]:
    """Runs `sessions` ({era, token, steps}) in one Node process: what each one saw."""
    spec = {"url": edge.url, "sessions": list(sessions)}
    done = subprocess.run([str(node()), "ts_client_edge.mjs"], input=json.dumps(spec),
                          cwd=CONFORMANCE_DIR, env=node_env(edge.cert), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- gateway ---\n{edge.proc.log()}"
    return json.loads(done.stdout.strip().splitlines()[-1])["sessions"]


def connected(session: dict, era: str) -> list[dict]:
    revision, _ = ERAS[era]
    c = session["connect"]
    assert c["ok"], c
    assert (c["era"], c["protocolVersion"], c["serverName"]) == (era, revision,
                                                                 "task-mcp-backend"), c
    return session["steps"]


def refused(step: dict, status: int, code: int) -> dict:
    """The JSON-RPC error of a tools/call the gateway refused with HTTP `status`."""
    assert not step["ok"], step
    e = step["error"]
    assert (e["name"], e["status"], e["protocolError"]) == ("SdkHttpError", status, False), e
    assert isinstance(e["jsonrpc"]["id"], int) and e["jsonrpc"]["code"] == code, e
    return e["jsonrpc"]


def access_lines(edge: Edge, until) -> list[dict]:
    # The gateway logs a request once it has answered it: the last line may trail the client.
    deadline = time.monotonic() + 5
    while True:
        text = edge.access.read_text() if edge.access.exists() else ""
        lines = [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines()]
        if until(lines) or time.monotonic() > deadline:
            return lines


@pytest.mark.parametrize("era", list(ERAS))
def test_grants_filter_tools_and_refuse_a_denied_tool(edge: Edge, era: str):
    reader, admin = run_ts(
        edge,
        {"era": era, "token": READER,
         "steps": [LIST, call("change.list"), call("change.archive", slug="add-webhooks")]},
        {"era": era, "token": ADMIN, "steps": [LIST]})
    listed, ok, denied = connected(reader, era)
    assert set(listed["tools"]) == READER_TOOLS, listed
    assert ok["ok"] and ok["isError"] is False, ok
    assert {"add-task-due-dates", "add-webhooks"} <= {
        c["slug"] for c in ok["structuredContent"]["changes"]}, ok
    error = refused(denied, 403, -32003)
    assert "change.archive" in error["message"] and "reader" in error["message"], error
    assert error["data"] == {"tool": "change.archive"}, error
    (everything,) = connected(admin, era)
    assert set(everything["tools"]) >= ALL_TOOLS, everything

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

    # The era on the wire: each connection starts with its era's method, and the 2026-07-28
    # client never sends initialize.
    _, first = ERAS[era]
    lines = access_lines(edge, lambda ls: sum(r.get("mcp_method") == "tools/list"
                                              for r in ls) == 2)
    mcp = [r.get("mcp_method") for r in lines if r["method"] == "POST"]
    assert mcp[0] == first and mcp.count(first) == 2, mcp
    assert era == "legacy" or "initialize" not in mcp, mcp


@pytest.mark.parametrize("era", list(ERAS))
def test_a_per_tool_limit_refuses_the_second_call_in_its_window(edge: Edge, era: str):
    reader, admin = run_ts(
        edge,
        {"era": era, "token": READER,
         "steps": [call("spec.list"), call("spec.list"), call("change.list")]},
        # The admin has its own bucket (the zone's key is the caller).
        {"era": era, "token": ADMIN, "steps": [call("spec.list")]})
    first, second, other = connected(reader, era)
    assert first["ok"] and first["isError"] is False, first
    error = refused(second, 429, -32029)
    assert "spec.list" in error["message"], error
    assert error["data"]["zone"] == "per_caller" and error["data"]["retryAfter"] >= 1, error
    # Other tools are not limited.
    assert other["ok"] and other["isError"] is False, other
    (own,) = connected(admin, era)
    assert own["ok"] and own["isError"] is False, own

    audit = [(l["caller"], l["tool"], l["outcome"], l["status"]) for l in edge.audit_lines(4)
             if l["method"] == "tools/call"]
    assert audit == [("reader", "spec.list", "ok", 200), ("reader", "spec.list", "limited", 429),
                     ("reader", "change.list", "ok", 200), ("admin", "spec.list", "ok", 200)], audit
    m = edge.metrics()
    assert counter(m, "gateway_mcp_requests_total", method="tools/call", tool="spec.list",
                   outcome="limited") == 1
    assert counter(m, "gateway_mcp_requests_total", method="tools/call", tool="spec.list",
                   outcome="ok", pool="backend") == 2
    assert counter(m, "gateway_mcp_requests_total", method="tools/call", tool="change.list",
                   outcome="ok", pool="backend") == 1


@pytest.mark.parametrize("era", list(ERAS))
def test_jwt_access_tokens(edge: Edge, era: str):
    keys = start_edge.keys
    valid, expired = run_ts(
        edge,
        # Its scope grants the reader's tools; its subject is the caller.
        {"era": era, "token": keys.token(edge.url, sub="alice"),
         "steps": [LIST, call("change.list"), call("change.archive", slug="add-webhooks")]},
        {"era": era, "token": keys.token(edge.url, sub="bob", exp_in=-3600), "steps": [LIST]})
    listed, ok, denied = connected(valid, era)
    assert set(listed["tools"]) == READER_TOOLS, listed
    assert ok["ok"] and ok["isError"] is False, ok
    # The gateway's 403 to a JWT caller adds WWW-Authenticate: Bearer error="insufficient_scope",
    # so the client takes it as a step-up challenge, not as the JSON-RPC error it carries: with
    # no OAuth provider to re-authorize with it rejects with an InsufficientScopeError.
    assert not denied["ok"], denied
    assert denied["error"]["name"] == "InsufficientScopeError", denied
    assert denied["error"]["unauthorized"] is False, denied
    # ... the same refusal on the wire: the JSON-RPC error naming the tool and the caller.
    with httpx2.Client(verify=ssl.create_default_context(cafile=str(edge.cert)), headers={
            "Authorization": f"Bearer {keys.token(edge.url, sub='alice')}",
            "Accept": "application/json, text/event-stream"}) as http:
        r = http.post(edge.url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                      "params": {"name": "change.archive",
                                                 "arguments": {"slug": "add-webhooks"}}})
    assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"], r
    error = r.json()
    assert error["id"] == 9 and error["error"]["code"] == -32003, error
    assert "change.archive" in error["error"]["message"] and "alice" in error["error"]["message"]

    # The expired token: the first request (initialize or server/discover) answers 401, which a
    # transport with an AuthProvider (and no onUnauthorized to refresh it) reports as an
    # UnauthorizedError; the session never connects.
    c = expired["connect"]
    assert not c["ok"] and expired["steps"] == [], expired
    assert c["error"]["unauthorized"] is True and c["error"]["name"] == "UnauthorizedError", c

    calls = [(l["caller"], l["tool"], l["outcome"], l["status"]) for l in edge.audit_lines(3)]
    assert calls == [("alice", "change.list", "ok", 200), ("alice", "change.archive", "denied", 403),
                     ("alice", "change.archive", "denied", 403)], calls
    assert "bob" not in edge.audit.read_text()
    lines = access_lines(edge, lambda ls: any(r["status"] == 401 for r in ls))
    assert [r["status"] for r in lines if r["status"] == 401] == [401], lines
