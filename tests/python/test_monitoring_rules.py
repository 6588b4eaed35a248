"""The alerting side of the monitoring: Prometheus rules and Alertmanager routing.

- `promtool check rules` on conf/recording_rules.yml and conf/alert_rules.yml, and `promtool
  test rules` on conf/tests/*.test.yml, whose cases make every alert fire and keep it quiet
  (checked here: no alert of the rule files goes untested either way);
- `amtool check-config` on conf/alertmanager.yml and `amtool config routes test`: critical to
  the critical receiver, warning and unlabelled alerts to the warning one;
- a real Alertmanager (Debian's) with that file, its webhook URLs pointed at a local
  receiver: alerts posted to its API arrive at the receiver their severity names, and a
  critical alert holds back the warning of the same alert name.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import REPO, Proc, free_port, http_status

CONF = REPO / "conf"
RULE_TESTS = sorted((CONF / "tests").glob("*.test.yml"))

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (scripts/setup.sh test installs prometheus)")
needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None,
                                  reason="amtool not installed (scripts/setup.sh test installs prometheus-alertmanager)")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def run(*argv: str, cwd: Path = CONF) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_names() -> set[str]:
    doc = yaml.safe_load((CONF / "alert_rules.yml").read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((CONF / "alert_rules.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


@needs_promtool
def test_promtool_accepts_the_rule_files():
    out = run("promtool", "check", "rules", "recording_rules.yml", "alert_rules.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run("promtool", "check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    # prometheus.yml loads both, recording rules first (the burn-rate alerts read them).
    cfg = yaml.safe_load((CONF / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["recording_rules.yml", "alert_rules.yml"], cfg["rule_files"]
    targets = [t for am in cfg["alerting"]["alertmanagers"] for sc in am["static_configs"]
               for t in sc["targets"]]
    assert targets == ["alertmanager:9093"], targets


@needs_promtool
def test_promtool_unit_tests_pass():
    assert RULE_TESTS, "no conf/tests/*.test.yml"
    out = run("promtool", "test", "rules", *[str(p.relative_to(CONF)) for p in RULE_TESTS])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(RULE_TESTS), out.stdout


def test_every_alert_rule_is_tested_firing_and_quiet():
    """Every alert rule (an alert name, and for the burn-rate ones each tier) appears in some
    test case as an expected firing alert and in some case at a time it must not fire."""
    fired: set[tuple[str, str]] = set()
    quiet: set[tuple[str, str]] = set()
    rules = alert_rules()
    tiers = {r["alert"]: set() for r in rules}
    for r in rules:
        tiers[r["alert"]].add(r.get("labels", {}).get("burn", ""))
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../recording_rules.yml", "../alert_rules.yml"], path
        for case in doc["tests"]:
            for t in case.get("alert_rule_test", []):
                name = t["alertname"]
                firing = {a["exp_labels"].get("burn", "") for a in t.get("exp_alerts") or []}
                fired |= {(name, b) for b in firing}
                quiet |= {(name, b) for b in tiers.get(name, set()) - firing}
    wanted = {(r["alert"], r.get("labels", {}).get("burn", "")) for r in rules}
    assert wanted - fired == set(), f"never tested firing: {sorted(wanted - fired)}"
    assert wanted - quiet == set(), f"never tested quiet: {sorted(wanted - quiet)}"


def test_alert_rules_name_real_labels_and_severities():
    rules = alert_rules()
    for r in rules:
        assert r.get("labels", {}).get("severity") in ("critical", "warning"), r["alert"]
        assert r.get("annotations", {}).get("summary"), r["alert"]
    text = (CONF / "alert_rules.yml").read_text()
    # The backend's outcomes are "ok" or an error code in lower case: never "error".
    assert 'outcome="error"' not in text
    # No route called mcp_stream exists in any shipped gateway config.
    assert "mcp_stream" not in text and "mcp_stream" not in (CONF / "recording_rules.yml").read_text()
    routes = set()
    for toml in [CONF / "local.toml", CONF / "gateway" / "gateway.toml", *(CONF / "examples").rglob("*.toml")]:
        routes |= set(re.findall(r'^name = "([^"]+)"', toml.read_text(), re.M))
    assert "sse" in routes and "mcp" in routes, routes
    for excluded in re.findall(r'route!~"([^"]+)"', text):
        assert set(excluded.split("|")) <= routes, excluded


# --- Alertmanager ------------------------------------------------------------------------------

@needs_amtool
def test_amtool_accepts_the_config():
    out = run("amtool", "check-config", "alertmanager.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


@needs_amtool
@pytest.mark.parametrize("labels,receiver", [
    (["severity=critical", "alertname=AvailabilityBudgetBurn", "slo=availability", "burn=fast"], "critical"),
    (["severity=critical", "alertname=GatewayPoolEmpty", "pool=backend"], "critical"),
    (["severity=warning", "alertname=AvailabilityBudgetBurn", "slo=availability", "burn=slow"], "warning"),
    (["severity=warning", "alertname=ToolSlow", "tool=change.open"], "warning"),
    (["alertname=SomethingWithoutSeverity"], "warning"),
])
def test_amtool_routes_by_severity(labels, receiver):
    out = run("amtool", "config", "routes", "test", "--config.file=alertmanager.yml",
              f"--verify.receivers={receiver}", *labels)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receiver, out.stdout


class Receiver:
    """A webhook receiver: records (path, alert names + labels) of each notification."""

    def __init__(self):
        self.got: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.got.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, path: str) -> set[tuple[str, str]]:
        with self.lock:
            return {(a["labels"]["alertname"], a["labels"].get("burn", a["labels"].get("pool", "")))
                    for p, doc in self.got if p == path for a in doc["alerts"] if a["status"] == "firing"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(ALERTMANAGER is None, reason="Alertmanager not installed (scripts/setup.sh test)")
def test_alertmanager_delivers_by_severity_and_inhibits(procs, tmp_path: Path):
    receiver = Receiver()
    try:
        # The shipped file with its placeholder URLs pointed at the receiver and the waits
        # shortened; routes, receivers and inhibit rules are the shipped ones.
        text = (CONF / "alertmanager.yml").read_text()
        assert text.count("http://alert-webhook.invalid/") == 2
        text = text.replace("http://alert-webhook.invalid/", f"http://127.0.0.1:{receiver.port}/")
        text = re.sub(r"group_wait: \d+s", "group_wait: 1s", text)
        text = re.sub(r"group_interval: \d+m", "group_interval: 1s", text)
        (tmp_path / "alertmanager.yml").write_text(text)
        port = free_port()
        am = Proc("alertmanager", [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}",
                                   f"--storage.path={tmp_path / 'data'}",
                                   f"--web.listen-address=127.0.0.1:{port}",
                                   "--cluster.listen-address="])
        procs.append(am)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while http_status(f"{base}/-/ready") != 200:
            assert am.running(), am.log()
            assert time.monotonic() < deadline, "alertmanager not ready:\n" + am.log()
            time.sleep(0.1)

        def alert(**labels: str) -> dict:
            return {"labels": labels, "annotations": {"summary": "test"},
                    "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))}

        alerts = [
            # A fast burn (critical) and the slow burn of the same SLO (warning): held back.
            alert(alertname="AvailabilityBudgetBurn", severity="critical", slo="availability", burn="fast"),
            alert(alertname="AvailabilityBudgetBurn", severity="warning", slo="availability", burn="slow"),
            # Another SLO's slow burn: nothing critical about it, delivered as a warning.
            alert(alertname="ToolLatencyBudgetBurn", severity="warning", slo="tool_latency", burn="slow"),
            # An empty pool holds back the "backend down" of that pool, not of another pool.
            alert(alertname="GatewayPoolEmpty", severity="critical", pool="backend"),
            alert(alertname="GatewayBackendDown", severity="warning", pool="backend", backend="10.0.0.5:3000"),
            alert(alertname="GatewayBackendDown", severity="warning", pool="legacy_sse", backend="10.0.0.5:3000"),
        ]
        req = urllib.request.Request(f"{base}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

        want_critical = {("AvailabilityBudgetBurn", "fast"), ("GatewayPoolEmpty", "backend")}
        want_warning = {("ToolLatencyBudgetBurn", "slow"), ("GatewayBackendDown", "legacy_sse")}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if receiver.alerts("/critical") >= want_critical and receiver.alerts("/warning") >= want_warning:
                break
            time.sleep(0.2)
        # A moment more for anything that should not come.
        time.sleep(1.5)
        assert receiver.alerts("/critical") == want_critical, (receiver.got, am.log())
        assert receiver.alerts("/warning") == want_warning, (receiver.got, am.log())
    finally:
        receiver.close()
