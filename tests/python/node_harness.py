"""Node 22 and the npm packages of tests/conformance (installed by scripts/node.sh, which
`make test` runs through `scripts/setup.sh test`), and the gateway the Node tests talk through.

A missing toolchain fails the test with the command that installs it: it is never a skip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, Backend, Proc, free_port, run_gateway

CONFORMANCE_DIR = REPO / "tests" / "conformance"
NODE_HOME = Path(os.environ.get("NODE22_HOME", "/var/cache/mcp-gateway/node22"))
NODE = NODE_HOME / "bin" / "node"
SUITE = CONFORMANCE_DIR / "node_modules/@modelcontextprotocol/conformance/dist/index.js"


def node() -> Path:
    """The Node 22 binary, after checking that it and tests/conformance/node_modules are there."""
    fix = "run `bash scripts/node.sh` (make test runs it through scripts/setup.sh test)"
    try:
        version = subprocess.run([str(NODE), "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
    except OSError as e:
        pytest.fail(f"Node 22 is missing at {NODE} ({e}): {fix}")
    if not version.startswith("v22."):
        pytest.fail(f"{NODE} is {version or 'not runnable'}, not Node 22: {fix}")
    if not SUITE.exists() or not (CONFORMANCE_DIR / "node_modules" / ".lock-sha256").exists():
        pytest.fail(f"{CONFORMANCE_DIR}/node_modules is not installed: {fix}")
    return NODE


def node_env(cert: Path | None) -> dict[str, str]:
    env = {"PATH": f"{NODE.parent}:{os.environ.get('PATH', '')}",
           "HOME": os.environ.get("HOME", "/root"), "NO_COLOR": "1"}
    if cert is not None:
        # Node verifies the gateway's self-signed certificate against this file (and its CAs).
        env["NODE_EXTRA_CA_CERTS"] = str(cert)
    return env


def make_cert(directory: Path, *extra_names: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, 127.0.0.1 and `extra_names`: (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = ",".join(["DNS:localhost", "IP:127.0.0.1", *(f"DNS:{n}" for n in extra_names)])
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


class Gateway:
    def __init__(self, proc: Proc, https_port: int, http_port: int):
        self.proc = proc
        self.https = f"https://127.0.0.1:{https_port}"
        # Plain HTTP on the same routes (redirect_https = false).
        self.http = f"http://127.0.0.1:{http_port}"


def start_gateway(procs: list, tmp: Path, backend: Backend, cert: Path, key: Path) -> Gateway:
    """The release gateway in front of `backend`: HTTPS, plain HTTP without the redirect, and
    /mcp as an MCP-aware streaming route, as conf/local.toml routes it."""
    ports: set[int] = set()
    while len(ports) < 3:  # free_port() may hand out the same free port twice
        ports.add(free_port())
    http_port, https_port, admin_port = sorted(ports)
    conf = tmp / "gateway.toml"
    conf.write_text(f"""
[server]
pid_file = "{tmp}/gateway.pid"
upgrade_sock = "{tmp}/upgrade.sock"
access_log = "{tmp}/access.log"

[listeners.http]
address = "127.0.0.1:{http_port}"
redirect_https = false

[listeners.https]
address = "127.0.0.1:{https_port}"
cert = "{cert}"
key = "{key}"

[listeners.admin]
address = "127.0.0.1:{admin_port}"

[pools.backend]
servers = ["127.0.0.1:{backend.port}"]

[[routes]]
name = "mcp"
path = "/mcp"
pool = "backend"
stream = true
mcp = true

[[routes]]
name = "default"
path = "/"
pool = "backend"
""")
    proc = run_gateway(procs, conf, admin_port)
    return Gateway(proc, https_port, http_port)
