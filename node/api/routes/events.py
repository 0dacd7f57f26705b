"""The chain event log the node has followed (the explorer's source)."""

from __future__ import annotations

from aiohttp import web

from node.api.registry import Api, Reply, json_response
from node.api.requests import parse_limit


def register(api: Api) -> None:
    node = api.node

    async def events(request: web.Request) -> web.Response:
        return json_response({"events": node.chain_events(parse_limit(request.query.get("limit")))})

    api.route("GET", "/v1/events", events, summary="Recent contract events (explorer view)",
              query=[{"name": "limit", "in": "query", "schema": {"type": "string"}}],
              responses={200: Reply("Events, newest first")})
