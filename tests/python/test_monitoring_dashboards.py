"""The Grafana dashboards of deploy/grafana, against real data.

The provisioning files and both dashboards are checked for what Grafana needs (uids, titles,
panels with unique ids on the 24-column grid, every panel and variable on the provisioned
data source). Then the real binaries run: two backend replicas as the pools `stable` and
`canary` of a split, the gateway in front (MCP route, SSE route, rate zones), and Debian's
Prometheus scraping both tiers every second with conf/recording_rules.yml and
conf/alert_rules.yml loaded. Traffic goes through the gateway: MCP tool calls (one failing,
some forced onto the canary), the NDJSON and SSE APIs, a GET /sse stream held open, a burst
that the rate zone refuses, a reload. Then every query of every panel (Grafana's variables
replaced: $__rate_interval by 30s, the dashboard's own variables by ".*") is run through
Prometheus's /api/v1/query and must return at least one series with a number.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, free_port, http_status, prom_query, run_gateway, run_prometheus

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ACCEPT = "application/json, text/event-stream"


def datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090", ds
    return ds["uid"]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dash: dict) -> list[dict]:
    """Every panel, those inside rows included; rows themselves are not panels with data."""
    out = []
    for p in dash["panels"]:
        out.extend(p.get("panels", []))
        if p["type"] != "row":
            out.append(p)
    return out


def variables(dash: dict) -> list[str]:
    return [v["name"] for v in dash.get("templating", {}).get("list", [])]


def instantiate(expr: str, names: list[str]) -> str:
    """A panel query as Grafana sends it, with every variable replaced."""
    expr = re.sub(r"\$\{?__rate_interval\}?", "30s", expr)
    expr = re.sub(r"\$\{?__interval\}?", "15s", expr)
    expr = re.sub(r"\$\{?__range\}?", "5m", expr)
    for name in names:
        expr = re.sub(r"\$\{" + name + r"(:[a-z]+)?\}|\$" + name + r"\b", ".*", expr)
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


# --- the files ---------------------------------------------------------------------------------

def test_provisioning_points_at_the_mounted_dashboards():
    uid = datasource_uid()
    assert uid == "prometheus"
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    assert grafana["profiles"] == ["grafana"]
    assert re.fullmatch(r"\$\{GRAFANA_IMAGE:-grafana/grafana-oss:\d+\.\d+\.\d+\}", grafana["image"]), grafana["image"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards", mounts
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning", mounts
    assert all(p.startswith("127.0.0.1:") for p in grafana["ports"]), grafana["ports"]
    assert {p.name for p in DASHBOARDS} == {"gateway.json", "backend.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_shaped(path: Path):
    uid = datasource_uid()
    dash = load(path)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash["uid"]), dash.get("uid")
    assert dash["title"] and isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert "id" not in dash or dash["id"] is None, "a provisioned dashboard carries no database id"
    ids = [p["id"] for p in dash["panels"]] + [q["id"] for p in dash["panels"] for q in p.get("panels", [])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, (p["title"], g)
    for p in panels(dash):
        assert p["title"], p
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, (p["title"], p["datasource"])
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t.get("datasource", p["datasource"])["uid"] == uid, p["title"]
    for v in dash["templating"]["list"]:
        assert v["datasource"]["uid"] == uid, v["name"]
    # Both tiers: each dashboard links to the other.
    assert dash["links"] and dash["links"][0]["url"].startswith("/d/mcp-")


def test_dashboard_uids_are_distinct_and_cover_the_topics():
    dashes = {p.name: load(p) for p in DASHBOARDS}
    assert len({d["uid"] for d in dashes.values()}) == len(dashes)
    gw = " ".join(t["expr"] for p in panels(dashes["gateway.json"]) for t in p["targets"])
    be = " ".join(t["expr"] for p in panels(dashes["backend.json"]) for t in p["targets"])
    for needle in ("gateway_requests_total", "gateway_request_duration_seconds_bucket",
                   "gateway_active_streams", "gateway_zone_requests_total", "gateway_split_weight",
                   "gateway_mcp_requests_total", "gateway_backend_up",
                   "gateway:slo_availability_errors", "gateway:slo_latency_errors"):
        assert needle in gw, needle
    for needle in ("up{job=\"backend\"", "http_server_requests_total", "tool_executions_total",
                   "tool_execution_duration_seconds_bucket", "streaming_active_connections",
                   "backend:slo_tool_latency_errors", "gateway_backend_up"):
        assert needle in be, needle


# --- against real data -------------------------------------------------------------------------

def finite(result: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def post(port: int, path: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json",
                                                      "Accept": ACCEPT, **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def call(port: int, n: int, tool: str, args: dict, pool: str | None = None) -> dict:
    status, body = post(port, "/mcp", {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                                       "params": {"name": tool, "arguments": args}},
                        {"X-Gateway-Pool": pool} if pool else None)
    assert status == 200, body
    text = body.decode()
    if text.startswith("event:") or text.startswith("data:"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    return json.loads(text)


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="prometheus not installed (scripts/setup.sh test installs it)")
def test_every_panel_query_returns_data(procs, start_backend, tmp_path: Path):
    started = time.monotonic()
    stable, canary = start_backend(), start_backend()
    http_port, admin_port = free_port(), free_port()
    conf = tmp_path / "gateway.toml"
    conf.write_text(f"""
