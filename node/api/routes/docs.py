"""The OpenAPI document, built from the routes as declared."""

from __future__ import annotations

from aiohttp import web

from node.api.openapi import build_openapi
from node.api.registry import Api, Reply, json_response


def register(api: Api) -> None:
    async def openapi(_: web.Request) -> web.Response:
        return json_response(build_openapi(api.routes))

    api.route("GET", "/openapi.json", openapi, summary="This API's OpenAPI document", tag="operations",
              responses={200: Reply("OpenAPI 3.1 document", {"type": "object"})})
