"""Rate zones through the real gateway: the refusal a client sees (status, Retry-After, the
JSON error envelope), the client address taken from X-Forwarded-For only when the peer is a
trusted proxy, and zone state and counters kept across a reload."""

from __future__ import annotations

import asyncio
import json

from policy_harness import Conn, PolicyGateway, metric_sum, start_upstream

TRUSTED = '[real_ip]\ntrusted_proxies = ["127.0.0.1/32"]\n'
UNTRUSTED = '[real_ip]\ntrusted_proxies = ["10.0.0.0/8"]\n'


def body(up: int, rate: str = "1r/m", status: int = 429) -> str:
    return f"""
[pools.up]
servers = ["127.0.0.1:{up}"]

[zones.api]
key = "client_ip"
rate = "{rate}"
status = {status}

[[routes]]
path = "/"
pool = "up"
limit = {{ zone = "api", burst = 0, nodelay = true }}
"""


def get(gw: PolicyGateway, xff: str | None) -> tuple[int, dict, bytes]:
    async def one():
        c = Conn(gw.http_port)
        r = await c.request("GET", "/whoami", {"X-Forwarded-For": xff} if xff else {})
        await c.close()
        return r
    return asyncio.run(one())


def test_refusal_real_ip_and_state_across_reload(procs, tmp_path):
    up = start_upstream(procs, "up")
    gw = PolicyGateway(procs, tmp_path, body(up), real_ip=TRUSTED)

    # 1r/m, burst 0: one request per client, then refused with the envelope and Retry-After.
    assert get(gw, "203.0.113.1")[0] == 200
    status, h, raw = get(gw, "203.0.113.1")
    assert status == 429
    # 1r/m drains 16 milli-requests/s (nginx truncates 1000/60): one request takes 62.5 s.
    assert 60 <= int(h["retry-after"]) <= 63, h
    env = json.loads(raw)
    assert env["error"]["code"] == "RATE_LIMITED" and env["apiVersion"] == "1.0.0"
    assert env["requestId"] == h["x-request-id"]
    assert h["x-content-type-options"] == "nosniff"
    # A trusted proxy's clients are told apart by X-Forwarded-For.
    assert get(gw, "203.0.113.2")[0] == 200

    # The peer no longer trusted: the header is ignored, every request is the peer's own.
    gw.write_config(body(up), real_ip=UNTRUSTED)
    gw.reload()
    assert get(gw, "203.0.113.3")[0] == 200
    assert get(gw, "203.0.113.4")[0] == 429, "a client picked its own key"

    # Trusted again, rate and status changed: client .1 is still in debt (state kept), the
    # new status is used, and the counters went on.
    gw.write_config(body(up, rate="2r/m", status=503), real_ip=TRUSTED)
    gw.reload("cli")
    status, h, _ = get(gw, "203.0.113.1")
    assert status == 503 and "retry-after" in h
    text = gw.metrics_text()
    assert metric_sum(text, "gateway_zone_requests_total", zone="api", outcome="rejected") == 3
    assert metric_sum(text, "gateway_zone_requests_total", zone="api", outcome="passed") == 3
    zone = gw.status()["zones"][0]
    assert zone["name"] == "api" and zone["rejected"] == 3 and zone["keys"] == 3
    assert zone["rate_milli_per_sec"] == 33


def test_requests_without_the_key_are_not_accounted(procs, tmp_path):
    """nginx's limit_req: "requests with an empty key value are not accounted". Clients without
    a bearer token do not share one bucket (they would throttle each other); they pass, and no
    zone counter or state records them."""
    up = start_upstream(procs, "up")
    zone = body(up).replace('key = "client_ip"', 'key = "bearer"')
    gw = PolicyGateway(procs, tmp_path, zone, real_ip=TRUSTED)

    async def run() -> tuple[list[int], list[tuple[int, bytes]]]:
        c = Conn(gw.http_port)
        with_token = []
        for _ in range(2):
            s, _, _ = await c.request("GET", "/whoami", {"Authorization": "Bearer t-1"})
            with_token.append(s)
        anonymous = []
        for _ in range(20):
            s, _, raw = await c.request("GET", "/whoami")
            anonymous.append((s, raw))
        await c.close()
        return with_token, anonymous

    with_token, anonymous = asyncio.run(run())
    assert with_token == [200, 429]
    for status, raw in anonymous:
        assert status == 200, raw
        assert json.loads(raw)["name"] == "up", "answered by the upstream"

    text = gw.metrics_text()
    assert metric_sum(text, "gateway_zone_requests_total", zone="api", outcome="passed") == 1
    assert metric_sum(text, "gateway_zone_requests_total", zone="api", outcome="rejected") == 1
    z = gw.status()["zones"][0]
    assert (z["passed"], z["rejected"], z["keys"]) == (1, 1, 1)
