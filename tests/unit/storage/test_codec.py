"""The stored-state codec: exact round trips, and strict refusal of anything that does not match the shape."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

import pytest

from node.crypto.eip712 import Domain
from node.protocol import lease as L
from node.protocol.checkpoint import Checkpoint, SignedCheckpoint
from node.storage import codec
from node.storage.codec import StoredDataError


class Colour(enum.Enum):
    RED = "r"
    BLUE = "b"


@dataclass(frozen=True)
class Inner:
    raw: bytes
    colour: Colour


@dataclass(frozen=True)
class Outer:
    n: int
    name: str
    flag: bool
    inner: Inner
    maybe: Inner | None = None
    items: tuple[Inner, ...] = ()
    pairs: tuple[tuple[str, int | str], ...] = ()
    derived: int = field(default=0, init=False)


def make_outer() -> Outer:
    return Outer(n=2**200, name="x", flag=True, inner=Inner(b"\x00\xff", Colour.BLUE),
                 items=(Inner(b"", Colour.RED),), pairs=(("a", 1), ("b", "two")))


def test_round_trip_is_exact_and_readable():
    value = make_outer()
    text = codec.dumps(value)
    data = json.loads(text)
    assert data["n"] == 2**200 and data["inner"] == {"raw": "0x00ff", "colour": "BLUE"}
    assert "derived" not in data  # not a constructor field
    assert codec.loads(Outer, text) == value


def test_lease_state_with_checkpoint_round_trips():
    cp = SignedCheckpoint(Checkpoint(7, 3, 99, b"\x11" * 32, 1_700_000_000), b"\x22" * 65)
    terms = L.OfferTerms(b"\x01" * 32, "0x" + "ab" * 20, b"\x02" * 32, 10**12, 3600)
    state = L.LeaseState(role=L.Role.CONSUMER, terms=terms, consumer="0x" + "cd" * 20, gpus=2,
                         ledger=L.Ledger(deposit=10**18), domain=Domain(31337, "0x" + "ef" * 20),
                         status=L.LeaseStatus.OPEN, beats=L.BeatChain(last_accepted=cp, pending=(b"a", b"b")),
                         close_reason=L.CloseReason.USER)
    back = codec.loads(L.LeaseState, codec.dumps(state))
    assert back == state and back.domain.separator == state.domain.separator


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(extra=1), "unknown field(s) extra"),
    (lambda d: d.pop("name"), "missing field(s) name"),
    (lambda d: d.update(n="1"), "$.n: expected an integer"),
    (lambda d: d.update(n=True), "$.n: expected an integer"),
    (lambda d: d["inner"].update(raw="00ff"), "$.inner.raw: expected a 0x-hex string"),
    (lambda d: d["inner"].update(colour="GREEN"), "'GREEN' is not a member of Colour"),
    (lambda d: d.update(items={}), "$.items: expected an array"),
    (lambda d: d.update(pairs=[["a", 1.5]]), "$.pairs[0][1]: expected int or str"),
])
def test_shape_mismatch_is_refused_with_its_path(mutate, message):
    data = json.loads(codec.dumps(make_outer()))
    mutate(data)
    with pytest.raises(StoredDataError, match=message.replace("$", r"\$").replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        codec.loads(Outer, json.dumps(data))


def test_tagged_values_decode_only_registered_types():
    registry = {"Inner": Inner}
    text = codec.dumps_tagged(Inner(b"\x01", Colour.RED), registry)
    assert codec.loads_tagged(text, registry) == Inner(b"\x01", Colour.RED)
    with pytest.raises(StoredDataError, match="unknown stored type 'Outer'"):
        codec.loads_tagged(json.dumps({"type": "Outer", "data": {}}), registry)
    with pytest.raises(StoredDataError, match="not a registered stored type"):
        codec.dumps_tagged(make_outer(), registry)
    with pytest.raises(StoredDataError, match="not JSON"):
        codec.loads_tagged(b"\x80\x04garbage", registry)
