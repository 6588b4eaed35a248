"""The README's client recipes, taken from the README itself (not copies), run as a user runs
them: from the repository root while `make run`'s stack (scripts/run-local.sh) is up.

- the Python SDK example, with the venv's python;
- the MCP Inspector lines (`npx @modelcontextprotocol/inspector@0.21.1 --cli`, Node 22);
- the Claude Desktop configuration for stdio-only clients (`mcp-remote`), started the way
  such a client starts it (command, args and env from the JSON) and driven by the SDK's
  stdio client.

The npm recipes fetch their packages from the npm registry; they are skipped only when the
registry cannot be reached."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import make_run
from conftest import REPO

NODE22_BIN = Path("/var/cache/mcp-gateway/node22/bin")


@pytest.fixture(scope="module")
def stack():
    s = make_run.start()
    yield s
    s.stop()


def npm_env() -> dict[str, str]:
    """What npm itself needs on this machine to reach its registry. The recipes point
    NODE_EXTRA_CA_CERTS at the gateway's certificate; where the registry is reached through a
    proxy with its own CA (named by NODE_EXTRA_CA_CERTS in the environment), npm keeps
    trusting that CA through its own cafile setting."""
    extra = os.environ.get("NODE_EXTRA_CA_CERTS")
    return {"npm_config_cafile": extra} if extra and "npm_config_cafile" not in os.environ else {}


def require_npm_registry(spec: str) -> None:
    try:
        done = subprocess.run(["npm", "view", spec, "version"], capture_output=True, text=True,
                              timeout=120, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"npm cannot reach its registry: {e}")
    if done.returncode != 0:
        err = done.stderr
        if any(c in err for c in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT",
                                  "ECONNRESET", "ENETUNREACH")):
            pytest.skip(f"npm cannot reach its registry: {err.strip()[-300:]}")
        pytest.fail(f"npm view {spec} failed: {err}")


def test_the_readme_python_example_runs_as_written(stack, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(make_run.readme_block("python", "streamable_http_client"))
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tools: change.list" in done.stdout
    assert "add-two-factor-auth" in done.stdout


def test_the_readme_inspector_lines_run_as_written(stack):
    recipe = make_run.readme_block("sh", "@modelcontextprotocol/inspector@")
    assert str(NODE22_BIN) in recipe, "the recipe puts Node 22 first on PATH"
    if not (NODE22_BIN / "node").exists():
        pytest.fail(f"Node 22 is missing in {NODE22_BIN}: run `bash scripts/node.sh` "
                    "(make test runs it through scripts/setup.sh test)")
    require_npm_registry("@modelcontextprotocol/inspector@0.21.1")
    done = make_run.run_shell(recipe, env=npm_env())
    assert done.returncode == 0, done.stdout + done.stderr
    # tools/list, then tools/call change.open: the tool list and the change's proposal.
    assert '"name": "change.list"' in done.stdout, done.stdout
    assert "Add two-factor authentication" in done.stdout, done.stdout


def test_the_readme_claude_desktop_config_starts_mcp_remote(stack):
    config = json.loads(make_run.readme_block("json", "mcp-remote@"))
    (name, server), = config["mcpServers"].items()
    args = server["args"]
    require_npm_registry(next(a for a in args if a.startswith("mcp-remote@")))
    env = {k: v.replace("PASTE-RUN-TOKEN-HERE", make_run.token())
               .replace("/path/to/this/repository", str(REPO))
           for k, v in server["env"].items()}
    assert Path(env["NODE_EXTRA_CA_CERTS"]) == make_run.CERT
    env.update(npm_env())
    params = StdioServerParameters(command=server["command"], args=args, env=env)

    async def session() -> tuple[list[str], dict]:
        with open(os.devnull, "w") as quiet:
            async with stdio_client(params, errlog=quiet) as (r, w):
                async with ClientSession(r, w) as s:
                    await s.initialize()
                    tools = await s.list_tools()
                    result = await s.call_tool("change.list", {})
                    return [t.name for t in tools.tools], result.structured_content or {}

    tools, listed = asyncio.run(asyncio.wait_for(session(), 240))
    assert "change.list" in tools and "spec.open" in tools, (name, tools)
    assert "add-two-factor-auth" in [c["slug"] for c in listed["changes"]]
