"""Deploy DevToken, ProviderStaking and LeaseEscrow to any JSON-RPC endpoint and write ``deployments/<chainId>.json``.

Constructor arguments are taken by name from ``DeployParams`` (matched against each constructor's ABI inputs), so the
deployments file records exactly what each contract was built with. Time windows default to devnet values (seconds).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from node.chain.artifacts import Artifact, Deployment, deployment_path, load_artifact, save_deployment
from node.chain.client import make_w3
from node.chain.tx import ErrorDecoder, TxSender
from node.errors import ChainError, ConfigError
from node.storage.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeployParams:
    min_stake: int = 100 * 10**18
    unbonding_period: int = 60
    wronged_bps: int = 5_000
    finder_bps: int = 2_000
    fee_bps: int = 100
    collateral_bps: int = 2_000
    settlement_window: int = 30
    dispute_window: int = 30
    liveness_window: int = 30
    liveness_slash_bps: int = 1_000
    treasury: str | None = None  # default: the deployer

    def by_abi_name(self) -> dict[str, int | str | None]:
        out: dict[str, int | str | None] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            camel = "".join(p if i == 0 else p.capitalize() for i, p in enumerate(f.name.split("_")))
            for name in (f.name, camel, camel + "_", "_" + camel):
                out[name] = v
        return out


def _constructor_args(artifact: Artifact, values: dict[str, Any]) -> list[Any]:
    ctor = next((i for i in artifact.abi if i.get("type") == "constructor"), None)
    if ctor is None:
        return []
    return [_arg(artifact.name, inp, values) for inp in ctor["inputs"]]


def _arg(contract: str, inp: dict[str, Any], values: dict[str, Any]) -> Any:
    if inp["type"] == "tuple":  # a config struct: filled field by field
        return tuple(_arg(contract, c, values) for c in inp["components"])
    name = inp["name"]
    if name not in values:
        raise ConfigError(f"{contract} constructor needs {name!r}: no deploy parameter of that name")
    return values[name]


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


async def _deploy_one(w3: AsyncWeb3, sender: TxSender, artifact: Artifact, values: dict[str, Any],
                      key: str) -> tuple[str, int, dict[str, Any]]:
    """Deploy one contract; returns its address, block and its record for the deployments file."""
    contract = w3.eth.contract(abi=artifact.abi_list, bytecode=artifact.bytecode)
    args = _constructor_args(artifact, values)
    data_hex = contract.constructor(*args)._encode_data_in_transaction(*args)
    data = bytes.fromhex(data_hex.removeprefix("0x"))
    # Contract creation: 'to' is empty; TxSender needs a target, so build and send manually through it.
    result = await sender.send(key, f"deploy {artifact.name}", "", data)
    receipt = await w3.eth.get_transaction_receipt(result.tx_hash)  # type: ignore[arg-type]
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(f"deploying {artifact.name}: no contract address in receipt")
    record = {
        "deployTx": result.tx_hash, "blockNumber": int(receipt["blockNumber"]),
        "constructorArgs": "0x" + data[len(artifact.bytecode):].hex(), "constructorArguments": _jsonable(args),
        "sourceName": artifact.source_name, "compilerVersion": artifact.compiler_version, "abi": artifact.abi_list,
    }
    return to_checksum_address(address), int(receipt["blockNumber"]), record


def keep_compiler_inputs(path: Path, arts: dict[str, Artifact]) -> dict[str, dict[str, str]]:
    """Write each contract's standard-JSON compiler input and metadata next to the deployments file
    (``<name>.sources/``); returns the paths relative to the deployments file's folder."""
    import json

    folder = path.parent / f"{path.stem}.sources"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, str]] = {}
    for name, art in arts.items():
        try:
            std_input = art.standard_json_input()
        except ConfigError as exc:  # sources edited since the build: an explorer could not match them
            log.warning("compiler input not kept", extra={"contract": name, "error": str(exc)})
            continue
        (folder / f"{name}.input.json").write_text(json.dumps(std_input, indent=1) + "\n")
        (folder / f"{name}.metadata.json").write_text(art.raw_metadata)
        out[name] = {"standardJsonInput": f"{folder.name}/{name}.input.json",
                     "metadata": f"{folder.name}/{name}.metadata.json"}
    return out


async def deploy_all(rpc_url: str, deployer_key: bytes, params: DeployParams = DeployParams(),
                     out: Path | None = None, db: Database | None = None) -> Deployment:
    w3 = make_w3(rpc_url)
    try:
        chain_id = int(await w3.eth.chain_id)
    except Exception as exc:
        raise ChainError(f"RPC endpoint {rpc_url} unreachable: {exc}") from exc
    arts = {n: load_artifact(n) for n in ("DevToken", "ProviderStaking", "LeaseEscrow")}
    db = db or Database(":memory:")
    sender = TxSender(w3, deployer_key, db, chain_id, ErrorDecoder([a.abi_list for a in arts.values()]))
    deployer = Account.from_key(deployer_key).address
    values: dict[str, Any] = dict(params.by_abi_name())
    treasury = params.treasury or deployer
    for name in ("treasury", "treasury_", "_treasury", "owner", "owner_", "initialOwner"):
        values[name] = treasury
    tag = f"deploy:{chain_id}:{deployer}:{await w3.eth.get_transaction_count(deployer)}"
    records: dict[str, dict[str, Any]] = {}
    token, first_block, records["DevToken"] = await _deploy_one(w3, sender, arts["DevToken"], values, f"{tag}:token")
    for name in ("token", "token_", "_token", "stakeToken", "paymentToken"):
        values[name] = token
    staking, _, records["ProviderStaking"] = await _deploy_one(w3, sender, arts["ProviderStaking"], values,
                                                               f"{tag}:staking")
    for name in ("staking", "staking_", "_staking", "providerStaking"):
        values[name] = staking
    escrow, _, records["LeaseEscrow"] = await _deploy_one(w3, sender, arts["LeaseEscrow"], values, f"{tag}:escrow")
    staking_c = w3.eth.contract(address=to_checksum_address(staking), abi=arts["ProviderStaking"].abi_list)
    if any(i.get("name") == "setEscrow" for i in arts["ProviderStaking"].abi):
        data = bytes.fromhex(staking_c.encode_abi("setEscrow", args=[escrow]).removeprefix("0x"))
        await sender.send(f"{tag}:setEscrow", "setEscrow", staking, data)
    recorded = {k: v for k, v in dataclasses.asdict(params).items() if isinstance(v, int)}
    path = out or deployment_path(chain_id)
    for name, kept in keep_compiler_inputs(path, arts).items():
        records[name].update(kept)
    deployment = Deployment(
        chain_id=chain_id, token=token, staking=staking, escrow=escrow, deploy_block=first_block,
        parameters=recorded, code_hashes={n: a.code_hash for n, a in arts.items()}, records=records,
    )
    save_deployment(deployment, path)
    await w3.provider.disconnect()
    return deployment
