"""The official TypeScript MCP clients (tests/conformance/ts_client.mjs on Node 22) through the
real gateway over HTTPS (Streamable HTTP) in front of the real backend: connect, list the tools,
call the read-only change.list. The 1.x SDK and the 2.x client in the legacy era (initialize,
2025-11-25), and the 2.x client pinned to the 2026-07-28 stateless era (server/discover, then
the revision in each request's _meta). The gateway's access log shows the era on the wire."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from node_harness import CONFORMANCE_DIR, node, node_env, start_gateway

CLIENTS = {
    # client: (era, protocol revision, the MCP method the connection starts with)
    "sdk-v1": ("legacy", "2025-11-25", "initialize"),
    "client-v2-legacy": ("legacy", "2025-11-25", "initialize"),
    "client-v2-modern": ("modern", "2026-07-28", "server/discover"),
}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_typescript_client_through_gateway(client: str, start_backend, procs, tls_cert,
                                           tmp_path: Path):
    era, revision, first_method = CLIENTS[client]
    cert, key = tls_cert
    gw = start_gateway(procs, tmp_path, start_backend(env={"AUTH_TOKENS": ""}), cert, key)
    done = subprocess.run([str(node()), "ts_client.mjs", f"{gw.https}/mcp", client],
                          cwd=CONFORMANCE_DIR, env=node_env(cert), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- gateway ---\n{gw.proc.log()}"
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert (out["era"], out["protocolVersion"]) == (era, revision), out
    assert out["serverName"] == "task-mcp-backend"
    assert {"change.list", "change.open", "spec.list", "task.list"} <= set(out["tools"])
    assert out["isError"] is False, out
    slugs = {c["slug"] for c in out["structuredContent"]["changes"]}
    assert {"add-task-due-dates", "add-webhooks"} <= slugs, out
    assert "add-task-due-dates" in out["text"]

    # The gateway logs a request once it has answered it: the last line may trail the client.
    deadline = time.monotonic() + 10
    while True:
        text = (tmp_path / "access.log").read_text()
        lines = [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]
        if any(r.get("mcp_tool") == "change.list" for r in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    posts = [r for r in lines if r.get("route") == "mcp" and r["method"] == "POST"]
    mcp = [(r["mcp_method"], r["mcp_tool"]) for r in posts]
    assert mcp[0][0] == first_method, mcp
    assert ("tools/list", "-") in mcp and ("tools/call", "change.list") in mcp, mcp
    assert all(r["status"] < 400 for r in posts), posts
    # The legacy clients also try the optional standalone GET stream: 405 from a stateless
    # server, which the transport accepts.
    assert all(r["status"] == 405 for r in lines if r["method"] == "GET"), lines
    if era == "modern":
        assert "initialize" not in {m for m, _ in mcp}, mcp
