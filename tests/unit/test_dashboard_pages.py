"""Dashboard pages over a fake node: human units, fixed event columns, links between lease, offer, provider and
transaction, and the market rebuilt from contract events alone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.api.server import make_app
from node.api.ui.explorer import rebuild
from node.api.ui.fmt import ago, amount, per_gpu_hour

E18 = 10**18
PROV = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
CONS = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
OFFER = "ab" * 32
TX = ["0x" + f"{i:02x}" * 32 for i in range(1, 8)]

EVENTS = [  # newest first, as the node serves them
    {"block": 9, "event": "LeaseFinalized", "tx": TX[6], "leaseId": 1, "provider": PROV, "consumer": CONS,
     "refund": str(40 * E18), "collateralUnlocked": 0},
    {"block": 8, "event": "LeaseClosed", "tx": TX[5], "leaseId": 1, "provider": PROV, "consumer": CONS,
     "closedBy": CONS, "closedAt": 1_700_000_100},
    {"block": 7, "event": "LeaseSettled", "tx": TX[4], "leaseId": 1, "provider": PROV, "consumer": CONS, "seq": 2,
     "cumulativeGpuSeconds": 20, "amount": 10 * E18, "fee": E18 // 10},
    {"block": 6, "event": "UsageClaimed", "tx": TX[3], "leaseId": 1, "provider": PROV, "consumer": CONS, "seq": 1,
     "cumulativeGpuSeconds": 10, "readyAt": 1_700_000_050},
    {"block": 5, "event": "LeaseOpened", "tx": TX[2], "leaseId": 1, "provider": PROV, "consumer": CONS,
     "offerHash": OFFER, "gpus": 2, "pricePerGpuSecond": 10**12, "deposit": 50 * E18, "startedAt": 1_700_000_000,
     "endsAt": 1_700_003_600},
    {"block": 4, "event": "Registered", "tx": TX[1], "provider": PROV, "nodeKey": "cd" * 32, "metadataURI": ""},
    {"block": 3, "event": "Staked", "tx": TX[0], "provider": PROV, "amount": 1000 * E18, "totalStake": 1000 * E18},
]


class PagesNode:
    def status(self) -> dict[str, Any]:
        return {"peer_id": "12D3KooWpeer", "addrs": ["/ip4/127.0.0.1/tcp/1"], "address": CONS, "chain_id": 31337,
                "escrow": PROV, "staking": PROV, "token": PROV, "offers": 1, "provider": False, "devices": [],
                "uptime_s": 75, "chain": {"up": True}}

    def query_offers(self, params: dict[str, str]) -> list[dict[str, Any]]:
        if params.get("min_gpus", "0") and not params.get("min_gpus", "0").isdigit():
            raise ValueError("query parameter min_gpus must be an integer")
        return [{"offer_id": "0x" + OFFER, "provider": PROV, "nonce": 1, "gpu_model": "SIM-A100", "gpu_count": 2,
                 "vram_mib": 40960, "price_per_gpu_second": str(10**12), "min_duration": 5, "max_duration": 3600,
                 "expires_at": 1_900_000_000, "region": "local", "simulated": True}]

    async def peers(self) -> list[dict[str, Any]]:
        return [{"peer_id": "12D3KooWother", "addrs": ["/ip4/127.0.0.1/tcp/2"], "in_mesh": True}]

    def leases(self) -> list[dict[str, Any]]:
        v = self.lease(1)
        return [v] if v else []

    def lease(self, lease_id: int) -> dict[str, Any] | None:
        if lease_id != 1:
            return None
        return {"lease_id": 1, "role": "consumer", "status": "FINALIZED", "provider": PROV, "consumer": CONS,
                "gpus": 2, "price_per_gpu_second": str(10**12), "deposit": str(50 * E18), "paid": str(10 * E18),
                "fees": str(E18 // 10), "refund": str(40 * E18), "started_at": 1_700_000_000,
                "ends_at": 1_700_003_600, "closed_at": 1_700_000_100, "settled_seq": 2, "settled_gpu_seconds": 20,
                "accepted_seq": 2, "accepted_gpu_seconds": 20, "heartbeats": 3, "rejected_checkpoints": 0,
                "close_reason": "consumer", "peer": None, "faults": {},
                "job_result": {"exit_code": 0, "log_tail": "hello <b>gpunet</b>\n", "simulated": False},
                "checkpoints": [{"seq": 2, "gpu_seconds": 20, "status": "settled", "reason": ""}], "notices": []}

    def chain_events(self, limit: int) -> list[dict[str, Any]]:
        return EVENTS[:limit]

    def lease_usage(self, lease_id: int) -> list[dict[str, Any]]:
        return [{"seq": i, "at": 1_700_000_000 + 5 * i, "gpu_seconds": 10 * i} for i in range(1, 4)]

    def provider_stake(self, provider: str) -> dict[str, Any] | None:
        return {"registered": True, "free": str(900 * E18), "locked": str(100 * E18)}

    async def money(self) -> dict[str, Any]:
        return {"address": CONS, "eth": str(10**22), "token": str(99_950 * E18 + E18 // 2), "stake_free": "0",
                "stake_locked": "0", "earnings": "0", "refunds": "0"}


@pytest.fixture
async def client():
    async with TestClient(TestServer(make_app(PagesNode(), "t"))) as c:  # type: ignore[arg-type]
        yield c


def test_human_units():
    assert amount(1234 * E18 + E18 // 2) == "1,234.5 gDEV"
    assert amount(0) == "0 gDEV"
    assert amount(1) == "< 0.000001 gDEV"
    assert per_gpu_hour(10**12) == "0.0036 gDEV/GPU-h"
    assert ago(-90) == "1 min ago" and ago(7200) == "in 2 h" and ago(1) == "just now"


def test_the_market_is_rebuilt_from_events_alone():
    m = rebuild(EVENTS)
    p = m.providers[PROV]
    assert p.registered and p.staked == 1000 * E18 and p.leases == [1]
    lv = m.leases[1]
    assert (lv.status, lv.offer, lv.gpus, lv.paid, lv.claims, lv.refund) == ("finalized", "0x" + OFFER, 2,
                                                                               10 * E18, 1, 40 * E18)
    assert lv.opened_tx == TX[2] and m.gpus_leased("0x" + OFFER) == 0
    assert [e["event"] for e in m.txs[TX[4]]] == ["LeaseSettled"]


@pytest.mark.parametrize("path", ["/", "/market", "/leases", "/leases/1", "/money", "/peers", "/explorer",
                                  "/explorer?lease=1", f"/explorer?provider={PROV}", f"/explorer?tx={TX[4]}",
                                  f"/explorer?offer=0x{OFFER}"])
async def test_every_page_renders_html_without_inline_code(client, path):
    r = await client.get(path)
    assert r.status == 200, await r.text()
    text = await r.text()
    assert r.content_type == "text/html" and "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert "<script>" not in text and " style=" not in text and " onclick" not in text
    assert '"peer_id"' not in text  # no raw JSON dump


async def test_amounts_and_times_are_human_and_output_is_escaped(client):
    text = await (await client.get("/leases/1")).text()
    assert "50 gDEV" in text and "40 gDEV" in text and "0.0036 gDEV/GPU-h" in text
    assert "ago</time>" in text
    assert "hello &lt;b&gt;gpunet&lt;/b&gt;" in text  # job output cannot inject markup
    assert f'href="/explorer?tx={TX[4]}"' in text  # the settlement links to its transaction
    assert "<polyline" in text  # the usage chart


async def test_event_columns_are_fixed_whatever_the_event(client):
    text = await (await client.get("/explorer")).text()
    table = text[text.index('<table class="events">'):]
    head = re.findall(r"<th>([^<]*)</th>", table[:table.index("</thead>")])
    assert head == ["Block", "Transaction", "Event", "Lease", "Provider", "Consumer", "Offer", "Details"]
    rows = re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>"):])
    assert len(rows) == len(EVENTS) and all(r.count("<td>") == len(head) for r in rows)
    staked = next(r for r in rows if ">Staked<" in r)
    assert "1,000 gDEV" in staked and "totalStake" in staked  # values under their own names, in token units


async def test_explorer_links_lease_offer_provider_and_transaction(client):
    text = await (await client.get("/explorer?lease=1")).text()
    assert f'href="/explorer?offer=0x{OFFER}"' in text and f'href="/explorer?provider={PROV}"' in text
    assert f'href="/explorer?tx={TX[2]}"' in text
    offer = await (await client.get(f"/explorer?offer=0x{OFFER}")).text()
    assert 'href="/explorer?lease=1"' in offer


async def test_bad_page_input_is_refused(client):
    assert (await client.get("/leases/7")).status == 404
    assert (await client.get("/leases/x")).status == 400
    assert (await client.get("/explorer?tx=0x12")).status == 400
    assert (await client.get("/explorer?lease=5&provider=nonsense")).status == 400  # every parameter is checked
    r = await client.get("/market?min_gpus=abc")
    assert r.status == 400 and "min_gpus" in await r.text()
    r = await client.get("/market?max_price_hour=1e3")
    assert r.status == 400 and "not an amount" in await r.text()


async def test_the_market_price_filter_is_in_gdev_per_gpu_hour():
    seen: list[dict[str, str]] = []

    class Recording(PagesNode):
        def query_offers(self, params: dict[str, str]) -> list[dict[str, Any]]:
            seen.append(params)
            return super().query_offers(params)

    async with TestClient(TestServer(make_app(Recording(), "t"))) as c:  # type: ignore[arg-type]
        r = await c.get("/market?max_price_hour=0.0036&model=SIM-A100&limit=3")
        assert r.status == 200
        text = await r.text()
    assert seen == [{"max_price": str(10**12), "model": "SIM-A100"}]
    assert 'data-unit="gdev" value="0.0036"' in text  # the open form's deposit: one GPU-hour, in gDEV


async def test_empty_form_fields_mean_no_filter_on_the_page_but_not_in_the_json_api(client):
    assert (await client.get("/market?model=&min_gpus=&max_price_hour=&region=")).status == 200
    assert (await client.get("/v1/offers?min_gpus=")).status == 400
