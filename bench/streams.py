#!/usr/bin/env python3
"""Open SSE streams at scale: 8,000 concurrent streams through the gateway and through nginx
(and straight to the backends, as the baseline), while tool calls run, in one run.

  * Two backend replicas with HEARTBEAT_MS=1000: every open `GET /sse` stream (the MCP
    2024-11-05 transport: an `event: endpoint` first, then a `: keep-alive` comment every
    second on the stream's own tokio interval, which keeps its schedule) gets one heartbeat a
    second. The user's `POST /sse {"tool","input"}` form is not used: it ends as soon as the
    tool returns (milliseconds for every OpenSpec tool), so it cannot be held open.
  * Clients: --workers processes (asyncio protocols, no HTTP library) open --streams streams
    in batches, each counted once its `endpoint` event arrived, and time-stamp every heartbeat.
    While all streams are open, a separate process sends `tools/call change.open` on
    POST /mcp at a fixed rate (--rate per second over 8 keep-alive connections, the body and
    headers of bench/tools_call.lua) and records each call's latency.
  * Heartbeat lag: the k-th heartbeat of a stream is due at base + k s (the backend's interval
    does not drift: a late tick does not move the next ones); base is the stream's earliest
    (arrival - k s), so lag = arrival - k s - base is how much later than its best delivery a
    heartbeat arrived. "max gap" is the longest silence between two heartbeats of one stream,
    minus the 1 s period. Both over the heartbeats that arrived in the hold window.
  * Memory: VmRSS summed over the proxy's processes (nginx: master and workers), before the
    streams (after warm-up) and at the end of the hold; KB per stream = difference / streams
    held. User space only (kernel socket buffers are not in it).

Targets (each in turn, the others idle; --targets):
  * gateway: as bench/gateway_bench.py runs it (2 threads, least_conn, keepalive 64), the
    route with stream = true, read_timeout 3600s;
  * gateway-nothp: the same binary and config with MIMALLOC_ALLOW_THP=0 (mimalloc then does
    not ask for transparent huge pages on its arenas);
  * nginx 1.22 (Debian's): 2 worker processes, least_conn, keepalive 64, proxy_buffering off,
    proxy_read_timeout 3600s, worker_connections and worker_rlimit_nofile at the open-file
    limit, listen backlog 4096 (Pingora's is the kernel's maximum);
  * bare-pingora (not by default): bench/bare-pingora, Pingora's proxy with nothing of the
    gateway's, 2 threads, glibc malloc, to the first replica only;
  * direct: the clients straight to the two replicas (the backends' own heartbeat timing).
Access logs off. Everything runs under prlimit with the open-file limit at 65536, or at the
hard limit when that is lower and cannot be raised (this sandbox: 20000, enough: a proxy holds
2 descriptors per stream). Other processes' CPU during each target is measured and reported:
lag and latency figures are wall-clock, memory and counts are not.

Usage: bench/streams.py [--streams 8000] [--hold 30] [--rate 100] [--workers 2]
                        [--targets gateway,gateway-nothp,nginx,direct]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb  # noqa: E402  (helpers: ports, readiness, Stack, headers, slug)

REPO = gb.REPO
BIN = gb.BIN
TOKEN = gb.TOKEN
WANT_NOFILE = 65536
PERIOD = 1.0  # HEARTBEAT_MS=1000
HEARTBEAT = b": keep-alive\n"
ENDPOINT = b"event: endpoint"
TARGETS = ("gateway", "gateway-nothp", "nginx", "bare-pingora", "direct")


# ----------------------------------------------------------------------------------------------
# Small helpers shared with bench/design.py

def raise_nofile() -> int:
    """This process's open-file limit at WANT_NOFILE, or at the hard limit when lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANT_NOFILE if hard == resource.RLIM_INFINITY else min(WANT_NOFILE, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (WANT_NOFILE, WANT_NOFILE))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def prlimit(nofile: int) -> list[str]:
    return ["prlimit", f"--nofile={nofile}:{nofile}", "--"]


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def fd_count(pids: list[int]) -> int:
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def settle_rss(pids: list[int], timeout: float = 8.0) -> int:
    """RSS once two reads 0.5 s apart are within 1%, or after timeout."""
    last = rss_kb(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        cur = rss_kb(pids)
        if abs(cur - last) <= 0.01 * max(last, 1):
            return cur
        last = cur
    return last


def backend_metric(port: int, name: str, label: str = "") -> float:
    """Sum of a metric's samples on a backend's /metrics (those whose labels contain `label`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name):len(name) + 1] in ("{", " ")) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def sse_streams(port: int) -> int:
    return int(backend_metric(port, "streaming_active_connections", 'transport="sse"'))


def pct(xs, q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))]


def start_backends(stack: gb.Stack, ws: Path, n: int, nofile: int, extra: dict | None = None) -> list[int]:
    ports = [gb.free_port() for _ in range(n)]
    for p in ports:
        env = {"PORT": str(p), "HOST": "127.0.0.1", "WORKING_DIRECTORY": str(ws),
               "AUTH_TOKENS": TOKEN, "RATE_LIMIT": "0", "LOG_LEVEL": "warn", "ACCESS_LOG": "off",
               "HEARTBEAT_MS": str(int(PERIOD * 1000))}
        env.update(extra or {})
        stack.spawn(f"backend-{p}", prlimit(nofile) + [str(BIN / "backend")], env=env)
    for p in ports:
        gb.wait_http(f"http://127.0.0.1:{p}/healthz")
    return ports


def tools_call_body(slug: str) -> bytes:
    # bench/tools_call.lua's body.
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "change.open", "arguments": {"slug": slug}}}).encode()


def tools_call_request(port: int, body: bytes) -> bytes:
    return (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def sse_request(port: int) -> bytes:
    return (f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {TOKEN}\r\nUser-Agent: streams-bench\r\n\r\n").encode()


async def read_response(r: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response (Content-Length or chunked body); (status, keep-alive)."""
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, v in
              (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    if "content-length" in fields:
        await r.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            await r.readexactly(size + 2)
            if size == 0:
                break
    return status, fields.get("connection", "").lower() != "close"


# ----------------------------------------------------------------------------------------------
# Tool-call load: a fixed rate over a few keep-alive connections

async def _paced_calls(ports: list[int], body: bytes, rate: float, duration: float,
                       conns: int, timeout: float) -> dict:
    t0 = time.monotonic() + 0.05
    t_end = t0 + duration
    state = {"i": 0}
    lat: list[float] = []
    errors: dict[str, int] = {}

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one(c: int) -> None:
        port = ports[c % len(ports)]
        req = tools_call_request(port, body)
        rw = None
        while True:
            i = state["i"]
            state["i"] += 1
            due = t0 + i / rate
            if due >= t_end:
                break
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            try:
                if rw is None:
                    rw = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
                r, w = rw
                start = time.monotonic()
                w.write(req)
                status, keep = await asyncio.wait_for(read_response(r), timeout)
                took = time.monotonic() - start
                if status == 200:
                    lat.append(took)
                else:
                    err(f"HTTP {status}")
                if not keep:
                    w.close()
                    rw = None
            except asyncio.TimeoutError:
                err(f"timeout {timeout:.0f}s")
                if rw:
                    rw[1].close()
                rw = None
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                err(type(e).__name__)
                if rw:
                    rw[1].close()
                rw = None
        if rw:
            rw[1].close()

    await asyncio.gather(*(one(c) for c in range(conns)))
    return {"lat": lat, "errors": errors, "sent": state["i"]}


def load_process(conn, ports, body, rate, duration, conns=8, timeout=10.0) -> None:
    res = asyncio.run(_paced_calls(ports, body, rate, duration, conns, timeout))
    conn.send(res)
    conn.close()


# ----------------------------------------------------------------------------------------------
# Stream holders

class SseStream(asyncio.Protocol):
    __slots__ = ("req", "transport", "opened", "head", "tail", "beats", "ended", "t_open", "status")

    def __init__(self, req: bytes, opened: asyncio.Future):
        self.req = req
        self.transport = None
        self.opened = opened
        self.head = b""
        self.tail = b""
        self.beats = array.array("d")
        self.ended = None  # monotonic time of an EOF / reset before we closed it
        self.t_open = None
        self.status = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.req)

    def data_received(self, data: bytes):
        now = time.monotonic()
        if self.t_open is None:
            self.head += data
            if self.status is None and b"\r\n" in self.head:
                try:
                    self.status = int(self.head.split(b" ", 2)[1])
                except (IndexError, ValueError):
                    self.status = -1
                if self.status != 200 and not self.opened.done():
                    self.opened.set_exception(RuntimeError(f"HTTP {self.status}"))
                    return
            i = self.head.find(ENDPOINT)
            if i < 0:
                return
            self.t_open = now
            data = self.head[i + len(ENDPOINT):]
            self.head = b""
            if not self.opened.done():
                self.opened.set_result(now)
        buf = self.tail + data
        n = buf.count(HEARTBEAT)
        for _ in range(n):
            self.beats.append(now)
        self.tail = buf[-(len(HEARTBEAT) - 1):]

    def eof_received(self):
        if self.ended is None:
            self.ended = time.monotonic()
        return False

    def connection_lost(self, exc):
        if self.ended is None:
            self.ended = time.monotonic()
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(f"closed before the endpoint event: {exc}"))


