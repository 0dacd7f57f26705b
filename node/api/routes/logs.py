"""A consumer lease's job output, as its provider streamed it: the chunks kept by this node, or followed live.

``GET /v1/leases/{lease_id}/logs?after=<seq>`` answers the kept chunks with seq > ``after`` (JSON). With
``follow=1`` it answers server-sent events (``text/event-stream``): one ``log`` event per chunk (``id`` is its
seq, so a client that reconnects with ``Last-Event-ID`` resumes after it; ``data`` the chunk as JSON), then one
``end`` event once the job result is in and every kept chunk was sent. Token-guarded: output may hold secrets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from node.api.registry import Api, Reply, error_response, failure, json_response
from node.api.requests import BadRequest, parse_lease_id

POLL_S = 0.1
KEEPALIVE_S = 15.0
PAGE = 256

LogsOf = Callable[[int, int, int], dict[str, Any] | None]
LOG_PAGE: dict[str, Any] = {
    "type": "object", "required": ["lease_id", "done", "chunks"],
    "properties": {"lease_id": {"type": "integer"}, "done": {"type": "boolean"},
                   "chunks": {"type": "array", "items": {
                       "type": "object", "required": ["seq", "text"],
                       "properties": {"seq": {"type": "integer"}, "dropped": {"type": "integer"},
                                      "text": {"type": "string"}}}}},
}


def _after(request: web.Request) -> int:
    raw = request.query.get("after", request.headers.get("Last-Event-ID", "-1"))
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("after must be an integer (a chunk's seq)") from None
    if value < -1:
        raise BadRequest("after must be >= -1")
    return value


def register(api: Api) -> None:
    node = api.node

    def logs_of() -> LogsOf | None:
        found = getattr(node, "lease_logs", None)
        return found if callable(found) else None

    async def logs(request: web.Request) -> web.StreamResponse:
        lid = parse_lease_id(request.match_info["lease_id"])
        after = _after(request)
        read = logs_of()
        page = read(lid, after, PAGE) if read is not None else None
        if read is None or page is None:
            return error_response(404, "no such consumer lease on this node")
        if request.query.get("follow", "") not in ("1", "true", "yes"):
            return json_response(page)
        return await _follow(request, read, lid, after)

    api.route("GET", "/v1/leases/{lease_id}/logs", logs, auth=True,
              summary="The job output of a consumer lease (follow=1: server-sent events until the job ends)",
              query=[{"name": "after", "in": "query", "required": False, "schema": {"type": "integer"}},
                     {"name": "follow", "in": "query", "required": False, "schema": {"type": "string"}}],
              responses={200: Reply("Chunks {seq, dropped, text}; with follow=1 an event stream", LOG_PAGE,
                                    also={"text/event-stream": {"type": "string"}}),
                         404: failure("No such consumer lease")})


async def _follow(request: web.Request, read: LogsOf, lid: int, after: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while True:
        page = read(lid, after, PAGE)
        if page is None:
            break
        for chunk in page["chunks"]:
            after = chunk["seq"]
            await resp.write(f"event: log\nid: {after}\ndata: {json.dumps(chunk)}\n\n".encode())
            quiet_since = loop.time()
        if page["done"]:
            await resp.write(b"event: end\ndata: {}\n\n")
            break
        if page["chunks"]:
            continue
        if loop.time() - quiet_since > KEEPALIVE_S:
            await resp.write(b": keep-alive\n\n")
            quiet_since = loop.time()
        await asyncio.sleep(POLL_S)
    await resp.write_eof()
    return resp
