"""Every custom error of the contracts decodes by name (what the CLI and API show), never as a raw selector."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

from node.chain.artifacts import CONTRACTS, abi_type, load_artifact
from node.chain.tx import ErrorDecoder

SAMPLE = {"address": "0x" + "11" * 20, "bool": True, "bytes32": b"\x22" * 32, "string": "x", "bytes": b"\x01"}


def sample(t: str) -> object:
    if t.startswith(("uint", "int")):
        return 7
    if t.startswith("bytes") and t != "bytes":
        return b"\x33" * int(t[5:])
    return SAMPLE[t]


def test_every_custom_error_decodes_by_name() -> None:
    abis = [load_artifact(n).abi_list for n in CONTRACTS]
    decoder = ErrorDecoder(abis)
    errors = [e for abi in abis for e in abi if e.get("type") == "error"]
    assert len(errors) >= 20
    for e in errors:
        types = [abi_type(i) for i in e["inputs"]]
        if any(t.startswith("(") or t.endswith("]") for t in types):
            continue  # no struct or array arguments among the errors today
        data = keccak(f"{e['name']}({','.join(types)})".encode())[:4] + encode(types, [sample(t) for t in types])
        text = decoder.decode("0x" + data.hex())
        assert text.startswith(e["name"] + "("), text
        assert "unknown error" not in text and "undecodable" not in text
