#!/usr/bin/env python3
"""Gateway vs nginx vs bare Pingora vs direct, measured side by side in one run.

Starts two backend replicas, the gateway, and nginx (Debian's package) with
the equivalent configuration (least_conn over the same replicas, upstream
keep-alive, the same security headers, access log on), bare Pingora
(bench/bare-pingora: Pingora's proxy with only `upstream_peer`, to the first
replica), then drives each with
  * wrk over HTTP/1.1 keep-alive (plain HTTP, the same on all of them), and
  * h2load over HTTPS with HTTP/2 (gateway and nginx; TLS terminated there),
sending MCP `tools/call change.open` requests. Every target runs --rounds
times (default 3), interleaved: each round runs every target once in turn, the
order rotated by one per round. Prints the median requests/s, p50/p99, CPU
seconds per 10k requests of the proxy process(es), the spread over the rounds,
and the ratios gateway/nginx, gateway/bare Pingora and gateway/direct.

Errors are non-2xx answers plus socket errors and timeouts (wrk's connect,
read, write and timeout counts; h2load's errored requests): wrk leaves a
timed-out request out of its latency figures, so a proxy that stalls requests
would otherwise look faster. A row with any error is marked with "!", and the
run exits with status 1.

The cost of MCP awareness is measured in the same run, against the same backends: two more
gateway processes with the plain gateway's configuration plus
  * mcp-view: `mcp = true` on the route (JSON-RPC body read-ahead for method and tool,
    per-method/tool metrics, response outcome scanning), and
  * mcp-edge: the view plus `auth = true` (a named token from a tokens file), a grant,
    a per-tool limit on the called tool that never refuses, and the audit log,
each printed as a ratio to the plain gateway (the aim: within 5%).

Everything listens on 127.0.0.1 free ports and is stopped by pid at the end.
Usage: bench/gateway.sh [--duration S] [--connections N] [--rounds N] [--quick]
                        [--compare-gateway BIN]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"
TOKEN = "bench-token"
CALLER = "bench"  # the token's name in the mcp-edge gateway's tokens file
TOOL = "change.open"
MCP_VARIANTS = ("mcp-view", "mcp-edge")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            import ssl
            ctx = ssl._create_unverified_context()
            with urllib.request.urlopen(url, timeout=1, context=ctx) as r:
                if r.status in ok:
                    return
                last = r.status
        except Exception as e:  # noqa: BLE001 - polling until ready
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready: {last}")


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def system_cpu_seconds() -> float:
    """user+nice+system of the whole machine (irq/softirq and idle left out), in seconds."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / CLK_TCK


def load_generator_cpu_seconds() -> float:
    """CPU of the finished children of this script (wrk, h2load, curl-like helpers)."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class Stack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        full_env = {"PATH": os.environ["PATH"]}
        full_env.update(env or {})
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def make_cert(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "1; mode=block",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def gateway_config(http_port, https_port, admin_port, backends, cert, key, access_log,
                   mcp: str = "plain") -> str:
    """The plain gateway's configuration; mcp = "view" adds the MCP view to the route,
    "edge" the view plus named-token auth, a grant, a per-tool limit that never refuses (on
    the tool the benchmark calls, so it is checked on every request) and the audit log."""
    servers = ", ".join(f'{{ address = "127.0.0.1:{p}", weight = 1 }}' for p in backends)
    server_extra = route_extra = top_extra = ""
    if mcp in ("view", "edge"):
        route_extra = "mcp = true\n"
    if mcp == "edge":
        tokens = Path(f"{access_log}.callers.txt")
        tokens.write_text(f"{CALLER}:{TOKEN}\n")
        tokens.chmod(0o600)
        server_extra = f'audit_log = "{access_log}.audit.log"\n'
        route_extra += ("auth = true\n"
                        f'mcp_limits = [{{ tool = "{TOOL}", zone = "z", burst = 100000, nodelay = true }}]\n')
        top_extra = f"""
[auth]
tokens_file = "{tokens}"

