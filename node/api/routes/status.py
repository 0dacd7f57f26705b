"""Node identity and health, and the peers it is connected to."""

from __future__ import annotations

from aiohttp import web

from node.api.registry import Api, Reply, json_response
from node.api.schemas import PEERS, STATUS


def register(api: Api) -> None:
    node = api.node

    async def status(_: web.Request) -> web.Response:
        return json_response(node.status())

    async def peers(_: web.Request) -> web.Response:
        return json_response({"peers": await node.peers()})

    api.route("GET", "/v1/status", status, summary="Node identity, chain, peers, book size",
              responses={200: Reply("The node's status", STATUS)})
    api.route("GET", "/v1/peers", peers, summary="Connected peers", responses={200: Reply("Connected peers", PEERS)})
