#!/usr/bin/env python3
"""Where the gateway's memory per connection goes: heap bytes by allocation site.

bench/connections.py says how many KB a connection costs; this says what they are. The gateway
runs under valgrind's DHAT, built with the system allocator (`--features system-alloc`, in its
own target dir `target/heap` so the shared release build is left alone: DHAT sees only what goes
through malloc, and mimalloc does not). Connections are opened and left in a state as
bench/connections.py leaves them (same gateway configuration, same client), and DHAT's snapshot
at the heap's peak (t-gmax, with every connection open) is divided by the connections: bytes
and blocks per connection for each allocation site, named by the first frame outside the
allocator and the standard library.

The figures are heap bytes requested, without the allocator's own overhead and without the
kernel's socket buffers; bench/connections.py's RSS figures include the former.

Usage: bench/heap.py [--connections 2000] [--states keepalive,half,tls,stream] [--top 12]
                     [--callers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import connections as cb  # noqa: E402  (the gateway config, the client, the states)
import gateway_bench as gb  # noqa: E402  (ports, readiness)

REPO = gb.REPO
TARGET = REPO / "target" / "heap"

# Frames that only say "an allocation happened": the allocator, Box/Vec/BytesMut growth.
PLUMBING = re.compile(
    r"^(malloc|calloc|realloc|CRYPTO_malloc|CRYPTO_zalloc|CRYPTO_realloc|memalign|posix_memalign|aligned_malloc|__rustc::|__rdl_|"
    r"alloc::|core::|<alloc::|<core::|hashbrown::|bytes::|UnknownInlinedFun \(library/|"
    r"(alloc|alloc_impl|alloc_impl_runtime|allocate|box_new_uninit|grow_\w+|finish_grow|"
    r"with_capacity\w*|new\w*|pin\w*|reserve\w*|try_reserve\w*|do_reserve_and_handle|"
    r"unwrap_or_else\w*|call_once\w*) ?[<(])")
SOURCE = re.compile(r"\(([^()]*?\.(?:rs|c)):(\d+)(?::\d+)?\)$")


def build() -> Path:
    subprocess.run(["cargo", "build", "--release", "-p", "gateway", "--features", "system-alloc",
                    "--target-dir", str(TARGET)], cwd=REPO, check=True)
    return TARGET / "release" / "gateway"


def site(frames: list[str], callers: int = 0) -> str:
    """The first frame that is not allocator plumbing, as `file:line  function`: the source's
    last three path parts, and the first named function from there up (closures and inlined
    frames name none); with `callers`, that many of the frames above it too, as `file:line`."""
    frames = [re.sub(r"^0x[0-9A-Fa-f]+: ", "", f) for f in frames]
    for i, f in enumerate(frames):
        if PLUMBING.search(f) or "library/alloc" in f or "library/core" in f:
            continue
        m = SOURCE.search(f)
        where = "/".join(Path(m.group(1)).parts[-3:]) + f":{m.group(2)}" if m else "?"
        name = ""
        for g in frames[i:]:
            g = SOURCE.sub("", g).strip()
            if g and not g.startswith(("UnknownInlinedFun", "{closure", "{async")):
                name = re.sub(r"<[^<>]*(<[^<>]*(<[^<>]*>[^<>]*)*>[^<>]*)*>", "<..>", g)
                break
        up = []
        for g in frames[i + 1:]:
            if len(up) >= callers:
                break
            m2 = SOURCE.search(g)
            if m2 and "library/" not in m2.group(1):
                up.append("/".join(Path(m2.group(1)).parts[-2:]) + f":{m2.group(2)}")
        return f"{where:<36} {name[:80]}" + "".join(f"\n{'':22}<- {u}" for u in up)
    return "(allocator only)"


def measure(binary: Path, state: str, n: int, tmp: Path, backend: int, cert: Path,
            key: Path, nofile: int, callers: int = 0) -> tuple[int, list[tuple[int, int, str]], int]:
    d = tmp / f"heap-{state}"
    d.mkdir()
    http, https = gb.free_port(), gb.free_port()
    conf = d / "gateway.toml"
    conf.write_text(cb.gateway_config(d, http, https, backend, cert, key))
    out = d / "dhat.json"
    log = open(d / "gateway.log", "wb")
    proc = subprocess.Popen(
        ["prlimit", f"--nofile={nofile}:{nofile}", "--", "valgrind", "--tool=dhat",
         f"--dhat-out-file={out}", str(binary), "-c", str(conf)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"]})
    held = 0
    try:
        gb.wait_http(f"http://127.0.0.1:{http}/healthz", timeout=120)
        gb.wait_http(f"https://127.0.0.1:{https}/healthz", timeout=120)
        loop = asyncio.new_event_loop()
        conns = loop.run_until_complete(cb.open_conns(state, http, https, n))
        time.sleep(2.0)
        loop.run_until_complete(asyncio.sleep(0.05))
        held = cb.still_open(conns)
        loop.run_until_complete(cb.close_conns(conns))
        loop.close()
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    data = json.loads(out.read_text())
    ftbl = data["ftbl"]
    by_site: dict[str, list[int]] = {}
    total = 0
    for pp in data["pps"]:
        gbytes, gblocks = pp.get("gb", 0), pp.get("gbk", 0)
        if not gbytes:
            continue
        total += gbytes
        s = by_site.setdefault(site([ftbl[i] for i in pp["fs"]], callers), [0, 0])
        s[0] += gbytes
        s[1] += gblocks
    rows = sorted(((b, k, s) for s, (b, k) in by_site.items()), reverse=True)
    return total, rows, held


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--states", default="keepalive,half,tls")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--callers", type=int, default=0,
                    help="also print this many calling frames of each site")
    args = ap.parse_args()
    states = [s for s in args.states.split(",") if s]
    if not set(states) <= set(cb.STATES):
        ap.error(f"states among {tuple(cb.STATES)}")
    for tool in ("valgrind", "openssl", "prlimit", "cargo"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (bash scripts/setup.sh bench installs it)")
            return 1
    binary = build()
    nofile = cb.raise_nofile()
    if not (gb.BIN / "backend").exists():
        print(f"bench: {gb.BIN / 'backend'} is missing: cargo build --release --workspace --bins")
        return 2
    with tempfile.TemporaryDirectory(prefix="heap-bench-") as t:
        tmp = Path(t)
        stack = gb.Stack(tmp)
        try:
            ws = tmp / "workspace"
            shutil.copytree(REPO / "examples" / "workspace", ws, symlinks=True)
            backend = gb.free_port()
            stack.spawn("backend", [str(gb.BIN / "backend")], env={
                "PORT": str(backend), "HOST": "127.0.0.1", "WORKING_DIRECTORY": str(ws),
                "RATE_LIMIT": "0", "LOG_LEVEL": "warn"})
            gb.wait_http(f"http://127.0.0.1:{backend}/healthz")
            cert, key = cb.make_ec_cert(tmp)
            for state in states:
                n = args.connections
                total, rows, held = measure(binary, state, n, tmp, backend, cert, key, nofile,
                                            args.callers)
                print(f"\n{cb.STATES[state]}: {n} connections ({held} still open when counted), "
                      f"heap at its peak {total / n:,.0f} B per connection", flush=True)
                print(f"{'B/conn':>8} {'blocks/conn':>11}  allocation site")
                for b, k, s in rows[: args.top]:
                    print(f"{b / n:8,.0f} {k / n:11.2f}  {s}")
                rest = sum(b for b, _, _ in rows[args.top:])
                print(f"{rest / n:8,.0f} {'':11}  (everything else)")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
