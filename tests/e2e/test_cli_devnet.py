"""The CLI against a real devnet and real node processes: the devnet keeps its state across down/up, the faucet
refuses chains that are not devnets, a provider without stake is told which command stakes it, and a running node
refuses a second node on its data directory and a lease on its own offer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node.chain.anvil import free_port
from node.cli import main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GPUNET = str(ROOT / ".venv" / "bin" / "gpunet")
PROVIDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # devnet account 1


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"GPUNET_HOME": str(tmp_path / "home"), "GPUNET_RPC_URL": f"http://127.0.0.1:{free_port()}",
              "GPUNET_KEYSTORE_PASSWORD": "devnet only"}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    yield {**os.environ, **values, "COLUMNS": "200"}
    subprocess.run([GPUNET, "devnet", "down"], env={**os.environ, **values}, capture_output=True, timeout=60)


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_devnet_faucet_stake_and_node_refusals(env: dict[str, str], tmp_path: Path) -> None:
    r = cli("devnet", "status")
    assert r.exit_code == 3 and "not running" in r.output
    r = cli("devnet", "up", "--json")
    assert r.exit_code == 0, r.output
    up = json.loads(r.output)
    assert up["deployed_now"] and Path(up["deployments"]).exists() and len(up["accounts"]) == 4

    # the faucet: a wallet of one's own gets ETH and gDEV; a chain that is not a devnet is refused
    assert cli("wallet", "new", "alice").exit_code == 0
    r = cli("fund", "--wallet", "alice", "--gdev", "12.5", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["gdev"] == str(125 * 10**17)
    import node.cli.money as money

    async def not_devnet(_: Any) -> bool:
        return False

    with pytest.MonkeyPatch.context() as m:  # anvil answering like a public chain's client
        m.setattr(money, "is_devnet", not_devnet)
        r = cli("fund", "--wallet", "alice")
    assert r.exit_code == 1 and "not a devnet" in r.output

    # a provider without stake does not start, and says what to run
    node_args = [GPUNET, "run", "--data-dir", "pnode", "--dev-account", "1", "--provider", "--log-level", "WARNING"]
    p = subprocess.run(node_args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "gpunet provider stake 100" in p.stderr, p.stderr[-2000:]

    r = cli("provider", "stake", "100", "--dev-account", "1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["stake"] == str(100 * 10**18)

    node = subprocess.Popen(node_args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        r = cli("status", "--data-dir", "pnode", "--wait", "90", "--json")
        assert r.exit_code == 0, r.output + (node.stderr.read().decode()[-2000:] if node.poll() is not None else "")
        assert json.loads(r.output)["address"] == PROVIDER

        # a second node on the same data directory is refused, naming the holder
        p = subprocess.run([GPUNET, "run", "--data-dir", "pnode", "--log-level", "WARNING"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and f"in use by another node (pid {node.pid})" in p.stderr, p.stderr[-2000:]

        # a lease on the node's own offer is refused before any transaction
        r = cli("offers", "--data-dir", "pnode", "-q")
        assert r.exit_code == 0 and r.output.startswith("0x"), r.output
        offer = r.output.split()[0]
        r = cli("lease", "open", "--data-dir", "pnode", "--offer-id", offer, "--gpus", "1", "--deposit", "0.001")
        assert r.exit_code == 1 and "400" in r.output and "own offer" in r.output, r.output
        r = cli("lease", "list", "--data-dir", "pnode", "--json")
        assert json.loads(r.output) == []
        r = cli("provider", "status", PROVIDER, "--json")
        status = json.loads(r.output)
        assert status["registered"] is True and status["stake"] == str(100 * 10**18)

        r = cli("stop", "--data-dir", "pnode")
        assert r.exit_code == 0, r.output
        assert node.wait(timeout=10) == 0
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(timeout=30)
    assert cli("stop", "--data-dir", "pnode").exit_code == 3

    # the devnet keeps its state across down and up: no new deployment, the stake is still there
    assert "stopped" in cli("devnet", "down").output
    r = cli("devnet", "up", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["deployed_now"] is False
    r = cli("balance", PROVIDER, "--json")
    assert json.loads(r.output)["stake"] == str(100 * 10**18)
