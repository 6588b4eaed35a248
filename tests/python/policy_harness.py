"""Harness for the traffic-policy tests (rate zones, splits, reload): a real gateway
on plain HTTP (and optionally HTTPS) whose config file a test rewrites and reloads, the
purpose-built upstreams (upstreams.py) as named pools, a small raw HTTP/1.1 client fast enough
for 10,000 requests, and readers for /metrics and /status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import Proc, bin_path, free_port, http_status, wait_for_port

HERE = Path(__file__).resolve().parent


def distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:  # free_port() may hand out the same port twice
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def start_upstream(procs: list, name: str) -> int:
    port = free_port()
    p = Proc(f"upstream-{name}", [sys.executable, str(HERE / "upstreams.py"), "--port", str(port),
                                  "--name", name])
    procs.append(p)
    if not wait_for_port(port):
        raise RuntimeError(f"upstream {name} did not listen:\n{p.log()}")
    return port


class PolicyGateway:
    """The gateway binary on a config this test owns. `body` holds pools, zones, splits, routes."""

    def __init__(self, procs: list, tmp: Path, body: str, tls: tuple[Path, Path] | None = None,
                 real_ip: str = ""):
        self.procs = procs
        self.tmp = tmp
        self.http_port, self.https_port, self.admin_port = distinct_ports(3)
        self.tls = tls
        self.real_ip = real_ip
        self.config_path = tmp / "gateway.toml"
        self.write_config(body)
        self.proc = Proc("gateway", [str(bin_path("gateway")), "-c", str(self.config_path)],
                         env={"RUST_LOG": "info"})
        procs.append(self.proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not self.proc.running():
                raise RuntimeError(f"gateway exited:\n{self.proc.log()}")
            if http_status(self.admin("/healthz"), timeout=0.5) == 200 and \
                    wait_for_port(self.http_port, 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not come up:\n{self.proc.log()}")

    def config_text(self, body: str, real_ip: str | None = None) -> str:
        real_ip = self.real_ip if real_ip is None else real_ip
        https = ""
        if self.tls:
            https = (f'[listeners.https]\naddress = "127.0.0.1:{self.https_port}"\n'
                     f'cert = "{self.tls[0]}"\nkey = "{self.tls[1]}"\n')
        return f"""
[server]
threads = 2
pid_file = "{self.tmp}/gateway.pid"
upgrade_sock = "{self.tmp}/upgrade.sock"
access_log = "{self.tmp}/access.log"

[listeners.http]
address = "127.0.0.1:{self.http_port}"
redirect_https = false

{https}
[listeners.admin]
address = "127.0.0.1:{self.admin_port}"

{real_ip}

{body}
"""

    def write_config(self, body: str, real_ip: str | None = None, raw: str | None = None) -> None:
        """Atomically: a reader (the gateway) sees the old file or the new one, never half."""
        text = raw if raw is not None else self.config_text(body, real_ip)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def generation(self) -> int:
        return self.status()["generation"]

    def reload(self, how: str = "sighup", expect_ok: bool = True, timeout: float = 10) -> float:
        """Reload and wait until the new generation serves; returns the time it was seen."""
        before = self.generation()
        errors_before = self.metric("gateway_config_reloads_total", result="error")
        if how == "sighup":
            os.kill(self.proc.pid, signal.SIGHUP)
        else:
            out = subprocess.run([str(bin_path("gateway")), "-s", "reload", "-c",
                                  str(self.config_path)], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if expect_ok and self.generation() > before:
                return time.monotonic()
            if not expect_ok and self.metric("gateway_config_reloads_total",
                                             result="error") > errors_before:
                assert self.generation() == before
                return time.monotonic()
            time.sleep(0.01)
        raise AssertionError(f"reload ({how}, expect_ok={expect_ok}) not seen; log:\n"
                             f"{self.proc.log()[-3000:]}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def status(self) -> dict:
        with urllib.request.urlopen(self.admin("/status"), timeout=5) as r:
            return json.load(r)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.admin("/metrics"), timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return metric_sum(self.metrics_text(), name, **labels)


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        labels: dict[str, str] = {}
        if "{" in name_labels:
            name, _, rest = name_labels.partition("{")
            for part in rest.rstrip("}").split('",'):
                if "=" in part:
                    k, _, v = part.partition("=")
                    labels[k.strip(",")] = v.strip('"')
        else:
            name = name_labels
        out.append((name, labels, float(value)))
    return out


def metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(v for n, l, v in parse_metrics(text)
               if n == name and all(l.get(k) == want for k, want in labels.items()))


class Conn:
    """One HTTP/1.1 keep-alive connection (asyncio), for many requests quickly."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        h = {"Host": "127.0.0.1", "Content-Length": str(len(body))}
        h.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status, hdrs, data = await read_response(self.reader)
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return status, hdrs, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            hdrs[k] = f"{hdrs[k]}, {v.strip()}" if k in hdrs else v.strip()
    if "content-length" in hdrs:
        data = await reader.readexactly(int(hdrs["content-length"]))
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        data = b""
        while True:
            size = int((await reader.readline()).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            data += await reader.readexactly(size)
            await reader.readline()
    else:
        data = b""
    return status, hdrs, data
