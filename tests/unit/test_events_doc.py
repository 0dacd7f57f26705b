"""docs/events.md lists every event of the contracts as built, with its signature and topic0, and a description."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eth_utils import keccak

from node.chain.artifacts import CONTRACTS, abi_type, load_artifact

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_event_is_documented(contract: str) -> None:
    text = DOC.read_text()
    section = text.split(f"## {contract}\n", 1)[1].split("\n## ", 1)[0]
    events = [e for e in load_artifact(contract).abi if e.get("type") == "event"]
    assert events
    for e in events:
        sig = f"{e['name']}({','.join(abi_type(i) for i in e['inputs'])})"
        block = section.split(f"### {e['name']}\n", 1)
        assert len(block) == 2, f"{contract}.{e['name']} is not in docs/events.md"
        body = block[1].split("\n### ", 1)[0]
        assert f"`{sig}`" in body, f"{sig}: signature differs from the build"
        assert "0x" + keccak(sig.encode()).hex() in body
        assert "(undocumented)" not in body
        for i in e["inputs"]:
            assert re.search(rf"\| `{i['name']}` \| `{re.escape(abi_type(i))}` \| {'yes' if i['indexed'] else ''} \|",
                             body), f"{e['name']}.{i['name']}"
    documented = set(re.findall(r"^### (\w+)$", section, re.M))
    assert documented == {e["name"] for e in events}, "docs/events.md lists events the build does not have"