def stream_stats(streams: list[SseStream], t0: float, t1: float) -> dict:
    """Lag and gap of the heartbeats that arrived in [t0, t1], over the streams still open."""
    lags: list[float] = []
    max_gap = 0.0
    beats = 0
    for s in streams:
        b = s.beats
        if not b:
            continue
        base = min(b[k] - k * PERIOD for k in range(len(b)))
        prev = s.t_open
        for k in range(len(b)):
            if t0 <= b[k] <= t1:
                lags.append(b[k] - k * PERIOD - base)
                max_gap = max(max_gap, b[k] - prev - PERIOD)
                beats += 1
            prev = b[k]
        if b[-1] < t1:  # silence up to the end of the window
            max_gap = max(max_gap, t1 - b[-1] - PERIOD)
    lags.sort()
    return {"lags": lags, "max_gap": max_gap, "beats": beats}


async def _hold_streams(conn, ports: list[int], n: int, offset: int, batch: int,
                        open_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    streams: list[SseStream] = []
    failed: dict[str, int] = {}
    t_start = time.monotonic()

    async def open_one(i: int) -> None:
        port = ports[(offset + i) % len(ports)]
        fut = loop.create_future()
        proto = SseStream(sse_request(port), fut)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: proto, "127.0.0.1", port),
                                   open_timeout)
            await asyncio.wait_for(fut, open_timeout)
            streams.append(proto)
        except (asyncio.TimeoutError, OSError, RuntimeError) as e:
            kind = "timeout" if isinstance(e, asyncio.TimeoutError) else str(e)[:60]
            failed[kind] = failed.get(kind, 0) + 1
            if proto.transport is not None:
                proto.transport.abort()

    for start in range(0, n, batch):
        await asyncio.gather(*(open_one(i) for i in range(start, min(n, start + batch))))
    conn.send(("opened", len(streams), failed, time.monotonic() - t_start))
    msg = await loop.run_in_executor(None, conn.recv)  # ("stop", t0, t1)
    _, t0, t1 = msg
    st = stream_stats(streams, t0, t1)
    dropped = sum(1 for s in streams if s.ended is not None and s.ended <= t1)
    for s in streams:
        if s.transport is not None:
            s.transport.close()
    await asyncio.sleep(0.2)
    conn.send(("done", {"lags": st["lags"], "max_gap": st["max_gap"], "beats": st["beats"],
                        "dropped": dropped, "held": len(streams) - dropped}))
    conn.close()


