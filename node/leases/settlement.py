"""Consumer: due settlements go out in batches (``settleBatch``), once the chain's clock has reached them."""

from __future__ import annotations

import logging

from eth_utils import keccak

from node.chain.tx import TxFailed, TxRace, TxResult
from node.errors import ChainError
from node.leases.dispatcher import Dispatcher
from node.leases.effects import EffectRunner
from node.leases.ports import ChainPort
from node.leases.tasks import Tasks
from node.protocol import lease as L

log = logging.getLogger(__name__)

MAX_BATCH = 256


class Settlements:
    def __init__(self, runner: EffectRunner, dispatcher: Dispatcher, chain: ChainPort, tasks: Tasks,
                 interval: float) -> None:
        self.runner = runner
        self.dispatcher = dispatcher
        self.chain = chain
        self.tasks = tasks
        self.interval = interval

    @property
    def queue(self) -> dict[int, L.ContractSendSettle]:
        return self.runner.settlements

    async def run(self) -> None:
        while not self.tasks.stopping.is_set():
            await self.tasks.pause(self.interval)
            try:
                await self.send_due()
            except Exception:  # an unforeseen failure of one round: the next round tries again
                log.exception("settlement round failed")

    async def send_due(self) -> None:
        if not self.queue:
            return
        try:  # the contract caps usage by block time: send only checkpoints the chain's clock has reached
            chain_now = await self.chain.block_time()
        except Exception as exc:
            log.warning("settlement deferred: no block", extra={"error": repr(exc)[:200]})
            return
        due = [ev for ev in self.queue.values() if ev.signed_cp.checkpoint.timestamp <= chain_now]
        batch = due[:MAX_BATCH]
        for ev in batch:
            self.queue.pop(ev.lease_id, None)
        if batch:
            await self._settle(batch)

    async def _settle(self, batch: list[L.ContractSendSettle]) -> None:
        items = [(ev.signed_cp.checkpoint, ev.signed_cp.signature) for ev in batch]
        escrow = self.runner.escrow
        try:
            result: TxResult
            if len(batch) == 1:
                cp = items[0][0]
                result = await escrow.settle(f"settle:{cp.lease_id}:{cp.seq}", cp, items[0][1])
            else:
                key = "settle-batch:" + keccak(b"".join(
                    cp.lease_id.to_bytes(32, "big") + cp.seq.to_bytes(8, "big") for cp, _ in items)).hex()[:24]
                result = await escrow.settle_batch(key, list(items))
            self.runner.record_gas("settle" if len(batch) == 1 else f"settleBatch({len(batch)})", batch[0].lease_id,
                                   result)
            # LeaseSettled / SettlementSkipped logs reach the leases through the log poller
        except (TxFailed, TxRace) as exc:
            for ev in batch:
                rec = self.dispatcher.get(ev.lease_id, L.Role.CONSUMER)
                if rec is not None:
                    await self.dispatcher.apply(rec, L.ContractReceiveSettleFailed(
                        ev.lease_id, ev.signed_cp.checkpoint.seq, exc.error))
        except ChainError as exc:  # RPC down: put them back, retried next round
            log.warning("settlement deferred", extra={"error": str(exc)[:200]})
            for ev in batch:
                self.queue.setdefault(ev.lease_id, ev)
        except Exception:  # unforeseen: keep them queued too (settlement is keyed by seq, a retry cannot pay twice)
            log.exception("settlement failed unexpectedly; retried next round")
            for ev in batch:
                self.queue.setdefault(ev.lease_id, ev)
