"""HTTP API: reads are open, fund-moving routes need the bearer token, bad input gets a 400 with a message."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.api.requests import OpenLeaseRequest
from node.api.server import make_app, start_api
from node.errors import ConfigError

TOKEN = "s3cret-token"


class FakeNode:
    def __init__(self) -> None:
        self.opened: list[OpenLeaseRequest] = []
        self.topped_up: list[tuple[int, int]] = []

    def status(self) -> dict[str, Any]:
        return {"peer_id": "p"}

    def query_offers(self, params: dict[str, str]) -> list[dict[str, Any]]:
        if "min_gpus" in params and not params["min_gpus"].isdigit():
            raise ValueError("query parameter min_gpus must be an integer")
        return [{"offer_id": "0x01"}]

    async def peers(self) -> list[dict[str, Any]]:
        return []

    def leases(self) -> list[dict[str, Any]]:
        return []

    def lease(self, lease_id: int) -> dict[str, Any] | None:
        return {"lease_id": lease_id} if lease_id == 1 else None

    async def open_lease(self, request: OpenLeaseRequest) -> dict[str, Any]:
        self.opened.append(request)
        return {"lease_id": 1}

    async def top_up(self, lease_id: int, amount: int) -> dict[str, Any]:
        self.topped_up.append((lease_id, amount))
        return {"lease_id": lease_id}

    async def close_lease(self, lease_id: int) -> dict[str, Any]:
        return {"lease_id": lease_id}

    def chain_events(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def cancel_offers(self) -> dict[str, Any]:
        return {"nonce_below": 1}

    def lease_usage(self, lease_id: int) -> list[dict[str, Any]]:
        return []

    def provider_stake(self, provider: str) -> dict[str, Any] | None:
        return None

    async def money(self) -> dict[str, Any]:
        return {}


@pytest.fixture
async def client():
    node = FakeNode()
    async with TestClient(TestServer(make_app(node, TOKEN))) as c:
        c.node = node  # type: ignore[attr-defined]
        yield c


async def test_reads_are_open(client):
    assert (await client.get("/v1/status")).status == 200
    assert (await (await client.get("/v1/offers")).json())["offers"][0]["offer_id"] == "0x01"
    assert (await client.get("/v1/leases/1")).status == 200
    assert (await client.get("/v1/leases/2")).status == 404
    assert (await client.get("/openapi.json")).status == 200
    assert (await client.get("/metrics")).status == 200


OFFER_ID = "0x" + "ab" * 32
OPEN_BODY = {"offer_id": OFFER_ID, "gpus": 2, "deposit": "1000000000000000000000", "job": {"argv": ["true"]}}


@pytest.mark.parametrize("path", ["/v1/leases", "/v1/leases/1/topup", "/v1/leases/1/close", "/v1/offers/cancel"])
async def test_fund_moving_routes_need_the_token(client, path):
    body = OPEN_BODY if path == "/v1/leases" else {"amount": 1}
    r = await client.post(path, json=body)
    assert r.status == 401
    r = await client.post(path, json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    assert client.node.opened == [] and client.node.topped_up == []
    r = await client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status in (200, 201)


async def test_open_lease_body_reaches_the_node_typed(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = await client.post("/v1/leases", json=OPEN_BODY, headers=auth)
    assert r.status == 201
    assert client.node.opened == [OpenLeaseRequest(bytes.fromhex("ab" * 32), 2, 10**21, {"argv": ["true"]})]
    r = await client.post("/v1/leases/7/topup", json={"amount": "25"}, headers=auth)
    assert r.status == 200 and client.node.topped_up == [(7, 25)]


@pytest.mark.parametrize(("body", "field"), [
    ([1, 2], "JSON object"),
    ({"gpus": 1, "deposit": 1}, "offer_id"),
    ({**OPEN_BODY, "offer_id": "0xzz"}, "offer_id"),
    ({**OPEN_BODY, "offer_id": "0x" + "ab" * 31}, "offer_id"),
    ({**OPEN_BODY, "gpus": None}, "gpus"),
    ({**OPEN_BODY, "gpus": 1.5}, "gpus"),
    ({**OPEN_BODY, "gpus": True}, "gpus"),
    ({**OPEN_BODY, "gpus": 0}, "gpus"),
    ({**OPEN_BODY, "deposit": "-5"}, "deposit"),
    ({**OPEN_BODY, "deposit": "1e18"}, "deposit"),
    ({**OPEN_BODY, "deposit": "9" * 5000}, "deposit"),
    ({**OPEN_BODY, "deposit": [1]}, "deposit"),
    ({**OPEN_BODY, "job": "sleep 1"}, "job"),
])
async def test_malformed_open_lease_bodies_are_400s_naming_the_field(client, body, field):
    r = await client.post("/v1/leases", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 400
    assert field in (await r.json())["error"]
    assert client.node.opened == []


@pytest.mark.parametrize("body", [{}, {"amount": [1]}, {"amount": {"x": 1}}, {"amount": -1}, {"amount": "0x10"}, "7"])
async def test_malformed_top_ups_are_400s(client, body):
    r = await client.post("/v1/leases/1/topup", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 400
    assert client.node.topped_up == []


async def test_bad_input_is_a_400_with_a_message(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = await client.post("/v1/leases", data=b"not json", headers=auth)
    assert r.status == 400 and "JSON" in (await r.json())["error"]
    r = await client.get("/v1/offers?min_gpus=abc")
    assert r.status == 400 and "min_gpus" in (await r.json())["error"]
    r = await client.get("/v1/leases/xyz")
    assert r.status == 400
    r = await client.post("/v1/leases/1/topup", json={}, headers=auth)
    assert r.status == 400
    r = await client.get("/v1/events?limit=-3")
    assert r.status == 400 and "limit" in (await r.json())["error"]
    assert (await client.get("/v1/events?limit=5")).status == 200


async def test_api_port_in_use_is_a_clear_error():
    first, port = await start_api(make_app(FakeNode(), TOKEN), "127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await start_api(make_app(FakeNode(), TOKEN), "127.0.0.1", port)
    finally:
        await first.cleanup()


async def test_api_refuses_non_loopback_hosts():
    with pytest.raises(ConfigError):
        await start_api(make_app(FakeNode(), TOKEN), "0.0.0.0", 0)


async def test_every_served_route_is_in_the_openapi_document(client):
    doc = await (await client.get("/openapi.json")).json()
    served = {(r.method.lower(), r.resource.canonical) for r in client.app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented


@pytest.mark.parametrize("headers", [{"Authorization": TOKEN}, {"Authorization": f"Token {TOKEN}"},
                                     {"X-Api-Token": TOKEN}, {"Authorization": f"bearer{TOKEN}"}])
async def test_the_token_is_read_only_as_a_bearer_credential(client, headers):
    r = await client.post("/v1/leases/1/close", headers=headers)
    assert r.status == 401
    r = await client.post(f"/v1/leases/1/close?token={TOKEN}")
    assert r.status == 401


async def test_the_openapi_document_validates_and_documents_every_answer(client):
    from openapi_spec_validator import validate

    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "421" in op["responses"], (method, path)
            assert any(s.startswith("2") for s in op["responses"]), (method, path)
            for status, resp in op["responses"].items():
                assert "content" in resp, (method, path, status)  # every answer has a body schema
            if "{lease_id}" in path:
                assert [p["name"] for p in op["parameters"] if p["in"] == "path"] == ["lease_id"]
            if op.get("security"):
                assert "401" in op["responses"]
            if "requestBody" in op:
                assert {"400", "413"} <= set(op["responses"])


@pytest.mark.parametrize("raw", [
    b'{"offer_id": "0x' + b"ab" * 32 + b'", "gpus": 1, "deposit": {}}',
    b'{"offer_id": "0x' + b"ab" * 32 + b'", "gpus": [1], "deposit": "1"}',
    b"null",
    b'{"offer_id": "0x' + b"ab" * 32 + b'", "gpus": 1, "deposit": 1e400}',
    b'{"offer_id": "0x' + b"ab" * 32 + b'", "gpus": 4294967296, "deposit": "1"}',
    b'{"offer_id": "0x' + b"ab" * 32 + b'", "gpus": 1, "deposit": ' + str(2**256).encode() + b"}",
    b'{"offer_id": NaN, "gpus": 1, "deposit": "1"}',
    b"[" * 20000 + b"]" * 20000,
    b"\xff\xfe",
    b"",
])
async def test_wrong_json_types_are_400s_never_500s(client, raw):
    r = await client.post("/v1/leases", data=raw, headers={"Authorization": f"Bearer {TOKEN}",
                                                           "Content-Type": "application/json"})
    assert r.status == 400
    assert "error" in await r.json()
    assert client.node.opened == []


async def test_lease_ids_beyond_what_the_store_holds_are_400s(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.get(f"/v1/leases/{2**63}")).status == 400
    assert (await client.post(f"/v1/leases/{2**64}/topup", json={"amount": 1}, headers=auth)).status == 400
    assert (await client.post("/v1/leases/1/topup", json={"amount": 2**256}, headers=auth)).status == 400


async def test_aiohttp_answers_are_json_too(client):
    r = await client.get("/v1/nothing-here")
    assert r.status == 404 and "error" in await r.json()
    r = await client.delete("/v1/leases")
    assert r.status == 405 and "error" in await r.json()
    r = await client.post("/v1/leases", data=b"x" * (65 * 1024), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 413 and "error" in await r.json()


@pytest.mark.parametrize("host", ["localhost", "localhost:8545", "127.0.0.1", "127.0.0.1:1234", "[::1]",
                                  "[::1]:80", "LOCALHOST:9", "node.lan", "node.lan:7000"])
async def test_loopback_and_configured_hosts_are_answered(host):
    async with TestClient(TestServer(make_app(FakeNode(), TOKEN, allowed_hosts=["Node.LAN"]))) as c:
        assert (await c.get("/v1/status", headers={"Host": host})).status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.2",
                                  "127.0.0.1.nip.io:80", "[::2]:80", "localhost:80@evil", "", "localhost:abc",
                                  "0.0.0.0"])
async def test_other_hosts_are_refused_before_any_route_runs(client, host):
    """A DNS-rebinding page reaches the API with its own name in Host: no read, no action, not even the page."""
    for path in ("/v1/status", "/v1/leases/1", "/", "/openapi.json", "/metrics"):
        r = await client.get(path, headers={"Host": host})
        assert r.status == 421, (host, path)
    r = await client.post("/v1/leases", json=OPEN_BODY, headers={"Host": host, "Authorization": f"Bearer {TOKEN}"})
    assert r.status == 421 and client.node.opened == []


def test_the_grafana_dashboard_uses_only_metric_names_the_node_defines():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = json.loads((root / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bgpunet_[a-z0-9_]+", e)}
    source = "\n".join(p.read_text() for p in (root / "node").rglob("*.py"))
    defined = set(re.findall(r"[\"'](gpunet_[a-z0-9_]+)[\"']", source))
    for name in sorted(used):
        base = re.sub(r"_(total|bucket|info)$", "", name)
        assert name in defined or base in defined, f"{name} is not a metric the node exports"
    assert len(exprs) >= 20


def test_the_api_hosts_come_from_the_config():
    from node.config import load_config

    cfg = load_config(None, env={"GPUNET_API_HOSTS": "node.lan, gpunet.internal"})
    assert cfg.api_hosts == ("node.lan", "gpunet.internal")
