"""In-memory fakes of the lease engine's ports: peers that talk to each other through a dict, and an escrow + token
ledger that keeps the contract's books and emits the same events, so whole leases run in a unit test.

``FakeChain.executed`` is the effects log: every state-changing call, once per idempotency key (a call repeated
with a key already mined returns the first result and changes nothing, as stored transaction intents do).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import keccak
from nacl.signing import SigningKey

from node.chain.events import ChainEvent
from node.chain.proxies import OnChainLease
from node.chain.tx import TxFailed, TxRace, TxResult
from node.crypto import eip712
from node.crypto.nodekey import peer_id_of_node_key
from node.errors import ChainError
from node.leases import LeaseEngine, LeaseRecord
from node.leases.ports import StreamHandler
from node.protocol import lease as L
from node.provider.executor import ExecJob, JobOutcome, OutputCallback
from node.provider.gpus import GpuDevice
from node.storage.db import Database
from node.types import LeaseId

START = 1_700_000_000


# ---------------------------------------------------------------------------------------------- peers


class FakeNetwork:
    """Peers by id; a request runs the target's handler directly. ``down`` peers refuse connections."""

    def __init__(self) -> None:
        self.handlers: dict[str, StreamHandler] = {}
        self.down: set[str] = set()
        self.delivered: list[tuple[str, str, bytes]] = []  # (from, to, body) of every request handled

    def transport(self, peer_id: str) -> FakeTransport:
        return FakeTransport(self, peer_id)


@dataclass
class FakeTransport:
    network: FakeNetwork
    peer_id: str

    def set_handler(self, protocol: str, callback: StreamHandler) -> Awaitable[None] | None:
        self.network.handlers[self.peer_id] = callback
        return None

    async def request(self, peer: str, protocol: str, data: bytes, timeout: float) -> bytes | None:
        handler = self.network.handlers.get(peer)
        if handler is None or peer in self.network.down or self.peer_id in self.network.down:
            raise ConnectionError(f"{peer} unreachable")
        self.network.delivered.append((self.peer_id, peer, bytes(data)))
        try:
            return await handler(self.peer_id, bytes(data))
        except Killed as exc:  # the other node died while answering: its stream resets
            raise ConnectionError(f"{peer} went away") from exc


# ---------------------------------------------------------------------------------------------- chain


@dataclass(frozen=True)
class FakeOffer:
    provider_address: str
    gpu_count: int
    price_per_gpu_second: int
    max_duration: int
    offer_hash: bytes = b"\x0f" * 32


@dataclass(frozen=True)
class FakeSignedOffer:
    offer: FakeOffer
    signature: bytes = b"\x01" * 65


@dataclass(frozen=True)
class FakeEntry:
    signed: FakeSignedOffer


@dataclass(frozen=True)
class Checkpointish:
    lease_id: int
    seq: int
    cumulative_gpu_seconds: int


@dataclass
class _Lease:
    lease: OnChainLease
    fees: int = 0
    credited: int = 0  # earnings already credited (finalized claims)


