"""Splits through the real gateway to real upstreams (upstreams.py, one per pool; /whoami
answers the pool's name): weights over 10,000 distinct clients, stickiness (bearer key and the
gateway's cookie), the force header, a pool without a healthy backend giving its share away,
and the automatic canary rollback against an upstream that answers 500."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from policy_harness import Conn, PolicyGateway, metric_sum, start_upstream


def split_body(stable: int, canary: int, weights: tuple[int, int], split_extra: str = "",
               pool_extra: str = "") -> str:
    return f"""
[pools.stable]
servers = ["127.0.0.1:{stable}"]
{pool_extra}
[pools.canary]
servers = ["127.0.0.1:{canary}"]
{pool_extra.replace("pools.stable", "pools.canary")}
[splits.mcp]
pools = {{ stable = {weights[0]}, canary = {weights[1]} }}
{split_extra}

[[routes]]
path = "/"
split = "mcp"
"""


async def who(conns: list[Conn], n: int, headers_for) -> list[str]:
    """n requests of /whoami spread over the connections; the pool name of each answer."""
    names: list[str] = [""] * n

    async def worker(k: int) -> None:
        for i in range(k, n, len(conns)):
            status, _, body = await conns[k].request("GET", "/whoami", headers_for(i))
            assert status == 200, (status, body)
            names[i] = json.loads(body)["name"]

    await asyncio.gather(*(worker(k) for k in range(len(conns))))
    for c in conns:
        await c.close()
    return names


def run_who(gw: PolicyGateway, n: int, headers_for, conns: int = 16) -> list[str]:
    return asyncio.run(who([Conn(gw.http_port) for _ in range(conns)], n, headers_for))


def test_weights_over_10000_clients_and_bearer_stickiness(procs, tmp_path):
    stable, canary = start_upstream(procs, "stable"), start_upstream(procs, "canary")
    gw = PolicyGateway(procs, tmp_path, split_body(stable, canary, (90, 10), 'sticky = "bearer"'))
    names = run_who(gw, 10_000, lambda i: {"Authorization": f"Bearer client-{i}"})
    share = 100 * names.count("canary") / len(names)
    assert abs(share - 10) <= 2, f"canary got {share:.2f}% of 10,000 clients, weight 10%"
    # What an operator sees: the pool label on the request counters says the same.
    text = gw.metrics_text()
    per_pool = {p: metric_sum(text, "gateway_requests_total", route="/", pool=p)
                for p in ("stable", "canary")}
    assert per_pool == {"stable": names.count("stable"), "canary": names.count("canary")}
    assert metric_sum(text, "gateway_split_weight", split="mcp", pool="canary") == 10

    # The same client (token) always lands on the same pool while the weights stay.
    for token in ("client-1", "client-2", "client-3", "client-77"):
        seen = set(run_who(gw, 20, lambda i: {"Authorization": f"Bearer {token}"}, conns=2))
        assert len(seen) == 1, f"{token} flipped between pools: {seen}"


def test_cookie_stickiness_force_header_and_weight_change(procs, tmp_path):
    stable, canary = start_upstream(procs, "stable"), start_upstream(procs, "canary")
    gw = PolicyGateway(procs, tmp_path, split_body(stable, canary, (50, 50)))

    async def scenario():
        c = Conn(gw.http_port)
        status, h, body = await c.request("GET", "/whoami")
        assert status == 200
        cookie = h.get("set-cookie", "")
        assert cookie.startswith("gw_split=") and "HttpOnly" in cookie, h
        first = json.loads(body)["name"]
        value = cookie.split(";")[0]
        # With its cookie the client stays on its pool and gets no new cookie.
        for _ in range(30):
            s, h2, b = await c.request("GET", "/whoami", {"Cookie": value})
            assert s == 200 and json.loads(b)["name"] == first and "set-cookie" not in h2
        # The force header picks the pool by name.
        other = "canary" if first == "stable" else "stable"
        s, _, b = await c.request("GET", "/whoami", {"Cookie": value, "X-Gateway-Pool": other})
        assert json.loads(b)["name"] == other
        await c.close()
        return value

    value = asyncio.run(scenario())

    # New weights: every old cookie is stale; the client is dealt again on the new weights.
    gw.write_config(split_body(stable, canary, (0, 100)))
    gw.reload()
    names = run_who(gw, 50, lambda i: {"Cookie": value}, conns=2)
    assert set(names) == {"canary"}, names
    # Force header works even for weight 0 ...
    names = run_who(gw, 5, lambda i: {"X-Gateway-Pool": "stable"}, conns=1)
    assert set(names) == {"stable"}
    # ... and can be disabled.
    gw.write_config(split_body(stable, canary, (0, 100), 'force_header = ""'))
    gw.reload("cli")
    names = run_who(gw, 20, lambda i: {"X-Gateway-Pool": "stable"}, conns=1)
    assert set(names) == {"canary"}


def test_pool_without_healthy_backend_gives_its_share_away(procs, tmp_path):
    stable, canary = start_upstream(procs, "stable"), start_upstream(procs, "canary")
    hc = '[pools.stable.health_check]\npath = "/healthz"\ninterval = "200ms"\nrise = 1\nfall = 1\n'
    gw = PolicyGateway(procs, tmp_path,
                       split_body(stable, canary, (50, 50), 'sticky = "none"', hc))
    names = run_who(gw, 200, lambda i: {})
    assert 40 < names.count("canary") < 160, names.count("canary")
    # The canary replica reports itself unhealthy: all traffic goes to stable, no errors.
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{canary}/admin/unhealthy", method="POST"), timeout=5).read()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pools = {p["name"]: p["healthy"] for p in gw.status()["pools"]}
        if not pools["canary"]:
            break
        time.sleep(0.1)
    names = run_who(gw, 300, lambda i: {})
    assert set(names) == {"stable"}, f"canary still got {names.count('canary')} of 300"
    split = gw.status()["splits"][0]
    assert {p["pool"]: p["healthy"] for p in split["pools"]} == {"stable": True, "canary": False}


class Always500(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b'{"error":"broken canary"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_canary_rollback_on_5xx_until_reload(procs, tmp_path):
    stable = start_upstream(procs, "stable")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Always500)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    canary = server.server_address[1]
    rollback = ('[splits.mcp.rollback]\npool = "canary"\nmax_5xx_ratio = 0.2\n'
                'window = "60s"\nmin_requests = 20\n')
    body = split_body(stable, canary, (50, 50), 'sticky = "bearer"\n' + rollback)
    gw = PolicyGateway(procs, tmp_path, body)
    try:
        async def drive(n: int) -> list[int]:
            c = Conn(gw.http_port)
            out = []
            for i in range(n):
                s, _, _ = await c.request("GET", "/whoami", {"Authorization": f"Bearer t{i}"})
                out.append(s)
            await c.close()
            return out

        statuses = asyncio.run(drive(200))
        fails = statuses.count(500)
        # It trips once 20 canary answers are in (all 500); after that the canary gets nothing.
        assert 20 <= fails <= 25, f"{fails} failures before the rollback"
        assert statuses[-100:].count(500) == 0
        st = gw.status()["splits"][0]
        assert st["rollback"]["rolled_back"] is True, st
        assert {p["pool"]: p["effective_weight"] for p in st["pools"]} == {"stable": 50,
                                                                          "canary": 0}
        text = gw.metrics_text()
        assert metric_sum(text, "gateway_split_rollback", split="mcp", pool="canary") == 1
        assert metric_sum(text, "gateway_split_weight", split="mcp", pool="canary") == 0
        assert "pool canary rolled back" in gw.proc.log()
        # The next reload restores the configured weights.
        gw.reload()
        st = gw.status()["splits"][0]
        assert st["rollback"]["rolled_back"] is False
        assert metric_sum(gw.metrics_text(), "gateway_split_rollback", split="mcp",
                          pool="canary") == 0
        assert asyncio.run(drive(100)).count(500) > 0
    finally:
        server.shutdown()


def test_requests_refused_before_the_split_count_against_no_pool(procs, tmp_path):
    """A 429 from the route's zone (and a 413) happens before the split picks a pool: it must
    not be counted as the first pool's (which would skew canary-vs-stable comparisons)."""
    stable, canary = start_upstream(procs, "stable"), start_upstream(procs, "canary")
    body = split_body(stable, canary, (50, 50)).replace('split = "mcp"\n', '''split = "mcp"
limit = { zone = "z", burst = 0, nodelay = true }
max_body_size = "1k"
''') + '''
[zones.z]
rate = "1r/m"
'''
    gw = PolicyGateway(procs, tmp_path, body)

    async def go() -> list[int]:
        c = Conn(gw.http_port)
        statuses = []
        for _ in range(4):
            status, _, _ = await c.request("GET", "/whoami", {})
            statuses.append(status)
        await c.close()
        return statuses

    statuses = asyncio.run(go())
    assert statuses[0] == 200 and statuses[1:] == [429, 429, 429], statuses
    text = gw.metrics_text()
    pooled = sum(metric_sum(text, "gateway_requests_total", route="/", pool=p)
                 for p in ("stable", "canary"))
    assert pooled == 1, text
    assert metric_sum(text, "gateway_requests_total", route="/", pool="-",
                      status_class="4xx") == 3, text
