#!/usr/bin/env python3
"""Where one balancer state should beat nginx's per-worker state: gateway vs nginx, side by side.

Three backend replicas; in front of each a tap (one asyncio process of this script) that
forwards bytes both ways, counts the TCP connections it accepts (those whose first request is
the gateway's `GET /healthz` health check apart), time-stamps every `POST /mcp` it forwards, and
can hold each response back by a fixed delay. Both proxies reach the replicas only through the
taps, so both pay the same extra hop. The proxies, configured as an operator would:

  * gateway: default threads (2), pool `balance = "least_conn"`, keepalive 64 (Pingora keeps
    one idle pool of that size for all replicas), max_fails 1, fail_timeout 10s, active health
    check GET /healthz every 2s, timeout 1s, rise 2, fall 2; route /sse stream = true
    (read_timeout 3600s), route / with connect_timeout, read_timeout and write_timeout 2s.
    For section 4 also "gateway-passive": the same without [health_check].
  * nginx 1.22 (Debian's): worker_processes 2, upstream least_conn WITHOUT a shared zone
    (each worker balances on its own counts), `server ... max_fails=1 fail_timeout=10s`,
    keepalive 64 (per worker), nginx's defaults for the rest (upstream keepalive_requests 1000,
    keepalive_timeout 60s); location /sse proxy_buffering off, proxy_read_timeout 3600s;
    location / proxy_connect_timeout, proxy_read_timeout, proxy_send_timeout 2s.
Access logs off on both; the open-file limit as in bench/streams.py.

Sections:
  1. Spread of open streams: --streams GET /sse streams opened one after another (each once
     its endpoint event arrived) through each proxy; streams per replica read from each
     backend's streaming_active_connections. Then churn: a random half closed, as many opened
     again one after another; counted again.
  2. Short calls with one replica slowed: the tap of replica 1 holds every response 50 ms;
     wrk (bench/tools_call.lua: tools/call change.open) with fixed connections for a fixed time;
     p50/p99 and the share of calls that reached the slow replica (tap counts).
  3. Upstream connections opened per 10,000 requests: no delay; wrk as above; new TCP
     connections the taps accepted (health checks apart) per 10,000 requests.
  4. A stalled replica: paced tool calls (--rate per second, each with a 5 s client timeout)
     while replica 1's backend process is stopped (SIGSTOP, by pid) for --stall seconds, then
     SIGCONT. Counted from the taps and the client: calls the proxy still sent to the stalled
     replica (and when), calls that failed or took more than 1 s, and when the last one was.

Usage: bench/design.py [--streams 600] [--duration 5] [--stall 20] [--rate 50]
                       [--sections 1,2,3,4]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb  # noqa: E402
import streams as st  # noqa: E402  (stream protocol, backends, HTTP helpers)

REPO = gb.REPO
BIN = gb.BIN
TOKEN = gb.TOKEN
REPLICAS = 3
SLOW = 0  # index of the replica slowed (section 2) and stalled (section 4): "replica 1"
POST_MCP = b"POST /mcp "


# ----------------------------------------------------------------------------------------------
# The taps: one process, one listener per replica

class _TapState:
    def __init__(self, n: int):
        self.delay = [0.0] * n
        self.accepts = [0] * n
        self.health = [0] * n
        self.posts = [0] * n
        self.times: list[list[float]] = [[] for _ in range(n)]
        self.record = False


class _Down(asyncio.Protocol):
    """The proxy's connection to the tap."""

    def __init__(self, s: _TapState, i: int, backend: int):
        self.s, self.i, self.backend = s, i, backend
        self.t = None
        self.up = None
        self.pending: list[bytes] = []
        self.first = True
        self.tail = b""
        self.closed = False

    def connection_made(self, t):
        self.t = t
        loop = asyncio.get_running_loop()
        loop.create_task(self._connect(loop))

    async def _connect(self, loop):
        try:
            _, up = await loop.create_connection(lambda: _Up(self), "127.0.0.1", self.backend)
        except OSError:
            self.t.close()
            return
        if self.closed:
            up.t.close()
            return
        self.up = up
        for d in self.pending:
            up.t.write(d)
        self.pending = []

    def data_received(self, data):
        s, i = self.s, self.i
        if self.first:
            self.first = False
            if data.startswith(b"GET /healthz"):
                s.health[i] += 1
            else:
                s.accepts[i] += 1
        buf = self.tail + data
        n = buf.count(POST_MCP)
        if n:
            s.posts[i] += n
            if s.record:
                now = time.monotonic()
                s.times[i].extend([now] * n)
        self.tail = buf[-(len(POST_MCP) - 1):]
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.t.write(data)

    def connection_lost(self, exc):
        self.closed = True
        if self.up is not None:
            self.up.t.close()


