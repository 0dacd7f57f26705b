"""Crash recovery with real processes: a provider node and a consumer node (``python -m node.cli run``) on anvil,
one is SIGKILLed at a step of a lease's life and started again from its data directory; the lease must still end
well: no lost checkpoint, no double settlement, no deposit or collateral left locked, no nonce used twice, and every
balance exact to the wei against the chain.

Kill points: right after the open, between a checkpoint's receipt and its settlement, with a transaction in flight
(the close), during a claim (the consumer gone, the provider claiming), during a challenge (the provider gone, the
consumer challenging). Which node dies, where, and after how long a jitter is drawn from a seeded random schedule,
one lifecycle per test case, so a failure replays from its seed and index::

    GPUNET_CRASH_SEED=7 GPUNET_CRASH_LIFECYCLES=40 .venv/bin/python -m pytest tests/crash -m integration

CI runs the default: seed 1, three lifecycles (about two minutes on two cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.chain.client import ChainClient
from node.chain.proxies import Escrow, Staking, Token
from node.storage.db import Database
from tests.integration.conftest import E18, PRICE, Devnet, address

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("GPUNET_CRASH_SEED", "1"))
LIFECYCLES = int(os.environ.get("GPUNET_CRASH_LIFECYCLES", "3"))
KILL_POINTS = ("after_open", "checkpoint_unsettled", "tx_in_flight", "during_claim", "during_challenge")
CONSUMER = 2
PROVIDER = 1
DEPOSIT = PRICE * 40  # one GPU for 40 s at most


def schedule(seed: int, n: int) -> list[tuple[str, str, float]]:
    """(kill point, node killed, jitter in seconds) of each lifecycle: every kill point comes up in the first five,
    then random ones."""
    rng = random.Random(seed)
    points = list(KILL_POINTS)
    rng.shuffle(points)
    out = []
    for i in range(n):
        point = points[i] if i < len(points) else rng.choice(KILL_POINTS)
        victim = {"during_claim": "provider", "during_challenge": "consumer"}.get(point) or rng.choice(
            ("provider", "consumer"))
        out.append((point, victim, round(rng.uniform(0.0, 1.0), 2)))
    return out


# ---------------------------------------------------------------------------------------------- processes


def wait(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" ({last!r})" if last else ""))


@dataclass
class NodeProc:
    name: str
    config: Path
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "node.json").unlink()
        log = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([sys.executable, "-m", "node.cli", "run", "--log-level", "INFO", "--config",
                                      str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.info = wait(lambda: self._alive() and json.loads((self.data_dir / "node.json").read_text()), 60,
                         f"{self.name} to start")

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
        return True

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(self.info["api"] + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        req.add_header("Authorization", "Bearer " + (self.data_dir / "api-token").read_text().strip())
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def lease(self, lid: int) -> dict[str, Any]:
        return dict(self.api(f"/v1/leases/{lid}"))

    def db_rows(self, sql: str) -> list[dict[str, Any]]:
        db = Database(self.data_dir / "node.sqlite")
        try:
            return [dict(r) for r in db.query(sql)]
        finally:
            db.close()


def write_config(path: Path, devnet: Devnet, data_dir: Path, account: int, provider: bool,
                 bootstrap: list[str]) -> None:
    path.write_text("\n".join([
        f'data_dir = "{data_dir}"', f'rpc_url = "{devnet.anvil.url}"', f'deployments = "{devnet.deployments_file}"',
        f"dev_account = {account}", 'listen = ["/ip4/127.0.0.1/tcp/0"]',
        "bootstrap = [" + ", ".join(f'"{b}"' for b in bootstrap) + "]", "poll_interval = 0.2", "",
        "[provider]", f"enabled = {'true' if provider else 'false'}", 'declared_gpus = "2xSIM-A100:40960"',
        f"price_per_gpu_second = {PRICE}", "min_duration = 5", "max_duration = 3600", "offer_ttl = 600",
        f"stake = {1000 * E18}", "heartbeat_interval = 0.5", "checkpoint_interval = 1.5", 'executor = "process"',
        "allow_unsafe_process_executor = true",
        "max_unsettled = 8", "", "[consumer]", "settle_interval = 0.5", "settle_every = 0.0", "challenge_after = 8",
    ]) + "\n")


# ---------------------------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class Books:
    consumer: int
    provider: int
    treasury: int
    escrow: int
    fees: int
    earnings: int
    stake: int
    locked: int


def read_books(devnet: Devnet, p: str) -> Books:
    async def go() -> Books:
        c = await ChainClient.connect(devnet.anvil.url, devnet.deployment,
                                      Database(devnet.tmp / f"crash-ro-{time.time_ns()}.sqlite"), None)
        try:
            t, e, s = Token(c), Escrow(c), Staking(c)
            return Books(await t.balance(address(CONSUMER)), await t.balance(p), await t.balance(address(0)),
                         await t.balance(devnet.deployment.escrow), await e.accrued_fees(), await e.earnings(p),
                         await s.stake_of(p), await s.locked_stake(p))
        finally:
            await c.close()
    return asyncio.run(go())


def escrow_read(devnet: Devnet, fn: Callable[[ChainClient], Any]) -> Any:
    async def go() -> Any:
        c = await ChainClient.connect(devnet.anvil.url, devnet.deployment,
                                      Database(devnet.tmp / f"crash-ro-{time.time_ns()}.sqlite"), None)
        try:
            return await fn(c)
        finally:
            await c.close()
    return asyncio.run(go())


def lease_events(devnet: Devnet, lid: int) -> list[tuple[str, dict[str, Any]]]:
    async def fetch(c: ChainClient) -> list[tuple[str, dict[str, Any]]]:
        logs = await c.w3.eth.get_logs({"fromBlock": devnet.deployment.deploy_block, "toBlock": "latest",
                                        "address": devnet.deployment.escrow})
        out = []
        for raw in logs:
            ev = c.events.decode(dict(raw))
            if ev is not None and ev.args.get("leaseId") == lid:
                out.append((ev.name, dict(ev.args)))
        return out
    return list(escrow_read(devnet, fetch))


def slashes(devnet: Devnet, lid: int) -> int:
    """Collateral slashed on ``lid`` (liveness and equivocation)."""
    return sum(int(a["slashed"]) for name, a in lease_events(devnet, lid)
               if name in ("LivenessResolved", "EquivocationReported"))


# ---------------------------------------------------------------------------------------------- one lifecycle


@dataclass
class Pair:
    devnet: Devnet
    provider: NodeProc
    consumer: NodeProc
    provider_address: str
    killed: str = ""

    def offer(self) -> dict[str, Any]:
        offers = wait(lambda: [o for o in self.consumer.api("/v1/offers?min_gpus=1")["offers"]
                               if o["provider"] == self.provider_address], 30, "the provider's offer")
        return dict(offers[0])


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash")


@pytest.fixture(scope="module")
def provider_node(devnet: Devnet, crash_dir: Path) -> Any:
    """One provider node (one data directory) for every lifecycle: a provider killed and restarted in one lifecycle
    serves the next lease too, as a real one does; its offers must reach the consumer again."""
    provider = NodeProc("provider", crash_dir / "provider.toml", crash_dir / "provider", crash_dir / "provider.log")
    write_config(provider.config, devnet, provider.data_dir, PROVIDER, True, [])
    yield provider
    provider.stop()


@pytest.mark.parametrize("index", range(LIFECYCLES))
def test_a_node_killed_at_a_lifecycle_step_recovers_exactly(devnet: Devnet, crash_dir: Path, provider_node: NodeProc,
                                                            index: int) -> None:
    """The provider node (restarted as the lifecycles before left it) and the consumer node, started afresh each
    lifecycle from the same data directory with the provider as its bootstrap peer."""
    point, victim, jitter = schedule(SEED, LIFECYCLES)[index]
    replay = f"replay: GPUNET_CRASH_SEED={SEED} GPUNET_CRASH_LIFECYCLES={LIFECYCLES}, case {index}"
    provider = provider_node
    consumer = NodeProc(f"consumer{index}", crash_dir / f"consumer{index}.toml", crash_dir / "consumer",
                        crash_dir / "consumer.log")
    try:
        if not provider.up:
            provider.start()
        write_config(consumer.config, devnet, consumer.data_dir, CONSUMER, False, [provider.info["addrs"][0]])
        consumer.start()
        run_lifecycle(Pair(devnet, provider, consumer, address(PROVIDER)), point, victim, jitter)
    except AssertionError as exc:
        raise AssertionError(f"{point}, {victim} killed, jitter {jitter}s ({replay}): {exc}") from exc
    finally:
        consumer.stop()


def run_lifecycle(pair: Pair, point: str, victim: str, jitter: float) -> None:
    devnet, provider, consumer = pair.devnet, pair.provider, pair.consumer
    before = read_books(devnet, pair.provider_address)
    offer = pair.offer()
    job = {"argv": [sys.executable, "-c", "import time; time.sleep(120)"], "timeout_s": 150}
    lease = consumer.api("/v1/leases", {"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(DEPOSIT),
                                        "job": job})
    lid = int(lease["lease_id"])
    node = provider if victim == "provider" else consumer
    pair.killed = victim
    kept_down: NodeProc | None = None

    if point == "after_open":
        time.sleep(jitter)  # where in the open's aftermath it dies
        node.kill()
        node.start()
    elif point == "checkpoint_unsettled":
        wait(lambda: (v := consumer.lease(lid))["accepted_seq"] > v["settled_seq"], 30,
             "a checkpoint received and not yet settled")
        node.kill()
        node.start()
    elif point == "tx_in_flight":
        wait(lambda: consumer.lease(lid)["accepted_seq"] >= 1, 30, "a first checkpoint")
        consumer.api(f"/v1/leases/{lid}/close", {})  # the close transaction is on its way
        time.sleep(jitter / 4)
        node.kill()
        node.start()
    elif point == "during_claim":  # the consumer is gone: the provider stops serving and claims
        wait(lambda: consumer.lease(lid)["settled_seq"] >= 1, 30, "a first settlement")
        consumer.kill()
        kept_down = consumer
        wait(lambda: any(n == "UsageClaimed" for n, _ in lease_events(devnet, lid)), 40, "the provider's claim",
             interval=0.3)
        time.sleep(jitter)
        provider.kill()
        provider.start()
        wait(lambda: any(n == "ClaimFinalized" for n, _ in lease_events(devnet, lid)), 40,
             "the restarted provider to finalize its claim", interval=0.3)
    elif point == "during_challenge":  # the provider is gone: the consumer challenges
        wait(lambda: consumer.lease(lid)["settled_seq"] >= 1, 30, "a first settlement")
        provider.kill()
        kept_down = provider
        wait(lambda: any(n == "LivenessChallenged" for n, _ in lease_events(devnet, lid)), 40,
             "the consumer's challenge", interval=0.3)
        time.sleep(jitter)
        consumer.kill()
        consumer.start()
        wait(lambda: any(n == "LivenessResolved" for n, _ in lease_events(devnet, lid)), 40,
             "the restarted consumer to resolve the missed deadline", interval=0.3)
    if kept_down is not None:
        kept_down.start()

    # the lease ends: the consumer closes it (unless it is closed already), both nodes see it finalized
    if consumer.lease(lid)["status"] == "OPEN":
        consumer.api(f"/v1/leases/{lid}/close", {})
    wait(lambda: consumer.lease(lid)["status"] == "FINALIZED", 60, "the consumer to see the lease finalized",
         interval=0.3)
    wait(lambda: provider.lease(lid)["status"] == "FINALIZED", 30, "the provider to see the lease finalized",
         interval=0.3)
    wait(lambda: read_books(devnet, pair.provider_address).earnings == 0, 30, "the provider to withdraw its earnings",
         interval=0.3)
    check(pair, lid, before, point)


def consumer_killed_after_close(pair: Pair) -> bool:
    return pair.killed == "consumer"


def check(pair: Pair, lid: int, before: Books, point: str) -> None:
    devnet, provider, consumer = pair.devnet, pair.provider, pair.consumer
    le = escrow_read(devnet, lambda c: Escrow(c).get_lease(lid))
    evs = lease_events(devnet, lid)
    after = read_books(devnet, pair.provider_address)
    assert le.status == 3, "the lease is finalized"
    # no double settlement: each seq paid once, and the payments add up to what left the deposit
    settled = [a for n, a in evs if n == "LeaseSettled"]
    seqs = [a["seq"] for a in settled]
    assert len(seqs) == len(set(seqs)), seqs
    assert sum(int(a["amount"]) for a in settled) == le.paid == PRICE * le.settled_gpu_seconds
    [fin] = [a for n, a in evs if n == "LeaseFinalized"]
    assert int(fin["refund"]) == le.deposit - le.paid
    # no lost checkpoint: what the provider signed is what was paid (unless it was the silent one and slashed)
    signed = provider.lease(lid)["checkpoints"]
    c_view, p_view = consumer.lease(lid), provider.lease(lid)
    cut = max(r["gpu_seconds"] for r in signed)
    if point == "tx_in_flight" and consumer_killed_after_close(pair):
        # the consumer died with its close in flight: the final checkpoint (cut at close) reaches it only after its
        # restart, which may outlast the test deployment's 3 s settlement window; the provider claims it within the
        # window when it can. Everything signed before the close is paid in any case.
        cut = max([r["gpu_seconds"] for r in signed if r["seq"] < max(x["seq"] for x in signed)] or [0])
        assert le.settled_gpu_seconds >= cut, (le, signed)
    elif point != "during_challenge":
        assert le.settled_gpu_seconds == cut, (le, signed)
    assert c_view["settled_gpu_seconds"] == p_view["settled_gpu_seconds"] == le.settled_gpu_seconds
    assert c_view["settled_seq"] == p_view["settled_seq"] == le.last_seq
    # no checkpoint seq signed twice with other contents, and no transaction nonce used twice
    accepted = [r["seq"] for r in c_view["checkpoints"] if r["status"] == "accepted"]
    assert len(accepted) == len(set(accepted)) and not any(
        r["reason"].startswith("equivocation") for r in c_view["checkpoints"])
    for node in (provider, consumer):
        nonces = [r["nonce"] for r in node.db_rows("SELECT nonce FROM tx_intents WHERE status = 'mined'")]
        assert len(nonces) == len(set(nonces)), f"{node.name} reused a nonce"
    # nothing stays locked, and every balance is exact to the wei
    slashed = slashes(devnet, lid)
    to_consumer = slashed * 5_000 // 10_000 + slashed * 2_000 // 10_000  # wronged and finder shares
    fee = le.paid * 100 // 10_000
    assert after.locked == 0, "the provider's collateral is unlocked"
    assert after.consumer == before.consumer - le.paid + to_consumer
    # a provider restarted after a slash tops its stake up again from its tokens: count tokens and stake together
    assert after.provider + after.stake == before.provider + before.stake + le.paid - fee - slashed
    assert after.treasury == before.treasury + slashed - to_consumer
    assert after.fees == before.fees + fee
    assert after.escrow == before.escrow + fee  # only the unwithdrawn fees stay in the escrow