[server]
threads = 1
grace_period = "1s"
pid_file = "{tmp_path}/gateway.pid"
upgrade_sock = "{tmp_path}/upgrade.sock"
access_log = "off"
[listeners.http]
address = "127.0.0.1:{http_port}"
redirect_https = false
[listeners.admin]
address = "127.0.0.1:{admin_port}"
[pools.stable]
servers = ["127.0.0.1:{stable.port}"]
[pools.stable.health_check]
path = "/healthz"
interval = "1s"
[pools.canary]
servers = ["127.0.0.1:{canary.port}"]
[pools.canary.health_check]
path = "/healthz"
interval = "1s"
[pools.legacy_sse]
balance = "hash"
servers = ["127.0.0.1:{stable.port}", "127.0.0.1:{canary.port}"]
[zones.mcp]
rate = "1000r/s"
[zones.api]
rate = "2r/s"
[zones.sse]
rate = "5r/s"
[splits.mcp]
pools = {{ stable = 90, canary = 10 }}
sticky = "none"
[splits.mcp.rollback]
pool = "canary"
max_5xx_ratio = 0.9
min_requests = 100000
[[routes]]
name = "mcp"
path = "/mcp"
split = "mcp"
stream = true
mcp = true
limit = {{ zone = "mcp", burst = 100, nodelay = true }}
[[routes]]
name = "tools"
path = "/tools"
split = "mcp"
limit = {{ zone = "api", burst = 2, nodelay = true }}
[[routes]]
name = "sse"
path = "/sse"
pool = "legacy_sse"
stream = true
limit = {{ zone = "sse", burst = 10, nodelay = true }}
[[routes]]
name = "healthz"
path = "= /healthz"
pool = "stable"
""")
    gw = run_gateway(procs, conf, admin_port)

    base = run_prometheus(procs, tmp_path, admin_port, [stable.port, canary.port],
                          ["recording_rules.yml", "alert_rules.yml"])

    # --- traffic ---
    sse = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    try:
        # A GET /sse session stream (the 2024-11-05 transport), open until the end.
        sse.request("GET", "/sse", headers={"Accept": "text/event-stream"})
        resp = sse.getresponse()
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
        assert resp.readline().startswith(b"event:")
        # The backends make a tool's series at its first run: one run of each on each pool
        # first, scraped, so that the calls below show as a rate (the first sample of a new
        # series is no increase).
        for pool in ("stable", "canary"):
            call(http_port, 0, "change.list", {}, pool=pool)
            call(http_port, 0, "change.open", {"slug": "add-two-factor-auth"}, pool=pool)
        deadline = time.monotonic() + 10
        while len(prom_query(base, "tool_execution_duration_seconds_count")) < 4:
            assert time.monotonic() < deadline, prom_query(base, "tool_execution_duration_seconds_count")
            time.sleep(0.2)
        time.sleep(1.5)
        for n in range(12):
            r = call(http_port, n, "change.list", {}, pool="canary" if n % 3 == 0 else None)
            assert "result" in r and not r["result"].get("isError"), r
        # A failing tool call on each pool: isError at the gateway, not_found in the backend.
        for pool in ("stable", "canary"):
            r = call(http_port, 100, "change.open", {"slug": "no-such-change"}, pool=pool)
            assert r["result"]["isError"] is True, r
        # The user's NDJSON (POST /mcp) and SSE (POST /sse) APIs.
        status, body = post(http_port, "/mcp", {"tool": "change.list", "input": {}})
        assert status == 200 and b'"type":"end"' in body, body
        status, body = post(http_port, "/sse", {"tool": "change.list", "input": {}})
        assert status == 200 and b"event: result" in body, body
        # A burst on /tools (zone api: 2 r/s, burst 2): some pass, the rest get 429.
        codes = [http_status(f"http://127.0.0.1:{http_port}/tools") for _ in range(12)]
        assert 200 in codes and 429 in codes, codes
        # A reload, for gateway_config_reloads_total.
        gw.signal(signal.SIGHUP)

        # Until Prometheus has scraped all of it and evaluated the rules on it.
        checks = ['gateway_mcp_requests_total{outcome="tool_error",pool="canary"}',
                  'gateway_zone_requests_total{zone="api",outcome="rejected"} > 0',
                  'gateway_config_reloads_total{result="ok"} > 0',
                  'gateway_active_streams{route="sse"} > 0',
                  'streaming_messages_total{transport="ndjson"} > 0',
                  'tool_executions_total{outcome="not_found"}',
                  'backend:slo_tool_latency_errors:ratio_rate5m >= 0',
                  'gateway:slo_latency_errors:ratio_rate5m >= 0',
                  'gateway:slo_availability_errors:ratio_rate5m >= 0']
        deadline = time.monotonic() + 20
        while True:
            missing = [c for c in checks if not prom_query(base, c)]
            if not missing:
                break
            assert time.monotonic() < deadline, f"Prometheus never saw: {missing}"
            time.sleep(0.5)
        time.sleep(2)  # a couple more scrapes, so every rate window holds the traffic

        # --- every panel, every target ---
        empty, nan_only, ran = [], [], 0
        for path in DASHBOARDS:
            dash = load(path)
            names = variables(dash)
            for v in dash["templating"]["list"]:
                m = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["definition"])
                assert m, v["definition"]
                values = {r["metric"].get(m.group(2)) for r in
                          prom_query(base, f"count by ({m.group(2)}) ({m.group(1)})")}
                assert values - {None}, f"{path.name}: variable {v['name']} has no values"
            for p in panels(dash):
                for t in p["targets"]:
                    expr = instantiate(t["expr"], names)
                    result = prom_query(base, expr)
                    ran += 1
                    where = f"{path.name} / {p['title']} / {t['refId']}: {expr}"
                    if not result:
                        empty.append(where)
                    elif not finite(result):
                        nan_only.append(where)
        assert not empty, "queries without data:\n" + "\n".join(empty)
        assert not nan_only, "queries with only NaN:\n" + "\n".join(nan_only)
        assert ran >= 50, ran
    finally:
        sse.close()
    elapsed = time.monotonic() - started
    print(f"figure: {ran} dashboard queries checked against live data in {elapsed:.1f} s")
    assert elapsed < 60, elapsed
