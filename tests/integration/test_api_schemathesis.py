"""The node's HTTP API under schemathesis: a provider and a consumer on a devnet with a real lease running, and
schemathesis generating requests (valid and invalid) for every operation of the consumer's OpenAPI document, with
the API token. Bounded in time; it must find nothing: no 5xx, every status code and body as documented, every
invalid input refused.

``positive_data_acceptance`` is left out: it expects any schema-valid body to succeed, but opening a lease from
an offer id made up by the generator is refused (400, "offer not in the book") by design. ``use_after_free`` is
left out: ``DELETE /v1/leases/{id}/forwards`` ends the lease's forwards (all, or the one named by ``forward_id``),
and the list of them, ``GET`` on the same path, rightly still answers (an empty list); the check takes the shared
path for one deleted resource.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from .conftest import CONSUMER, PRICE, PROVIDER, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BUDGET_S = 40  # schemathesis' own time budget; the whole test stays near a minute


async def test_schemathesis_finds_no_failure_against_a_node_with_a_lease(nodes, tmp_path: Path):
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    provider = await nodes("provider", account=PROVIDER, provider=True)
    consumer = await nodes("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],))
    offer = (await until(lambda: [o for o in consumer.query_offers({}) if o["provider"] == provider.address], 20,
                         "the provider's offer in the consumer's book"))[0]
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 120),
                                       "job": {"argv": [sys.executable, "-c", "print('hi')"], "timeout_s": 30}})
    await until(lambda: (consumer.lease(lease["lease_id"]) or {}).get("heartbeats"), 20, "a heartbeat")

    token = consumer._api_token()
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", f"{consumer.api_url}/openapi.json", "-H", f"Authorization: Bearer {token}",
        "--max-time", str(BUDGET_S), "--seed", "20261130", "--workers", "1", "--request-timeout", "10",
        "--exclude-checks", "positive_data_acceptance,use_after_free", "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-12000:]
    assert "Tested: " in text, text[-6000:]
