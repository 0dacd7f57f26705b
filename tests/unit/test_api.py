"""HTTP API: reads are open, fund-moving routes need the bearer token, bad input gets a 400 with a message."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.api.server import make_app, start_api
from node.errors import ConfigError

TOKEN = "s3cret-token"


class FakeNode:
    def __init__(self) -> None:
        self.opened: list[dict[str, Any]] = []

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

    async def open_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        self.opened.append(body)
        return {"lease_id": 1}

    async def top_up(self, lease_id: int, amount: int) -> dict[str, Any]:
        return {"lease_id": lease_id}

    async def close_lease(self, lease_id: int) -> dict[str, Any]:
        return {"lease_id": lease_id}

    def chain_events(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def cancel_offers(self) -> dict[str, Any]:
        return {"nonce_below": 1}


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


@pytest.mark.parametrize("path", ["/v1/leases", "/v1/leases/1/topup", "/v1/leases/1/close", "/v1/offers/cancel"])
async def test_fund_moving_routes_need_the_token(client, path):
    r = await client.post(path, json={"amount": 1})
    assert r.status == 401
    r = await client.post(path, json={"amount": 1}, headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    assert client.node.opened == []
    r = await client.post(path, json={"amount": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status in (200, 201)


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


async def test_api_refuses_non_loopback_hosts():
    with pytest.raises(ConfigError):
        await start_api(make_app(FakeNode(), TOKEN), "0.0.0.0", 0)