[[auth.grants]]
callers = ["{CALLER}"]
methods = ["*"]
tools = ["*"]

[zones.z]
key = "caller"
rate = "100000r/s"
"""
    return f"""
[server]
{server_extra}threads = 2
grace_period = "5s"
access_log = "{access_log}"
pid_file = "{access_log}.pid"
upgrade_sock = "{access_log}.sock"
error_log_level = "warn"

[listeners.http]
address = "127.0.0.1:{http_port}"
redirect_https = false

[listeners.https]
address = "127.0.0.1:{https_port}"
cert = "{cert}"
key = "{key}"
http2 = true

[listeners.admin]
address = "127.0.0.1:{admin_port}"

[pools.backend]
balance = "least_conn"
servers = [ {servers} ]
keepalive = 64

[[routes]]
name = "all"
path = "/"
pool = "backend"
stream = true
read_timeout = "60s"
max_body_size = "1m"
{route_extra}{top_extra}"""


PROXY_DIRECTIVES = """proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;"""

ACCESS_LOG_FORMAT = """log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
                    '"$http_x_forwarded_for" rt=$request_time uct="$upstream_connect_time" '
                    'uht="$upstream_header_time" urt="$upstream_response_time"';"""


def nginx_conf(prefix: Path, http_port: int, backends: list[int], *, https: tuple | None = None,
               workers: int = 2, single_process: bool = False, nofile: int | None = None,
               worker_connections: int = 4096, access_log: bool = False, headers: bool = True,
               hsts: bool = False, max_fails: int = 3, fail_timeout: str = "30s",
               keepalive_requests: bool = True, backlog: int | None = None,
               locations: dict[str, str] | None = None) -> str:
    """The one nginx configuration every benchmark compares against: the user's proxy block
    (least_conn, keepalive 64, HTTP/1.1 upstream, proxy_buffering off, the security headers).
    `https` is (port, cert, key); `locations` maps a location to its extra directives (the
    default: `/` with proxy_read_timeout 60s). `keepalive_requests` lifts nginx's default cap
    of 1000 requests per connection on both sides (h2load and wrk do not reconnect; the gateway
    has no such cap)."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails={max_fails} fail_timeout={fail_timeout};"
                        for p in backends)
    add_headers = ""
    if headers:
        add_headers = "\n".join(f'        add_header {k} "{v}" always;' for k, v in SECURITY_HEADERS.items())
        if hsts:
            add_headers += '\n        add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;'
    top = "master_process off;\ndaemon off;\nworker_processes 1;" if single_process \
        else f"worker_processes {workers};\nuser root;"
    if nofile:
        top += f"\nworker_rlimit_nofile {nofile};"
    log = f"{ACCESS_LOG_FORMAT}\n    access_log {prefix}/access.log main;" if access_log else "access_log off;"
    tls = tls_listen = ""
    if https:
        port, cert, key = https
        tls_listen = f"\n        listen 127.0.0.1:{port} ssl http2;\n        ssl_certificate {cert};\n        ssl_certificate_key {key};"
        tls = "ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:SSL:10m;\n    ssl_session_timeout 10m;"
    lift = "keepalive_requests 1000000;" if keepalive_requests else ""
    blocks = "\n".join(f"        location {path} {{\n            {PROXY_DIRECTIVES}\n            {extra}\n        }}"
                        for path, extra in (locations or {"/": "proxy_read_timeout 60s;"}).items())
    return f"""
{top}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    {log}
    {tls}
    {lift}
    upstream backend {{
        least_conn;
{servers}
        keepalive 64;
        {lift}
    }}
    server {{
        listen 127.0.0.1:{http_port}{f" backlog={backlog}" if backlog else ""};{tls_listen}
{add_headers}
        client_max_body_size 1m;
{blocks}
    }}
}}
"""