class _Up(asyncio.Protocol):
    """The tap's connection to the backend; responses go back after the replica's delay."""

    def __init__(self, down: _Down):
        self.down = down
        self.t = None
        self.queue: collections.deque = collections.deque()
        self.timer = None
        self.eof = False

    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        delay = self.down.s.delay[self.down.i]
        if delay <= 0 and not self.queue:
            self.down.t.write(data)
            return
        self.queue.append((time.monotonic() + delay, data))
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_at(self.queue[0][0], self._flush)

    def _flush(self):
        self.timer = None
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            self.down.t.write(self.queue.popleft()[1])
        if self.queue:
            self.timer = asyncio.get_running_loop().call_at(self.queue[0][0], self._flush)
        elif self.eof:
            self.down.t.close()

    def connection_lost(self, exc):
        self.eof = True
        if not self.queue:
            self.down.t.close()


def tap_process(conn, listen: list[int], backends: list[int]) -> None:
    st.raise_nofile()
    s = _TapState(len(listen))

    async def main():
        loop = asyncio.get_running_loop()
        servers = []
        for i, (lp, bp) in enumerate(zip(listen, backends)):
            servers.append(await loop.create_server(
                lambda i=i, bp=bp: _Down(s, i, bp), "127.0.0.1", lp, backlog=4096))
        done = loop.create_future()

        def on_command():
            msg = conn.recv()
            cmd = msg[0]
            if cmd == "delay":
                s.delay[msg[1]] = msg[2]
                conn.send(True)
            elif cmd == "record":
                s.record = msg[1]
                for t in s.times:
                    t.clear()
                conn.send(True)
            elif cmd == "stats":
                conn.send({"accepts": list(s.accepts), "health": list(s.health),
                           "posts": list(s.posts), "times": [list(t) for t in s.times]})
            elif cmd == "quit":
                conn.send(True)
                done.set_result(None)

        loop.add_reader(conn.fileno(), on_command)
        conn.send("ready")
        await done
        for srv in servers:
            srv.close()

    asyncio.run(main())


class Taps:
    def __init__(self, ctx, backends: list[int]):
        self.ports = [gb.free_port() for _ in backends]
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=tap_process, args=(child, self.ports, backends))
        self.proc.start()
        if not self.conn.poll(10) or self.conn.recv() != "ready":
            raise RuntimeError("the taps did not start")

    def call(self, *msg):
        self.conn.send(msg)
        if not self.conn.poll(20):
            raise RuntimeError(f"the taps did not answer {msg[0]}")
        return self.conn.recv()

    def stats(self) -> dict:
        return self.call("stats")

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self.call("quit")
            except (RuntimeError, OSError):
                pass
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()


def delta(a: dict, b: dict, key: str) -> list[int]:
    return [y - x for x, y in zip(a[key], b[key])]


# ----------------------------------------------------------------------------------------------
# Proxy configurations

# nginx's side of the comparison: streams on /sse with a long read timeout, short calls on /
# with the same 2 s timeouts as the gateway's route, nginx's default keepalive_requests.
DESIGN_LOCATIONS = {
    "/sse": "proxy_read_timeout 3600s;",
    "/": "proxy_connect_timeout 2s;\n            proxy_read_timeout 2s;\n            proxy_send_timeout 2s;",
}


