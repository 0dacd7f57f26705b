"""OpenAPI 3.1 document built from the declared routes (``node.api.registry.Route``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from node.api.registry import Route
from node.api.schemas import LEASE_ID

PATH_PARAM = re.compile(r"{(\w+)}")
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "lease_id": LEASE_ID,
}


def _operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": r.summary, "operationId": _operation_id(r), "tags": [r.tag]}
    params = [{"name": n, "in": "path", "required": True, "schema": PATH_SCHEMAS.get(n, {"type": "string"})}
              for n in PATH_PARAM.findall(r.path)]
    params += list(r.query)
    if params:
        op["parameters"] = params
    if r.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}}}
    if r.auth:
        op["security"] = [{"bearer": []}]
    responses: dict[str, Any] = {}
    for status, reply in sorted(r.responses.items()):
        resp: dict[str, Any] = {"description": reply.description}
        content = {reply.content_type: reply.schema} if reply.schema is not None else {}
        content.update(reply.also)
        if content:
            resp["content"] = {ct: {"schema": schema} for ct, schema in content.items()}
        responses[str(status)] = resp
    op["responses"] = responses
    return op


def _operation_id(r: Route) -> str:
    words = re.sub(r"[{}]", "", r.path).strip("/").replace("/", "_").replace(".", "_") or "dashboard"
    return f"{r.method.lower()}_{words}"


def build_openapi(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.1.0",
        "info": {"title": "gpunet node API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
