"""scripts/setup.sh on a machine without a usable Rust toolchain: it stops before installing
anything and says what it needs (Cargo.toml's rust-version) and the command that installs it,
whether cargo is missing or Debian's older rustc is the one on PATH; rustup's cargo in
~/.cargo/bin is used even when PATH does not name it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import REPO

RUST_MIN = re.search(r'^rust-version\s*=\s*"([0-9.]+)"', (REPO / "Cargo.toml").read_text(),
                     re.M).group(1)


def setup(path: str, home: Path) -> subprocess.CompletedProcess:
    # "run", make run's mode: the toolchain check comes first in every mode.
    return subprocess.run(["bash", str(REPO / "scripts/setup.sh"), "run"], cwd=REPO,
                          env={"PATH": path, "HOME": str(home)}, capture_output=True,
                          text=True, timeout=600)


def fake_tool(directory: Path, name: str, output: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text(f"#!/bin/sh\necho '{output}'\n")
    tool.chmod(0o755)


def system_path() -> str:
    """/usr/bin and /bin without any directory holding a cargo (rustup's is in ~/.cargo/bin)."""
    dirs = ["/usr/local/bin", "/usr/bin", "/bin"]
    return ":".join(d for d in dirs if not (Path(d) / "cargo").exists())


def test_no_rust_toolchain_is_named_with_its_install_command(tmp_path):
    done = setup(system_path(), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"this needs Rust {RUST_MIN} or newer" in done.stderr
    assert "found: none" in done.stderr
    assert "https://sh.rustup.rs" in done.stderr
    assert "installing" not in done.stdout  # nothing was installed first


def test_debians_older_rustc_is_refused(tmp_path):
    old = tmp_path / "debian-rust"
    fake_tool(old, "rustc", "rustc 1.63.0 (4b91a6ea7 2022-08-08)")
    fake_tool(old, "cargo", "cargo 1.63.0")
    done = setup(f"{old}:{system_path()}", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"this needs Rust {RUST_MIN} or newer" in done.stderr
    assert "found: 1.63.0" in done.stderr


def test_rustups_cargo_is_found_off_path(tmp_path):
    # A ~/.cargo/bin that is not on PATH, as after rustup without a new shell, while Debian's
    # older toolchain is. The check passes and setup goes on (after make test's setup, the
    # rest finds nothing to install).
    old = tmp_path / "debian-rust"
    fake_tool(old, "rustc", "rustc 1.63.0 (4b91a6ea7 2022-08-08)")
    fake_tool(old, "cargo", "cargo 1.63.0")
    fake_tool(tmp_path / ".cargo" / "bin", "rustc", f"rustc {RUST_MIN}.0 (0 2026-01-01)")
    fake_tool(tmp_path / ".cargo" / "bin", "cargo", f"cargo {RUST_MIN}.0")
    done = setup(f"{old}:{system_path()}", tmp_path)
    assert "this needs Rust" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
