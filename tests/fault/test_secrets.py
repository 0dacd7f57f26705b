"""No secret leaks into what a node writes. Two node processes (keystore wallets, DEBUG logs) run a whole lease
on the devnet; then every file they wrote (logs, databases and their journals, job directories, node.json) is
searched for every secret used: both wallets' private keys (hex with and without 0x, either case, and the raw 32
bytes), the keystore passwords, both API tokens and the nodes' libp2p key seeds. The only places a secret may be
are the files that exist to hold it: the encrypted keystore, the api-token file and node.key, each mode 0600."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import sys
from pathlib import Path

import pytest
from eth_account import Account

from node.chain.anvil import devnet_key
from node.chain.client import ChainClient
from node.chain.proxies import Token
from node.crypto.wallet import create_keystore
from node.demo import PRICE, Processes, http, wait
from node.p2p.keys import load_or_create_node_key
from node.storage.db import Database
from tests.integration.conftest import E18, Devnet, _rpc

pytestmark = [pytest.mark.fault, pytest.mark.integration]

HOLDERS = {"keystore.json", "api-token", "node.key"}  # files whose job is to hold one secret


def _config(path: Path, data_dir: Path, devnet: Devnet, keystore: Path, password: Path, provider: bool,
            bootstrap: list[str]) -> None:
    lines = [
        f'data_dir = "{data_dir}"', f'rpc_url = "{devnet.anvil.url}"', f'deployments = "{devnet.deployments_file}"',
        f'keystore = "{keystore}"', f'password_file = "{password}"', 'listen = ["/ip4/127.0.0.1/tcp/0"]',
        "bootstrap = [" + ", ".join(f'"{b}"' for b in bootstrap) + "]", "poll_interval = 0.2", "",
        "[provider]", f"enabled = {'true' if provider else 'false'}", 'declared_gpus = "2xSIM-A100:40960"',
        f"price_per_gpu_second = {PRICE}", "min_duration = 5", "max_duration = 3600", "offer_ttl = 600",
        f"stake = {1000 * E18}", "heartbeat_interval = 0.5", "checkpoint_interval = 1.5", 'executor = "process"',
        "allow_unsafe_process_executor = true", "",  # the test's own job
        "[consumer]", "settle_interval = 0.5", "settle_every = 0.0",
    ]
    path.write_text("\n".join(lines) + "\n")


def _needles(secret: bytes | str) -> list[bytes]:
    if isinstance(secret, str):
        return [secret.encode()]
    h = secret.hex()
    return [secret, h.encode(), h.upper().encode(), ("0x" + h).encode(), ("0X" + h.upper()).encode()]


def _written_files(roots: list[Path]) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_no_key_password_or_token_in_anything_the_nodes_wrote(devnet: Devnet, tmp_path: Path) -> None:
    wallets = {name: secrets.token_bytes(32) for name in ("provider", "consumer")}
    passwords = {name: "pw-" + secrets.token_hex(12) for name in wallets}
    secrets_dir = tmp_path / "secrets"  # what the operator wrote: not searched
    secrets_dir.mkdir(mode=0o700)
    for name, key in wallets.items():
        (secrets_dir / f"{name}.pw").write_text(passwords[name] + "\n")
        os.chmod(secrets_dir / f"{name}.pw", 0o600)
        create_keystore(secrets_dir / f"{name}.keystore.json", passwords[name], key)

    async def fund() -> None:
        c = await ChainClient.connect(devnet.anvil.url, devnet.deployment, Database(tmp_path / "faucet.sqlite"),
                                      devnet_key(0))
        for name, key in wallets.items():
            addr = Account.from_key(key).address
            _rpc(devnet.anvil.url, "anvil_setBalance", [addr, hex(10 * E18)])
            await Token(c).mint(f"fund:{name}", addr, 10_000 * E18)
        await c.close()

    asyncio.run(fund())
    procs = Processes()
    logs = tmp_path / "logs"
    logs.mkdir()
    dirs = {name: tmp_path / name for name in wallets}
    py = [sys.executable, "-m", "node.cli", "run", "--log-level", "DEBUG", "--config"]
    try:
        _config(tmp_path / "provider.toml", dirs["provider"], devnet, secrets_dir / "provider.keystore.json",
                secrets_dir / "provider.pw", True, [])
        procs.start("provider", [*py, str(tmp_path / "provider.toml")], logs / "provider.log")
        pinfo = wait(lambda: json.loads((dirs["provider"] / "node.json").read_text())
                     if (dirs["provider"] / "node.json").exists() else procs.check(), 60, "the provider to start")
        _config(tmp_path / "consumer.toml", dirs["consumer"], devnet, secrets_dir / "consumer.keystore.json",
                secrets_dir / "consumer.pw", False, [pinfo["addrs"][0]])
        procs.start("consumer", [*py, str(tmp_path / "consumer.toml")], logs / "consumer.log")
        cinfo = wait(lambda: json.loads((dirs["consumer"] / "node.json").read_text())
                     if (dirs["consumer"] / "node.json").exists() else procs.check(), 60, "the consumer to start")
        token = (dirs["consumer"] / "api-token").read_text().strip()
        offers = wait(lambda: http(f"{cinfo['api']}/v1/offers?min_gpus=1")["offers"] or procs.check(), 30,
                      "the provider's offer at the consumer")
        job = {"argv": [sys.executable, "-c", "import time; print('working'); time.sleep(3)"], "timeout_s": 60}
        lease = http(f"{cinfo['api']}/v1/leases", {"offer_id": offers[0]["offer_id"], "gpus": 1,
                                                   "deposit": str(PRICE * 120), "job": job}, token)
        lid = lease["lease_id"]
        lease_url = f"{cinfo['api']}/v1/leases/{lid}"
        wait(lambda: ((v := http(lease_url)).get("job_result") and v["settled_gpu_seconds"] > 0
             and v["settled_gpu_seconds"] == v["accepted_gpu_seconds"]) or procs.check(), 60,
             "the job to finish and its usage to be settled")
        http(f"{lease_url}/close", {}, token)
        wait(lambda: http(lease_url)["status"] == "FINALIZED" or procs.check(), 60, "finalization")
        # a wrong token is refused (and must not be logged either)
        with pytest.raises(OSError):
            http(f"{cinfo['api']}/v1/leases", {"offer_id": "0x00", "gpus": 1, "deposit": "1"}, "wrong-" + token)
    finally:
        procs.stop_all()

    tokens = {name: (d / "api-token").read_text().strip() for name, d in dirs.items()}
    node_seeds = {name: load_or_create_node_key(d / "node.key").private_key.to_bytes()[:32]
                  for name, d in dirs.items()}
    needles: dict[str, list[bytes]] = {}
    for name in wallets:
        needles[f"{name} wallet key"] = _needles(wallets[name])
        needles[f"{name} keystore password"] = _needles(passwords[name])
        needles[f"{name} API token"] = _needles(tokens[name])
        needles[f"{name} libp2p key seed"] = _needles(node_seeds[name])

    for name, d in dirs.items():  # the needles are right: each holder file holds its own secret
        assert any(form in (d / "node.key").read_bytes() for form in needles[f"{name} libp2p key seed"])
        assert any(form in (d / "api-token").read_bytes() for form in needles[f"{name} API token"])
    files = _written_files([*dirs.values(), logs])
    assert len(files) >= 6 and sum(f.stat().st_size for f in files) > 10_000, "the nodes wrote next to nothing"
    assert (logs / "consumer.log").stat().st_size > 1000
    leaks = []
    for f in files:
        data = f.read_bytes()
        for what, forms in needles.items():
            if f.name in HOLDERS and _holder_may_hold(f, what):
                continue
            if any(form in data for form in forms):
                leaks.append(f"{what} in {f}")
    assert not leaks, "secrets found in what the nodes wrote:\n" + "\n".join(leaks)
    for d in dirs.values():
        for holder in ("api-token", "node.key"):
            assert stat.S_IMODE((d / holder).stat().st_mode) == 0o600, f"{d / holder} is not 0600"


def _holder_may_hold(f: Path, what: str) -> bool:
    owner = "provider" if "provider" in f.parent.name else "consumer"
    return (f.name == "api-token" and what == f"{owner} API token") or (
        f.name == "node.key" and what == f"{owner} libp2p key seed")
