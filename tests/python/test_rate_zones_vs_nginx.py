"""The gateway's rate zones against real nginx (Debian's package): the same zone
(`limit_req_zone $binary_remote_addr zone=z:1m rate=10r/s`) and the same `limit_req` options in
front of the same real upstream, driven by the same timed request sequence, must give the same
outcome per request: passed at once, delayed, or rejected.

Each request goes on its own connection from its own thread at a fixed offset from t0, so a
delayed request never shifts a later send. The sequence is made of clusters whose expected
excess values sit far from the burst and delay thresholds (see the comments), so only real
semantic differences, not scheduling jitter, change an outcome; one mismatch is still allowed
for jitter, and the assertion prints both sequences."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest

from conftest import start_nginx
from policy_harness import PolicyGateway, start_upstream

# (offset ms, cluster size). Rate 10r/s drains 1000 milli-requests per 100 ms; burst 5. Every
# cluster starts at least 50 ms away from any threshold, so send jitter cannot flip an outcome.
# A: a fresh key: excess 0,1000..9000 -> 6 within burst (<= 5000), 4 over.
# B: 700 ms after A's last stored 5000: drained to 0 (from 600 ms on) -> 0..5000, all within.
# C: 700 ms after B's 5000: 0 again -> 6 within, 2 over.
# D: 250 ms after C's 5000: 3500, 4500 within, 5500 over.
# E: 650 ms after D's 4500: 0 (from 550 ms on) -> 0, 1000, 2000 within.
SEQUENCE = [(0, 10), (700, 6), (1400, 8), (1650, 3), (2300, 3)]
# A delayed request here waits at least 100 ms (delay=2: B's 3000; no option: E's 1000); an
# undelayed one answers in a few ms.
DELAYED_MS = 60


def offsets() -> list[int]:
    return [t for t, n in SEQUENCE for _ in range(n)]


def by_cluster(outs: list[str]) -> str:
    """Outcomes per cluster, sorted inside it: the requests of one cluster are sent at the
    same instant, so which of them the zone counts first is a race in nginx and the gateway
    alike; what must match is how many of each outcome a cluster gets."""
    parts, i = [], 0
    for _, n in SEQUENCE:
        parts.append("".join(sorted(outs[i:i + n], key="PDR".find)))
        i += n
    return " ".join(parts)


def cluster_mismatches(a: list[str], b: list[str]) -> int:
    """Requests whose outcome would have to change to make the two runs agree."""
    total, i = 0, 0
    for _, n in SEQUENCE:
        ca, cb = a[i:i + n], b[i:i + n]
        total += sum(abs(ca.count(o) - cb.count(o)) for o in set(ca) | set(cb)) // 2
        i += n
    return total


def drive(port: int) -> list[str]:
    """Sends the sequence to 127.0.0.1:port; returns P (passed), D (delayed) or R (rejected)
    per request, in send order."""
    outs: list[str | None] = [None] * len(offsets())
    # Warm the path (upstream connections, first-request costs) outside the zone.
    for _ in range(3):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/warm/whoami")
        c.getresponse().read()  # the upstream answers 404 here; only the path is warmed
        c.close()
    t0 = time.monotonic() + 0.3

    def one(i: int, at_ms: int) -> None:
        time.sleep(max(0.0, t0 + at_ms / 1000 - time.monotonic()))
        start = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("GET", "/whoami")
            r = c.getresponse()
            r.read()
            ms = (time.monotonic() - start) * 1000
            if r.status in (429, 503):
                outs[i] = "R"
            elif r.status == 200:
                outs[i] = "D" if ms >= DELAYED_MS else "P"
            else:
                outs[i] = f"?{r.status}"
        except OSError as e:
            outs[i] = f"!{e}"
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i, at)) for i, at in enumerate(offsets())]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return [o or "-" for o in outs]


def nginx_with_zone(procs, tmp: Path, upstream_port: int, options: str) -> int:
    return start_nginx(
        procs, tmp, f"server 127.0.0.1:{upstream_port};",
        f"""
        location / {{
            limit_req zone=z burst=5 {options};
            proxy_pass http://up;
        }}
        location /warm/ {{
            proxy_pass http://up;
        }}""",
        http_extra="limit_req_zone $binary_remote_addr zone=z:1m rate=10r/s;\n    limit_req_status 429;",
    )


# (nginx limit_req options, the gateway's limit table)
CASES = {
    "nodelay": ("nodelay", "nodelay = true"),
    "delay=2": ("delay=2", "delay = 2"),
    "no option": ("", ""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_outcomes_as_nginx(procs, tmp_path, case):
    nginx_opts, gw_opts = CASES[case]
    upstream = start_upstream(procs, "up")
    (tmp_path / "nginx").mkdir()
    nginx_port = nginx_with_zone(procs, tmp_path / "nginx", upstream, nginx_opts)
    limit = "limit = { zone = \"z\", burst = 5" + (f", {gw_opts}" if gw_opts else "") + " }"
    gw = PolicyGateway(procs, tmp_path, f"""
[pools.up]
servers = ["127.0.0.1:{upstream}"]

[zones.z]
key = "client_ip"
rate = "10r/s"
size = "1m"

[[routes]]
path = "/"
pool = "up"
{limit}

[[routes]]
path = "/warm/"
pool = "up"
""")
    expected = drive(nginx_port)
    got = drive(gw.http_port)
    mismatches = cluster_mismatches(expected, got)
    detail = (f"\n  clusters (offset ms, size): {SEQUENCE}\n"
              f"  nginx:   {by_cluster(expected)}\n  gateway: {by_cluster(got)}\n"
              f"  mismatches: {mismatches}")
    print(f"{case}:{detail}")
    assert all(o in "PDR" for o in expected), f"nginx run broke{detail}"
    assert mismatches <= 1, f"outcomes differ ({case}){detail}"
    # The sequence exercises every outcome the options allow.
    assert "R" in expected, detail
    if case != "nodelay":
        assert "D" in expected, detail
    # The gateway's own counters agree with what the client saw.
    text = gw.metrics_text()
    from policy_harness import metric_sum
    for outcome, letter in (("passed", "P"), ("delayed", "D"), ("rejected", "R")):
        counted = metric_sum(text, "gateway_zone_requests_total", zone="z", outcome=outcome)
        assert counted == got.count(letter), f"{outcome}: metric {counted}{detail}"
