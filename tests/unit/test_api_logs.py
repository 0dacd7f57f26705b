"""GET /v1/leases/{id}/logs: kept chunks as JSON, or followed as server-sent events until the job ends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.api.server import make_app
from tests.unit.test_api import TOKEN, FakeNode

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class LogNode(FakeNode):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[dict[str, Any]] = []
        self.done = False

    def lease_logs(self, lease_id: int, after: int = -1, limit: int = 256) -> dict[str, Any] | None:
        if lease_id != 1:
            return None
        page = [c for c in self.chunks if c["seq"] > after][:limit]
        return {"lease_id": 1, "done": self.done and len(page) < limit, "chunks": page}


@pytest.fixture
async def client():
    node = LogNode()
    async with TestClient(TestServer(make_app(node, TOKEN))) as c:
        c.node = node  # type: ignore[attr-defined]
        yield c


async def test_logs_need_the_token_and_a_known_lease(client):
    assert (await client.get("/v1/leases/1/logs")).status == 401
    assert (await client.get("/v1/leases/2/logs", headers=AUTH)).status == 404
    assert (await client.get("/v1/leases/1/logs?after=x", headers=AUTH)).status == 400
    client.node.chunks = [{"seq": 0, "dropped": 0, "text": "a"}, {"seq": 1, "dropped": 5, "text": "b"}]
    page = await (await client.get("/v1/leases/1/logs?after=0", headers=AUTH)).json()
    assert page["chunks"] == [{"seq": 1, "dropped": 5, "text": "b"}] and page["done"] is False


async def test_follow_streams_chunks_as_they_come_and_ends_with_the_job(client):
    node = client.node
    node.chunks = [{"seq": 0, "dropped": 0, "text": "first\n"}]
    resp = await client.get("/v1/leases/1/logs?follow=1", headers=AUTH)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[tuple[str, str]] = []

    async def read() -> None:
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, line[6:]))
                if event == "end":
                    return

    reader = asyncio.ensure_future(read())
    for _ in range(100):
        if events:
            break
        await asyncio.sleep(0.02)
    assert events == [("log", json.dumps({"seq": 0, "dropped": 0, "text": "first\n"}))]  # before the job ended
    node.chunks.append({"seq": 1, "dropped": 0, "text": "█ second\n"})
    node.done = True
    await asyncio.wait_for(reader, 5)
    assert [e for e, _ in events] == ["log", "log", "end"]
    assert json.loads(events[1][1])["text"] == "█ second\n"


async def test_follow_resumes_after_the_last_event_id(client):
    client.node.chunks = [{"seq": i, "dropped": 0, "text": str(i)} for i in range(3)]
    client.node.done = True
    resp = await client.get("/v1/leases/1/logs?follow=1", headers={**AUTH, "Last-Event-ID": "1"})
    body = (await resp.read()).decode()
    assert "id: 2\n" in body and "id: 1\n" not in body and body.endswith("event: end\ndata: {}\n\n")
