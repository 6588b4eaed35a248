"""The image on its own, run with podman as a user would, and the mistakes a new user makes
on the way: each must stop with one message that says what to do."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time

import pytest

from harness import COMPOSE_SH, REPO, podman, podman_env

IMAGE = "localhost/mcp-gateway:latest"


@pytest.fixture(scope="module", autouse=True)
def image():
    subprocess.run(["bash", str(REPO / "tests/containers/images.sh")], env=podman_env(), check=True)
    return IMAGE


@pytest.fixture
def names():
    """Containers and volumes a test creates, removed afterwards."""
    made = {"containers": [], "volumes": []}
    yield made
    for c in made["containers"]:
        podman("rm", "-f", "-v", "-t", "0", c, check=False)
    for v in made["volumes"]:
        podman("volume", "rm", "-f", v, check=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_healthy(name: str, timeout: float = 20) -> None:
    """Until the image's own HEALTHCHECK passes (podman runs no timer here without systemd)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman("healthcheck", "run", name, check=False).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"{name}: the image's HEALTHCHECK never passed:\n"
                + podman("logs", name, check=False).stderr)


def one_message(proc: subprocess.CompletedProcess) -> str:
    """The container's own output, without podman's systemd-healthcheck warnings."""
    lines = [l for l in (proc.stdout + proc.stderr).splitlines()
             if l.strip() and "systemd connection" not in l]
    return "\n".join(lines)


def test_image_shape(image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == "1001:1001"
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    assert "/app/workspace" in config["Volumes"]
    health = info.get("Healthcheck") or {}
    assert health.get("Test") == ["CMD", "/usr/local/bin/entrypoint", "healthcheck"], info.get("Healthcheck")
    out = podman("run", "--rm", image, "sh", "-c", "id -u; id -g; gateway --version; backend --version").stdout
    assert out.split()[:2] == ["1001", "1001"]
    size = int(info["Size"])
    print(f"figure: image size {size / 1e6:.0f} MB")


def test_empty_workspace_volume_without_seeding_stops_with_what_to_mount(names):
    vol = unique("ws")
    names["volumes"].append(vol)
    proc = podman("run", "--rm", "-v", f"{vol}:/app/workspace", IMAGE, "backend", check=False)
    msg = one_message(proc)
    assert proc.returncode == 2, msg
    assert msg.count("\n") == 0, f"one message, got:\n{msg}"
    assert "Mount your OpenSpec project" in msg and "SEED_WORKSPACE=example" in msg


def test_seeding_fills_an_empty_volume_once_and_the_backend_is_healthy(names):
    vol = unique("ws")
    names["volumes"].append(vol)
    name = unique("be")
    names["containers"].append(name)
    podman("run", "-d", "--name", name, "-e", "SEED_WORKSPACE=example", "-e", "AUTH_TOKENS=x",
           "-v", f"{vol}:/app/workspace", IMAGE, "backend")
    wait_healthy(name)
    logs = podman("logs", name).stderr
    assert "seeded the empty workspace" in logs
    listing = podman("exec", name, "ls", "/app/workspace/openspec").stdout.split()
    assert {"specs", "changes"} <= set(listing)
    # A second start of the backend on the now-seeded volume leaves it alone (it runs 2 s).
    podman("rm", "-f", "-v", "-t", "0", name)
    again = podman("run", "--rm", "-e", "SEED_WORKSPACE=example", "-e", "AUTH_TOKENS=x",
                   "-v", f"{vol}:/app/workspace", IMAGE, "sh", "-c",
                   "timeout 2 /usr/local/bin/entrypoint backend; ls -a /app/workspace")
    assert "seeded" not in again.stderr and "listening on" in again.stderr, again.stderr
    assert sorted(again.stdout.split()) == [".", "..", "openspec"], "no temp copies left behind"


def test_gateway_without_certificates_makes_a_self_signed_one_with_a_warning(names):
    name = unique("gw")
    names["containers"].append(name)
    vol = unique("tls")
    names["volumes"].append(vol)
    podman("run", "-d", "--name", name, "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
           "-v", f"{vol}:/var/lib/gateway/tls", IMAGE, "gateway")
    wait_healthy(name)
    logs = podman("logs", name).stderr
    assert "SELF-SIGNED" in logs and "WARNING" in logs
    mode = podman("exec", name, "stat", "-c", "%a %u", "/var/lib/gateway/tls/key.pem").stdout.split()
    assert mode == ["600", "1001"], mode


def test_unreadable_key_stops_the_gateway_naming_the_fix(names, tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", tls / "key.pem", "-out", tls / "cert.pem"],
                   check=True, capture_output=True)
    os.chmod(tls / "key.pem", 0o600)  # root's, as openssl and most tools leave it
    os.chmod(tls, 0o755)
    os.chmod(tmp_path, 0o755)
    mount = f"{tls}:/var/lib/gateway/tls:ro"
    proc = podman("run", "--rm", "-v", mount, IMAGE, "gateway", check=False)
    msg = one_message(proc)
    assert proc.returncode != 0
    assert msg.count("\n") == 0, f"one message, got:\n{msg}"
    assert "cannot read /var/lib/gateway/tls/key.pem as uid 1001" in msg and "chmod 0640" in msg, msg
    # The gateway's own check says the same when started without the entrypoint (e.g. `-t`).
    proc = podman("run", "--rm", "-v", mount, "--entrypoint", "gateway", IMAGE, "-t", check=False)
    msg = one_message(proc)
    assert proc.returncode != 0 and "Permission denied" in msg and "uid 1001" in msg, msg
    # With the documented fix (group 1001, mode 0640) it starts.
    os.chown(tls / "key.pem", 0, 1001)
    os.chmod(tls / "key.pem", 0o640)
    proc = podman("run", "--rm", "-v", mount, "--entrypoint", "gateway", IMAGE, "-t", check=False)
    assert proc.returncode == 0, one_message(proc)


def test_compose_without_auth_tokens_stops_with_one_message(tmp_path):
    shutil.copy(REPO / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text("SEED_WORKSPACE=example\nAUTH_TOKENS=\n")
    env = {**podman_env(), "COMPOSE_DIR": str(tmp_path), "COMPOSE_PROJECT_NAME": "mcpgwnotoken"}
    env.pop("AUTH_TOKENS", None)
    proc = subprocess.run(["bash", str(COMPOSE_SH), "up"], env=env, capture_output=True, text=True,
                          timeout=120)
    msg = one_message(proc)
    assert proc.returncode == 2, msg
    assert msg.count("\n") == 0, f"one message, got:\n{msg}"
    assert "AUTH_TOKENS" in msg and ".env" in msg
    # Nothing was created.
    assert podman("ps", "-aq", "--filter", "label=com.docker.compose.project=mcpgwnotoken").stdout.strip() == ""
