"""The dashboard and explorer in headless Chromium, against a provider and a consumer node on a devnet after a real
lease: each page loads with the content it promises (human units, the lease's settlements and job output, the
market rebuilt from contract events, linked across lease, offer, provider and transaction) and no console errors;
an action sends the token kept in the tab as a Bearer header.

Chromium is Debian's (``chromium`` and ``chromium-driver``, installed by ``scripts/setup``); no browser is
downloaded. Without it the test skips with the reason, except in CI (``CI`` set), where it fails. Screenshots go
to a temporary directory, or to ``docs/dashboard_*.png`` with ``GPUNET_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.api.ui.fmt import per_gpu_hour, plain
from tests.integration.conftest import CONSUMER, PRICE, PROVIDER, devnet, nodes, until

__all__ = ["devnet", "nodes"]  # fixtures used here

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (shutil.which(p) or Path(p).exists())]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"headless Chromium not available: {', '.join(missing)} missing (scripts/setup installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={tempfile.mkdtemp(prefix='gpunet-chromium-')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait(cond: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)  # polling a condition with a deadline, in the browser's thread


def _browse(base: str, token: str, checks: dict[str, list[str]], lease_id: int, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    d = _driver()
    try:
        for name, (path, expected) in {k: (v[0], v[1:]) for k, v in checks.items()}.items():
            d.get(base + path)
            _wait(lambda: d.execute_script("return document.readyState") == "complete", f"{path} to load")
            text = d.find_element(By.TAG_NAME, "main").text
            missing = [t for t in expected if t not in text]
            assert not missing, f"{path}: {missing} not on the page:\n{text[:3000]}"
            errors = [m for m in d.get_log("browser") if m["level"] == "SEVERE"]
            assert not errors, f"{path}: console errors {errors}"
            d.save_screenshot(str(shots / f"dashboard_{name}.png"))

        # links go where they say: from the lease page to its settlement's transaction in the explorer
        d.get(f"{base}/leases/{lease_id}")
        d.find_element(By.CSS_SELECTOR, "a[href^='/explorer?tx=']").click()
        _wait(lambda: "transaction" in d.find_element(By.TAG_NAME, "h1").text, "the transaction view")

        # an action without the token is refused in the page; with it, the top-up goes through as Bearer
        d.get(f"{base}/leases/{lease_id}")
        form = d.find_element(By.CSS_SELECTOR, f"form[data-action='/v1/leases/{lease_id}/topup']")
        form.find_element(By.NAME, "amount").send_keys(plain(PRICE * 10))  # typed in gDEV
        form.find_element(By.TAG_NAME, "button").click()
        _wait(lambda: "token" in form.find_element(By.TAG_NAME, "output").text, "the missing-token message")
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.CSS_SELECTOR, "#token-form button").click()
        assert d.execute_script("return sessionStorage.getItem('gpunet-api-token')") == token
        form.find_element(By.TAG_NAME, "button").click()
        _wait(lambda: form.find_element(By.TAG_NAME, "output").text.startswith("done"), "the top-up", 30)
        errors = [m for m in d.get_log("browser") if m["level"] == "SEVERE"]
        assert not errors, f"console errors after the action: {errors}"
    finally:
        d.quit()


async def test_dashboard_pages_in_headless_chromium(nodes, tmp_path: Path):
    _browser_or_skip()
    provider = await nodes("provider", account=PROVIDER, provider=True)
    consumer = await nodes("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],))
    offer = (await until(lambda: [o for o in consumer.query_offers({}) if o["provider"] == provider.address], 20,
                         "the provider's offer in the consumer's book"))[0]
    lease = await consumer.open_lease({
        "offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 600),
        "job": {"argv": [sys.executable, "-c", "import time; print('dashboard-job-output'); time.sleep(3)"],
                "timeout_s": 30}})
    lid = lease["lease_id"]
    await until(lambda: (consumer.lease(lid) or {}).get("job_result"), 30, "the job's output")
    await until(lambda: (consumer.lease(lid) or {}).get("settled_gpu_seconds", 0) > 0, 30, "a settlement")
    await until(lambda: any(e["event"] == "LeaseSettled" for e in consumer.chain_events(100)), 20,
                "the settlement in the event log")
    await until(lambda: len(consumer.lease_usage(lid)) >= 2, 20, "heartbeats for the chart")

    price = per_gpu_hour(offer["price_per_gpu_second"])
    short_provider = provider.address[:8]
    checks = {
        "overview": ["/", "Node", "consumer", "Offers in the book", "gDEV", "Uptime"],
        "market": ["/market", "SIM-A100", price, "Provider stake (free)", "999.9", "GPUs left", short_provider],
        "leases": ["/leases", f"#{lid}", "consumer", "Deposit left", "gDEV"],
        "lease": [f"/leases/{lid}", f"Lease #{lid}", "Usage", "Settlements", "dashboard-job-output", "Deposit left",
                  "Checkpoints", "ago"],
        "money": ["/money", "ETH", "Token", "Collateral locked", "Earnings to withdraw", "Withdrawals"],
        "peers": ["/peers", provider.p2p.peer_id, "Connected (1)"],
        "explorer": ["/explorer", "Providers", "Leases", "Staked", "LeaseOpened", "LeaseSettled", f"#{lid}",
                     "1,000 gDEV"],
        "explorer_lease": [f"/explorer?lease={lid}", "LeaseOpened", "LeaseSettled", "Offer", short_provider],
        "explorer_provider": [f"/explorer?provider={provider.address}", "Registered", "Stake", f"#{lid}"],
    }
    shots = DOCS if os.environ.get("GPUNET_UPDATE_SCREENSHOTS") == "1" else tmp_path
    await asyncio.to_thread(_browse, consumer.api_url.replace("127.0.0.1", "localhost"), consumer._api_token(),
                            checks, lid, shots)
    await until(lambda: int(consumer.lease(lid)["deposit"]) == PRICE * 610, 20,
                "the top-up sent from the page to reach the chain")
