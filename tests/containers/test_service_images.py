"""The images of the optional compose services on their own, run with podman: PostgreSQL and
Redis from Debian's packages (deploy/postgres, deploy/redis; built by images.sh). What
docker-compose.yml and the Kubernetes manifests count on: non-root, a first start that makes
the role and database, a clear stop without a password, scram-sha-256 over the network, a fast
shutdown on SIGTERM even with a client connected, data kept across restarts."""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from harness import REPO, podman, podman_env

POSTGRES = "localhost/mcp-postgres:latest"
REDIS = "localhost/mcp-redis:latest"


@pytest.fixture(scope="module", autouse=True)
def images():
    subprocess.run(["bash", str(REPO / "tests/containers/images.sh")], env=podman_env(), check=True)


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


def logs(name: str) -> str:
    proc = podman("logs", name, check=False)
    return "\n".join(l for l in (proc.stdout + proc.stderr).splitlines()
                     if "systemd connection" not in l)


def wait_healthy(name: str, timeout: float = 60) -> None:
    """Until the image's own HEALTHCHECK passes (podman runs no timer here without systemd)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman("healthcheck", "run", name, check=False).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"{name}: the image's HEALTHCHECK never passed:\n{logs(name)}")


def address(name: str) -> str:
    return json.loads(podman("inspect", name).stdout)[0]["NetworkSettings"]["IPAddress"]


def stop(name: str) -> tuple[float, int]:
    """podman stop (SIGTERM, SIGKILL after 30 s): how long it took and the exit code."""
    t0 = time.monotonic()
    podman("stop", "-t", "30", name)
    took = time.monotonic() - t0
    return took, json.loads(podman("inspect", name).stdout)[0]["State"]["ExitCode"]


@pytest.mark.parametrize("image,user,volume", [
    (POSTGRES, "999:999", "/var/lib/postgresql/data"),
    (REDIS, "999:999", "/data"),
])
def test_image_shape(image, user, volume):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == user
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    assert volume in config["Volumes"]
    assert (info.get("Healthcheck") or {}).get("Test", [None])[0] == "CMD"
    print(f"figure: {image} {int(info['Size']) / 1e6:.0f} MB")


def test_postgres_without_a_password_stops_with_one_message():
    proc = podman("run", "--rm", POSTGRES, check=False)
    msg = "\n".join(l for l in (proc.stdout + proc.stderr).splitlines()
                    if l.strip() and "systemd connection" not in l)
    assert proc.returncode == 2, msg
    assert msg.count("\n") == 0, f"one message, got:\n{msg}"
    assert "POSTGRES_PASSWORD is empty" in msg and "DATABASE_URL" in msg, msg


def test_postgres_first_start_scram_fast_shutdown_and_restart(names):
    password = secrets.token_hex(12)
    vol, name, client = unique("pgdata"), unique("pg"), unique("pgclient")
    names["volumes"].append(vol)
    names["containers"] += [name, client]
    podman("run", "-d", "--name", name, "-e", f"POSTGRES_PASSWORD={password}",
           "-v", f"{vol}:/var/lib/postgresql/data", POSTGRES)
    wait_healthy(name)
    assert "first start: done" in logs(name)
    ip = address(name)

    def psql(pw: str, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        return podman("run", "--rm", "-e", f"PGPASSWORD={pw}", POSTGRES, "psql", "-X", "-At",
                      "-h", ip, "-U", "mcp", "-d", "mcp", "-c", sql, check=check)

    out = psql(password, "SELECT current_user, current_database(), current_setting('password_encryption'), "
                         "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").stdout
    assert out.split() == ["mcp|mcp|scram-sha-256|f"], out
    psql(password, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')")
    wrong = psql("wrong", "SELECT 1", check=False)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, wrong.stderr

    # A client holding a connection open: the smart shutdown (PostgreSQL's SIGTERM) would wait
    # for it; the image turns the engine's SIGTERM into the fast one.
    podman("run", "-d", "--name", client, "-e", f"PGPASSWORD={password}", POSTGRES, "psql",
           "-h", ip, "-U", "mcp", "-d", "mcp", "-c", "SELECT pg_sleep(120)")
    time.sleep(1)
    took, code = stop(name)
    print(f"figure: postgres stopped {took:.1f} s after SIGTERM with a client connected")
    assert code == 0 and took < 10, (code, took, logs(name))
    assert "fast shutdown request" in logs(name)

    podman("start", name)
    wait_healthy(name)
    assert logs(name).count("first start: done") == 1, "a second start initialises nothing"
    ip = address(name)
    assert psql(password, "SELECT v FROM kept").stdout.split() == ["yes"]


def test_redis_password_appendonly_and_restart(names):
    password = secrets.token_hex(12)
    vol, name = unique("redisdata"), unique("redis")
    names["volumes"].append(vol)
    names["containers"].append(name)
    podman("run", "-d", "--name", name, "-e", f"REDIS_PASSWORD={password}", "-v", f"{vol}:/data", REDIS)
    wait_healthy(name, 20)
    ip = address(name)

    def cli(*args: str, pw: str | None = password) -> str:
        env = ["-e", f"REDISCLI_AUTH={pw}"] if pw else []
        return podman("run", "--rm", *env, REDIS, "redis-cli", "-h", ip, *args).stdout.strip()

    assert cli("ping", pw=None).startswith("NOAUTH")
    assert cli("set", "k", "v") == "OK"
    assert cli("config", "get", "appendonly").split() == ["appendonly", "yes"]
    assert "requirepass" not in podman("top", name, "args").stdout, "the password shows in no process list"
    took, code = stop(name)
    assert code == 0 and took < 10, (code, took, logs(name))
    podman("start", name)
    wait_healthy(name, 20)
    ip = address(name)
    assert cli("get", "k") == "v", "the append-only file in the volume survives a restart"


def test_redis_without_a_password_warns_and_serves_the_network(names):
    name = unique("redis")
    names["containers"].append(name)
    podman("run", "-d", "--name", name, REDIS)
    wait_healthy(name, 20)
    assert "WARNING: no REDIS_PASSWORD" in logs(name)
    # protected mode off: another container (not loopback) is served
    out = podman("run", "--rm", REDIS, "redis-cli", "-h", address(name), "ping").stdout.strip()
    assert out == "PONG", out
