#!/usr/bin/env python3
"""Instructions per request, without the noise of wall-clock figures: gateway vs bare Pingora
vs nginx, each run under valgrind's callgrind in front of the same backend replica.

For each proxy and workload the proxy is started under callgrind (`--collect-atstart=yes`)
twice, sent N1 and then N2 requests by h2load (HTTP/1.1 keep-alive, a few connections, running
natively), and stopped by signal so that callgrind writes its totals. Start-up and shutdown
cost the same in both runs, so

    instructions per request = (Ir(N2) - Ir(N1)) / (N2 - N1).

The request count is exact: h2load's `-n`, checked against h2load's own 2xx count and the
backend's `http_server_requests_total`. Each run also sends one checked request first (the same
in both runs, so it cancels out).

Proxies:
  * gateway: target/release/gateway with the plain configuration of bench/gateway_bench.py
    (one pool, one route, least_conn, upstream keep-alive) but access log off and the
    HTTP/1.1 keep-alive request cap lifted (h2load does not reconnect);
  * bare Pingora: target/release/bare-pingora (bench/bare-pingora), a `ProxyHttp` with only
    `upstream_peer`;
  * nginx: Debian's, one process (`master_process off; daemon off; worker_processes 1;`),
    upstream keep-alive and the proxy headers of bench/gateway_bench.py, access log off.

Workloads: `GET /healthz` and the MCP `tools/call change.open` POST on /mcp.

It also writes, for the gateway on the MCP workload, the top functions by self and by
inclusive instructions per request (the difference of the two runs' profiles, per request) to
target/bench/cost-gateway-mcp-top.txt, and keeps the N2 run's callgrind file beside it.

Usage: bench/cost.sh [--n1 2000] [--n2 12000] [--connections 4] [--threads 2]
                     [--proxies gateway,bare-pingora,nginx] [--workloads healthz,mcp]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb  # noqa: E402  (helpers: ports, backend, the tools/call check)

REPO = gb.REPO
BIN = gb.BIN
# The binaries are copied here at start: others may rebuild target/release during a run, and
# the N1 and N2 runs of a proxy must be the same program.
RUN_BIN: Path = BIN
OUT_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "bench"
PROXIES = ("gateway", "bare-pingora", "nginx")
WORKLOADS = ("healthz", "mcp")
MCP_HEADERS = ["Content-Type: application/json", "Accept: application/json, text/event-stream",
               "MCP-Protocol-Version: 2025-06-18", f"Authorization: Bearer {gb.TOKEN}"]


def listening(port: int) -> bool:
    """The port is in LISTEN state (no connection made, so nothing is added to the count)."""
    want = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if len(f) > 3 and f[1].rsplit(":", 1)[-1] == want and f[3] == "0A":
                    return True
        except OSError:
            pass
    return False


def backend_requests(port: int, route: str) -> int:
    """The backend's http_server_requests_total for one route, 2xx answers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0
    for line in text.splitlines():
        if (line.startswith("http_server_requests_total{") and f'route="{route}"' in line
                and 'status="2' in line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def callgrind_total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals/summary line (did the process exit cleanly?)")


def gateway_config(tmp: Path, port: int, backend: int, threads: int) -> str:
    return f"""
[server]
threads = {threads}
grace_period = "5s"
access_log = "off"
pid_file = "{tmp}/gateway.pid"
upgrade_sock = "{tmp}/gateway.sock"
error_log_level = "warn"

[limits]
keepalive_requests = 1000000

[listeners.http]
address = "127.0.0.1:{port}"
redirect_https = false

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


def proxy_argv(name: str, run_dir: Path, port: int, backend: int, threads: int) -> tuple[list[str], int]:
    """The proxy's command line and the signal that stops it cleanly."""
    if name == "gateway":
        conf = run_dir / "gateway.toml"
        conf.write_text(gateway_config(run_dir, port, backend, threads))
        return [str(RUN_BIN / "gateway"), "-c", str(conf)], signal.SIGTERM
    if name == "bare-pingora":
        return [str(RUN_BIN / "bare-pingora"), f"127.0.0.1:{port}", f"127.0.0.1:{backend}",
                str(threads)], signal.SIGTERM
    conf = run_dir / "nginx.conf"
    conf.write_text(gb.nginx_conf(run_dir, port, [backend], single_process=True, worker_connections=1024))
    return ["nginx", "-p", str(run_dir), "-e", str(run_dir / "error.log"), "-c", str(conf)], signal.SIGQUIT


def h2load(url: str, n: int, conns: int, body: Path | None) -> None:
    argv = ["h2load", "--h1", "-n", str(n), "-c", str(conns), "-t", "1"]
    if body is not None:
        argv += ["-d", str(body)]
        for h in MCP_HEADERS:
            argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    s = re.search(r"status codes: (\d+) 2xx", out)
    if not (m and s) or int(m.group(4)) != n or int(s.group(1)) != n:
        raise RuntimeError(f"h2load did not get {n} 2xx answers from {url}:\n{out}")


def check(url: str, workload: str, rpc: dict) -> None:
    if workload == "mcp":
        gb.check_tools_call("proxy", url, rpc)
    else:
        with urllib.request.urlopen(url, timeout=60) as r:
            if r.status != 200:
                raise RuntimeError(f"{url} answered {r.status}")


def measure(name: str, workload: str, n: int, tmp: Path, backend: int, args, rpc: dict,
            body: Path) -> tuple[int, Path, float]:
    """One run under callgrind: (total Ir, callgrind file, wall seconds)."""
    run_dir = tmp / f"{name}-{workload}-{n}"
    run_dir.mkdir()
    port = gb.free_port()
    argv, stop = proxy_argv(name, run_dir, port, backend, args.threads)
    out = run_dir / "callgrind.out"
    vg = ["valgrind", "--tool=callgrind", "--collect-atstart=yes", f"--callgrind-out-file={out}"]
    t0 = time.monotonic()
    log = open(run_dir / "proxy.log", "wb")
    p = subprocess.Popen(vg + argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env={"PATH": os.environ["PATH"]})
    try:
        deadline = time.monotonic() + 120
        while not listening(port):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not listen on {port}; see {run_dir / 'proxy.log'}")
            time.sleep(0.1)
        route = "/mcp" if workload == "mcp" else "/healthz"
        url = f"http://127.0.0.1:{port}{route}"
        before = backend_requests(backend, route)
        check(url, workload, rpc)
        h2load(url, n, args.connections, body if workload == "mcp" else None)
        got = backend_requests(backend, route) - before
        if got != n + 1:
            raise RuntimeError(f"{name} {workload}: the backend counted {got} requests, not {n + 1}")
        p.send_signal(stop)
        rc = p.wait(timeout=120)
        if rc != 0:
            raise RuntimeError(f"{name} exited with {rc} after signal {stop}; see {run_dir / 'proxy.log'}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    return callgrind_total(out), out, time.monotonic() - t0


LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)\s*$")


def annotate(path: Path, inclusive: bool) -> dict[str, int]:
    """Ir by function from callgrind_annotate (all functions, no threshold), keyed by short()
    name. A function may be listed more than once (per object, per inlining context): self
    costs of those entries add up, inclusive ones overlap (the largest is kept)."""
    argv = ["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}",
            str(path)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
    res: dict[str, int] = {}
    in_table = False
    for line in out.splitlines():
        if "file:function" in line:
            in_table = True
            continue
        if not in_table:
            continue
        if line.startswith("---") or line.startswith("-- "):
            if res:
                break
            continue
        m = LINE.match(line)
        if m:
            # The same function may be listed once per object it was found in: merge them.
            fn = short(re.sub(r" \[[^\]]*\]$", "", m.group(2)))
            ir = int(m.group(1).replace(",", ""))
            res[fn] = max(res.get(fn, 0), ir) if inclusive else res.get(fn, 0) + ir
    return res


def short(fn: str) -> str:
    """file:function with the registry, toolchain and repository prefixes cut."""
    fn = re.sub(r"/root/\.cargo/registry/src/[^/]+/", "", fn)
    fn = re.sub(r"/rustc/[0-9a-f]+/library/", "std:", fn)
    fn = fn.replace(str(REPO) + "/", "")
    return fn if len(fn) <= 240 else fn[:237] + "..."


# Frames of the runtime under every request (std, tokio's scheduler, libc, unknown).
RUNTIME = re.compile(r"^(std:|tokio-|\./|\?\?\?|/usr/)")


def crate_of(fn: str) -> str:
    """Where a function's code lives: a crate (from its source path), libc, std or the binary."""
    if fn.startswith("std:"):
        return "std/core/alloc"
    path = fn.split(":", 1)[0]
    if path.startswith("gateway/src/"):
        return "gateway (own code)"
    m = re.match(r"vendor/([^/]+)/", path)
    if m:
        return f"{m.group(1)} (vendor/)"
    m = re.match(r"([A-Za-z0-9_-]+?)-\d+\.\d+[^/]*/", path)
    if m:
        return m.group(1)
    if path.startswith("./") or path.startswith("/usr/") or path.startswith("???"):
        return "libc, ld.so, unknown"
    return "other"


def write_top(label: str, f1: Path, f2: Path, n1: int, n2: int, dest: Path, keep: Path,
              top: int = 15) -> None:
    per_req = n2 - n1
    lines = [f"{label}, MCP tools/call change.open: instructions per request by function",
             f"(callgrind Ir of the {n2}-request run minus the {n1}-request run, / {per_req}: start-up "
             "cancels out;",
             f" the {n2}-request profile is {keep}:",
             " callgrind_annotate --inclusive=yes it, or open it in kcachegrind.",
             " Note: valgrind counts each iteration of `rep movsb` as one instruction, so glibc's",
             " memcpy/memset of larger buffers weigh more here than in CPU time.)", ""]
    self_a, self_b = annotate(f1, False), annotate(f2, False)
    incl_a, incl_b = annotate(f1, True), annotate(f2, True)
    self_per = {fn: (self_b.get(fn, 0) - self_a.get(fn, 0)) / per_req for fn in self_b}
    incl_per = {fn: (incl_b.get(fn, 0) - incl_a.get(fn, 0)) / per_req for fn in incl_b}
    total = sum(self_per.values())

    def table(title: str, items: dict[str, float], what: str = "function") -> None:
        lines.append(title)
        lines.append(f"{'Ir/req':>10} {'share':>6}  {what}")
        for fn, v in sorted(items.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"{v:>10.0f} {100 * v / total:>5.1f}%  {fn}")
        lines.append("")

    lines.append(f"total: {total:,.0f} Ir per request")
    lines.append("")
    by_crate: dict[str, float] = {}
    for fn, v in self_per.items():
        by_crate[crate_of(fn)] = by_crate.get(crate_of(fn), 0) + v
    table("self Ir per request by crate (where the code lives; inlined code counts where it "
          "was written):", by_crate, "crate")
    table(f"top {top} functions by self Ir per request:", self_per)
    table(f"top {top} by inclusive Ir per request, runtime frames (std, tokio, libc) left out:",
          {fn: v for fn, v in incl_per.items() if not RUNTIME.match(fn)})
    table(f"top {top} of the gateway's own code (gateway/src) by inclusive Ir per request:",
          {fn: v for fn, v in incl_per.items() if crate_of(fn) == "gateway (own code)"})
    dest.write_text("\n".join(lines))


def snapshot_binaries(dest: Path, names: tuple[str, ...]) -> Path:
    """Copies of the release binaries, so a rebuild during the run changes nothing; prints
    when each was built."""
    dest.mkdir()
    for n in names:
        shutil.copy2(BIN / n, dest / n)
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((BIN / n).stat().st_mtime))
        print(f"  {BIN / n} (built {built})")
    return dest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--n2", type=int, default=12000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2,
                    help="worker threads of the gateway and bare Pingora (nginx: one process)")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    args = ap.parse_args()
    proxies = [p for p in args.proxies.split(",") if p]
    workloads = [w for w in args.workloads.split(",") if w]
    if not set(proxies) <= set(PROXIES) or not set(workloads) <= set(WORKLOADS):
        ap.error(f"proxies among {PROXIES}, workloads among {WORKLOADS}")
    if args.n2 <= args.n1 or args.n1 < args.connections:
        ap.error("need n2 > n1 >= connections")
    for tool in ("valgrind", "callgrind_annotate", "h2load", "nginx"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (bash scripts/setup.sh bench installs it)")
            return 2
    for b in ("gateway", "bare-pingora", "backend"):
        if not (BIN / b).exists():
            print(f"bench: {BIN / b} missing: cargo build --release --workspace --bins")
            return 2

    global RUN_BIN
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="costbench-"))
    stack = gb.Stack(tmp)
    try:
        RUN_BIN = snapshot_binaries(tmp / "bin", ("gateway", "bare-pingora", "backend"))
        ws = tmp / "workspace"
        shutil.copytree(REPO / "examples" / "workspace", ws, symlinks=True)
        backend = gb.free_port()
        stack.spawn("backend", [str(RUN_BIN / "backend")], env={
            "PORT": str(backend), "HOST": "127.0.0.1", "WORKING_DIRECTORY": str(ws),
            "AUTH_TOKENS": gb.TOKEN, "RATE_LIMIT": "0", "LOG_LEVEL": "warn"})
        gb.wait_http(f"http://127.0.0.1:{backend}/healthz")
        slug = gb.first_change_slug(f"http://127.0.0.1:{backend}")
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": gb.TOOL, "arguments": {"slug": slug}}}
        body = tmp / "body.json"
        body.write_text(json.dumps(rpc))
        gb.check_tools_call("direct", f"http://127.0.0.1:{backend}/mcp", rpc)

        OUT_DIR.mkdir(parents=True, exist_ok=True)
        per_req: dict[tuple[str, str], float] = {}
        for workload in workloads:
            for name in proxies:
                ir1, f1, t1 = measure(name, workload, args.n1, tmp, backend, args, rpc, body)
                ir2, f2, t2 = measure(name, workload, args.n2, tmp, backend, args, rpc, body)
                per_req[(workload, name)] = (ir2 - ir1) / (args.n2 - args.n1)
                print(f"  {workload:<8}{name:<13} Ir({args.n1})={ir1:,}  Ir({args.n2})={ir2:,}"
                      f"  ({t1:.0f} s + {t2:.0f} s under valgrind)", flush=True)
                if workload == "mcp" and name != "nginx":
                    # Profiles by function: the gateway's is the one to cut CPU from, bare
                    # Pingora's the floor to compare it with.
                    keep = OUT_DIR / f"callgrind.{name}-mcp.out"
                    shutil.copy(f2, keep)
                    write_top(name, f1, f2, args.n1, args.n2, OUT_DIR / f"cost-{name}-mcp-top.txt", keep)

        print(f"\nInstructions per request (callgrind Ir, (Ir({args.n2}) - Ir({args.n1})) / "
              f"{args.n2 - args.n1}), h2load --h1 -c{args.connections} keep-alive, one backend "
              f"replica;\ngateway and bare Pingora with {args.threads} worker threads, nginx one "
              "process (master_process off), access logs off.\n")
        print(f"{'workload':<34}{'gateway':>12}{'bare Pingora':>14}{'nginx':>12}"
              f"{'gateway/nginx':>15}{'bare/nginx':>12}{'gateway/bare':>14}")
        labels = {"healthz": "GET /healthz", "mcp": f"POST /mcp tools/call {gb.TOOL}"}
        for workload in workloads:
            v = {name: per_req.get((workload, name)) for name in PROXIES}
            cells = "".join(f"{(f'{v[k]:,.0f}' if v[k] is not None else '-'):>{w}}"
                            for k, w in (("gateway", 12), ("bare-pingora", 14), ("nginx", 12)))

            def ratio(a, b, w):
                return f"{(f'x{v[a] / v[b]:.2f}' if v[a] and v[b] else '-'):>{w}}"
            print(f"{labels[workload]:<34}{cells}{ratio('gateway', 'nginx', 15)}"
                  f"{ratio('bare-pingora', 'nginx', 12)}{ratio('gateway', 'bare-pingora', 14)}")
        print("\nThese are instruction counts, not times: they do not depend on the machine's load "
              "or clock,\nand repeated runs agree to within about 1% "
              "(thread scheduling\nand hash seeds vary a little), so one run per cell is enough. "
              "They leave out the kernel\n(syscalls, loopback TCP) and cache misses.")
        if ("mcp", "gateway") in per_req:
            print(f"\nGateway MCP profile (Ir per request by crate, top 15 functions by self and by "
                  f"inclusive Ir):\n  {OUT_DIR / 'cost-gateway-mcp-top.txt'}")
        if ("mcp", "bare-pingora") in per_req:
            print(f"  (bare Pingora's, to compare: {OUT_DIR / 'cost-bare-pingora-mcp-top.txt'})")
        print(f"(whole run: {time.monotonic() - started:.0f} s)")
        return 0
    finally:
        stack.stop()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