def first_change_slug(base: str) -> str:
    body = json.dumps({"tool": "change.list", "args": {}}).encode()
    req = urllib.request.Request(f"{base}/tools/execute", data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        doc = json.loads(r.read())
    # Find the first object with a "slug" anywhere in the answer.
    stack = [doc]
    while stack:
        cur = stack.pop(0)
        if isinstance(cur, dict):
            if isinstance(cur.get("slug"), str):
                return cur["slug"]
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    raise RuntimeError(f"no change slug in change.list answer: {doc}")


def post_rpc(url: str, rpc: dict, token: str | None = TOKEN) -> tuple[int, dict | str]:
    """One JSON-RPC POST; (status, parsed answer or text)."""
    import ssl
    import urllib.error
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(rpc).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5, context=ssl._create_unverified_context()) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def check_tools_call(name: str, url: str, rpc: dict) -> None:
    """The request the load generators send must be a tools/call the backend answers 200
    with a JSON-RPC result that is not a tool error."""
    status, doc = post_rpc(url, rpc)
    ok = (status == 200 and isinstance(doc, dict) and "result" in doc
          and not doc["result"].get("isError"))
    if not ok:
        raise RuntimeError(f"{name}: tools/call {TOOL} via {url} answered {status}: {str(doc)[:300]}")


