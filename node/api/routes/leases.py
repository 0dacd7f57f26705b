"""Leases this node is party to: list, detail, and the fund-moving actions (open, top up, close)."""

from __future__ import annotations

import json

from aiohttp import web

from node.api.registry import Api, Reply, error_response, failure, json_response
from node.api.requests import BadRequest, OpenLeaseRequest, TopUpRequest, parse_lease_id
from node.api.schemas import LEASE, LEASE_DETAIL, LEASES, OPEN_LEASE, TOP_UP


async def body_json(request: web.Request) -> object:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest("request body must be a JSON object") from exc


def lease_id(request: web.Request) -> int:
    return parse_lease_id(request.match_info["lease_id"])


ACTION_FAILURES = {
    400: failure("Malformed input, an unknown lease or offer, or a node without a wallet"),
    409: failure("A race the node can retry (e.g. the lease changed meanwhile)"),
    422: failure("The contract refused the transaction (e.g. GPUs taken, deposit too low)"),
    500: failure("The node could not carry it out (see its log)"),
}


def register(api: Api) -> None:
    node = api.node

    async def leases(_: web.Request) -> web.Response:
        return json_response({"leases": node.leases()})

    async def lease(request: web.Request) -> web.Response:
        data = node.lease(lease_id(request))
        return json_response(data) if data is not None else error_response(404, "no such lease")

    async def open_lease(request: web.Request) -> web.Response:
        return json_response(await node.open_lease(OpenLeaseRequest.parse(await body_json(request))), 201)

    async def top_up(request: web.Request) -> web.Response:
        lid = lease_id(request)
        return json_response(await node.top_up(lid, TopUpRequest.parse(await body_json(request)).amount))

    async def close(request: web.Request) -> web.Response:
        return json_response(await node.close_lease(lease_id(request)))

    api.route("GET", "/v1/leases", leases, summary="Leases this node is party to",
              responses={200: Reply("Leases, oldest first", LEASES)})
    api.route("POST", "/v1/leases", open_lease, auth=True, summary="Open a lease from an offer in the book",
              body=OPEN_LEASE, responses={201: Reply("Opened: the new lease", LEASE), **ACTION_FAILURES})
    api.route("GET", "/v1/leases/{lease_id}", lease, summary="One lease with checkpoints and notices",
              responses={200: Reply("The lease", LEASE_DETAIL), 404: failure("This node is no party to that lease")})
    api.route("POST", "/v1/leases/{lease_id}/topup", top_up, auth=True, summary="Add deposit to a lease",
              body=TOP_UP, responses={200: Reply("Topped up: the lease", LEASE), **ACTION_FAILURES})
    api.route("POST", "/v1/leases/{lease_id}/close", close, auth=True, summary="Close a lease",
              responses={200: Reply("Closed: the lease", LEASE), **ACTION_FAILURES})
