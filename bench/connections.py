#!/usr/bin/env python3
"""Memory per connection: the gateway and nginx holding 10,000 client connections.

For each server and each state a fresh server is started (so memory freed by an earlier
state cannot be reused), warmed with a request over HTTP and one over HTTPS, and its memory
read; then 10,000 connections are opened and left in the state, the memory read again, and
the connections closed:

  * keep-alive: HTTP/1.1, one complete `GET /healthz` answered, then idle;
  * half-sent:  HTTP/1.1 request line and two header lines sent, the header never ended;
  * TLS idle:   TLS handshake done (ALPN http/1.1), one `GET /healthz` answered, then idle;
  * stream:     `GET /sse` (2024-11-05 transport) answered with its first event and held open
                by the backend: a request in flight, with its upstream connection.

Memory is the sum over the server's processes (nginx: master and workers) of VmRSS from
/proc/PID/status and of Pss from /proc/PID/smaps_rollup; KB per connection is (after - before)
/ connections. It is user-space memory only: the kernel's socket buffers are not in it. The
connections are checked to be still open when the memory is read, and the server's open
descriptors counted (one per connection).

Both servers run like bench/gateway_bench.py's (2 worker threads / 2 worker processes,
least_conn over one backend replica with upstream keep-alive, the same headers), access logs
off, on loopback, with the open-file limit raised to 65536 by prlimit (or the hard limit where
that is lower and cannot be raised), so the figures do not depend on the gateway raising its
own limit. The client is this process (asyncio, non-blocking sockets) with its own limit raised
to the same value. The TLS certificate is a self-signed ECDSA P-256 one made with openssl.

Usage: bench/connections.py [--connections 10000] [--servers gateway,nginx]
                            [--states keepalive,half,tls] (also: stream, an open
                            SSE stream: two sockets per connection in the server)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb  # noqa: E402  (helpers: ports, readiness, the nginx headers)

REPO = gb.REPO
BIN = gb.BIN
SERVERS = ("gateway", "nginx")
STATES = {
    "keepalive": "idle HTTP/1.1 keep-alive",
    "half": "half-sent request header",
    "tls": "idle TLS after 1 request",
    "stream": "open SSE stream (GET /sse)",
}
WANT_NOFILE = 65536
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: conn-bench\r\n\r\n"
HALF = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: conn-bench\r\n"
# The 2024-11-05 transport's event stream: held open by the backend, its first event is the
# session's message endpoint. The server holds two sockets per stream (client and upstream).
STREAM = b"GET /sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
OPEN_TIMEOUT = 50.0  # both servers' header and keep-alive timeouts are 60 s or more


def raise_nofile() -> int:
    """Raise this process's open-file limit to WANT_NOFILE, or to the hard limit when the
    hard limit is lower and cannot be raised (no CAP_SYS_RESOURCE); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (WANT_NOFILE, WANT_NOFILE))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_ec_cert(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def gateway_config(d: Path, http: int, https: int, backend: int, cert: Path, key: Path) -> str:
    return f"""
[server]
threads = 2
grace_period = "1s"
access_log = "off"
pid_file = "{d}/gateway.pid"
upgrade_sock = "{d}/gateway.sock"
error_log_level = "warn"

[listeners.http]
address = "127.0.0.1:{http}"
redirect_https = false

[listeners.https]
address = "127.0.0.1:{https}"
cert = "{cert}"
key = "{key}"
http2 = true

[pools.backend]
balance = "least_conn"
servers = [ {{ address = "127.0.0.1:{backend}", weight = 1 }} ]
keepalive = 64

[[routes]]
name = "all"
path = "/"
pool = "backend"
stream = true
read_timeout = "60s"
max_body_size = "1m"
"""


def pids_of(root: int) -> list[int]:
    return [root] + gb.children(root)


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(VmRSS, Pss) in KB, summed over the processes."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def fd_count(pids: list[int]) -> int:
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def settle(pids: list[int], timeout: float = 10.0) -> tuple[int, int]:
    """Memory once it stops moving (two reads 0.5 s apart within 1%), or after timeout."""
    last = memory_kb(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        cur = memory_kb(pids)
        if abs(cur[0] - last[0]) <= 0.01 * max(last[0], 1):
            return cur
        last = cur
    return last


async def read_response(r: asyncio.StreamReader) -> None:
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise RuntimeError(f"answer {lines[0]!r}")
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
    if fields.get("connection", "").lower() == "close":
        raise RuntimeError("the server closes the connection after the request")


async def read_stream_start(r: asyncio.StreamReader) -> None:
    """The head of an event stream and its first event (`event: endpoint`)."""
    head = await r.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200") or b"text/event-stream" not in head.lower():
        raise RuntimeError(f"answer {status!r}, not an event stream")
    first = await r.readuntil(b"endpoint")
    if b"event: endpoint" not in first:
        raise RuntimeError(f"first event {first[:80]!r}")


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def open_conns(state: str, http: int, https: int, n: int, parallel: int = 128):
    """n connections left in `state`; returns the (reader, writer) pairs."""
    ctx = client_tls()
    sem = asyncio.Semaphore(parallel)
    conns = []

    async def one():
        async with sem:
            if state == "tls":
                r, w = await asyncio.open_connection("127.0.0.1", https, ssl=ctx,
                                                     server_hostname="localhost")
            else:
                r, w = await asyncio.open_connection("127.0.0.1", http)
            conns.append((r, w))
            w.write({"half": HALF, "stream": STREAM}.get(state, REQUEST))
            await w.drain()
            if state == "stream":
                await read_stream_start(r)
            elif state != "half":
                await read_response(r)

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), OPEN_TIMEOUT)
    return conns


