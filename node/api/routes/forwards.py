"""Port forwards of a consumer lease: ``POST/GET /v1/leases/{lease_id}/forwards`` and
``DELETE /v1/leases/{lease_id}/forwards[?forward_id=N]`` (token-guarded; without ``forward_id``: all of the
lease's). A forward listens on 127.0.0.1 only; each connection to it reaches the given container port of the
lease's job through the provider's node (``/gpunet/forward/1.0.0``). ``wait`` (seconds) answers once the
container port accepts connections."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.registry import Api, Reply, error_response, failure, json_response
from node.api.requests import BadRequest, parse_lease_id
from node.api.routes.leases import body_json

FORWARD: dict[str, Any] = {
    "type": "object", "required": ["forward_id", "lease_id", "container_port", "local", "local_port"],
    "properties": {"forward_id": {"type": "integer"}, "lease_id": {"type": "integer"},
                   "container_port": {"type": "integer"}, "local": {"type": "string"},
                   "local_port": {"type": "integer"}, "connections": {"type": "integer"}},
}
FORWARDS: dict[str, Any] = {"type": "object", "required": ["forwards"],
                            "properties": {"forwards": {"type": "array", "items": FORWARD}}}
REMOVED: dict[str, Any] = {"type": "object", "required": ["removed"],
                           "properties": {"removed": {"type": "array", "items": {"type": "integer"}}}}


def _port(body: dict[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not (0 if key == "local_port" else 1) <= value < 65536:
        raise BadRequest(f"{key} must be a TCP port number")
    return value


def register(api: Api) -> None:
    node = api.node

    def service() -> Any:
        forwards = getattr(node, "forward_service", None)
        return forwards() if callable(forwards) else None

    async def add(request: web.Request) -> web.Response:
        lid = parse_lease_id(request.match_info["lease_id"])
        body = await body_json(request)
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        port, local = _port(body, "container_port"), _port(body, "local_port", 0)
        wait = body.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 600:
            raise BadRequest("wait must be a number of seconds within 0..600")
        svc = service()
        if svc is None:
            return error_response(404, "this node makes no forwards")
        if wait:
            ready, reason = await svc.wait_ready(lid, port, float(wait))
            if not ready:
                return error_response(504, f"container port {port} not ready within {wait} s: {reason}")
        return json_response(await svc.add(lid, port, local), 201)

    async def listed(request: web.Request) -> web.Response:
        lid = parse_lease_id(request.match_info["lease_id"])
        svc = service()
        return json_response({"forwards": svc.list(lid) if svc is not None else []})

    async def remove(request: web.Request) -> web.Response:
        lid = parse_lease_id(request.match_info["lease_id"])
        raw = request.query.get("forward_id")
        try:
            wanted = None if raw is None else int(raw)
        except ValueError:
            raise BadRequest("forward_id must be an integer") from None
        svc = service()
        found = svc.list(lid) if svc is not None else []
        ids = [f["forward_id"] for f in found if wanted is None or f["forward_id"] == wanted]
        if wanted is not None and not ids:
            return error_response(404, "no such forward")
        for fid in ids:
            await svc.remove(lid, fid)
        return json_response({"removed": ids})

    api.route("POST", "/v1/leases/{lease_id}/forwards", add, auth=True,
              summary="Forward a loopback port to a declared container port of the lease's job",
              body={"type": "object", "required": ["container_port"],
                    "properties": {"container_port": {"type": "integer"}, "local_port": {"type": "integer"},
                                   "wait": {"type": "number"}}},
              responses={201: Reply("The forward: its loopback address", FORWARD),
                         404: failure("This node makes no forwards"),
                         504: failure("The container port was not ready in time")})
    api.route("GET", "/v1/leases/{lease_id}/forwards", listed, auth=True, summary="The lease's forwards",
              responses={200: Reply("Forwards", FORWARDS)})
    api.route("DELETE", "/v1/leases/{lease_id}/forwards", remove, auth=True,
              summary="Remove a forward (forward_id), or all of the lease's",
              query=[{"name": "forward_id", "in": "query", "required": False, "schema": {"type": "integer"}}],
              responses={200: Reply("Removed: their ids", REMOVED), 404: failure("No such forward")})