def mcp_counts(admin_port: int) -> dict[str, float]:
    """gateway_mcp_requests_total summed by outcome (tools/call of TOOL only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if (line.startswith("gateway_mcp_requests_total{") and 'method="tools/call"' in line
                and f'tool="{TOOL}"' in line):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0) + float(value)
    return out


def parse_wrk(out: str) -> dict:
    res = {"non2xx": 0, "socket_errors": 0, "socket_detail": ""}
    for line in out.splitlines():
        s = line.split()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(s[1])
        elif len(s) == 2 and s[0] in ("50%", "99%"):
            res["p" + s[0].rstrip("%")] = to_ms(s[1])
        elif "requests in" in line:
            res["requests"] = int(s[0])
        elif line.strip().startswith("Non-2xx"):
            res["non2xx"] = int(s[-1])
        elif line.strip().startswith("Socket errors"):
            # "Socket errors: connect 0, read 0, write 0, timeout 0"
            counts = dict(part.split() for part in line.split(":", 1)[1].split(","))
            res["socket_errors"] = sum(int(v) for v in counts.values())
            res["socket_detail"] = ", ".join(f"{k} {v}" for k, v in counts.items() if int(v))
    return res


def to_ms(v: str) -> float:
    for unit, mul in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * mul
    return float(v)


def run_wrk(url: str, lua: Path, duration: int, conns: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s",
                          "-s", str(lua), url], capture_output=True, text=True,
                         timeout=duration + 30).stdout
    r = parse_wrk(out)
    if "rps" not in r:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    return r


def run_h2load(url: str, body: Path, duration: int, clients: int, streams: int, log: Path) -> dict:
    log.unlink(missing_ok=True)  # h2load appends to its log file
    argv = ["h2load", "-D", str(duration), "-c", str(clients), "-m", str(streams), "-t", "1",
            "-d", str(body), "--log-file", str(log),
            "-H", "Content-Type: application/json",
            "-H", "Accept: application/json, text/event-stream",
            "-H", "MCP-Protocol-Version: 2025-06-18",
            "-H", f"Authorization: Bearer {TOKEN}", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    times, ok = [], 0
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            times.append(int(parts[2]) / 1000.0)  # us -> ms
            ok += parts[1].startswith("2")
    if not times:
        raise RuntimeError(f"h2load measured nothing:\n{out}")
    times.sort()
    rps = None
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
    return {"rps": rps or len(times) / duration, "requests": len(times),
            "p50": times[len(times) // 2], "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "non2xx": len(times) - ok, **h2load_errors(out)}


def h2load_errors(out: str) -> dict:
    """Requests h2load counts as errored (network level: connection or stream failures,
    timeouts included), which its log file leaves out."""
    for line in out.splitlines():
        if line.startswith("requests:"):
            counts = {}
            for part in line.split(":", 1)[1].split(","):
                n, what = part.split()
                counts[what] = int(n)
            errored, timeout = counts.get("errored", 0), counts.get("timeout", 0)
            detail = f"errored {errored}" + (f" (timeout {timeout})" if timeout else "")
            return {"socket_errors": errored, "socket_detail": detail if errored else ""}
    raise RuntimeError(f"h2load output not understood:\n{out}")


def summarize(rs: list[dict]) -> dict:
    """Medians over the rounds of one target, the spread of req/s and p99 as (max - min) /
    median, the errors summed and the other processes' CPU of the busiest round."""
    def med(k):
        return statistics.median(r[k] for r in rs)

    def spread(k):
        m = med(k)
        return (max(r[k] for r in rs) - min(r[k] for r in rs)) / m if m else 0.0

    non2xx = sum(r.get("non2xx", 0) for r in rs)
    sock = sum(r.get("socket_errors", 0) for r in rs)
    detail = [f"non-2xx {non2xx}"] if non2xx else []
    detail += [f"round {i + 1}: {r['socket_detail']}" for i, r in enumerate(rs) if r.get("socket_detail")]
    return {"rps": med("rps"), "rps_range": spread("rps"), "p50": med("p50"), "p99": med("p99"),
            "p99_range": spread("p99"), "requests": sum(r["requests"] for r in rs),
            "non2xx": non2xx, "socket_errors": sock, "errors": non2xx + sock,
            "error_detail": "; ".join(detail),
            "proxy_cpu_per_10k": med("proxy_cpu_per_10k"),
            "backend_cpu_per_10k": med("backend_cpu_per_10k"),
            "other_cpu": max(r["other_cpu"] for r in rs), "rounds": len(rs)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=None,
                    help="runs per target, interleaved (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="2 s runs, one round: a smoke run for CI")
    ap.add_argument("--compare-gateway", metavar="BIN",
                    help="another gateway binary (e.g. a build from before a change), measured "
                         "in the same run as target 'other'")
    args = ap.parse_args()
    dur = 2 if args.quick else args.duration
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        ap.error("--rounds must be at least 1")
    for tool in ("wrk", "h2load", "nginx", "openssl"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (bash scripts/setup.sh bench installs it)")
            return 2
    for b in ("backend", "gateway", "bare-pingora"):
        if not (BIN / b).exists():
            print(f"bench: {BIN / b} is missing: cargo build --release --workspace --bins")
            return 2

    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    stack = Stack(tmp)
    try:
        ws = tmp / "workspace"
        shutil.copytree(REPO / "examples" / "workspace", ws, symlinks=True)
        cert, key = make_cert(tmp)
        backends = [free_port(), free_port()]
        for p in backends:
            stack.spawn(f"backend-{p}", [str(BIN / "backend")], env={
                "PORT": str(p), "HOST": "127.0.0.1", "WORKING_DIRECTORY": str(ws),
                "AUTH_TOKENS": TOKEN, "RATE_LIMIT": "0", "LOG_LEVEL": "warn"})
        for p in backends:
            wait_http(f"http://127.0.0.1:{p}/healthz")

        gw_http, gw_https, gw_admin = free_port(), free_port(), free_port()
        gw_conf = tmp / "gateway.toml"
        gw_conf.write_text(gateway_config(gw_http, gw_https, gw_admin, backends, cert, key,
                                          tmp / "gateway-access.log"))
        gw = stack.spawn("gateway", [str(BIN / "gateway"), "-c", str(gw_conf)])
        wait_http(f"http://127.0.0.1:{gw_admin}/readyz")

        other = None
        if args.compare_gateway:
            o_http, o_https, o_admin = free_port(), free_port(), free_port()
            o_conf = tmp / "other.toml"
            o_conf.write_text(gateway_config(o_http, o_https, o_admin, backends, cert, key,
                                             tmp / "other-access.log"))
            other = stack.spawn("other", [args.compare_gateway, "-c", str(o_conf)])
            wait_http(f"http://127.0.0.1:{o_admin}/readyz")

        # The same gateway with MCP awareness: view, and view + auth + grants + limit + audit.
        variants: dict[str, tuple[int, int, int, subprocess.Popen]] = {}
        for name in MCP_VARIANTS:
            v_http, v_https, v_admin = free_port(), free_port(), free_port()
            v_conf = tmp / f"{name}.toml"
            v_conf.write_text(gateway_config(v_http, v_https, v_admin, backends, cert, key,
                                             tmp / f"{name}-access.log", mcp=name.split("-")[1]))
            v = stack.spawn(name, [str(BIN / "gateway"), "-c", str(v_conf)])
            wait_http(f"http://127.0.0.1:{v_admin}/readyz")
            variants[name] = (v_http, v_https, v_admin, v)

        # Bare Pingora: the proxy path without any of the gateway's code, to one replica.
        bp_http = free_port()
        bp = stack.spawn("bare-pingora", [str(BIN / "bare-pingora"), f"127.0.0.1:{bp_http}",
                                          f"127.0.0.1:{backends[0]}", "2"])
        wait_http(f"http://127.0.0.1:{bp_http}/healthz")

        ng_http, ng_https = free_port(), free_port()
        ng_prefix = tmp / "nginx"
        ng_prefix.mkdir()
        ng_conf = ng_prefix / "nginx.conf"
        ng_conf.write_text(nginx_conf(ng_prefix, ng_http, backends, https=(ng_https, cert, key),
                                      access_log=True, hsts=True))
        ng = stack.spawn("nginx", ["nginx", "-p", str(ng_prefix), "-c", str(ng_conf),
                                   "-g", "daemon off;"])
        wait_http(f"http://127.0.0.1:{ng_http}/healthz")

        slug = first_change_slug(f"http://127.0.0.1:{backends[0]}")
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "change.open", "arguments": {"slug": slug}}}
        body = tmp / "body.json"
        body.write_text(json.dumps(rpc))
        lua = tmp / "post.lua"
        lua.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(rpc))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["Accept"] = "application/json, text/event-stream"\n'
            'wrk.headers["MCP-Protocol-Version"] = "2025-06-18"\n'
            f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')

        targets = {
            "direct": (f"http://127.0.0.1:{backends[0]}/mcp", None),
            "nginx": (f"http://127.0.0.1:{ng_http}/mcp", f"https://127.0.0.1:{ng_https}/mcp"),
            "bare-pingora": (f"http://127.0.0.1:{bp_http}/mcp", None),
            "gateway": (f"http://127.0.0.1:{gw_http}/mcp", f"https://127.0.0.1:{gw_https}/mcp"),
        }
        proxy_pids = {"direct": [], "nginx": [ng.pid] + children(ng.pid), "bare-pingora": [bp.pid],
                      "gateway": [gw.pid]}
        if other is not None:
            targets["other"] = (f"http://127.0.0.1:{o_http}/mcp", f"https://127.0.0.1:{o_https}/mcp")
            proxy_pids["other"] = [other.pid]
        for name, (v_http, v_https, _, v) in variants.items():
            targets[name] = (f"http://127.0.0.1:{v_http}/mcp", f"https://127.0.0.1:{v_https}/mcp")
            proxy_pids[name] = [v.pid]
        backend_pids = [p.pid for p in stack.procs[:2]]  # spawned first
        all_pids = [p.pid for p in stack.procs] + children(ng.pid)

        # Every target answers the benchmark's request with a tools/call result, over both
        # protocols; the edge refuses a caller without a token (so auth is really on).
        for name, (h1, h2) in targets.items():
            for url in (h1, h2):
                if url is not None:
                    check_tools_call(name, url, rpc)
        status, _ = post_rpc(targets["mcp-edge"][0], rpc, token=None)
        if status != 401:
            raise RuntimeError(f"mcp-edge: a call without a token answered {status}, not 401")

        # Warm every path (connections, TLS session caches, page cache).
        for name, (h1, _) in targets.items():
            run_wrk(h1, lua, 1, 8)

        audit_log = tmp / "mcp-edge-access.log.audit.log"
        before = {name: mcp_counts(variants[name][2]) for name in MCP_VARIANTS}
        audit_before = audit_log.read_bytes().count(b"\n") if audit_log.exists() else 0
        # Every target runs once per round, in turn (the order rotated by one each round), so a
        # slow spell of the machine spreads over all of them instead of landing on one.
        runs: dict[str, list[str]] = {
            proto: [name for name, urls in targets.items() if urls[0 if proto == "h1" else 1]]
            for proto in ("h1", "h2")}
        samples: dict[tuple[str, str], list[dict]] = {
            (proto, name): [] for proto, names in runs.items() for name in names}
        for rnd in range(rounds):
            for proto, names in runs.items():
                k = rnd % len(names)
                for name in names[k:] + names[:k]:
                    url = targets[name][0 if proto == "h1" else 1]
                    c0, b0 = cpu_seconds(proxy_pids[name]), cpu_seconds(backend_pids)
                    s0, o0 = system_cpu_seconds(), cpu_seconds(all_pids) + load_generator_cpu_seconds()
                    if proto == "h1":
                        r = run_wrk(url, lua, dur, args.connections)
                    else:
                        r = run_h2load(url, body, dur, 8, 8, tmp / f"h2-{name}.log")
                    c1, b1 = cpu_seconds(proxy_pids[name]), cpu_seconds(backend_pids)
                    s1, o1 = system_cpu_seconds(), cpu_seconds(all_pids) + load_generator_cpu_seconds()
                    # CPU used meanwhile by processes that are not part of this benchmark.
                    r["other_cpu"] = max(0.0, (s1 - s0) - (o1 - o0)) / dur
                    n = max(r["requests"], 1)
                    r["proxy_cpu_per_10k"] = (c1 - c0) * 10_000 / n
                    r["backend_cpu_per_10k"] = (b1 - b0) * 10_000 / n
                    samples[(proto, name)].append(r)
        results = {key: summarize(rs) for key, rs in samples.items()}

        print(f"\nMCP tools/call change.open, {dur} s per run, {rounds} round(s) interleaved, "
              "2 backend replicas (bare Pingora: the first only), 2 cores shared with the load "
              f"generator;\nwrk -c{args.connections} (HTTP/1.1 keep-alive, plain), h2load -c8 -m8 "
              "(HTTPS, HTTP/2). Medians over the rounds; 'range' is (max - min) / median.\n"
              "errors = non-2xx + socket errors and timeouts, summed over the rounds "
              "(a row with errors is marked !)\n")
        print(f"{'protocol':<9}{'target':<14}{'req/s':>8}{'range':>7}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'range':>7}{'errors':>8}{'proxy CPU s/10k':>17}{'backend CPU s/10k':>19}"
              f"{'others cores':>14}")
        for (proto, name), r in results.items():
            mark = " !" if r["errors"] else ""
            rr, pr = ((f"{r['rps_range']:.0%}", f"{r['p99_range']:.0%}") if r["rounds"] > 1
                      else ("-", "-"))
            print(f"{proto:<9}{name:<14}{r['rps']:>8.0f}{rr:>6} {r['p50']:>8.2f}"
                  f"{r['p99']:>8.2f}{pr:>6} {r['errors']:>8}"
                  f"{r['proxy_cpu_per_10k']:>17.3f}{r['backend_cpu_per_10k']:>19.3f}"
                  f"{r['other_cpu']:>14.2f}{mark}")
        print()
        for proto in ("h1", "h2"):
            g, n, d, b = (results.get((proto, k)) for k in ("gateway", "nginx", "direct", "bare-pingora"))
            if g and n:
                print(f"{proto}: gateway/nginx  req/s x{g['rps'] / n['rps']:.2f}   "
                      f"p99 x{g['p99'] / n['p99']:.2f}   proxy CPU x{g['proxy_cpu_per_10k'] / max(n['proxy_cpu_per_10k'], 1e-9):.2f}")
            if g and b:
                print(f"{proto}: gateway/bare   req/s x{g['rps'] / b['rps']:.2f}   "
                      f"p99 x{g['p99'] / b['p99']:.2f}   proxy CPU x{g['proxy_cpu_per_10k'] / max(b['proxy_cpu_per_10k'], 1e-9):.2f}")
            if b and n:
                print(f"{proto}: bare/nginx     req/s x{b['rps'] / n['rps']:.2f}   "
                      f"p99 x{b['p99'] / n['p99']:.2f}   proxy CPU x{b['proxy_cpu_per_10k'] / max(n['proxy_cpu_per_10k'], 1e-9):.2f}")
            if g and d:
                print(f"{proto}: gateway/direct req/s x{g['rps'] / d['rps']:.2f}   p99 x{g['p99'] / d['p99']:.2f}")
        busy = [f"{proto} {name} ({r['other_cpu']:.2f} cores)" for (proto, name), r in results.items()
                if r["other_cpu"] > 0.1]  # the worst round of each target
        if busy:
            print("WARNING: other processes used CPU during: " + ", ".join(busy)
                  + "; those figures are not comparable (run on a quiet machine)")
        print("\nMCP awareness (same backends, same run; ratio to the plain gateway, aim within 5%):")
        slow = []
        for proto in ("h1", "h2"):
            g = results.get((proto, "gateway"))
            for name in MCP_VARIANTS:
                v = results.get((proto, name))
                if not (g and v):
                    continue
                rps, p99 = v["rps"] / g["rps"], v["p99"] / g["p99"]
                cpu = v["proxy_cpu_per_10k"] / max(g["proxy_cpu_per_10k"], 1e-9)
                label = name.replace("-", " ")
                print(f"{proto}: {label:<8} / plain: {rps:.2f} req/s, {p99:.2f} p99, "
                      f"{cpu:.2f} gateway CPU per request")
                if rps < 0.95 or p99 > 1.05:
                    slow.append(f"{proto} {name}")
        # The view saw every request as tools/call of TOOL, answered ok (refusals and tool
        # errors would show as other outcomes); the edge writes one audit line per call.
        sent = {name: sum(results[(p, name)]["requests"] for p in ("h1", "h2") if (p, name) in results)
                for name in MCP_VARIANTS}
        for name in MCP_VARIANTS:
            after = mcp_counts(variants[name][2])
            delta = {k: after.get(k, 0) - before[name].get(k, 0) for k in after}
            print(f"{name}: gateway_mcp_requests_total tools/call {TOOL} during the runs: "
                  + ", ".join(f"{k}={v:.0f}" for k, v in sorted(delta.items()) if v)
                  + f" (load generators counted {sent[name]})")
            # "failed" also counts the calls in flight when wrk / h2load stop at the end of a
            # run (the client goes away): at most one per connection / stream.
            in_flight = (args.connections + 8 * 8) * rounds
            if any(v for k, v in delta.items() if k not in ("ok", "failed")) \
                    or delta.get("failed", 0) > in_flight:
                print(f"WARNING: {name}: outcomes other than ok (beyond {in_flight} cut at the end of a run)")
                slow.append(f"{name} outcomes")
        audit_lines = (audit_log.read_bytes().count(b"\n") if audit_log.exists() else 0) - audit_before
        print(f"mcp-edge: audit log lines written during the runs: {audit_lines}")
        if slow:
            print(f"NOTE: beyond the 5% aim: {', '.join(slow)}")
        bad = [f"{proto} {name}: {r['error_detail']}" for (proto, name), r in results.items()
               if r["errors"]]
        if bad:
            print("\nERROR: requests failed (rows marked !; their latency and req/s figures leave "
                  "the failed requests out):\n  " + "\n  ".join(bad) + f"\nsee the logs in {tmp} "
                  "(BENCH_KEEP=1 keeps them)")
            return 1
        return 0
    finally:
        stack.stop()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