async def close_conns(conns) -> None:
    for _, w in conns:
        w.close()
    await asyncio.wait(
        [asyncio.ensure_future(w.wait_closed()) for _, w in conns], timeout=20)


def still_open(conns) -> int:
    """Connections the server has not closed (no EOF seen, transport not closing)."""
    return sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())


class Server:
    def __init__(self, name: str, d: Path, backend: int, cert: Path, key: Path, nofile: int):
        self.name, self.dir = name, d
        self.http, self.https = gb.free_port(), gb.free_port()
        d.mkdir()
        lim = ["prlimit", f"--nofile={nofile}:{nofile}", "--"]
        if name == "gateway":
            conf = d / "gateway.toml"
            conf.write_text(gateway_config(d, self.http, self.https, backend, cert, key))
            argv = lim + [str(BIN / "gateway"), "-c", str(conf)]
        else:
            conf = d / "nginx.conf"
            conf.write_text(gb.nginx_conf(d, self.http, [backend], https=(self.https, cert, key), nofile=nofile,
                                            worker_connections=nofile - 64))
            argv = lim + ["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf),
                          "-g", "daemon off;"]
        self.log = open(d / "server.log", "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"]})
        gb.wait_http(f"http://127.0.0.1:{self.http}/healthz")
        gb.wait_http(f"https://127.0.0.1:{self.https}/healthz")

    def pids(self) -> list[int]:
        # prlimit execs the server, so the pid is the server's (nginx: the master).
        return pids_of(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def measure(name: str, state: str, n: int, tmp: Path, backend: int, cert: Path, key: Path,
            nofile: int) -> dict:
    srv = Server(name, tmp / f"{name}-{state}", backend, cert, key, nofile)
    try:
        # Warm both listeners (TLS context, upstream connections, lazy allocations).
        for _ in range(4):
            gb.wait_http(f"http://127.0.0.1:{srv.http}/healthz")
            gb.wait_http(f"https://127.0.0.1:{srv.https}/healthz")
        time.sleep(0.5)
        pids = srv.pids()
        rss0, pss0 = settle(pids)
        fds0 = fd_count(pids)
        loop = asyncio.new_event_loop()
        t0 = time.monotonic()
        conns = loop.run_until_complete(open_conns(state, srv.http, srv.https, n))
        opened_s = time.monotonic() - t0
        time.sleep(1.0)
        rss1, pss1 = settle(pids)
        fds1 = fd_count(pids)
        loop.run_until_complete(asyncio.sleep(0.05))  # let EOFs from the server arrive
        held = still_open(conns)
        loop.run_until_complete(close_conns(conns))
        loop.close()
        return {"rss0": rss0, "rss1": rss1, "pss0": pss0, "pss1": pss1, "fds": fds1 - fds0,
                "held": held, "n": n, "open_s": opened_s}
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--states", default="keepalive,half,tls")
    args = ap.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    states = [s for s in args.states.split(",") if s]
    if not set(servers) <= set(SERVERS) or not set(states) <= set(STATES):
        ap.error(f"servers among {SERVERS}, states among {tuple(STATES)}")
    for tool in ("nginx", "openssl", "prlimit"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (bash scripts/setup.sh bench installs it)")
            return 2
    for b in ("gateway", "backend"):
        if not (BIN / b).exists():
            print(f"bench: {BIN / b} is missing: cargo build --release --workspace --bins")
            return 2
    nofile = raise_nofile()
    if nofile < args.connections + 1024:
        print(f"bench: the open-file limit is {nofile} (hard limit); {args.connections} connections "
              "need more")
        return 2

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="connbench-"))
    stack = gb.Stack(tmp)
    try:
        cert, key = make_ec_cert(tmp)
        ws = tmp / "workspace"
        shutil.copytree(REPO / "examples" / "workspace", ws, symlinks=True)
        backend = gb.free_port()
        stack.spawn("backend", [str(BIN / "backend")], env={
            "PORT": str(backend), "HOST": "127.0.0.1", "WORKING_DIRECTORY": str(ws),
            "RATE_LIMIT": "0", "LOG_LEVEL": "warn"})
        gb.wait_http(f"http://127.0.0.1:{backend}/healthz")

        results = {}
        for state in states:
            for name in servers:
                r = measure(name, state, args.connections, tmp, backend, cert, key, nofile)
                results[(name, state)] = r
                print(f"  {name:<8} {STATES[state]:<26} opened in {r['open_s']:.1f} s, "
                      f"RSS {r['rss0'] / 1024:.1f} -> {r['rss1'] / 1024:.1f} MB", flush=True)

        print(f"\nMemory per connection: {args.connections:,} client connections per state, "
              "loopback, a fresh server per state;\n(after - before) / connections, summed over "
              "the server's processes (user space only: kernel socket buffers not included).\n"
              f"Servers' open-file limit {nofile}"
              + (f" ({WANT_NOFILE} wanted: the hard limit is lower and cannot be raised here)"
                 if nofile < WANT_NOFILE else "")
              + "; gateway 2 threads, nginx 2 worker processes.\n")
        print(f"{'server':<9}{'state':<28}{'held':>7}{'fds':>8}{'RSS MB before':>15}"
              f"{'after':>8}{'KB/conn RSS':>13}{'KB/conn PSS':>13}")
        bad = []
        for state in states:
            for name in servers:
                r = results[(name, state)]
                kb_rss = (r["rss1"] - r["rss0"]) / r["n"]
                kb_pss = (r["pss1"] - r["pss0"]) / r["n"]
                print(f"{name:<9}{STATES[state]:<28}{r['held']:>7}{r['fds']:>+8}"
                      f"{r['rss0'] / 1024:>15.1f}{r['rss1'] / 1024:>8.1f}{kb_rss:>13.1f}{kb_pss:>13.1f}")
                if r["held"] < r["n"] or r["fds"] < 0.99 * r["n"]:
                    bad.append(f"{name} {state}: {r['held']} of {r['n']} open, server fds "
                               f"+{r['fds']}")
        g = {s: results.get(("gateway", s)) for s in states}
        n = {s: results.get(("nginx", s)) for s in states}
        print()
        for s in states:
            if g[s] and n[s]:
                gk = (g[s]["rss1"] - g[s]["rss0"]) / g[s]["n"]
                nk = (n[s]["rss1"] - n[s]["rss0"]) / n[s]["n"]
                if nk > 0:
                    print(f"{STATES[s]}: gateway/nginx x{gk / nk:.2f} RSS per connection")
        print(f"(whole run: {time.monotonic() - started:.0f} s)")
        if bad:
            print("ERROR: connections were not all held:\n  " + "\n  ".join(bad))
            return 1
        return 0
    finally:
        stack.stop()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