@dataclass
class FakeChain:
    """The escrow and token contracts' books, with a settable block time (``now_s``)."""

    now_s: int = START
    settlement_window: int = 3
    fee_bps: int = 100
    dispute_window: int = 5
    liveness_window: int = 5
    cooldown_windows: int = 2
    leases: dict[int, _Lease] = field(default_factory=dict)
    claims: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # lease -> (seq, cumulative, readyAt)
    disputed: dict[int, int] = field(default_factory=dict)  # lease -> highest disputed seq
    cooldown: dict[int, int] = field(default_factory=dict)  # lease -> no challenge before
    slashed_to: Counter[str] = field(default_factory=Counter)  # slash proceeds paid, by recipient
    permit_nonces: Counter[str] = field(default_factory=Counter)  # the token's ERC-2612 nonces
    escrow: str = "0x" + "ee" * 20
    earnings_of: dict[str, int] = field(default_factory=dict)
    executed: list[tuple[Any, ...]] = field(default_factory=list)
    logs: list[ChainEvent] = field(default_factory=list)  # every event mined, in order
    cursors: dict[str, int] = field(default_factory=dict)  # per reader: how many logs it has processed
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)  # (wallet, call) of every read
    _results: dict[str, TxResult] = field(default_factory=dict)
    endpoint_down: bool = False  # every transaction fails as a dead RPC endpoint's does (ChainError)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _blocks: Any = field(default_factory=lambda: itertools.count(1))

    def wallet(self, address: str) -> FakeWallet:
        return FakeWallet(self, address)

    async def deliver(self, reader: str, sink: Callable[[ChainEvent], Awaitable[None]]) -> None:
        """Hand ``reader`` (a node's log poller) the logs it has not processed yet, in order. The cursor moves
        past a log only once the sink returned, so a node that died meanwhile reads that log again."""
        while self.cursors.get(reader, 0) < len(self.logs):
            await sink(self.logs[self.cursors.get(reader, 0)])
            self.cursors[reader] = self.cursors.get(reader, 0) + 1

    def mine(self, key: str, kind: str, run: Callable[[], list[ChainEvent]]) -> TxResult:
        done = self._results.get(key)
        if done is not None:
            return done  # the same intent again: already mined
        if self.endpoint_down:
            raise ChainError(f"{kind}: RPC failure while estimating gas: connection refused")
        events = run()  # raises TxRace / TxFailed without changing anything
        block = next(self._blocks)
        events = [replace(e, block_number=block) for e in events]
        self.executed.append((kind, key))
        self.logs += events
        result = TxResult(key, "0x" + keccak(key.encode()).hex(), 50_000, block, "mined",
                          tuple({"event": e} for e in events))
        self._results[key] = result
        return result

    def event(self, name: str, **args: Any) -> ChainEvent:
        return ChainEvent(name, "0xescrow", args, 0, "0x00", "0x00", 0)


