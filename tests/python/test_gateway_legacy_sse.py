"""The 2024-11-05 HTTP+SSE transport through the gateway in front of two replicas.

Its session lives on the replica that holds the GET /sse stream, so POST /messages must
reach that same replica. conf/local.toml routes both to a `hash` pool for that reason;
this test uses the same shape (hashing on a client header so that distinct clients spread
over both replicas) and drives it with the official SDK's `sse_client` over HTTPS.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.request

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client

from conftest import free_port, run_gateway

pytestmark = pytest.mark.anyio

CLIENTS = 16


@pytest.fixture
def anyio_backend():
    return "asyncio"


def sse_sessions(port: int) -> float:
    """Sessions the replica has opened on GET /sse, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("http_server_requests_total{") and 'route="/sse"' in line \
                and 'method="GET"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_legacy_sse_sessions_stay_on_their_replica(procs, start_backend, tls_cert, tmp_path):
    backends = [start_backend(), start_backend()]
    cert, key = tls_cert
    ports: set[int] = set()
    while len(ports) < 2:  # free_port() may hand out the same free port twice
        ports.add(free_port())
    https_port, admin_port = sorted(ports)
    servers = ", ".join(f'"127.0.0.1:{b.port}"' for b in backends)
    conf = tmp_path / "gateway.toml"
    conf.write_text(f"""
[server]
pid_file = "{tmp_path}/gateway.pid"
upgrade_sock = "{tmp_path}/upgrade.sock"
access_log = "off"

[listeners.https]
address = "127.0.0.1:{https_port}"
cert = "{cert}"
key = "{key}"

[listeners.admin]
address = "127.0.0.1:{admin_port}"

[pools.legacy_sse]
balance = "hash"
hash_key = "header:X-Client-Id"
servers = [{servers}]

[[routes]]
name = "sse"
path = "/sse"
pool = "legacy_sse"
stream = true

[[routes]]
name = "messages"
path = "/messages"
pool = "legacy_sse"
""")
    run_gateway(procs, conf, admin_port)

    ctx = ssl.create_default_context(cafile=str(cert))

    def factory(headers=None, timeout=None, auth=None):
        return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=ctx)

    async def one_client(n: int) -> None:
        headers = {"X-Client-Id": f"assistant-{n}"}
        async with sse_client(f"https://127.0.0.1:{https_port}/sse", headers=headers,
                              httpx_client_factory=factory) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                assert len(tools.tools) == 7
                for _ in range(2):
                    result = await session.call_tool("change.list", {})
                    assert not result.is_error, result
                    text = result.content[0].text
                    assert re.search(r"\d+ active change", text), text

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for n in range(CLIENTS):
                tg.start_soon(one_client, n)

    # Every session's messages found their session (else the calls above would have
    # failed), and distinct clients used both replicas. A replica counts a GET /sse when its
    # stream ends: the client has gone, and the gateway closes the upstream stream then, well
    # before the next heartbeat (25 s) would have found it gone.
    left = time.monotonic()
    while True:
        per_replica = [sse_sessions(b.port) for b in backends]
        if sum(per_replica) == CLIENTS or time.monotonic() > left + 10:
            break
        await anyio.sleep(0.1)
    print(f"\n  SSE sessions per replica {per_replica}, all ended "
          f"{time.monotonic() - left:.2f} s after the clients left")
    assert sum(per_replica) == CLIENTS, per_replica
    assert all(n > 0 for n in per_replica), per_replica
