"""The official MCP conformance suite (@modelcontextprotocol/conformance, pinned in
tests/conformance/package.json) against the real backend, directly over HTTP and through the
real gateway over HTTPS, at protocol revisions 2025-11-25 and 2026-07-28.

Every server scenario of a revision runs (`--suite all --spec-version REV`, the list from
`conformance list --server`). A scenario passes when none of its checks is a FAILURE; warnings
and not-applicable notes (a stateless server has no session to resume) do not fail it. What the
suite tests with its own fixture tools, prompts and resources cannot pass against a server that
serves OpenSpec tools only: FIXTURE_ONLY names those scenarios (or single checks) with the
reason. Its failures are excused, except `wire-schema-valid`: every message our server sends in
those scenarios, errors included, must still match the revision's schema. An entry that stops
failing fails the test, so the list stays true."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from node_harness import CONFORMANCE_DIR, SUITE, make_cert, node, node_env, start_gateway

REVISIONS = ["2025-11-25", "2026-07-28"]

_TOOLS = "calls the suite's fixture tool"
_RESOURCES = ("reads the suite's fixture resources; our server declares no resources capability "
              "and answers resources/* with -32601, as MCP requires")
_PROMPTS = ("gets the suite's fixture prompts; our server declares no prompts capability and "
            "answers prompts/* with -32601, as MCP requires")
_INPUT_REQUIRED = ("calls the suite's fixture tool test_input_required_result_* "
                   "(SEP-2322 multi-round)")

# scenario, or "scenario:check-id" for one check of a scenario whose other checks must pass
FIXTURE_ONLY: dict[str, str] = {
    "logging-set-level": "logging/setLevel: the suite's fixture declares the logging capability; "
                         "ours declares only tools, so -32601 as MCP requires",
    "completion-complete": "completes the fixture's prompt arguments; ours declares no completions "
                           "capability (-32601)",
    "tools-call-simple-text": f"{_TOOLS} test_simple_text",
    "tools-call-image": f"{_TOOLS} test_image_content",
    "tools-call-audio": f"{_TOOLS} test_audio_content",
    "tools-call-embedded-resource": f"{_TOOLS} test_embedded_resource",
    "tools-call-mixed-content": f"{_TOOLS} test_multiple_content_types",
    "tools-call-error": f"{_TOOLS} test_error_handling",
    "tools-call-with-progress": f"{_TOOLS} test_tool_with_progress",
    "tools-call-with-logging": f"{_TOOLS} test_tool_with_logging after logging/setLevel",
    "tools-call-sampling": f"{_TOOLS} test_sampling (a server-to-client sampling request)",
    "tools-call-elicitation": f"{_TOOLS} test_elicitation",
    "elicitation-sep1034-defaults": f"{_TOOLS} test_elicitation_sep1034_defaults",
    "elicitation-sep1330-enums": f"{_TOOLS} test_elicitation_sep1330_enums",
    "json-schema-2020-12": "looks for the suite's fixture tool json_schema_2020_12_tool",
    "resources-list": _RESOURCES,
    "resources-read-text": _RESOURCES,
    "resources-read-binary": _RESOURCES,
    "resources-templates-read": _RESOURCES,
    "resources-subscribe": _RESOURCES,
    "resources-unsubscribe": _RESOURCES,
    "prompts-list": _PROMPTS,
    "prompts-get-simple": _PROMPTS,
    "prompts-get-with-args": _PROMPTS,
    "prompts-get-embedded-resource": _PROMPTS,
    "prompts-get-with-image": _PROMPTS,
    "http-custom-header-server-validation": "needs a tool whose input schema carries x-mcp-header "
                                            "annotations (SEP-2243); ours have none",
    "input-required-result-basic-elicitation": _INPUT_REQUIRED,
    "input-required-result-basic-sampling": _INPUT_REQUIRED,
    "input-required-result-basic-list-roots": _INPUT_REQUIRED,
    "input-required-result-request-state": _INPUT_REQUIRED,
    "input-required-result-multiple-input-requests": _INPUT_REQUIRED,
    "input-required-result-multi-round": _INPUT_REQUIRED,
    "input-required-result-result-type": _INPUT_REQUIRED,
    "input-required-result-tampered-state": _INPUT_REQUIRED,
    "input-required-result-capability-check": _INPUT_REQUIRED,
    "input-required-result-non-tool-request": "gets the suite's fixture prompt (prompts/get)",
    "server-stateless:sep-2575-server-rejects-undeclared-capability":
        f"{_TOOLS} test_missing_capability",
    "server-stateless:sep-2575-missing-capability-http-400": f"{_TOOLS} test_missing_capability",
    "server-stateless:sep-2575-http-server-no-independent-requests-on-stream":
        f"{_TOOLS} test_streaming_elicitation",
    "server-stateless:sep-2575-server-no-log-without-loglevel": f"{_TOOLS} test_logging_tool",
    "caching:sep-2549-prompts-list-caching-hints": _PROMPTS,
    "caching:sep-2549-resources-list-caching-hints": _RESOURCES,
    "caching:sep-2549-resources-templates-list-caching-hints": _RESOURCES,
}

# Scenarios the suite cannot run against an https URL, run through the gateway's plain-HTTP
# listener instead (same process, same routes, mcp = true):
PLAIN_HTTP_THROUGH_GATEWAY = {
    # Its SEP-2243 cases post with node:http whatever the URL's scheme: plaintext to the TLS
    # port, and every case ends in "socket hang up".
    "http-header-validation",
}

# dns-rebinding-protection sends `Host: evil.example.com`, which Node also uses as the TLS
# server name: the gateway's certificate names it too, so the request reaches the gateway and
# the backend's Host check (a 403) instead of failing in the client's certificate check.
REBINDING_HOST = "evil.example.com"

_RESULT_DIR = re.compile(r"^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


def suite(args: list[str], cert: Path | None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(node()), str(SUITE), *args], cwd=CONFORMANCE_DIR,
                          env=node_env(cert), capture_output=True, text=True, timeout=timeout)


def server_scenarios(revision: str) -> list[str]:
    out = suite(["list", "--server", "--spec-version", revision], cert=None)
    assert out.returncode == 0, out.stdout + out.stderr
    names = re.findall(r"^\s+- (\S+)", out.stdout, re.M)
    assert names, out.stdout
    return names


def run_server(url: str, revision: str, out_dir: Path, cert: Path | None,
               scenario: str | None = None) -> str:
    """Runs the suite (exit status ignored: fixture-only failures make it 1); its output."""
    args = ["server", "--url", url, "--spec-version", revision, "-o", str(out_dir)]
    args += ["--scenario", scenario] if scenario else ["--suite", "all"]
    done = suite(args, cert)
    return done.stdout + done.stderr


def read_results(out_dir: Path) -> dict[str, list[dict]]:
    results = {}
    for d in out_dir.iterdir():
        m = _RESULT_DIR.match(d.name)
        if m and (d / "checks.json").exists():
            results[m.group(1)] = json.loads((d / "checks.json").read_text())
    return results


def excused(scenario: str, check: dict) -> bool:
    if f"{scenario}:{check['id']}" in FIXTURE_ONLY:
        return True
    return scenario in FIXTURE_ONLY and check["id"] != "wire-schema-valid"


@pytest.mark.parametrize("revision", REVISIONS)
@pytest.mark.parametrize("via", ["direct", "gateway"])
def test_conformance_suite(via: str, revision: str, start_backend, procs, tmp_path: Path):
    expected = server_scenarios(revision)
    backend = start_backend(env={"AUTH_TOKENS": ""})
    out_dir = tmp_path / "results"
    cert = None
    if via == "direct":
        output = run_server(f"{backend.url}/mcp", revision, out_dir, cert)
    else:
        cert, key = make_cert(tmp_path, REBINDING_HOST)
        gw = start_gateway(procs, tmp_path, backend, cert, key)
        output = run_server(f"{gw.https}/mcp", revision, out_dir, cert)
        for scenario in sorted(PLAIN_HTTP_THROUGH_GATEWAY & set(expected)):
            for d in out_dir.glob(f"server-{scenario}-*"):
                shutil.rmtree(d)
            output += run_server(f"{gw.http}/mcp", revision, out_dir, cert, scenario)
    results = read_results(out_dir)

    missing = [s for s in expected if s not in results]
    failed: dict[str, list[dict]] = {}
    stale: list[str] = []
    for scenario, checks in results.items():
        bad = [c for c in checks if c["status"] == "FAILURE" and not excused(scenario, c)]
        if bad:
            failed[scenario] = bad
        failing_ids = {c["id"] for c in checks if c["status"] == "FAILURE"}
        if scenario in FIXTURE_ONLY and not failing_ids - {"wire-schema-valid"}:
            stale.append(scenario)
        stale += [key for key in FIXTURE_ONLY
                  if key.startswith(f"{scenario}:") and key.split(":", 1)[1] not in failing_ids]

    fixture = {s for s in results if s in FIXTURE_ONLY}
    print(f"{via} {revision}: {len(results)} scenarios, "
          f"{len(results) - len(fixture | failed.keys())} passed, {len(fixture)} fixture-only, "
          f"{len(failed)} failed")
    problems = []
    if missing:
        problems.append(f"scenarios without results (the suite did not run them): {missing}")
    for scenario, bad in failed.items():
        problems.append(f"{scenario} failed:\n" + "\n".join(json.dumps(c, indent=1) for c in bad))
    if stale:
        problems.append(f"FIXTURE_ONLY entries that no longer fail (remove them): {stale}")
    assert not problems, "\n\n".join(problems) + f"\n\n--- suite output ---\n{output}"
