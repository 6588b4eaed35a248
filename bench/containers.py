#!/usr/bin/env python3
"""Figures of the container shape (`make bench-containers`): image size, time from
`compose up` (images already built) to the first tool call through the gateway, and the idle
resident memory of each container. Runs its own stack (project mcpgwbench) from a scratch copy
of docker-compose.yml on the standard ports, and removes it at the end."""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "containers"))
from harness import COMPOSE_SH, podman, podman_env  # noqa: E402

PROJECT = "mcpgwbench"
TOKEN = secrets.token_hex(12)


def compose(root: Path, *args: str) -> None:
    env = {**podman_env(), "COMPOSE_DIR": str(root), "COMPOSE_PROJECT_NAME": PROJECT}
    subprocess.run(["bash", str(COMPOSE_SH), *args], env=env, check=True, capture_output=True)


def first_call_ok() -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "change.list", "arguments": {}}}).encode()
    req = urllib.request.Request("https://127.0.0.1/mcp", data=body, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the stack's own self-signed certificate
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
            return r.status == 200 and b'"result"' in r.read()
    except OSError:
        return False


def rss_kb(container: str) -> int:
    """Resident memory of every process in the container, from the host's /proc."""
    out = podman("top", container, "hpid").stdout.split()[1:]
    total = 0
    for pid in out:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def main() -> None:
    subprocess.run(["bash", str(REPO / "tests/containers/images.sh")], env=podman_env(), check=True)
    size = json.loads(podman("image", "inspect", "localhost/mcp-gateway:latest").stdout)[0]["Size"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "docker-compose.yml", root)
        shutil.copytree(REPO / "conf", root / "conf")
        (root / ".env").write_text(f"AUTH_TOKENS={TOKEN}\nSEED_WORKSPACE=example\n")
        compose(root, "down", "-v")
        try:
            env = {**podman_env(), "COMPOSE_DIR": str(root), "COMPOSE_PROJECT_NAME": PROJECT}
            started = time.monotonic()
            # The images are built above; the clock runs from `up` until a tool call answers.
            up = subprocess.Popen(["bash", str(COMPOSE_SH), "up", "--no-build"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not first_call_ok():
                if time.monotonic() - started > 120:
                    raise SystemExit("no tool call answered within 120 s")
                time.sleep(0.05)
            to_first_call = time.monotonic() - started
            up.wait(60)
            time.sleep(20)  # idle
            rows = []
            for c in json.loads(podman("ps", "--format", "json", "--filter",
                                       f"label=com.docker.compose.project={PROJECT}").stdout):
                name = c["Names"][0]
                rows.append((c["Labels"]["com.docker.compose.service"], name, rss_kb(name)))
        finally:
            compose(root, "down", "-v")
    print(f"image mcp-gateway:latest        {size / 1e6:.0f} MB")
    print(f"compose up -> first tool call   {to_first_call:.1f} s (3 replicas, images built)")
    for service, name, kb in sorted(rows):
        print(f"idle RSS {name:<28} {kb / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
