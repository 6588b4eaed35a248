"""Prometheus (Debian's package) scrapes both tiers and loads our alert rules.

Starts two backend replicas, the gateway in front of them, and a real
Prometheus with the shipped alert rules and a scrape config pointing at the
gateway's admin port and each replica, then asks Prometheus's HTTP API what it
sees.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, http_status, prom_query, run_gateway, run_prometheus

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus not installed (scripts/setup.sh test installs it)")


def test_promtool_accepts_shipped_config_and_rules():
    out = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=REPO / "conf",
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(["promtool", "check", "rules", "alert_rules.yml"], cwd=REPO / "conf",
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_scrapes_gateway_and_every_backend(procs, start_backend, tmp_path: Path):
    backends = [start_backend(), start_backend()]
    http_port, admin_port = free_port(), free_port()
    servers = ", ".join(f'{{ address = "127.0.0.1:{b.port}" }}' for b in backends)
    conf = tmp_path / "gateway.toml"
    conf.write_text(f"""
[server]
threads = 1
grace_period = "1s"
[listeners.http]
address = "127.0.0.1:{http_port}"
redirect_https = false
[listeners.admin]
address = "127.0.0.1:{admin_port}"
[pools.backend]
balance = "least_conn"
servers = [ {servers} ]
[[routes]]
name = "all"
path = "/"
pool = "backend"
""")
    run_gateway(procs, conf, admin_port)
    # Some traffic through the gateway so request counters exist.
    for _ in range(5):
        assert http_status(f"http://127.0.0.1:{http_port}/healthz") == 200

    base = run_prometheus(procs, tmp_path, admin_port, [b.port for b in backends],
                          ["alert_rules.yml"])
    up = {r["metric"]["instance"]: float(r["value"][1]) for r in prom_query(base, "up")}
    assert up == {f"127.0.0.1:{admin_port}": 1.0,
                  **{f"127.0.0.1:{b.port}": 1.0 for b in backends}}, up

    # The series the alert rules and dashboards are written against exist.
    for expr in ('gateway_requests_total', 'gateway_backend_up', 'http_server_requests_total',
                 'process_resident_memory_bytes{job="backend"}'):
        assert prom_query(base, expr), f"Prometheus has no series for {expr}"
    ups = prom_query(base, "gateway_backend_up")
    assert len(ups) == 2 and all(float(r["value"][1]) == 1.0 for r in ups), ups

    # Our alert rules loaded and evaluate without errors.
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as r:
        rules = json.loads(r.read())["data"]["groups"]
    names = {rule["name"]: rule for g in rules for rule in g["rules"]}
    assert "GatewayBackendDown" in names and "ToolErrorRate" in names, names.keys()
    deadline = time.monotonic() + 10
    while any(rule.get("health") == "unknown" for rule in names.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as r:
            rules = json.loads(r.read())["data"]["groups"]
        names = {rule["name"]: rule for g in rules for rule in g["rules"]}
    bad = {n: r.get("lastError") for n, r in names.items() if r.get("health") != "ok"}
    assert not bad, bad
