"""Harness for the Python end-to-end tests.

Starts the real release binaries on free loopback ports and stops them by pid
at the end of each test. Binaries come from `cargo build --release` (make test
builds them first); nothing here builds or mocks them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def bin_path(name: str) -> Path:
    path = TARGET / "release" / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `cargo build --release --workspace --bins`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Proc:
    """A child process with its output in a log file; stopped by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        self.name = name
        self._dir = tempfile.TemporaryDirectory(prefix=f"{name.replace(':', '-')}-")
        self.log_path = Path(self._dir.name) / "out.log"
        self._log = open(self.log_path, "wb")
        full_env = {"PATH": os.environ.get("PATH", "")}
        full_env.update(env or {})
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=full_env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        # SIGTERM first so a process with children (nginx's master) takes them down
        # with it; SIGKILL only if it has not exited within a few seconds.
        if self.running():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()
        self._dir.cleanup()


class Backend:
    def __init__(self, proc: Proc, port: int, workspace: Path):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workspace = workspace


def run_gateway(procs: list, conf: Path, admin_port: int) -> Proc:
    """The gateway on `conf`, once its admin /readyz answers 200 (every route has a healthy
    backend); the test fails with the gateway's log if it exits or is not ready in 15 s."""
    proc = Proc("gateway", [str(bin_path("gateway")), "-c", str(conf)])
    procs.append(proc)
    deadline = time.monotonic() + 15
    while http_status(f"http://127.0.0.1:{admin_port}/readyz", timeout=0.5) != 200:
        if not proc.running() or time.monotonic() > deadline:
            raise RuntimeError(f"gateway did not become ready:\n{proc.log()}")
        time.sleep(0.05)
    return proc


def prom_query(base: str, expr: str) -> list[dict]:
    """An instant query against Prometheus's HTTP API: the result vector."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def run_prometheus(procs: list, tmp: Path, gateway_admin: int, backends: list[int],
                   rule_files: list[str]) -> str:
    """Debian's Prometheus scraping the gateway's admin port and the backends every second,
    with `rule_files` copied from conf/; returns its base URL once every target is up (30 s at
    most, else the test fails with its log)."""
    d = tmp / "prom"
    d.mkdir()
    for f in rule_files:
        shutil.copy(REPO / "conf" / f, d / f)
    port = free_port()
    targets = ", ".join(f"'127.0.0.1:{b}'" for b in backends)
    (d / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{", ".join(rule_files)}]
scrape_configs:
  - job_name: gateway
    static_configs: [{{targets: ['127.0.0.1:{gateway_admin}']}}]
  - job_name: backend
    static_configs: [{{targets: [{targets}]}}]
""")
    prom = Proc("prometheus", ["prometheus", f"--config.file={d / 'prometheus.yml'}",
                               f"--storage.tsdb.path={d / 'data'}",
                               f"--web.listen-address=127.0.0.1:{port}"])
    procs.append(prom)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert prom.running(), prom.log()
        try:
            up = prom_query(base, "up")
        except OSError:
            up = []
        if len(up) == 1 + len(backends) and all(r["value"][1] == "1" for r in up):
            return base
        assert time.monotonic() < deadline, f"targets not up: {up}\n{prom.log()}"
        time.sleep(0.3)


@pytest.fixture
def procs():
    """Collects every process a test starts and stops them all at teardown."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A private copy of examples/workspace (the project root holding openspec/)."""
    dest = tmp_path / "workspace"
    shutil.copytree(REPO / "examples" / "workspace", dest, symlinks=True)
    return dest


@pytest.fixture
def start_backend(procs, workspace):
    """start_backend(env={...}, workspace=path) -> Backend, waiting for /healthz."""

    def start(env: dict[str, str] | None = None, workspace_dir: Path | None = None,
              port: int | None = None) -> Backend:
        port = port or free_port()
        ws = workspace_dir or workspace
        full_env = {"PORT": str(port), "HOST": "127.0.0.1", "WORKING_DIRECTORY": str(ws),
                    "LOG_LEVEL": "info"}
        full_env.update(env or {})
        proc = Proc(f"backend:{port}", [str(bin_path("backend"))], env=full_env)
        procs.append(proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not proc.running():
                raise RuntimeError(f"backend exited during start-up:\n{proc.log()}")
            if http_status(f"http://127.0.0.1:{port}/healthz", timeout=0.5) == 200:
                return Backend(proc, port, ws)
            time.sleep(0.05)
        raise RuntimeError(f"backend did not become healthy:\n{proc.log()}")

    return start


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1: (cert.pem, key.pem)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def start_nginx(procs: list, tmp: Path, upstream: str, server: str, http_extra: str = "") -> int:
    """Debian's nginx in the foreground under `tmp`, in front of `upstream` (the body of its
    `upstream up { ... }` block) with `server` (the lines of its one `server` block, after
    `listen`). Returns the port it listens on."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (tmp / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    {http_extra}
    upstream up {{ {upstream} }}
    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
""")
    p = Proc("nginx", [nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"])
    procs.append(p)
    if not wait_for_port(port):
        raise RuntimeError(f"nginx did not listen:\n{p.log()}")
    return port

