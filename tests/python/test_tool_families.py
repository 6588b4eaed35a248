"""Every tool of the todo and memory families called with the official Python SDK through the
gateway (HTTPS, named callers, the caller forwarded in caller_header) to two backend replicas
sharing one store: the SDK validates each structured result against the tool's outputSchema,
callers never see each other's items, and the audit log names the caller and tool of each
call."""

from __future__ import annotations

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from test_gateway_mcp_edge import ADMIN, BACKEND_SECRET, ERAS, Keys, connect, start_edge

pytestmark = pytest.mark.anyio

NEW_TOOLS = {"list_tasks", "create_task", "mark_task_completed", "update_task", "delete_task",
             "memory_remember", "memory_recall", "memory_forget"}

ROUTE = """
[[routes]]
name = "mcp"
path = "/mcp"
pool = "backend"
stream = true
mcp = true
auth = true
"""


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def edge(procs, start_backend, tls_cert, tmp_path):
    env = {"AUTH_TOKENS": f"gateway:{BACKEND_SECRET}", "TOOLS": "todo,memory",
           "TRUSTED_CALLER_HEADER": "X-Gateway-Caller"}
    # Two replicas in the one pool, on one SQLite store: calls of a session land on either.
    replicas = [start_backend(env=env), start_backend(env=env)]
    return start_edge(procs, tmp_path, tls_cert, [("backend", replicas)], routes=ROUTE,
                      auth_keys='caller_header = "X-Gateway-Caller"')


async def session_calls(edge, token: str, era: str, fn):
    async with edge.client(token) as http:
        async with streamable_http_client(edge.url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as s:
                await connect(s, era)
                return await fn(s)


def ok(result):
    assert not result.is_error, result
    assert result.structured_content is not None, result
    return result.structured_content


@pytest.mark.parametrize("era", ERAS)
async def test_every_new_tool_through_the_gateway(edge, era: str):
    keys: Keys = start_edge.keys
    alice = keys.token(edge.url, sub="alice", scope="mcp:admin")

    async def alices(s: ClientSession):
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert NEW_TOOLS <= set(tools), set(tools)
        assert all(tools[n].output_schema for n in NEW_TOOLS)
        made = ok(await s.call_tool("create_task", {"title": "write the report",
                                                    "due": "2027-01-31"}))["task"]
        task_id = made["id"]
        assert made["owner"] == "alice" and made["version"] == 1
        listed = ok(await s.call_tool("list_tasks", {"status": "open", "limit": 10}))
        assert [t["id"] for t in listed["tasks"]] == [task_id]
        updated = ok(await s.call_tool("update_task", {"task_id": task_id,
                                                       "description": "with figures"}))
        assert updated["task"]["version"] == 2
        done = ok(await s.call_tool("mark_task_completed", {"task_id": task_id}))
        assert done["task"]["completed"] is True
        assert ok(await s.call_tool("list_tasks", {"status": "open"}))["tasks"] == []
        ok(await s.call_tool("delete_task", {"task_id": task_id}))
        assert ok(await s.call_tool("list_tasks", {}))["tasks"] == []

        r = ok(await s.call_tool("memory_remember", {"key": "session_1",
                                                     "content": "Important information",
                                                     "tags": ["notes"], "ttl_seconds": 3600}))
        assert r["created"] is True and r["memory"]["owner"] == "alice"
        got = ok(await s.call_tool("memory_recall", {"key": "session_1"}))
        assert got["memories"][0]["value"] == "Important information"
        found = ok(await s.call_tool("memory_recall", {"query": "important", "tags": ["notes"]}))
        assert [m["key"] for m in found["memories"]] == ["session_1"]
        ok(await s.call_tool("memory_remember", {"key": "keep", "value": "kept"}))
        assert ok(await s.call_tool("memory_forget", {"key": "session_1"})) == {
            "forgotten": "session_1"}
        gone = await s.call_tool("memory_recall", {"key": "session_1"})
        assert gone.is_error and gone.content[0].text.startswith("NOT_FOUND"), gone
        bad = await s.call_tool("memory_remember", {"key": "k"})
        assert bad.is_error and "input.value: required" in bad.content[0].text, bad

    await session_calls(edge, alice, era, alices)

    async def admins(s: ClientSession):
        # Another caller: none of alice's items.
        assert ok(await s.call_tool("list_tasks", {}))["tasks"] == []
        mine = await s.call_tool("memory_recall", {"key": "keep"})
        assert mine.is_error and mine.content[0].text.startswith("NOT_FOUND"), mine
        assert ok(await s.call_tool("memory_recall", {"query": "kept"}))["memories"] == []

    await session_calls(edge, ADMIN, era, admins)

    calls = [l for l in edge.audit_lines(17) if l["method"] == "tools/call"]
    seen = {(l["caller"], l["tool"]) for l in calls}
    assert {("alice", t) for t in NEW_TOOLS} <= seen, seen
    assert ("admin", "memory_recall") in seen
    assert {l["backend"] for l in calls} and all(l["status"] == 200 for l in calls)
