"""Reload under load: short calls and long SSE streams keep running through the real gateway
while the canary weight changes through 50 reloads (SIGHUP and `gateway -s reload`), with an
invalid file in the middle. Nothing may fail, every stream must get all its events, and each
new weight must be followed. Also: certificates are re-read on reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from policy_harness import Conn, PolicyGateway, start_upstream

WEIGHTS = [(100, 0), (0, 100), (50, 50), (90, 10), (10, 90)]


def body(stable: int, canary: int, w: tuple[int, int]) -> str:
    return f"""
[pools.stable]
servers = ["127.0.0.1:{stable}"]
[pools.canary]
servers = ["127.0.0.1:{canary}"]

[splits.mcp]
pools = {{ stable = {w[0]}, canary = {w[1]} }}
sticky = "none"

[[routes]]
name = "sse"
path = "/sse"
split = "mcp"
stream = true

[[routes]]
name = "calls"
path = "/"
split = "mcp"
"""


class Load:
    """Short calls on keep-alive connections and long SSE streams, in a background loop."""

    def __init__(self, port: int):
        self.port = port
        self.calls: list[tuple[float, int, str]] = []  # (sent at, status, pool)
        self.errors: list[str] = []
        self.streams: list[tuple[int, int, str]] = []  # (events expected, received, pool)
        self.stop = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.pending: list[asyncio.Future] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro) -> None:
        self.pending.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def caller(self) -> None:
        c = Conn(self.port)
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                s, _, b = await asyncio.wait_for(c.request("GET", "/whoami"), 10)
                self.calls.append((t, s, json.loads(b)["name"] if s == 200 else ""))
            except Exception as e:  # noqa: BLE001 (any failure is a finding)
                self.errors.append(f"call: {e!r}")
                await c.close()
        await c.close()

    async def stream(self, n: int, gap_ms: int) -> None:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", self.port)
            w.write(f"GET /sse?n={n}&gap_ms={gap_ms} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            assert b" 200 " in head.split(b"\r\n")[0], head
            data = b""
            while True:
                size = int((await asyncio.wait_for(r.readline(), 10)).strip(), 16)
                if size == 0:
                    break
                data += await r.readexactly(size)
                await r.readline()
            w.close()
            events = data.count(b"data: ")
            first = json.loads(data.split(b"data: ")[1].split(b"\n")[0]) if events else {}
            self.streams.append((n, events, str(first.get("i", ""))))
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"stream: {e!r}")
            self.streams.append((n, -1, ""))

    def finish(self) -> None:
        self.stop.set()
        for f in self.pending:
            f.result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_fifty_reloads_under_load_drop_nothing(procs, tmp_path):
    stable, canary = start_upstream(procs, "stable"), start_upstream(procs, "canary")
    gw = PolicyGateway(procs, tmp_path, body(stable, canary, WEIGHTS[0]))
    load = Load(gw.http_port)
    for _ in range(6):
        load.submit(load.stream(60, 200))  # 12 s each: they span most of the reloads
    for _ in range(4):
        load.submit(load.caller())
    time.sleep(0.5)

    windows: list[tuple[tuple[int, int], float, float]] = []
    errors_before = gw.metric("gateway_config_reloads_total", result="error")
    for i in range(50):
        if i == 25:
            # An invalid file changes nothing and is counted.
            gw.write_config("", raw=gw.config_text(body(stable, canary, WEIGHTS[0]))
                            .replace("split = \"mcp\"", "split = \"nope\""))
            gw.reload("sighup", expect_ok=False)
        if i % 10 == 5:
            for _ in range(2):
                load.submit(load.stream(20, 200))
        w = WEIGHTS[i % len(WEIGHTS)]
        gw.write_config(body(stable, canary, w))
        seen = gw.reload("sighup" if i % 2 == 0 else "cli")
        time.sleep(0.15)
        windows.append((w, seen, time.monotonic()))
    time.sleep(0.3)
    load.finish()

    assert not load.errors, load.errors[:10]
    bad = [c for c in load.calls if c[1] != 200]
    assert not bad, f"{len(bad)} failed calls of {len(load.calls)}: {bad[:5]}"
    broken = [s for s in load.streams if s[1] != s[0]]
    assert len(load.streams) == 6 + 10 and not broken, f"broken streams: {broken}"
    assert gw.metric("gateway_config_reloads_total", result="error") == errors_before + 1
    assert gw.metric("gateway_config_reloads_total", result="ok") >= 50
    assert gw.generation() == 51

    # Each new weight is followed: requests sent after the new generation was visible and
    # before the next rewrite all went to the pools with weight, in proportion for the rest.
    checked = 0
    for (ws, wc), start, end in windows:
        names = [p for t, _, p in load.calls if start < t < end]
        assert len(names) >= 5, f"too few calls in a window: {len(names)}"
        if ws == 0:
            assert set(names) == {"canary"}, (ws, wc, names)
        elif wc == 0:
            assert set(names) == {"stable"}, (ws, wc, names)
        checked += 1
    assert checked == 50
    both = [p for (ws, wc), s, e in windows if ws == wc for t, _, p in load.calls if s < t < e]
    assert 0.3 < both.count("canary") / len(both) < 0.7
    print(f"{len(load.calls)} calls, {len(load.streams)} streams, 50 reloads, 0 failures")


def openssl_cert(dir: Path, name: str) -> tuple[Path, Path]:
    cert, key = dir / f"{name}.pem", dir / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def served_serial(port: int) -> str:
    out = subprocess.run(
        f"openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null "
        f"2>/dev/null | openssl x509 -noout -serial", shell=True, capture_output=True,
        text=True, timeout=20)
    return out.stdout.strip()


def serial_of(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(cert)],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_certificates_are_reread_on_reload(procs, tmp_path):
    up = start_upstream(procs, "up")
    (tmp_path / "tls").mkdir()
    live_cert, live_key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    a = openssl_cert(tmp_path, "a")
    b = openssl_cert(tmp_path, "b")
    for src, dst in zip(a, (live_cert, live_key)):
        dst.write_bytes(src.read_bytes())
    gw = PolicyGateway(procs, tmp_path, f'[pools.up]\nservers = ["127.0.0.1:{up}"]\n'
                       '[[routes]]\npath = "/"\npool = "up"\n', tls=(live_cert, live_key))
    assert served_serial(gw.https_port) == serial_of(a[0])

    # Replace both files (each atomically), reload: new handshakes get the new certificate.
    for src, dst in zip(b, (live_cert, live_key)):
        tmp = dst.with_suffix(".new")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
    os.kill(gw.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while served_serial(gw.https_port) != serial_of(b[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served_serial(gw.https_port) == serial_of(b[0])

    # A broken certificate file is refused; the running certificate stays.
    live_cert.write_text("not a certificate\n")
    gw.reload("sighup", expect_ok=False)
    assert served_serial(gw.https_port) == serial_of(b[0])