@dataclass
class FakeWallet:
    """One node's view: implements the escrow, token and chain ports for the wallet ``address``."""

    chain: FakeChain
    wallet_address: str

    # ChainPort
    @property
    def address(self) -> str | None:
        return self.wallet_address

    async def block_time(self) -> int:
        return self.chain.now_s

    def decode_log(self, raw: dict[str, Any]) -> ChainEvent | None:
        ev = raw.get("event")
        return ev if isinstance(ev, ChainEvent) else None

    # TokenPort
    async def supports_permit(self) -> bool:
        return True

    async def sign_permit(self, owner_key: bytes, spender: str, value: int, deadline: int) -> tuple[int, bytes, bytes]:
        nonce = self.chain.permit_nonces[self.wallet_address]  # the token's next permit nonce of this wallet
        await asyncio.sleep(0)  # an RPC call: other tasks run meanwhile
        return 27, nonce.to_bytes(32, "big"), b"\x00" * 32

    async def ensure_allowance(self, key: str, spender: str, amount: int) -> TxResult | None:
        return None

    # EscrowPort
    async def open_lease(self, key: str, offer: Any, signature: bytes, gpus: int, deposit: int) -> TxResult:
        return self.chain.mine(key, "openLease", lambda: self._open(offer, gpus, deposit))

    async def open_lease_with_permit(self, key: str, offer: Any, signature: bytes, gpus: int, deposit: int,
                                     deadline: int, v: int, r: bytes, s: bytes) -> TxResult:
        def run() -> list[ChainEvent]:
            nonce = self.chain.permit_nonces[self.wallet_address]
            if int.from_bytes(r, "big") != nonce:  # the permit's nonce was spent: no allowance, the pull fails
                raise TxFailed("openLeaseWithPermit", f"ERC20InsufficientAllowance({self.chain.escrow}, 0, {deposit})")
            self.chain.permit_nonces[self.wallet_address] += 1
            return self._open(offer, gpus, deposit)
        await asyncio.sleep(0)  # sent: others may be mined first
        return self.chain.mine(key, "openLease", run)

    def _open(self, offer: FakeOffer, gpus: int, deposit: int) -> list[ChainEvent]:
        c = self.chain
        lid = next(c._ids)
        paid_for = deposit // (offer.price_per_gpu_second * gpus)
        ends = c.now_s + min(paid_for, offer.max_duration)
        c.leases[lid] = _Lease(OnChainLease(
            lid, self.wallet_address, offer.provider_address, offer.offer_hash, gpus, 1, offer.price_per_gpu_second,
            deposit, 0, 0, 0, c.now_s, ends, c.now_s + offer.max_duration, 0, 0, deposit // 2))
        return [c.event("LeaseOpened", leaseId=lid, offerHash=offer.offer_hash, provider=offer.provider_address,
                        consumer=self.wallet_address, gpus=gpus, pricePerGpuSecond=offer.price_per_gpu_second,
                        deposit=deposit, startedAt=c.now_s, endsAt=ends)]

    async def top_up(self, key: str, lease_id: int, amount: int) -> TxResult:
        def run() -> list[ChainEvent]:
            entry = self.chain.leases[lease_id]
            le = entry.lease
            deposit = le.deposit + amount
            ends = min(le.started_at + deposit // (le.price * le.gpus), le.max_ends_at)
            entry.lease = replace(le, deposit=deposit, ends_at=ends)
            return [self.chain.event("LeaseToppedUp", leaseId=lease_id, amount=amount, deposit=deposit, endsAt=ends)]
        return self.chain.mine(key, "topUp", run)

    async def settle(self, key: str, cp: Any, signature: bytes) -> TxResult:
        return self.chain.mine(key, "settle", lambda: self._settle(cp, batch=False))

    async def settle_batch(self, key: str, items: list[tuple[Any, bytes]]) -> TxResult:
        return self.chain.mine(key, "settleBatch", lambda: [e for cp, _ in items for e in self._settle(cp, True)])

    def _settle(self, cp: Any, batch: bool) -> list[ChainEvent]:
        c = self.chain
        entry = c.leases[cp.lease_id]
        le = entry.lease
        if cp.seq <= le.last_seq:
            if batch:
                return [c.event("SettlementSkipped", leaseId=cp.lease_id, seq=cp.seq)]
            raise TxRace("settle", "LeaseEscrow_StaleCheckpoint")
        end = min(c.now_s, le.ends_at, le.closed_at or 2**64)
        assert cp.cumulative_gpu_seconds <= le.gpus * (end - le.started_at), "the fake escrow caps usage too"
        pay = min(le.price * (cp.cumulative_gpu_seconds - le.settled_gpu_seconds), le.deposit - le.paid)
        fee = pay * c.fee_bps // 10_000
        entry.lease = replace(le, paid=le.paid + pay, settled_gpu_seconds=cp.cumulative_gpu_seconds, last_seq=cp.seq)
        entry.fees += fee
        return [c.event("LeaseSettled", leaseId=cp.lease_id, seq=cp.seq,
                        cumulativeGpuSeconds=cp.cumulative_gpu_seconds, amount=pay, fee=fee)]

    async def close(self, key: str, lease_id: int) -> TxResult:
        def run() -> list[ChainEvent]:
            entry = self.chain.leases[lease_id]
            if entry.lease.closed_at:
                raise TxRace("close", "LeaseEscrow_LeaseNotOpen")
            return self._close(lease_id)
        return self.chain.mine(key, "closeLease", run)

    def _close(self, lease_id: int) -> list[ChainEvent]:
        """Close; a missed liveness deadline is resolved on the way (slash), as the escrow does."""
        c = self.chain
        entry = c.leases[lease_id]
        le = entry.lease
        missed = le.liveness_deadline != 0 and c.now_s >= le.liveness_deadline
        entry.lease = le = replace(le, closed_at=c.now_s, status=2, liveness_deadline=0)
        events = [c.event("LeaseClosed", leaseId=lease_id, closedAt=c.now_s, closedBy=self.wallet_address)]
        if missed:
            slash = le.collateral // 2
            entry.lease = replace(le, collateral=le.collateral - slash)
            c.slashed_to[le.consumer] += slash
            events.append(c.event("LivenessResolved", leaseId=lease_id, slashed=slash))
        return events

    # fault paths, with the escrow's checks (ILeaseEscrow)
    async def claim(self, key: str, cp: Any, signature: bytes) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            le = c.leases[cp.lease_id].lease
            if le.status == 3 or (le.closed_at and c.now_s >= le.closed_at + c.settlement_window):
                raise TxRace("claim", f"LeaseEscrow_SettlementWindowClosed({cp.lease_id}, 0)")
            if cp.lease_id in c.claims:
                raise TxRace("claim", f"LeaseEscrow_ClaimPending({cp.lease_id})")
            if cp.seq <= c.disputed.get(cp.lease_id, 0):
                raise TxRace("claim", f"LeaseEscrow_SeqDisputed({cp.lease_id}, {cp.seq}, {c.disputed[cp.lease_id]})")
            if cp.seq <= le.last_seq:
                raise TxRace("claim", f"LeaseEscrow_StaleSeq({cp.lease_id}, {cp.seq}, {le.last_seq})")
            if cp.cumulative_gpu_seconds <= le.settled_gpu_seconds:
                raise TxRace("claim", f"LeaseEscrow_NothingToClaim({cp.lease_id})")
            ready = c.now_s + c.dispute_window
            c.claims[cp.lease_id] = (cp.seq, cp.cumulative_gpu_seconds, ready)
            return [c.event("UsageClaimed", leaseId=cp.lease_id, seq=cp.seq,
                            cumulativeGpuSeconds=cp.cumulative_gpu_seconds, readyAt=ready)]
        return self.chain.mine(key, "claim", run)

    async def dispute(self, key: str, cp: Any, signature: bytes) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            claim = c.claims.get(cp.lease_id)
            if claim is None:
                raise TxRace("dispute", f"LeaseEscrow_NoClaim({cp.lease_id})")
            if c.now_s >= claim[2]:
                raise TxRace("dispute", f"LeaseEscrow_DisputeWindowClosed({cp.lease_id}, {claim[2]})")
            if cp.seq < claim[0] or cp.cumulative_gpu_seconds >= claim[1]:
                raise TxFailed("dispute", f"LeaseEscrow_InvalidEvidence({cp.lease_id})")
            del c.claims[cp.lease_id]
            c.disputed[cp.lease_id] = cp.seq
            return [c.event("ClaimDisputed", leaseId=cp.lease_id, claimedSeq=claim[0], evidenceSeq=cp.seq)]
        return self.chain.mine(key, "dispute", run)

    async def finalize_claim(self, key: str, lease_id: int) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            claim = c.claims.get(lease_id)
            if claim is None:
                raise TxRace("finalizeClaim", f"LeaseEscrow_NoClaim({lease_id})")
            if c.now_s < claim[2]:
                raise TxRace("finalizeClaim", f"LeaseEscrow_DisputeWindowOpen({lease_id}, {claim[2]})")
            del c.claims[lease_id]
            seq, cumulative, _ = claim
            le = c.leases[lease_id].lease
            events: list[ChainEvent] = []
            amount = 0
            if seq > le.last_seq and cumulative >= le.settled_gpu_seconds:
                entry = c.leases[lease_id]
                paid, fees = entry.lease.paid, entry.fees
                events = self._settle(Checkpointish(lease_id, seq, cumulative), batch=False)
                amount = entry.lease.paid - paid
                net = amount - (entry.fees - fees)  # a claim's earnings are credited at once
                c.earnings_of[le.provider] = c.earnings_of.get(le.provider, 0) + net
                entry.credited += net
            return [*events, c.event("ClaimFinalized", leaseId=lease_id, seq=seq, cumulativeGpuSeconds=cumulative,
                                     amount=amount)]
        return self.chain.mine(key, "finalizeClaim", run)

    async def challenge_liveness(self, key: str, lease_id: int) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            le = c.leases[lease_id].lease
            if le.status != 1:
                raise TxRace("challenge", f"LeaseEscrow_LeaseNotOpen({lease_id})")
            if le.liveness_deadline:
                raise TxRace("challenge", f"LeaseEscrow_ChallengePending({lease_id})")
            if c.now_s >= le.ends_at:
                raise TxRace("challenge", f"LeaseEscrow_LeaseEnded({lease_id}, {le.ends_at})")
            if c.now_s < c.cooldown.get(lease_id, 0):
                raise TxRace("challenge", f"LeaseEscrow_ChallengeCooldown({lease_id}, {c.cooldown[lease_id]})")
            deadline = c.now_s + c.liveness_window
            c.leases[lease_id].lease = replace(le, liveness_deadline=deadline)
            return [c.event("LivenessChallenged", leaseId=lease_id, deadline=deadline)]
        return self.chain.mine(key, "challengeLiveness", run)

    async def answer_liveness(self, key: str, lease_id: int) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            le = c.leases[lease_id].lease
            if le.status != 1:
                raise TxRace("answer", f"LeaseEscrow_LeaseNotOpen({lease_id})")
            if not le.liveness_deadline:
                raise TxRace("answer", f"LeaseEscrow_NoChallenge({lease_id})")
            if c.now_s >= le.liveness_deadline:
                raise TxRace("answer", f"LeaseEscrow_LivenessWindowClosed({lease_id}, {le.liveness_deadline})")
            c.leases[lease_id].lease = replace(le, liveness_deadline=0)
            c.cooldown[lease_id] = c.now_s + c.liveness_window * c.cooldown_windows
            return [c.event("LivenessAnswered", leaseId=lease_id)]
        return self.chain.mine(key, "answerLiveness", run)

    async def resolve_liveness(self, key: str, lease_id: int) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            le = c.leases[lease_id].lease
            if le.status != 1:
                raise TxRace("resolve", f"LeaseEscrow_LeaseNotOpen({lease_id})")
            if not le.liveness_deadline:
                raise TxRace("resolve", f"LeaseEscrow_NoChallenge({lease_id})")
            if c.now_s < le.liveness_deadline:
                raise TxRace("resolve", f"LeaseEscrow_LivenessWindowOpen({lease_id}, {le.liveness_deadline})")
            return self._close(lease_id)
        return self.chain.mine(key, "resolveLiveness", run)

    async def report_equivocation(self, key: str, a: Any, sig_a: bytes, b: Any, sig_b: bytes) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            entry = c.leases[a.lease_id]
            if entry.lease.status == 3:
                raise TxRace("reportEquivocation", f"LeaseEscrow_LeaseFinalized({a.lease_id})")
            if a.lease_id != b.lease_id or a.seq != b.seq or (a, sig_a) == (b, sig_b):
                raise TxFailed("reportEquivocation", f"LeaseEscrow_NotEquivocation({a.lease_id})")
            if entry.lease.collateral == 0:
                raise TxRace("reportEquivocation", f"LeaseEscrow_NothingToSlash({a.lease_id})")
            events = self._close(a.lease_id) if entry.lease.status == 1 else []
            slash = entry.lease.collateral
            entry.lease = replace(entry.lease, collateral=0)
            c.slashed_to[entry.lease.consumer] += slash // 2
            c.slashed_to[self.wallet_address] += slash // 4  # the finder
            c.slashed_to["treasury"] += slash - slash // 2 - slash // 4
            return [*events, c.event("EquivocationReported", leaseId=a.lease_id, finder=self.wallet_address,
                                     seq=a.seq, slashed=slash)]
        return self.chain.mine(key, "reportEquivocation", run)

    async def finalize(self, key: str, lease_id: int) -> TxResult:
        def run() -> list[ChainEvent]:
            c = self.chain
            entry = c.leases[lease_id]
            le = entry.lease
            if le.status == 3:
                raise TxRace("finalize", "LeaseEscrow_LeaseFinalized")
            if c.now_s < le.closed_at + c.settlement_window:
                raise TxRace("finalize", "LeaseEscrow_SettlementWindowOpen")
            if lease_id in c.claims:
                raise TxRace("finalize", f"LeaseEscrow_ClaimPending({lease_id})")
            entry.lease = replace(le, status=3)
            c.earnings_of[le.provider] = c.earnings_of.get(le.provider, 0) + le.paid - entry.fees - entry.credited
            return [c.event("LeaseFinalized", leaseId=lease_id, refund=le.deposit - le.paid)]
        return self.chain.mine(key, "finalizeLease", run)

    async def withdraw_earnings(self, key: str) -> TxResult:
        def run() -> list[ChainEvent]:
            if not self.chain.earnings_of.get(self.wallet_address):
                raise TxRace("withdraw", "LeaseEscrow_NothingToWithdraw")
            self.chain.earnings_of[self.wallet_address] = 0
            return []
        return self.chain.mine(key, "withdrawEarnings", run)

    async def get_lease(self, lease_id: int) -> OnChainLease:
        self.chain.reads[(self.wallet_address, "getLease")] += 1
        await asyncio.sleep(0)  # an RPC call: other tasks run meanwhile
        return self.chain.leases[lease_id].lease

    async def earnings(self, who: str) -> int:
        return self.chain.earnings_of.get(who, 0)


async def quiesce(rounds: int = 200) -> None:
    """Let background tasks that wait on nothing but the event loop run to completion."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------------------------- two nodes


@dataclass
class FakeClock:
    ms: int = START * 1000

    def __call__(self) -> int:
        return self.ms


class FakeJob:
    """A job that runs until the test finishes it."""

    def __init__(self) -> None:
        self._done: asyncio.Future[JobOutcome] = asyncio.get_running_loop().create_future()

    @property
    def running(self) -> bool:
        return not self._done.done()

    def finish(self, output: bytes = b"done\n", exit_code: int = 0) -> None:
        if not self._done.done():
            self._done.set_result(JobOutcome(exit_code, output, 1.0, simulated=True, output_bytes=len(output)))

    async def wait(self) -> JobOutcome:
        return await asyncio.shield(self._done)

    async def stop(self) -> JobOutcome:
        self.finish(b"stopped\n", -15)
        return await self.wait()


class FakeExecutor:
    def __init__(self) -> None:
        self.jobs: list[tuple[int, FakeJob]] = []  # every start, in order

    async def start(self, lease_id: LeaseId, job: ExecJob, devices: Sequence[GpuDevice], *,
                    on_output: OutputCallback | None = None) -> FakeJob:
        handle = FakeJob()
        self.jobs.append((lease_id, handle))
        return handle


PROVIDER_WALLET = keccak(b"fake provider wallet")
CONSUMER_WALLET = keccak(b"fake consumer wallet")
PROVIDER = Account.from_key(PROVIDER_WALLET).address
CONSUMER = Account.from_key(CONSUMER_WALLET).address
PROVIDER_NODE = SigningKey(keccak(b"fake provider node"))
CONSUMER_NODE = SigningKey(keccak(b"fake consumer node"))
DOMAIN = eip712.Domain(31337, "0x" + "ee" * 20)
PRICE = 10**12
GPUS = 2
OFFER = FakeOffer(PROVIDER, GPUS, PRICE, 3_600)
OFFER_ID = OFFER.offer_hash
DEVICES = tuple(GpuDevice(i, f"SIM-{i}", "sim", 80_000, True) for i in range(GPUS))
KEYS = {"consumer": (CONSUMER_WALLET, CONSUMER_NODE, CONSUMER), "provider": (PROVIDER_WALLET, PROVIDER_NODE, PROVIDER)}


def peer_of(node: SigningKey) -> str:
    return peer_id_of_node_key(bytes(node.verify_key))


class World:
    """A consumer and a provider node, each a ``LeaseEngine`` on its own SQLite file, over the fake network and
    the fake chain. Time moves only when the test says (``advance``); the provider's leases are served one
    heartbeat interval per ``serve()`` call (the engine's own serving loop is left idle)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.chain = FakeChain()
        self.network = FakeNetwork()
        self.clock = FakeClock()
        self.executor = FakeExecutor()
        self.engines: dict[str, LeaseEngine] = {}
        self.dbs: dict[str, Database] = {}
        self.runs: dict[str, int] = {"consumer": 0, "provider": 0}  # effects started, over all restarts
        self.dones: dict[str, int] = {"consumer": 0, "provider": 0}  # effects marked done (outside evidence writes)
        self.kill_after: dict[str, int | None] = {"consumer": None, "provider": None}  # ... that many effects
        self.kill_at_done: dict[str, int | None] = {"consumer": None, "provider": None}  # ... that many done marks
        self.killed: set[str] = set()

    def build(self, role: str) -> LeaseEngine:
        wallet_key, node_key, address = KEYS[role]
        db = Database(self.tmp_path / f"{role}.sqlite")
        wallet = self.chain.wallet(address)

        async def refresh(provider: str) -> bytes:
            return bytes(PROVIDER_NODE.verify_key)

        engine = LeaseEngine(
            db=db, chain=wallet, escrow=wallet, token=wallet, transport=self.network.transport(peer_of(node_key)),
            domain=DOMAIN, wallet_key=wallet_key, node_signing_key=node_key,
            offer_lookup=lambda offer_id: FakeEntry(FakeSignedOffer(OFFER)) if offer_id == OFFER_ID else None,
            node_key_lookup=lambda provider: bytes(PROVIDER_NODE.verify_key), refresh_node_key=refresh,
            settlement_window=self.chain.settlement_window, heartbeat_interval=2.0, checkpoint_interval=6.0,
            settle_interval=10**6, tick_interval=10**6, devices=DEVICES if role == "provider" else (),
            executor=self.executor if role == "provider" else None, clock=self.clock)
        engine.provider._serve = _idle  # type: ignore[method-assign]  # the test serves: World.serve()
        run = engine.runner.run

        async def counted(rec: LeaseRecord, ev: L.Event, outbox_id: int) -> None:
            limit = self.kill_after[role]
            if role in self.killed or (limit is not None and self.runs[role] >= limit):
                self._kill(role)
            self.runs[role] += 1
            await run(rec, ev, outbox_id)

        engine.dispatcher.bind(counted)
        done = engine.runner.done

        def counted_done(outbox_id: int, error: str | None = None) -> None:
            limit = self.kill_at_done[role]
            if role in self.killed or (limit is not None and self.dones[role] >= limit):
                self._kill(role)  # the effect happened; the mark that says so did not
            self.dones[role] += 1
            done(outbox_id, error)

        engine.runner.done = counted_done  # type: ignore[method-assign]
        apply = engine.dispatcher.apply

        async def alive_apply(rec: LeaseRecord, change: L.Change) -> None:
            if role in self.killed:  # a dead process changes nothing
                raise Killed(role)
            await apply(rec, change)

        engine.dispatcher.apply = alive_apply  # type: ignore[method-assign]
        self.engines[role], self.dbs[role] = engine, db
        return engine

    def _kill(self, role: str) -> None:
        self.killed.add(role)
        self.network.handlers.pop(peer_of(KEYS[role][1]), None)  # its streams are gone at once
        raise Killed(role)

    async def start(self) -> None:
        for role in ("provider", "consumer"):
            await self.build(role).start()

    @property
    def consumer(self) -> LeaseEngine:
        return self.engines["consumer"]

    @property
    def provider(self) -> LeaseEngine:
        return self.engines["provider"]

    async def restart(self, role: str) -> None:
        """The node process died: nothing more of the old engine runs; a new one starts from the same file."""
        old = self.engines[role]
        self.network.handlers.pop(peer_of(KEYS[role][1]), None)
        await old.tasks.stop()
        self.dbs[role].close()
        self.killed.discard(role)
        self.kill_after[role] = self.kill_at_done[role] = None
        await self.build(role).start()

    def advance(self, seconds: int) -> None:
        self.clock.ms += seconds * 1000
        self.chain.now_s += seconds

    async def deliver(self) -> None:
        """The chain's new logs reach both nodes (their log pollers)."""
        await quiesce()
        for role, engine in self.engines.items():
            if role not in self.killed:
                with contextlib.suppress(Killed):
                    await self.chain.deliver(role, engine.on_chain_event)
        await quiesce()

    async def serve(self) -> None:
        for rec in list(self.provider.dispatcher):
            side = rec.state.provider
            if side is not None and (side.peer is not None or side.meter.closed_at is not None):
                await self.provider.provider.step(rec)
        await quiesce()


class Killed(BaseException):
    """The node process was killed (raised where it stops)."""


async def _idle(rec: LeaseRecord) -> None:
    return None