def holder_process(conn, ports, n, offset, batch, open_timeout) -> None:
    raise_nofile()
    asyncio.run(_hold_streams(conn, ports, n, offset, batch, open_timeout))


# ----------------------------------------------------------------------------------------------
# The servers

def gateway_config(d: Path, http: int, backends: list[int]) -> str:
    servers = ", ".join(f'{{ address = "127.0.0.1:{p}", weight = 1 }}' for p in backends)
    return f"""
[server]
threads = 2
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

[[routes]]
name = "all"
path = "/"
pool = "backend"
stream = true
read_timeout = "3600s"
max_body_size = "1m"
"""


def start_gateway(stack: gb.Stack, d: Path, backends: list[int], nofile: int, conf_text=None,
                  env: dict | None = None, name: str = "gateway"):
    d.mkdir(exist_ok=True)
    http = gb.free_port()
    conf = d / "gateway.toml"
    conf.write_text(conf_text(d, http) if conf_text else gateway_config(d, http, backends))
    p = stack.spawn(name, prlimit(nofile) + [str(BIN / "gateway"), "-c", str(conf)], env=env)
    gb.wait_http(f"http://127.0.0.1:{http}/healthz")
    return http, p


def start_nginx(stack: gb.Stack, d: Path, backends: list[int], nofile: int, conf_text=None):
    d.mkdir(exist_ok=True)
    http = gb.free_port()
    conf = d / "nginx.conf"
    conf.write_text(conf_text(d, http) if conf_text else gb.nginx_conf(d, http, backends, nofile=nofile, worker_connections=nofile - 100, backlog=4096,
                                                                                     locations={"/": "proxy_read_timeout 3600s;"}))
    p = stack.spawn("nginx", prlimit(nofile) + ["nginx", "-p", str(d), "-e", str(d / "error.log"),
                                                "-c", str(conf), "-g", "daemon off;"])
    gb.wait_http(f"http://127.0.0.1:{http}/healthz")
    return http, p


