"""Small shared types: ids as NewTypes and the three-way validation verdict used by gossip validators."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

Address = NewType("Address", str)  # checksummed 0x-hex
LeaseId = NewType("LeaseId", int)
OfferHash = NewType("OfferHash", bytes)  # EIP-712 struct hash of an Offer (32 bytes)
Wei = NewType("Wei", int)  # token base units
PeerIdStr = NewType("PeerIdStr", str)  # base58 libp2p peer id


class Verdict(enum.Enum):
    """Outcome of validating a gossiped message (libp2p semantics).

    ACCEPT: deliver and forward. REJECT: drop and penalise the sender (provably bad).
    IGNORE: drop without penalty (e.g. stale, duplicate, not yet knowable).
    """

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class Validation:
    verdict: Verdict
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


ACCEPTED = Validation(Verdict.ACCEPT, "ok")