def gateway_config(d: Path, http: int, taps: list[int], active: bool) -> str:
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in taps)
    hc = """
[pools.backend.health_check]
path = "/healthz"
interval = "2s"
timeout = "1s"
rise = 2
fall = 2
""" if active else ""
    return f"""
[server]
grace_period = "2s"
access_log = "off"
pid_file = "{d}/gateway.pid"
upgrade_sock = "{d}/gateway.sock"
error_log_level = "warn"

[listeners.http]
address = "127.0.0.1:{http}"
redirect_https = false

[pools.backend]
balance = "least_conn"
servers = [ {servers} ]
keepalive = 64
max_fails = 1
fail_timeout = "10s"
{hc}
[[routes]]
name = "sse"
path = "/sse"
pool = "backend"
stream = true
read_timeout = "3600s"

[[routes]]
name = "all"
path = "/"
pool = "backend"
connect_timeout = "2s"
read_timeout = "2s"
write_timeout = "2s"
"""


# ----------------------------------------------------------------------------------------------
# 1. Spread of open streams

async def _open_sequentially(port: int, n: int, into: list) -> int:
    loop = asyncio.get_running_loop()
    failed = 0
    for _ in range(n):
        fut = loop.create_future()
        proto = st.SseStream(st.sse_request(port), fut)
        try:
            await loop.create_connection(lambda: proto, "127.0.0.1", port)
            await asyncio.wait_for(fut, 10)
            into.append(proto)
        except (OSError, RuntimeError, asyncio.TimeoutError):
            failed += 1
            if proto.transport is not None:
                proto.transport.abort()
    return failed


def wait_total(backends: list[int], want: int, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = [st.sse_streams(p) for p in backends]
        if sum(counts) == want or time.monotonic() > deadline:
            return counts
        time.sleep(0.1)


def spread(port: int, backends: list[int], n: int, probe=None) -> dict:
    async def go():
        held: list = []
        failed = await _open_sequentially(port, n, held)
        first = wait_total(backends, len(held))
        w1 = probe() if probe else None
        rng = random.Random(1)
        gone = rng.sample(range(len(held)), len(held) // 2)
        for k in sorted(gone, reverse=True):
            held.pop(k).transport.close()
        await asyncio.sleep(0.1)
        wait_total(backends, len(held))
        failed += await _open_sequentially(port, len(gone), held)
        second = wait_total(backends, len(held))
        w2 = probe() if probe else None
        for s in held:
            s.transport.close()
        await asyncio.sleep(0.2)
        return {"first": first, "churn": second, "failed": failed, "w_first": w1, "w_churn": w2}
    r = asyncio.run(go())
    wait_total(backends, 0)
    return r


# ----------------------------------------------------------------------------------------------
# 2 and 3. wrk runs

RESULT = re.compile(r"RESULT requests=(\d+) duration_s=([\d.]+) rps=([\d.]+) p50_ms=([\d.]+) "
                    r"p99_ms=([\d.]+) errors=(\d+) socket_errors=(\d+)")


def run_wrk(url: str, conns: int, duration: float, slug: str) -> dict:
    env = dict(os.environ, BENCH_TOKEN=TOKEN, BENCH_TOOL="change.open",
               BENCH_ARGS=f'{{"slug":"{slug}"}}')
    argv = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
            "-s", str(REPO / "bench" / "tools_call.lua"), url]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 30).stdout
    m = RESULT.search(out)
    if not m:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    return {"requests": int(m[1]), "rps": float(m[3]), "p50": float(m[4]), "p99": float(m[5]),
            "errors": int(m[6])}


