"""Explorers can verify the deployed contracts from the deployments file alone: deploy transactions, blocks and
constructor arguments match the chain, the kept standard-JSON input holds exactly the sources the compiler hashed,
and the runtime code ends with the IPFS hash of the kept metadata (Sourcify's full match). ``gpunet verify``
writes it all out."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from eth_utils import keccak

from node.chain.anvil import Anvil, devnet_key
from node.chain.artifacts import CONTRACTS, load_artifact
from node.chain.client import make_w3
from node.chain.deploy import DeployParams, deploy_all
from node.cli import main

pytestmark = pytest.mark.integration


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def ipfs_multihash(content: bytes) -> bytes:
    """sha2-256 multihash of a file added to IPFS as one dag-pb/UnixFS block (as solc and Sourcify do)."""
    unixfs = b"\x08\x02" + b"\x12" + _varint(len(content)) + content + b"\x18" + _varint(len(content))
    node = b"\x0a" + _varint(len(unixfs)) + unixfs
    return b"\x12\x20" + hashlib.sha256(node).digest()


def cbor_tail(code: bytes) -> bytes:
    n = int.from_bytes(code[-2:], "big")
    return code[-2 - n:-2]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("verify")
    with Anvil() as anvil:
        path = tmp / "31337.json"
        asyncio.run(deploy_all(anvil.url, devnet_key(0), DeployParams(), out=path))
        yield anvil, path, tmp


def test_deployments_file_matches_the_chain(deployed: Any) -> None:
    anvil, path, _ = deployed
    data = json.loads(path.read_text())
    assert data["format"] == 2

    async def check() -> None:
        w3 = make_w3(anvil.url)
        for name in CONTRACTS:
            rec = data["contracts"][name]
            art = load_artifact(name)
            tx = await w3.eth.get_transaction(rec["deployTx"])
            receipt = await w3.eth.get_transaction_receipt(rec["deployTx"])
            assert receipt["contractAddress"].lower() == rec["address"].lower()
            assert int(receipt["blockNumber"]) == rec["blockNumber"]
            assert bytes(tx["input"]) == art.bytecode + bytes.fromhex(rec["constructorArgs"][2:])
            assert rec["abi"] == art.abi_list and rec["sourceName"] == f"contracts/src/{name}.sol"
        await w3.provider.disconnect()

    asyncio.run(check())


def test_kept_compiler_input_reproduces_the_metadata(deployed: Any) -> None:
    anvil, path, _ = deployed
    data = json.loads(path.read_text())

    async def code_of(address: str) -> bytes:
        w3 = make_w3(anvil.url)
        try:
            return bytes(await w3.eth.get_code(address))  # type: ignore[arg-type]
        finally:
            await w3.provider.disconnect()

    for name in CONTRACTS:
        rec = data["contracts"][name]
        std = json.loads((path.parent / rec["standardJsonInput"]).read_text())
        raw_meta = (path.parent / rec["metadata"]).read_bytes()
        meta = json.loads(raw_meta)
        assert set(std["sources"]) == set(meta["sources"])
        for src, info in meta["sources"].items():
            assert "0x" + keccak(std["sources"][src]["content"].encode()).hex() == info["keccak256"], src
        assert std["settings"]["optimizer"] == meta["settings"]["optimizer"]
        assert std["settings"]["evmVersion"] == meta["settings"]["evmVersion"]
        code = asyncio.run(code_of(rec["address"]))
        assert ipfs_multihash(raw_meta) in cbor_tail(code), f"{name}: bytecode does not carry its metadata hash"


def test_gpunet_verify_writes_what_explorers_need(deployed: Any) -> None:
    _, path, tmp = deployed
    out = tmp / "explorer"
    r = CliRunner().invoke(main, ["verify", "--deployments", str(path), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(path.read_text())
    for name in CONTRACTS:
        info = json.loads((out / name / "verify.json").read_text())
        assert info["address"] == data["contracts"][name]["address"]
        assert info["contract"] == f"contracts/src/{name}.sol:{name}"
        assert info["compilerVersion"].startswith("v0.8.")
        assert info["constructorArgs"] == data["contracts"][name]["constructorArgs"]
        meta = json.loads((out / name / "sourcify" / "metadata.json").read_text())
        for src in meta["sources"]:
            assert (out / name / "sourcify" / "sources" / src).is_file()
        std = json.loads((out / name / "standard-input.json").read_text())
        assert std["language"] == "Solidity" and std["sources"]
    old = tmp / "old.json"
    old.write_text(json.dumps({**data, "contracts": {n: {k: v for k, v in c.items() if k in ("address", "codeHash")}
                                                     for n, c in data["contracts"].items()}}))
    r = CliRunner().invoke(main, ["verify", "--deployments", str(old), "--out", str(tmp / "x")])
    assert r.exit_code == 1 and "keeps no compiler input" in r.output


def test_ipfs_hash_helper_is_right() -> None:
    # `ipfs add --only-hash` of "hello\n" is QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN
    import base58  # type: ignore[import-untyped]

    assert base58.b58encode(ipfs_multihash(b"hello\n")).decode() == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"


def test_paths_are_relative(deployed: Any) -> None:
    _, path, _ = deployed
    for rec in json.loads(path.read_text())["contracts"].values():
        assert not Path(rec["standardJsonInput"]).is_absolute()
