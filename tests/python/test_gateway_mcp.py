"""The official MCP Python SDK and the user's existing API through the real gateway (HTTPS,
HTTP/1.1 and HTTP/2) in front of two real backend replicas."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import Proc, free_port, run_gateway

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Gateway:
    def __init__(self, proc: Proc, https_port: int, admin_port: int, cert: Path):
        self.proc = proc
        self.base = f"https://127.0.0.1:{https_port}"
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.cert = cert

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture
def gateway(procs, start_backend, tls_cert, tmp_path) -> Gateway:
    backends = [start_backend(), start_backend()]
    cert, key = tls_cert
    ports: set[int] = set()
    while len(ports) < 3:  # free_port() may hand out the same free port twice
        ports.add(free_port())
    http_port, https_port, admin_port = sorted(ports)
    servers = ", ".join(f'"127.0.0.1:{b.port}"' for b in backends)
    conf = tmp_path / "gateway.toml"
    conf.write_text(f"""
[server]
pid_file = "{tmp_path}/gateway.pid"
upgrade_sock = "{tmp_path}/upgrade.sock"
access_log = "{tmp_path}/access.log"

[listeners.http]
address = "127.0.0.1:{http_port}"
https_port = {https_port}

[listeners.https]
address = "127.0.0.1:{https_port}"
cert = "{cert}"
key = "{key}"

[listeners.admin]
address = "127.0.0.1:{admin_port}"

[pools.backend]
servers = [{servers}]
[pools.backend.health_check]
path = "/healthz"
interval = "1s"

[[routes]]
name = "mcp"
path = "/mcp"
pool = "backend"
stream = true

[[routes]]
name = "sse"
path = "/sse"
pool = "backend"
stream = true

[[routes]]
name = "default"
path = "/"
pool = "backend"
""")
    proc = run_gateway(procs, conf, admin_port)
    return Gateway(proc, https_port, admin_port, cert)


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
async def test_mcp_sdk_lists_and_calls_tools_through_gateway(gateway: Gateway, http2: bool):
    versions: list[str] = []

    async def record(response):
        versions.append(response.http_version)

    async with httpx2.AsyncClient(verify=gateway.ssl_context(), http2=http2,
                                  timeout=httpx2.Timeout(30, read=300),
                                  event_hooks={"response": [record]}) as client:
        async with streamable_http_client(f"{gateway.base}/mcp", http_client=client) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                names = {t.name for t in tools.tools}
                assert {"change.list", "change.open", "spec.list"} <= names
                # Several calls: least-conn spreads them over both replicas, which must not
                # matter to a stateless server.
                for _ in range(4):
                    result = await session.call_tool("change.list", {})
                    assert not result.is_error, result
                bad = await session.call_tool("change.open", {"slug": "../etc"})
                assert bad.is_error
    assert versions, "no HTTP response seen"
    assert set(versions) == {"HTTP/2" if http2 else "HTTP/1.1"}, versions


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
async def test_user_api_sse_and_ndjson_through_gateway(gateway: Gateway, http2: bool):
    async with httpx2.AsyncClient(verify=gateway.ssl_context(), http2=http2, timeout=30) as client:
        body = {"tool": "change.list", "input": {}}
        async with client.stream("POST", f"{gateway.base}/sse", json=body,
                                 headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in resp.headers
            assert resp.headers["x-request-id"]
            text = ""
            async for chunk in resp.aiter_text():
                text += chunk
        assert "event: result" in text, text
        data = next(line[5:].strip() for line in text.splitlines()
                    if line.startswith("data:") and '"result"' in line)
        assert json.loads(data)["tool"] == "change.list"

        async with client.stream("POST", f"{gateway.base}/mcp", json=body) as resp:
            assert resp.status_code == 200
            lines = [json.loads(line) async for line in resp.aiter_lines() if line.strip()]
        assert [line["type"] for line in lines] == ["start", "result", "end"], lines

        # The client's request id reaches the backend and comes back.
        resp = await client.get(f"{gateway.base}/no-such-path", headers={"X-Request-ID": "py-1"})
        assert resp.headers["x-request-id"] == "py-1"
        assert resp.headers["server"] == "gateway"