def nginx_workers_clients(port: int, master: int) -> list[int]:
    """Established client connections on the listener per nginx worker (from ss)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    per: dict[int, int] = {w: 0 for w in gb.children(master)}
    for pid in re.findall(r"pid=(\d+)", out):
        if int(pid) in per:
            per[int(pid)] += 1
    return sorted(per.values(), reverse=True)


# ----------------------------------------------------------------------------------------------
# 4. A stalled replica

async def _open_loop(port: int, body: bytes, rate: float, duration: float, timeout: float):
    req = st.tools_call_request(port, body)
    idle: list = []
    out: list = []

    async def one():
        conn = idle.pop(0) if idle else None  # the longest idle first: calls rotate over them
        t = time.monotonic()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
            r, w = conn
            w.write(req)
            status, keep = await asyncio.wait_for(st.read_response(r), timeout)
            out.append((t, time.monotonic() - t, status))
            if keep:
                idle.append(conn)
            else:
                w.close()
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            out.append((t, time.monotonic() - t, "timeout" if isinstance(e, asyncio.TimeoutError)
                        else type(e).__name__))
            if conn is not None:
                conn[1].close()

    # Many clients: 16 keep-alive connections opened up front (nginx's workers share them, as
    # they would share real clients); more are opened while those are all busy.
    for _ in range(16):
        idle.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout))
    t0 = time.monotonic()
    tasks = []
    i = 0
    while True:
        due = t0 + i / rate
        if due > t0 + duration:
            break
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        tasks.append(asyncio.create_task(one()))
        i += 1
    await asyncio.gather(*tasks)
    for _, w in idle:
        w.close()
    return out


def open_loop_process(conn, port, body, rate, duration, timeout) -> None:
    conn.send(asyncio.run(_open_loop(port, body, rate, duration, timeout)))
    conn.close()


def stall(ctx, port: int, taps: Taps, victim: int, body: bytes, rate: float, before: float,
          stalled: float, after: float, probe=None) -> dict:
    taps.call("record", True)
    a, b = ctx.Pipe()
    load = ctx.Process(target=open_loop_process,
                       args=(b, port, body, rate, before + stalled + after, 5.0))
    load.start()
    time.sleep(before)
    t_stop = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    workers = None
    try:
        if probe:
            time.sleep(stalled / 2)
            workers = probe()
        time.sleep(max(0.0, t_stop + stalled - time.monotonic()))
    finally:
        os.kill(victim, signal.SIGCONT)
    t_cont = time.monotonic()
    if not a.poll(before + stalled + after + 30):
        raise RuntimeError("the paced load did not report")
    calls = a.recv()
    load.join(10)
    s = taps.stats()
    taps.call("record", False)
    to_victim = sorted(t - t_stop for t in s["times"][SLOW] if t_stop <= t < t_cont)
    before_stop = [t for t in s["times"][SLOW] if t < t_stop]
    after_cont = sorted(t - t_cont for t in s["times"][SLOW] if t >= t_cont)
    # The first burst: calls to the victim until a silence of 3 s or more.
    burst_end = None
    for k, t in enumerate(to_victim):
        nxt = to_victim[k + 1] if k + 1 < len(to_victim) else stalled
        if nxt - t >= 3.0:
            burst_end = t
            break
    burst = [t for t in to_victim if burst_end is not None and t <= burst_end]
    later = [t for t in to_victim if burst_end is None or t > burst_end]
    window = [(t - t_stop, lat, status) for t, lat, status in calls
              if t_stop - 1.0 <= t <= t_cont + 1.0]
    bad = [(t, lat, status) for t, lat, status in window if status != 200 or lat > 1.0]
    failed = [x for x in bad if x[2] != 200]
    return {"to_victim": to_victim, "burst": burst, "burst_end": burst_end, "later": later,
            "bad": bad, "failed": failed, "calls": len(window),
            "last_bad": max((t for t, _, _ in bad), default=None),
            "failing_until": max((t + lat for t, lat, _ in bad), default=None),
            "before_share": len(before_stop) / max(1, sum(1 for t, _, _ in calls if t < t_stop)),
            "back_after": after_cont[0] if after_cont else None,
            "statuses": collections.Counter(str(x[2]) for x in bad), "workers": workers}


def fmt_times(ts: list[float], limit: int = 8) -> str:
    if not ts:
        return "-"
    shown = ", ".join(f"{t:.1f}" for t in ts[:limit])
    return shown + (f", ... ({len(ts)} in all)" if len(ts) > limit else "")


# ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=600, help="section 1: streams per proxy")
    ap.add_argument("--duration", type=float, default=5.0, help="sections 2, 3: seconds per wrk run")
    ap.add_argument("--stall", type=float, default=20.0, help="section 4: seconds stopped")
    ap.add_argument("--rate", type=float, default=50.0, help="section 4: calls per second")
    ap.add_argument("--sections", default="1,2,3,4")
    args = ap.parse_args()
    sections = {int(x) for x in args.sections.split(",") if x}
    for tool in ("nginx", "wrk", "prlimit", "ss"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (bash scripts/setup.sh bench installs it)")
            return 2
    for b in ("gateway", "backend"):
        if not (BIN / b).exists():
            print(f"bench: {BIN / b} is missing: cargo build --release --workspace --bins")
            return 2
    nofile = st.raise_nofile()
    ctx = mp.get_context("fork")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="designbench-"))
    stack = gb.Stack(tmp)
    taps = None
    stopped = []
    try:
        ws = tmp / "workspace"
        shutil.copytree(REPO / "examples" / "workspace", ws, symlinks=True)
        backends = st.start_backends(stack, ws, REPLICAS, nofile)
        backend_pids = [p.pid for p in stack.procs[:REPLICAS]]
        slug = gb.first_change_slug(f"http://127.0.0.1:{backends[0]}")
        body = st.tools_call_body(slug)
        taps = Taps(ctx, backends)
        gw_port, gw = st.start_gateway(
            stack, tmp / "gateway", backends, nofile,
            conf_text=lambda d, http: gateway_config(d, http, taps.ports, active=True))
        ng_port, ng = st.start_nginx(stack, tmp / "nginx", backends, nofile,
                                     conf_text=lambda d, http: gb.nginx_conf(
                                         d, http, taps.ports, nofile=nofile, worker_connections=8192, headers=False,
                                         max_fails=1, fail_timeout="10s", keepalive_requests=False, backlog=4096,
                                         locations=DESIGN_LOCATIONS))
        proxies = {"gateway": gw_port, "nginx": ng_port}
        gp_port = None
        if 4 in sections:
            gp_port, _ = st.start_gateway(
                stack, tmp / "gateway-passive", backends, nofile, name="gateway-passive",
                conf_text=lambda d, http: gateway_config(d, http, taps.ports, active=False))
        # Let the gateway's health checks pass (rise 2, every 2 s) before anything is measured.
        time.sleep(4.5)
        for name, port in proxies.items():
            st.warm(port, body)
        ours = lambda: ([p.pid for p in stack.procs] + gb.children(ng.pid)  # noqa: E731
                        + [taps.proc.pid])
        s0, o0, w0, t0 = (gb.system_cpu_seconds(), gb.cpu_seconds(ours()), st.own_cpu_seconds(),
                          time.monotonic())

        print(f"gateway (default threads: 2) vs nginx 1.22 (worker_processes 2, least_conn without "
              f"a zone), both least_conn over the same {REPLICAS} backend replicas,\neach replica "
              "behind a counting tap (asyncio, this script); max_fails 1 / fail_timeout 10s, upstream "
              "keepalive 64 (gateway: one pool of 64; nginx: 64 per worker),\ngateway active health "
              "check /healthz every 2s (timeout 1s, rise 2, fall 2); 2 s connect/read/write timeouts "
              "on the tool-call route. Loopback, 2 cores shared by everything.", flush=True)

        if 1 in sections:
            print(f"\n1. Spread of open streams: {args.streams} GET /sse streams opened one after "
                  "another through each proxy (each once its endpoint event arrived), counted per "
                  "replica\n   by each backend's streaming_active_connections; then a random half "
                  "closed and as many opened again one after another (churn).\n")
            print(f"   {'proxy':<9}{'phase':<16}{'per replica':>16}{'max':>6}{'min':>6}"
                  f"{'max-min':>9}{'max/mean':>10}{'failed':>8}   nginx streams per worker")
            for name, port in proxies.items():
                probe = (lambda port=port: nginx_workers_clients(port, ng.pid)) if name == "nginx" else None
                r = spread(port, backends, args.streams, probe)
                for phase, key in (("all opened", "first"), ("after churn", "churn")):
                    c = r[key]
                    mean = sum(c) / len(c)
                    w = r["w_" + key]
                    print(f"   {name:<9}{phase:<16}{'/'.join(map(str, c)):>16}{max(c):>6}{min(c):>6}"
                          f"{max(c) - min(c):>9}{max(c) / mean if mean else 0:>10.2f}"
                          f"{r['failed'] if key == 'first' else '':>8}   "
                          f"{'/'.join(map(str, w)) if w else ''}", flush=True)

        if 2 in sections:
            print(f"\n2. Short calls with replica 1 of {REPLICAS} slowed by 50 ms (its tap holds each "
                  f"response 50 ms; not stalled): wrk, tools/call change.open, {args.duration:.0f} s "
                  "per run,\n   fixed connections, after a 1 s warm-up run. Share = calls that "
                  f"reached the slow replica (its tap's count) / all; an even split is "
                  f"{100 / REPLICAS:.0f}%.\n")
            taps.call("delay", SLOW, 0.050)
            print(f"   {'proxy':<9}{'conns':>6}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
                  f"{'to slow':>9}{'share':>7}   nginx clients per worker")
            for conns in (4, 32):
                for name, port in proxies.items():
                    url = f"http://127.0.0.1:{port}/mcp"
                    run_wrk(url, conns, 1, slug)
                    a = taps.stats()
                    per_worker = ""
                    if name == "nginx":
                        # Read which worker holds the client connections while wrk runs.
                        holder = {}

                        def probe():
                            time.sleep(min(2.0, args.duration / 2))
                            holder["v"] = nginx_workers_clients(port, ng.pid)
                        th = threading.Thread(target=probe)
                        th.start()
                        w = run_wrk(url, conns, args.duration, slug)
                        th.join()
                        per_worker = "/".join(map(str, holder.get("v", [])))
                    else:
                        w = run_wrk(url, conns, args.duration, slug)
                    b = taps.stats()
                    posts = delta(a, b, "posts")
                    share = posts[SLOW] / max(1, sum(posts))
                    print(f"   {name:<9}{conns:>6}{w['rps']:>8.0f}{w['p50']:>8.2f}{w['p99']:>8.2f}"
                          f"{w['errors']:>7}{posts[SLOW]:>9}{share:>7.1%}   {per_worker}", flush=True)
            taps.call("delay", SLOW, 0.0)

        if 3 in sections:
            print(f"\n3. Upstream connections opened per 10,000 requests: no delay; wrk, tools/call "
                  f"change.open, {args.duration:.0f} s per run; TCP connections the taps accepted "
                  "(gateway health-check\n   connections counted apart), per 10,000 requests wrk "
                  "completed,\n   after a 1 s warm-up run with the same connections. nginx: upstream "
                  "keepalive 64 per worker, keepalive_requests 1000 "
                  "(its default);\n   gateway: one idle pool of 64 for all replicas, no request "
                  "cap.\n")
            print(f"   {'proxy':<9}{'conns':>6}{'requests':>10}{'req/s':>8}{'opened':>8}"
                  f"{'per 10k':>9}{'health checks':>15}")
            for conns in (32, 256):
                for name, port in proxies.items():
                    url = f"http://127.0.0.1:{port}/mcp"
                    run_wrk(url, conns, 1, slug)  # warm-up: the pools fill
                    a = taps.stats()
                    w = run_wrk(url, conns, args.duration, slug)
                    b = taps.stats()
                    opened = sum(delta(a, b, "accepts"))
                    hc = sum(delta(a, b, "health"))
                    print(f"   {name:<9}{conns:>6}{w['requests']:>10}{w['rps']:>8.0f}{opened:>8}"
                          f"{opened * 10_000 / max(1, w['requests']):>9.1f}"
                          f"{hc if name == 'gateway' else '-':>15}", flush=True)

        if 4 in sections:
            before, after = 3.0, 5.0
            print(f"\n4. A stalled replica: tools/call change.open at {args.rate:.0f}/s (open loop "
                  "over 16+ keep-alive client connections, client timeout 5 s); "
                  f"{before:.0f} s after the start\n   replica 1's backend gets SIGSTOP, "
                  f"{args.stall:.0f} s later SIGCONT, then {after:.0f} s more. Times are "
                  "seconds after the SIGSTOP. 'sent to stalled' = calls its tap forwarded while "
                  "stopped; the first burst ends at a silence of 3 s or more;\n   'bad' = calls "
                  "(sent from 1 s before the stop to 1 s after SIGCONT) that failed or took more "
                  "than 1 s.\n   gateway = active health check + passive (max_fails 1, fail_timeout "
                  "10s); gateway-passive = passive only; nginx = max_fails=1 fail_timeout=10s.\n")
            runs = [("gateway", gw_port), ("gateway-passive", gp_port), ("nginx", ng_port)]
            res = {}
            for name, port in runs:
                victim = backend_pids[SLOW]
                stopped.append(victim)
                probe = (lambda: nginx_workers_clients(ng_port, ng.pid)) if name == "nginx" else None
                r = stall(ctx, port, taps, victim, body, args.rate, before, args.stall, after, probe)
                stopped.remove(victim)
                res[name] = r
                # Let the proxy see replica 1 healthy again before the next one starts.
                time.sleep(5.0)
            print(f"   {'proxy':<16}{'sent to stalled':>16}{'first burst':>12}{'dropped after':>14}"
                  f"{'later':>6}{'bad':>5}{'failed':>7}{'last bad sent':>14}{'failing until':>14}"
                  f"{'back after SIGCONT':>20}")
            for name, r in res.items():
                drop = f"{r['burst_end']:.1f} s" if r["burst_end"] is not None else "never"
                last = f"{r['last_bad']:.1f} s" if r["last_bad"] is not None else "-"
                back = f"{r['back_after']:.1f} s" if r["back_after"] is not None else "not in 5 s"
                until = f"{r['failing_until']:.1f} s" if r["failing_until"] is not None else "-"
                print(f"   {name:<16}{len(r['to_victim']):>16}{len(r['burst']):>12}{drop:>14}"
                      f"{len(r['later']):>6}{len(r['bad']):>5}{len(r['failed']):>7}{last:>14}"
                      f"{until:>14}{back:>20}")
            print()
            for name, r in res.items():
                outcomes = ", ".join(f"{k} x{v}" for k, v in sorted(r["statuses"].items()))
                print(f"   {name}: calls to the stalled replica at {fmt_times(r['to_victim'], 12)} s; "
                      f"bad calls: {outcomes or 'none'} of {r['calls']}; share to replica 1 before "
                      f"the stop {r['before_share']:.0%}"
                      + (f"; client connections per nginx worker mid-stall "
                         f"{'/'.join(map(str, r['workers']))}" if r["workers"] else ""))

        s1, o1, w1, t1 = (gb.system_cpu_seconds(), gb.cpu_seconds(ours()), st.own_cpu_seconds(),
                          time.monotonic())
        others = max(0.0, (s1 - s0) - (o1 - o0) - (w1 - w0)) / (t1 - t0)
        print(f"\nother processes' CPU during the run: {others:.2f} cores"
              + (" (WARNING: latencies in sections 2 and 4 may be disturbed; counts, shares and "
                 "stream spreads are not)" if others > 0.1 else ""))
        print(f"(whole run: {time.monotonic() - started:.0f} s)")
        return 0
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        if taps is not None:
            taps.stop()
        stack.stop()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
