"""The official MCP Python SDK (2.x) against the real backend binary: Streamable HTTP on /mcp
(initialize, tools/list, every tool, progress notifications, error results) and the 2024-11-05
HTTP+SSE transport on /sse."""

from __future__ import annotations

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.anyio

TOOLS = {"change.list", "change.open", "change.archive", "task.list", "task.update", "spec.list", "spec.open"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def test_streamable_http_lists_and_calls_every_tool(start_backend):
    backend = start_backend()
    async with streamable_http_client(f"{backend.url}/mcp") as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "task-mcp-backend"
            assert init.capabilities.tools is not None

            listed = await session.list_tools()
            assert {t.name for t in listed.tools} == TOOLS
            for tool in listed.tools:
                assert tool.input_schema["type"] == "object", tool.name
                assert tool.description, tool.name

            result = await session.call_tool("change.list", {})
            assert not result.is_error, text_of(result)
            slugs = {c["slug"] for c in result.structured_content["changes"]}
            assert "add-two-factor-auth" in slugs
            assert text_of(result)

            result = await session.call_tool("change.open", {"slug": "add-two-factor-auth"})
            assert not result.is_error, text_of(result)
            assert result.structured_content["slug"] == "add-two-factor-auth"

            result = await session.call_tool("task.list", {"slug": "add-task-due-dates"})
            assert not result.is_error, text_of(result)
            tasks = result.structured_content["tasks"]
            first_open = next(t for t in tasks if not t["done"])

            result = await session.call_tool(
                "task.update", {"slug": "add-task-due-dates", "id": first_open["id"], "done": True})
            assert not result.is_error, text_of(result)
            result = await session.call_tool("task.list", {"slug": "add-task-due-dates"})
            ticked = next(t for t in result.structured_content["tasks"] if t["id"] == first_open["id"])
            assert ticked["done"] is True

            result = await session.call_tool("spec.list", {})
            assert not result.is_error, text_of(result)
            assert result.structured_content

            result = await session.call_tool("spec.open", {"capability": "auth"})
            assert not result.is_error, text_of(result)

            result = await session.call_tool("change.archive", {"slug": "add-webhooks"})
            assert not result.is_error, text_of(result)
            assert "add-webhooks" in text_of(result)
    assert (backend.workspace / "openspec" / "specs" / "webhooks" / "spec.md").exists()


async def test_progress_notifications_reach_the_callback(start_backend):
    backend = start_backend()
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with streamable_http_client(f"{backend.url}/mcp") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool(
                "change.archive", {"slug": "add-two-factor-auth"}, progress_callback=on_progress)
            assert not result.is_error, text_of(result)
    assert seen, "at least one progress notification"
    progresses = [p for p, _, _ in seen]
    assert progresses == sorted(progresses), f"progress only grows: {seen}"
    assert any(total is not None for _, total, _ in seen)


async def test_tool_errors_are_results_and_unknown_tools_are_protocol_errors(start_backend):
    backend = start_backend()
    async with streamable_http_client(f"{backend.url}/mcp") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("change.open", {"slug": "../../etc"})
            assert result.is_error
            assert "INVALID_INPUT" in text_of(result) and "slug" in text_of(result)

            result = await session.call_tool("change.open", {"slug": "no-such-change"})
            assert result.is_error
            assert "NOT_FOUND" in text_of(result)

            result = await session.call_tool("change.archive", {"slug": "add-task-due-dates"})
            assert result.is_error, "open tasks refuse the archive"
            assert "CONFLICT" in text_of(result)

            with pytest.raises(Exception) as raised:
                await session.call_tool("no.such.tool", {})
            assert "no.such.tool" in str(raised.value)


async def test_bearer_token_through_the_sdk(start_backend):
    backend = start_backend(env={"AUTH_TOKENS": "sdk-token"})
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer sdk-token"}) as http:
        async with streamable_http_client(f"{backend.url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                assert {t.name for t in listed.tools} == TOOLS


async def test_sse_transport_lists_and_calls(start_backend):
    backend = start_backend(env={"HEARTBEAT_MS": "200"})
    async with sse_client(f"{backend.url}/sse") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            assert {t.name for t in listed.tools} == TOOLS
            result = await session.call_tool("change.open", {"slug": "add-two-factor-auth"})
            assert not result.is_error, text_of(result)
            assert result.structured_content["slug"] == "add-two-factor-auth"

            seen: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)

            result = await session.call_tool(
                "change.archive", {"slug": "add-webhooks"}, progress_callback=on_progress)
            assert not result.is_error, text_of(result)
            assert seen, "progress over the SSE transport too"

            result = await session.call_tool("task.list", {"slug": "nope-not-here"})
            assert result.is_error
