"""The chain event log the node has followed (the explorer's source)."""

from __future__ import annotations

from aiohttp import web

from node.api.registry import Api, Reply, json_response
from node.api.requests import MAX_EVENTS, parse_limit
from node.api.schemas import EVENTS


def register(api: Api) -> None:
    node = api.node

    async def events(request: web.Request) -> web.Response:
        return json_response({"events": node.chain_events(parse_limit(request.query.get("limit")))})

    api.route("GET", "/v1/events", events, summary="Recent contract events, newest first (explorer view)",
              query=[{"name": "limit", "in": "query", "required": False,
                      "description": f"at most this many (default 100; above {MAX_EVENTS} reads as {MAX_EVENTS})",
                      "schema": {"type": "integer", "minimum": 1}}],
              responses={200: Reply("Events, newest first", EVENTS)})
