"""Shared fixtures: a real anvil per test module, the contracts deployed on it, funded dev wallets.

Fixtures fail with a clear message when a tool is missing (run scripts/setup) and clean up their processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.chain.anvil import Anvil, devnet_key, find_tool
from node.chain.artifacts import OUT_DIR, Deployment
from node.chain.deploy import DeployParams, deploy_all


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> None:
    """Poll ``cond`` until true or fail after ``timeout`` seconds (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def async_wait_for(cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02,
                         what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    try:
        find_tool("anvil")
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"anvil missing: {exc}")
    if not (OUT_DIR / "LeaseEscrow.sol" / "LeaseEscrow.json").exists():
        pytest.fail("contract artifacts missing in out/: run scripts/setup (forge build)")
    a = Anvil().start()
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture(scope="module")
def deployment(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    out: Path = tmp_path_factory.mktemp("deploy") / "31337.json"
    return asyncio.run(deploy_all(anvil.url, devnet_key(0), DeployParams(), out=out))


@pytest.fixture(scope="module")
def deployment_file(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from node.chain.artifacts import save_deployment

    path = tmp_path_factory.mktemp("deployfile") / f"{deployment.chain_id}.json"
    save_deployment(deployment, path)
    return path
