"""The one place the node gets contract ABIs and bytecode: the forge build output (``out/``), never hand-copied JSON.

``deployments/<chainId>.json`` (written by ``node.chain.deploy``) records addresses, deploy block, parameters and a
hash of each contract's ABI and runtime bytecode so a node can tell it is talking to the code it was built with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils import keccak

from node.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "out"
DEPLOYMENTS_DIR = REPO_ROOT / "deployments"

CONTRACTS = ("DevToken", "ProviderStaking", "LeaseEscrow")
DEPLOYMENTS_FORMAT = 2  # docs/deployments.md; bumped only when a field changes meaning or goes away


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    deployed_bytecode: bytes
    raw_metadata: str = ""  # the compiler's metadata JSON, byte for byte (its hash is what Sourcify matches)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(json.loads(self.raw_metadata)) if self.raw_metadata else {}

    @property
    def source_name(self) -> str:
        """``contracts/src/LeaseEscrow.sol``: the file the contract was compiled from."""
        target = self.metadata.get("settings", {}).get("compilationTarget", {})
        return next(iter(target), f"contracts/src/{self.name}.sol")

    @property
    def compiler_version(self) -> str:
        return str(self.metadata.get("compiler", {}).get("version", ""))

    def standard_json_input(self, root: Path = REPO_ROOT) -> dict[str, Any]:
        """The solc standard-JSON input that reproduces this artifact: every source file named in the metadata,
        checked against the keccak the compiler recorded, and the metadata's settings."""
        meta = self.metadata
        if not meta:
            raise ConfigError(f"{self.name}: the build output has no metadata (forge build)")
        sources: dict[str, Any] = {}
        for path, info in meta["sources"].items():
            try:
                raw = (root / path).read_bytes()
            except FileNotFoundError as exc:
                raise ConfigError(f"{self.name}: source {path} is missing") from exc
            if "0x" + keccak(raw).hex() != info["keccak256"]:
                raise ConfigError(f"{self.name}: {path} changed since the contracts were built (forge build)")
            sources[path] = {"content": raw.decode()}
        settings = {k: v for k, v in meta["settings"].items() if k != "compilationTarget"}
        settings["outputSelection"] = {"*": {"*": ["abi", "evm.bytecode", "evm.deployedBytecode",
                                                   "evm.methodIdentifiers", "metadata"]}}
        return {"language": meta.get("language", "Solidity"), "sources": sources, "settings": settings}

    @property
    def abi_list(self) -> list[dict[str, Any]]:
        return list(self.abi)

    @property
    def code_hash(self) -> str:
        """keccak of ABI JSON (canonical) and runtime bytecode: changes when either changes."""
        abi_json = json.dumps(self.abi_list, sort_keys=True, separators=(",", ":")).encode()
        return "0x" + keccak(abi_json + self.deployed_bytecode).hex()


def abi_type(param: dict[str, Any]) -> str:
    """Canonical ABI type of an ABI input (tuples expanded), as used in event and error signatures."""
    t = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){t[5:]}"
    return t


@cache
def load_artifact(name: str, out_dir: Path = OUT_DIR) -> Artifact:
    path = out_dir / f"{name}.sol" / f"{name}.json"
    if not path.exists():
        raise ConfigError(f"contract artifact {path} missing: run scripts/setup (forge build)")
    data = json.loads(path.read_text())
    return Artifact(
        name=name,
        abi=tuple(data["abi"]),
        bytecode=bytes.fromhex(data["bytecode"]["object"].removeprefix("0x")),
        deployed_bytecode=bytes.fromhex(data["deployedBytecode"]["object"].removeprefix("0x")),
        raw_metadata=data.get("rawMetadata") or "",
    )


@dataclass(frozen=True, slots=True)
class Deployment:
    chain_id: int
    token: str
    staking: str
    escrow: str
    deploy_block: int
    parameters: dict[str, int]
    code_hashes: dict[str, str]
    # per contract: abi, deployTx, blockNumber, constructorArgs, constructorArguments, sourceName, compilerVersion,
    # standardJsonInput, metadata (see docs/deployments.md); empty for files written before they were recorded
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def address_of(self, name: str) -> str:
        return {"DevToken": self.token, "ProviderStaking": self.staking, "LeaseEscrow": self.escrow}[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DEPLOYMENTS_FORMAT,
            "chainId": self.chain_id,
            "deployBlock": self.deploy_block,
            "contracts": {
                name: {"address": self.address_of(name), "codeHash": self.code_hashes.get(name, ""),
                       **self.records.get(name, {})}
                for name in CONTRACTS
            },
            "parameters": self.parameters,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        try:
            c = data["contracts"]
            return cls(
                chain_id=int(data["chainId"]),
                token=c["DevToken"]["address"],
                staking=c["ProviderStaking"]["address"],
                escrow=c["LeaseEscrow"]["address"],
                deploy_block=int(data["deployBlock"]),
                parameters={k: int(v) for k, v in data.get("parameters", {}).items()},
                code_hashes={k: v.get("codeHash", "") for k, v in c.items()},
                records={k: {f: x for f, x in v.items() if f not in ("address", "codeHash")} for k, v in c.items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"deployments file is malformed: {exc!r}") from exc


def deployment_path(chain_id: int, directory: Path = DEPLOYMENTS_DIR) -> Path:
    return directory / f"{chain_id}.json"


DEVNET_CHAIN_ID = 31337


def devnet_dir() -> Path:
    """Where ``gpunet devnet up`` keeps anvil's state and the deployments file: ``$GPUNET_HOME/devnet``."""
    import os

    return Path(os.environ.get("GPUNET_HOME") or Path.home() / ".gpunet") / "devnet"


def find_deployment(chain_id: int) -> Path:
    """The deployments file for a chain when none is configured: on the devnet the one ``gpunet devnet up``
    wrote, else ``deployments/<chainId>.json`` in the repository."""
    if chain_id == DEVNET_CHAIN_ID:
        devnet = devnet_dir() / "deployments.json"
        if devnet.exists():
            return devnet
    return deployment_path(chain_id)


def load_deployment(path: Path) -> Deployment:
    if not path.exists():
        raise ConfigError(f"deployments file {path} not found: deploy first (gpunet deploy)")
    try:
        return Deployment.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deployments file {path} is not JSON: {exc}") from exc


def save_deployment(deployment: Deployment, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(deployment.to_json(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