def warm(port: int, body: bytes) -> None:
    async def go():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(20):
            w.write(tools_call_request(port, body))
            status, _ = await read_response(r)
            if status != 200:
                raise RuntimeError(f"tools/call via :{port} answered {status}")
        w.close()
        # One stream, opened and closed.
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        proto = SseStream(sse_request(port), fut)
        await loop.create_connection(lambda: proto, "127.0.0.1", port)
        await asyncio.wait_for(fut, 10)
        proto.transport.close()
    asyncio.run(go())


def wait_streams_closed(backends: list[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(sse_streams(p) == 0 for p in backends):
            return
        time.sleep(0.25)


def run_target(name: str, ports: list[int], pids: list[int], backends: list[int], body: bytes,
               args, ctx) -> dict:
    t_begin = time.monotonic()
    warm(ports[0], body)
    wait_streams_closed(backends)
    rss0 = settle_rss(pids) if pids else 0
    fds0 = fd_count(pids) if pids else 0
    t_ramp = time.monotonic()
    holders = []
    per = [args.streams // args.workers + (1 if i < args.streams % args.workers else 0)
           for i in range(args.workers)]
    offset = 0
    for n in per:
        a, b = ctx.Pipe()
        p = ctx.Process(target=holder_process,
                        args=(b, ports, n, offset, args.batch // args.workers, 20.0))
        p.start()
        holders.append((p, a))
        offset += n
    opened, failed = 0, {}
    for p, a in holders:
        if not a.poll(150):
            raise RuntimeError(f"{name}: the stream holders did not finish opening in 150 s")
        _, ok, fail, _ = a.recv()
        opened += ok
        for k, v in fail.items():
            failed[k] = failed.get(k, 0) + v
    ramp_s = time.monotonic() - t_ramp
    per_replica = [sse_streams(p) for p in backends]
    # The hold: tool calls at a fixed rate, memory sampled every second.
    la, lb = ctx.Pipe()
    loader = ctx.Process(target=load_process, args=(lb, ports, body, args.rate, args.hold))
    t0 = time.monotonic()
    cpu0 = gb.cpu_seconds(pids) if pids else 0.0
    loader.start()
    rss_max = 0
    while time.monotonic() < t0 + args.hold:
        time.sleep(1.0)
        if pids:
            rss_max = max(rss_max, rss_kb(pids))
    t1 = time.monotonic()
    cpu1 = gb.cpu_seconds(pids) if pids else 0.0
    rss1 = rss_kb(pids) if pids else 0
    fds1 = fd_count(pids) if pids else 0
    per_replica_end = [sse_streams(p) for p in backends]
    if not la.poll(args.hold + 30):
        raise RuntimeError(f"{name}: the tool-call load did not report")
    load = la.recv()
    loader.join(10)
    lags, max_gap, beats, dropped, held = [], 0.0, 0, 0, 0
    for p, a in holders:
        a.send(("stop", t0, t1))
    for p, a in holders:
        if not a.poll(60):
            raise RuntimeError(f"{name}: a stream holder did not report")
        _, r = a.recv()
        lags.extend(r["lags"])
        max_gap = max(max_gap, r["max_gap"])
        beats += r["beats"]
        dropped += r["dropped"]
        held += r["held"]
        p.join(10)
    time.sleep(1.0)
    rss_after = rss_kb(pids) if pids else 0
    lags.sort()
    lat = sorted(load["lat"])
    return {"name": name, "opened": opened, "failed": failed, "dropped": dropped, "held": held,
            "ramp_s": ramp_s, "rss0": rss0, "rss1": rss1, "rss_after": rss_after, "rss_max": rss_max,
            "fds": fds1 - fds0, "per_replica": per_replica, "per_replica_end": per_replica_end,
            "lag50": pct(lags, 0.5), "lag99": pct(lags, 0.99), "lag_max": lags[-1] if lags else float("nan"),
            "late_1s": sum(1 for x in lags if x > 1.0), "max_gap": max_gap, "beats": beats,
            "calls": len(lat), "call_errors": load["errors"], "call50": pct(lat, 0.5),
            "call99": pct(lat, 0.99), "call_max": lat[-1] if lat else float("nan"),
            "cpu": (cpu1 - cpu0) / (t1 - t0) if pids else None, "hold_s": t1 - t0,
            "wall_s": time.monotonic() - t_begin}


def own_cpu_seconds() -> float:
    """CPU of this process and of its finished children (the stream holders, the call load)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=8000)
    ap.add_argument("--hold", type=float, default=30.0, help="seconds at full count")
    ap.add_argument("--rate", type=float, default=100.0, help="tool calls per second meanwhile")
    ap.add_argument("--workers", type=int, default=2, help="client processes holding streams")
    ap.add_argument("--batch", type=int, default=500, help="streams opened at once (all workers)")
    ap.add_argument("--targets", default="gateway,gateway-nothp,nginx,direct",
                    help=f"among {', '.join(TARGETS)}")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if not set(targets) <= set(TARGETS):
        ap.error(f"targets among {', '.join(TARGETS)}")
    for tool in ("nginx", "prlimit"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (bash scripts/setup.sh bench installs it)")
            return 2
    for b in ("gateway", "backend"):
        if not (BIN / b).exists():
            print(f"bench: {BIN / b} is missing: cargo build --release --workspace --bins")
            return 2
    nofile = raise_nofile()
    if nofile < 2 * args.streams + 1024:
        print(f"bench: the open-file limit is {nofile}; a proxy holding {args.streams} streams "
              f"needs {2 * args.streams + 1024}")
        return 2
    ctx = mp.get_context("fork")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="streamsbench-"))
    stack = gb.Stack(tmp)
    try:
        ws = tmp / "workspace"
        shutil.copytree(REPO / "examples" / "workspace", ws, symlinks=True)
        backends = start_backends(stack, ws, 2, nofile)
        slug = gb.first_change_slug(f"http://127.0.0.1:{backends[0]}")
        body = tools_call_body(slug)
        servers = {}
        if "gateway" in targets:
            port, p = start_gateway(stack, tmp / "gateway", backends, nofile)
            servers["gateway"] = ([port], [p.pid])
        if "gateway-nothp" in targets:
            # The same gateway with mimalloc told not to use transparent huge pages.
            port, p = start_gateway(stack, tmp / "gateway-nothp", backends, nofile,
                                    env={"MIMALLOC_ALLOW_THP": "0"}, name="gateway-nothp")
            servers["gateway-nothp"] = ([port], [p.pid])
        if "nginx" in targets:
            port, p = start_nginx(stack, tmp / "nginx", backends, nofile)
            servers["nginx"] = ([port], [p.pid] + gb.children(p.pid))
        if "bare-pingora" in targets:
            # Pingora's proxy with nothing of the gateway's (bench/bare-pingora), to the first
            # replica only: what Pingora itself holds per stream.
            port = gb.free_port()
            p = stack.spawn("bare-pingora", prlimit(nofile) + [
                str(BIN / "bare-pingora"), f"127.0.0.1:{port}", f"127.0.0.1:{backends[0]}", "2"])
            gb.wait_http(f"http://127.0.0.1:{port}/healthz")
            servers["bare-pingora"] = ([port], [p.pid])
        if "direct" in targets:
            servers["direct"] = (backends, [])
        results = []
        for name in targets:
            ports, pids = servers[name]
            ours = [p.pid for p in stack.procs] + [c for p in stack.procs for c in gb.children(p.pid)]
            s0, o0, w0 = gb.system_cpu_seconds(), gb.cpu_seconds(ours), own_cpu_seconds()
            r = run_target(name, ports, pids, backends, body, args, ctx)
            s1, o1, w1 = gb.system_cpu_seconds(), gb.cpu_seconds(ours), own_cpu_seconds()
            r["others"] = max(0.0, (s1 - s0) - (o1 - o0) - (w1 - w0)) / r["wall_s"]
            results.append(r)
            fails = sum(r["failed"].values())
            print(f"  {name:<12} {r['opened']} streams open in {r['ramp_s']:.1f} s ({fails} failed), "
                  f"held {r['hold_s']:.0f} s: {r['held']} still open, heartbeat lag p99 "
                  f"{r['lag99'] * 1000:.0f} ms", flush=True)
        bpids = [p.pid for p in stack.procs[:2]]
        backend_rss = rss_kb(bpids)
        print(f"\n{args.streams:,} concurrent GET /sse streams (2024-11-05 transport), 2 backend "
              f"replicas with HEARTBEAT_MS={int(PERIOD * 1000)}, opened {args.batch} at a time by "
              f"{args.workers} client processes,\nheld {args.hold:.0f} s at full count while "
              f"tools/call change.open runs at {args.rate:.0f}/s (8 keep-alive connections). "
              "Loopback, 2 cores shared by everything.\ngateway: 2 threads, least_conn, keepalive 64 "
              "(gateway-nothp: the same with MIMALLOC_ALLOW_THP=0); nginx 1.22: 2 workers, least_conn, "
              "keepalive 64,\nproxy_buffering off; bare-pingora: Pingora's proxy alone, 2 threads, "
              f"to the first replica only; direct: the clients straight to the replicas. "
              f"Open-file limit {nofile}.\n")
        print(f"{'target':<14}{'held':>5}{'failed':>7}{'dropped':>8}{'RSS MB idle':>12}{'streams':>8}"
              f"{'closed':>7}{'KB/stream':>10}{'fds':>7}{'per replica':>12}"
              f"{'lag p50':>8}{'p99':>6}{'max':>6}{'>1s':>4}{'max gap':>8}"
              f"{'call p50':>9}{'p99':>6}{'calls':>6}{'err':>4}{'CPU':>5}")
        for r in results:
            proxy = r["name"] != "direct"
            ms = lambda x: f"{x * 1000:.0f}"  # noqa: E731
            if proxy:
                kb = (r["rss1"] - r["rss0"]) / max(r["held"], 1)
                cols = (f"{r['rss0'] / 1024:>12.1f}{r['rss1'] / 1024:>8.1f}{r['rss_after'] / 1024:>7.1f}"
                        f"{kb:>10.1f}{r['fds']:>+7}")
                cpu = f"{r['cpu'] * 100:>4.0f}%"
            else:
                cols = f"{'-':>12}{'-':>8}{'-':>7}{'-':>10}{'-':>7}"
                cpu = f"{'-':>5}"
            print(f"{r['name']:<14}{r['held']:>5}{sum(r['failed'].values()):>7}{r['dropped']:>8}{cols}"
                  f"{'/'.join(map(str, r['per_replica_end'])):>12}"
                  f"{ms(r['lag50']):>8}{ms(r['lag99']):>6}{ms(r['lag_max']):>6}{r['late_1s']:>4}"
                  f"{ms(r['max_gap']):>8}{r['call50'] * 1000:>9.1f}{ms(r['call99']):>6}{r['calls']:>6}"
                  f"{sum(r['call_errors'].values()):>4}{cpu}")
        print("\nheld: streams open at the end of the hold; failed: did not open (no endpoint event "
              "within 20 s); dropped: closed by the server side before the end.\nRSS: VmRSS summed "
              "over the proxy's processes, idle before the streams, at the end of the hold, and 1 s "
              "after the streams closed; KB/stream = (streams - idle) / held;\nfds: descriptors "
              "the proxy opened for the streams. lag (ms): arrival - schedule of each heartbeat in "
              "the hold window (schedule from the stream's best delivery); >1s: heartbeats more than "
              "1 s late;\nmax gap (ms): longest silence of a stream minus 1 s. call (ms): tools/call "
              "latency during the hold. CPU: the proxy's CPU time during the hold / hold time (100% = "
              "one core).")
        for r in results:
            extra = []
            if r["failed"]:
                extra.append("failed: " + ", ".join(f"{k} {v}" for k, v in r["failed"].items()))
            if r["call_errors"]:
                extra.append("call errors: " + ", ".join(f"{k} {v}" for k, v in r["call_errors"].items()))
            if r["name"] != "direct":
                extra.append(f"RSS max during the hold {r['rss_max'] / 1024:.1f} MB")
            extra.append(f"{r['beats']:,} heartbeats in the window; {r['opened']} opened in "
                         f"{r['ramp_s']:.1f} s; per replica at full count "
                         f"{'/'.join(map(str, r['per_replica']))}; call max {r['call_max'] * 1000:.0f} ms; "
                         f"other processes' CPU meanwhile {r['others']:.2f} cores")
            print(f"{r['name']}: " + "; ".join(extra))
        print(f"backend RSS at the end (both replicas): {backend_rss / 1024:.1f} MB")
        busy = [f"{r['name']} ({r['others']:.2f} cores)" for r in results if r["others"] > 0.1]
        if busy:
            print("WARNING: processes outside this benchmark used CPU during: " + ", ".join(busy)
                  + "; lag and call latencies there may be disturbed (memory and counts are not)")
        for r in results:
            if r["name"].startswith("gateway"):
                print(f"aim ({r['name']}): RSS with {r['held']} streams {r['rss1'] / 1024:.0f} MB "
                      f"({'under' if r['rss1'] < 200 * 1024 else 'OVER'} the 200 MB aim); latest "
                      f"heartbeat {r['lag_max'] * 1000:.0f} ms late "
                      f"({'within' if r['lag_max'] <= 1.0 else 'BEYOND'} the 1 s aim)")
        print(f"(whole run: {time.monotonic() - started:.0f} s)")
        bad = [r["name"] for r in results
               if r["held"] < args.streams or sum(r["call_errors"].values())]
        if bad:
            print("NOTE: not every stream was held, or tool calls failed, for: " + ", ".join(bad))
            return 1
        return 0
    finally:
        stack.stop()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
