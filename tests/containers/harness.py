"""Helpers shared by the container tests: podman with the harness's containers.conf."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_SH = REPO / "scripts" / "compose.sh"


def podman_env() -> dict[str, str]:
    """The harness's containers.conf (see tests/containers/env.sh for why)."""
    out = subprocess.run(
        ["bash", "-c", f"source {REPO}/tests/containers/env.sh && echo $CONTAINERS_CONF"],
        capture_output=True, text=True, check=True,
    )
    return {**os.environ, "CONTAINERS_CONF": out.stdout.strip()}


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                          check=check, **kw)
