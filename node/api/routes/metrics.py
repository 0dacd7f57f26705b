"""Prometheus exposition of the node's metric registries."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node.api.registry import Api, Reply


def register(api: Api) -> None:
    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=b"".join(generate_latest(r) for r in api.registries))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    api.route("GET", "/metrics", metrics, summary="Prometheus metrics", tag="operations",
              responses={200: Reply("Prometheus text exposition", {"type": "string"}, "text/plain")})
