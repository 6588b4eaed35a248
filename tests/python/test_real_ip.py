"""The real client address used everywhere, like nginx's realip module: behind a trusted proxy the
address its X-Forwarded-For names is the client upstream (X-Real-IP) and in the access log,
while X-Forwarded-For keeps the honest chain (incoming header + the TCP peer) and the log keeps
the peer in its own field. From an untrusted peer nothing changes: the header is appended to,
never believed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from policy_harness import Conn, PolicyGateway, start_upstream


def body(up: int) -> str:
    return f"""
[pools.up]
servers = ["127.0.0.1:{up}"]

[[routes]]
path = "/"
pool = "up"
"""


def echo(gw: PolicyGateway, headers: dict[str, str]) -> dict:
    async def one():
        c = Conn(gw.http_port)
        r = await c.request("GET", "/echo", headers)
        await c.close()
        return r
    status, _, raw = asyncio.run(one())
    assert status == 200, raw
    return json.loads(raw)["headers"]


def log_line(path: Path, request_id: str, timeout: float = 5) -> dict:
    """The access-log line of `request_id` (the writer drains on a tick, so wait for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["request_id"] == request_id:
                    return entry
        time.sleep(0.02)
    raise AssertionError(f"no access-log line for {request_id} in {path}")


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-peer", "untrusted-peer"])
def test_client_address_upstream_and_in_the_log(procs, tmp_path, trusted):
    up = start_upstream(procs, "up")
    real_ip = '[real_ip]\ntrusted_proxies = ["127.0.0.1/32"]\n' if trusted else \
        '[real_ip]\ntrusted_proxies = []\n'
    gw = PolicyGateway(procs, tmp_path, body(up), real_ip=real_ip)

    rid = f"real-ip-{'trusted' if trusted else 'untrusted'}"
    seen = echo(gw, {"X-Forwarded-For": "203.0.113.7", "X-Request-ID": rid})
    client = "203.0.113.7" if trusted else "127.0.0.1"
    assert seen["x-real-ip"] == client
    # The chain is appended to with the TCP peer either way (never rewritten, never trusted).
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"

    entry = log_line(tmp_path / "access.log", rid)
    assert entry["client"] == client
    assert entry["peer"] == "127.0.0.1"
    assert entry["status"] == 200

    # Without an incoming header the chain starts at the peer, who is also the client.
    rid2 = rid + "-noxff"
    seen = echo(gw, {"X-Request-ID": rid2})
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    entry = log_line(tmp_path / "access.log", rid2)
    assert entry["client"] == "127.0.0.1" and entry["peer"] == "127.0.0.1"
