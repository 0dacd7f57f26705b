"""Consumer driver: opens leases from offers in the book, seals and sends the job spec, takes the provider's
heartbeats, checkpoints and job result off the lease stream, tops up and closes on request."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import nacl.signing
from eth_utils import keccak

from node.chain.events import ChainEvent
from node.chain.tx import TxFailed
from node.crypto import eip712
from node.errors import ChainError
from node.leases.chain_events import opened_change
from node.leases.dispatcher import Dispatcher
from node.leases.effects import EffectRunner
from node.leases.ports import ChainPort, Clock, PeerTransport, lease_opened_in
from node.leases.records import LeaseNotFound, LeaseRecord
from node.leases.tasks import SingleFlight
from node.protocol import lease as L
from node.protocol.job_spec import job_spec_bytes as _job_spec_bytes
from node.protocol.lease_messages import (
    PROTOCOL_ID,
    AckMessage,
    CheckpointMessage,
    ErrorCode,
    ErrorMessage,
    HeartbeatMessage,
    JobResultMessage,
    LogMessage,
    MsgType,
    decode_message,
    encode_message,
    seal_job_spec,
    to_change,
    utf8_head,
)
from node.protocol.offerbook import BookEntry

log = logging.getLogger(__name__)

MAX_JOB_ARGV = 64
JOB_SPEC_ATTEMPTS = 20


OfferLookup = Callable[[bytes], BookEntry | None]
NodeKeyLookup = Callable[[str], bytes | None]
NodeKeyRefresh = Callable[[str], Awaitable[bytes]]


MAX_LOG_KEEP_BYTES = 8 * 1024 * 1024  # a lease's output kept by the consumer node (the oldest chunks go first)
FAILED_REFUSED = "job_refused"  # the provider refused the job spec (beyond a cap, unsafe executor, ...)


def job_spec_bytes(job: dict[str, Any]) -> bytes:
    """Canonical JSON of a job request, version 1 (argv) or 2 (image): see ``node.protocol.job_spec``."""
    return _job_spec_bytes(job)


def error_reply(lid: int, ref: MsgType, code: ErrorCode, message: str) -> bytes:
    return encode_message(ErrorMessage(lid, ref, 0, code, utf8_head(message)))


class ConsumerDriver:
    def __init__(self, dispatcher: Dispatcher, runner: EffectRunner, *, chain: ChainPort, transport: PeerTransport,
                 wallet_key: bytes, node_key: nacl.signing.SigningKey, domain: eip712.Domain, config: L.LeaseConfig,
                 offer_lookup: OfferLookup, node_key_lookup: NodeKeyLookup, refresh_node_key: NodeKeyRefresh,
                 clock: Clock) -> None:
        self.dispatcher = dispatcher
        self.runner = runner
        self.store = dispatcher.store
        self.chain = chain
        self.transport = transport
        self.wallet_key = wallet_key
        self.node_key = node_key
        self.node_pub = bytes(node_key.verify_key)
        self.domain = domain
        self.config = config
        self.offer_lookup = offer_lookup
        self.node_key_lookup = node_key_lookup
        self.refresh_node_key = refresh_node_key
        self.clock = clock
        self._adopting: SingleFlight[int, LeaseRecord] = SingleFlight()
        # one open at a time per wallet: each permit signs the token's next nonce (and an approval sets the
        # allowance), so parallel opens would spend the same nonce and all but one revert, gas burnt
        self._open_lock = asyncio.Lock()
        runner.on(L.SendJobSpec, self._spawn_send_job_spec)

    @property
    def address(self) -> str:
        return self.chain.address or ""

    async def _node_key_of(self, provider: str) -> bytes:
        return self.node_key_lookup(provider) or await self.refresh_node_key(provider)

    # ------------------------------------------------------------------------------------------ opening
    async def open_lease(self, offer_id: bytes, gpus: int, deposit: int, job: dict[str, Any] | None) -> LeaseRecord:
        entry = self.offer_lookup(offer_id)
        if entry is None:
            raise ValueError("offer not in the book (expired, withdrawn or unknown)")
        so = entry.signed
        offer = so.offer
        if offer.provider_address.lower() == self.address.lower():
            raise ValueError("this is this node's own offer: a wallet cannot lease from itself")
        if not (0 < gpus <= offer.gpu_count):
            raise ValueError(f"gpus must be within 1..{offer.gpu_count}")
        node_key = await self._node_key_of(offer.provider_address)
        if not node_key or node_key == b"\x00" * 32:
            raise ValueError("provider has no registered node key")
        spec = job_spec_bytes(job) if job is not None else None
        key = f"open:{bytes(offer_id).hex()[:16]}:{os.urandom(6).hex()}"
        self.store.record_open(key, bytes(offer_id), gpus, deposit, spec)
        escrow, token = self.runner.escrow, self.runner.token
        spender = self.domain.verifying_contract
        async with self._open_lock:
            permit: tuple[int, int, bytes, bytes] | None = None
            try:
                if await token.supports_permit():  # one transaction, and no standing allowance left behind
                    deadline = int(time.time()) + 600
                    v, r, s_ = await token.sign_permit(self.wallet_key, spender, deposit, deadline)
                    permit = (deadline, v, r, s_)
                    result = await escrow.open_lease_with_permit(key, offer, so.signature, gpus, deposit, deadline,
                                                                 v, r, s_)
                    kind = "openLeaseWithPermit"
                else:
                    approve = await token.ensure_allowance(f"approve:{key}", spender, deposit)
                    if approve is not None:
                        self.runner.record_gas("approve", 0, approve)
                    result = await escrow.open_lease(key, offer, so.signature, gpus, deposit)
                    kind = "openLease"
            except TxFailed as exc:
                raise await self._explained(exc, offer, so.signature, gpus, deposit, permit) from exc
        opened = lease_opened_in(self.chain, result.logs)
        if opened is None:
            raise ChainError("openLease mined without a LeaseOpened log")
        self.runner.record_gas(kind, int(opened.args["leaseId"]), result)
        return await self.adopt_open(opened, key)

    async def _explained(self, exc: TxFailed, offer: Any, signature: bytes, gpus: int, deposit: int,
                         permit: tuple[int, int, bytes, bytes] | None) -> TxFailed:
        """An open that passed its gas estimate and reverted on-chain lost a race in its block (another consumer
        took the GPUs): say which, with the escrow's error, as it would revert now."""
        explain = getattr(self.runner.escrow, "open_revert_reason", None)
        if not exc.error.startswith("reverted") or explain is None:
            return exc
        try:
            why = await explain(offer, signature, gpus, deposit, permit)
        except Exception:
            why = None
        if not why:
            return exc
        log.warning("open lease reverted", extra={"error": why, "tx": exc.tx_hash})
        return TxFailed(exc.kind, why, exc.tx_hash)

    async def adopt_open(self, ev: ChainEvent, key: str | None = None) -> LeaseRecord:
        """Our open is on-chain: the lease starts (matched to its open request, also after a restart). One
        adoption per lease at a time: the open transaction's receipt and the log poller may both report it."""
        return await self._adopting.run(int(ev.args["leaseId"]), lambda: self._adopt_open(ev, key))

    async def _adopt_open(self, ev: ChainEvent, key: str | None) -> LeaseRecord:
        opened = opened_change(ev)
        existing = self.dispatcher.get(opened.lease_id, L.Role.CONSUMER)
        if existing is not None:
            return existing
        if key is None:  # found in the logs after a restart: match it to the open we recorded
            key = self.store.unbound_open(opened.offer_hash, opened.gpus)
            if key is None:
                raise LeaseNotFound(f"lease {opened.lease_id} opened by us but no matching open request is stored")
        row = self.store.open_request(key)
        if row is None:
            raise LeaseNotFound(f"open request {key} is not stored")
        node_key = await self._node_key_of(opened.provider) or b"\x00" * 32
        on_chain = await self.runner.escrow.get_lease(opened.lease_id)
        terms = L.OfferTerms(offer_hash=opened.offer_hash, provider=opened.provider, provider_node_key=node_key,
                             price_per_gpu_second=opened.price_per_gpu_second,
                             max_duration=on_chain.max_ends_at - on_chain.started_at)
        spec = row.job_spec
        action = L.ActionOpenLease(terms=terms, consumer=self.address, gpus=row.gpus, deposit=row.deposit,
                                   domain=self.domain, job_spec_hash=keccak(spec) if spec else None,
                                   config=self.config)
        state, _ = L.transition(None, action)  # its one event, the open transaction, was sent by open_lease
        # the record is keyed by the lease id from the start (LeaseOpened below sets it in the state too)
        rec, _ = await self.dispatcher.add((opened.lease_id, L.Role.CONSUMER.value),
                                           lambda: replace(state, lease_id=opened.lease_id), action)
        self.store.bind_open(key, opened.lease_id)
        await self.dispatcher.apply(rec, opened)
        return rec

    # ------------------------------------------------------------------------------------------ job spec
    async def _spawn_send_job_spec(self, rec: LeaseRecord, ev: L.SendJobSpec, outbox_id: int) -> None:
        self.runner.tasks.spawn(self._send_job_spec(rec, ev, outbox_id))

    async def _send_job_spec(self, rec: LeaseRecord, ev: L.SendJobSpec, outbox_id: int) -> None:
        lid = ev.lease_id
        spec = self.store.job_spec(lid)
        if not spec:
            self.runner.done(outbox_id, "job spec not found")
            return
        auth = eip712.sign_digest(self.wallet_key, eip712.digest(
            self.domain.separator, eip712.job_spec_struct_hash(lid, keccak(spec), self.node_pub)))
        data = encode_message(seal_job_spec(lid, auth + spec, self.node_key, ev.provider_node_key))
        delay = 0.2
        for _ in range(JOB_SPEC_ATTEMPTS):  # the provider may not have seen LeaseOpened yet
            if rec.state.status > L.LeaseStatus.OPEN:  # closed meanwhile: no job to start any more
                self.runner.done(outbox_id, "lease no longer open")
                return
            peer = rec.peer
            try:
                reply = await self.transport.request(peer or "", PROTOCOL_ID, data, 10.0)
                answer = decode_message(reply) if reply else None
                if isinstance(answer, AckMessage):
                    self.runner.done(outbox_id)
                    return
                if isinstance(answer, ErrorMessage) and answer.code is ErrorCode.JOB_SPEC_REJECTED:
                    log.warning("job refused by the provider", extra={"lease_id": lid, "detail": answer.message})
                    self.store.store_job_result(lid, -1, answer.message, False, done=outbox_id,
                                                failure=FAILED_REFUSED)
                    return
                detail = answer.message if isinstance(answer, ErrorMessage) else "no answer"
                log.info("job spec not taken yet", extra={"lease_id": lid, "detail": detail})
            except Exception as exc:
                log.info("job spec send failed", extra={"lease_id": lid, "error": repr(exc)[:200]})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
        self.runner.done(outbox_id, "provider did not take the job spec")

    # ------------------------------------------------------------------------------------------ lease stream
    async def on_message(self, peer: str, msg: HeartbeatMessage | CheckpointMessage | JobResultMessage | LogMessage
                         ) -> bytes | None:
        """A heartbeat, checkpoint, job result or job output from a provider."""
        lid = msg.lease_id
        kind = MsgType.HEARTBEAT if isinstance(msg, HeartbeatMessage) else (
            MsgType.CHECKPOINT if isinstance(msg, CheckpointMessage) else (
                MsgType.LOG if isinstance(msg, LogMessage) else MsgType.JOB_RESULT))
        rec = self.dispatcher.get(lid, L.Role.CONSUMER)
        if rec is None:
            return error_reply(lid, kind, ErrorCode.UNKNOWN_LEASE, "no such lease here")
        if peer != rec.peer:
            return error_reply(lid, kind, ErrorCode.UNKNOWN_LEASE, "sender is not the lease's provider node")
        if isinstance(msg, LogMessage):  # output is kept apart from the lease's state: it never changes it
            self.store.append_log(lid, msg.seq, msg.dropped, msg.text, MAX_LOG_KEEP_BYTES)
            return encode_message(AckMessage(lid, kind, msg.seq))
        if isinstance(msg, CheckpointMessage) and msg.signed_cp == rec.state.beats.last_accepted:
            # sent again because our ack was lost (a restart between taking it and answering): already taken
            return encode_message(AckMessage(lid, kind))
        change = to_change(msg, self.clock())
        if change is None:
            return None
        await self.dispatcher.apply(rec, change)
        return encode_message(AckMessage(lid, kind))

    # ------------------------------------------------------------------------------------------ user actions
    async def top_up(self, lease_id: int, amount: int) -> LeaseRecord:
        rec = self.dispatcher.need(lease_id, L.Role.CONSUMER)
        await self.dispatcher.apply(rec, L.ActionTopUp(amount))
        return rec

    async def close(self, rec: LeaseRecord) -> LeaseRecord:
        await self.dispatcher.apply(rec, L.ActionCloseLease(self.clock()))
        return rec

