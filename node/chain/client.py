"""Chain client: AsyncWeb3 against any JSON-RPC URL, the three contracts from the deployments file, one
``TxSender`` for the node's wallet.

At connect it checks the chain id and that each contract's runtime code is the code this node was built with
(``ChainMismatch`` otherwise). web3's default middleware is removed: it adds an ``eth_chainId`` round trip to every
``eth_call`` and validates transactions we sign locally anyway; responses are plain dicts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import AsyncWeb3
from web3.contract import AsyncContract

from node.chain.artifacts import Artifact, Deployment, load_artifact
from node.chain.events import EventDecoder
from node.chain.rpc import ChainHealth, ResilientHTTPProvider, health_of
from node.chain.tx import ErrorDecoder, TxResult, TxSender
from node.errors import ChainError, ChainMismatch
from node.storage.db import Database


def make_w3(rpc_url: str, timeout: float = 10.0, retry_for: float = 20.0) -> AsyncWeb3:
    """An AsyncWeb3 whose provider retries transient failures (see ``node.chain.rpc``) for up to ``retry_for`` s."""
    return AsyncWeb3(ResilientHTTPProvider(rpc_url, timeout=timeout, retry_for=retry_for), middleware=[])


@dataclass
class Contracts:
    token: AsyncContract
    staking: AsyncContract
    escrow: AsyncContract
    artifacts: dict[str, Artifact]


def _redact_url(url: str) -> str:
    """Public endpoints carry an API key in the path or query: show the host only."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}" if parts.hostname else ""


class ChainClient:
    def __init__(self, w3: AsyncWeb3, deployment: Deployment, contracts: Contracts, db: Database,
                 wallet_key: bytes | None) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.c = contracts
        self.db = db
        abis = [a.abi_list for a in contracts.artifacts.values()]
        self.errors = ErrorDecoder(abis)
        self.events = EventDecoder(abis)
        self.health: ChainHealth = health_of(w3.provider) or ChainHealth()
        self.sender: TxSender | None = (
            TxSender(w3, wallet_key, db, deployment.chain_id, self.errors) if wallet_key is not None else None
        )

    @property
    def address(self) -> str | None:
        return self.sender.address if self.sender else None

    def status(self) -> dict[str, Any]:
        """The endpoint's health as this node saw it (``/v1/status``'s ``chain``)."""
        return {"rpc_url": _redact_url(str(getattr(self.w3.provider, "endpoint_uri", ""))), **self.health.snapshot()}

    @classmethod
    async def connect(cls, rpc_url: str, deployment: Deployment, db: Database, wallet_key: bytes | None,
                      check_code: bool = True, first_contact_s: float = 5.0, retry_for: float = 20.0) -> ChainClient:
        """An endpoint that does not answer within ``first_contact_s`` is an error (a wrong URL should fail fast);
        once it has answered, each request rides out failures for up to ``retry_for`` seconds."""
        provider = ResilientHTTPProvider(rpc_url, retry_for=first_contact_s)
        w3 = AsyncWeb3(provider, middleware=[])
        try:
            return await cls._checked(w3, provider, rpc_url, deployment, db, wallet_key, check_code, retry_for)
        except BaseException:  # a refused endpoint leaves no open session behind
            with contextlib.suppress(Exception):
                await provider.disconnect()
            raise

    @classmethod
    async def _checked(cls, w3: AsyncWeb3, provider: ResilientHTTPProvider, rpc_url: str, deployment: Deployment,
                       db: Database, wallet_key: bytes | None, check_code: bool, retry_for: float) -> ChainClient:
        try:
            chain_id = int(await w3.eth.chain_id)
        except Exception as exc:
            raise ChainError(f"RPC endpoint {_redact_url(rpc_url)} unreachable: {type(exc).__name__}: {exc}") from exc
        provider.retry_for = retry_for
        if chain_id != deployment.chain_id:
            raise ChainMismatch(f"RPC {rpc_url} is chain {chain_id}, deployments file says {deployment.chain_id}")
        artifacts = {n: load_artifact(n) for n in ("DevToken", "ProviderStaking", "LeaseEscrow")}
        addresses = {"DevToken": deployment.token, "ProviderStaking": deployment.staking,
                     "LeaseEscrow": deployment.escrow}
        if check_code:
            for name, addr in addresses.items():
                code = bytes(await w3.eth.get_code(to_checksum_address(addr)))
                if not code:
                    raise ChainMismatch(f"no contract code at {name} {addr} on chain {chain_id}")
                expected = artifacts[name].deployed_bytecode
                # Immutables are patched into the runtime code at deploy: compare length and hash of the code
                # with immutable slots masked is overkill here; length plus the recorded code hash suffice.
                if len(code) != len(expected):
                    raise ChainMismatch(f"{name} at {addr} runs different code than this build (out/)")
                recorded = deployment.code_hashes.get(name)
                if recorded and recorded != artifacts[name].code_hash:
                    raise ChainMismatch(f"{name}: deployments file was written for a different build of the contract")
        contracts = Contracts(
            token=w3.eth.contract(address=to_checksum_address(deployment.token), abi=artifacts["DevToken"].abi_list),
            staking=w3.eth.contract(address=to_checksum_address(deployment.staking),
                                    abi=artifacts["ProviderStaking"].abi_list),
            escrow=w3.eth.contract(address=to_checksum_address(deployment.escrow),
                                   abi=artifacts["LeaseEscrow"].abi_list),
            artifacts=artifacts,
        )
        return cls(w3, deployment, contracts, db, wallet_key)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.w3.provider.disconnect()

    # --- reads -----------------------------------------------------------------------------------------------
    async def call(self, contract: AsyncContract, fn: str, *args: Any, block: int | str = "latest") -> Any:
        try:
            return await getattr(contract.functions, fn)(*args).call(block_identifier=block)
        except (TimeoutError, OSError) as exc:
            raise ChainError(f"{fn}: RPC failure: {exc}") from exc

    # --- writes ----------------------------------------------------------------------------------------------
    def encode(self, contract: AsyncContract, fn: str, *args: Any) -> bytes:
        return bytes.fromhex(contract.encode_abi(fn, args=list(args)).removeprefix("0x"))

    async def transact(self, key: str, contract: AsyncContract, fn: str, *args: Any,
                       race_errors: frozenset[str] = frozenset(), gas: int | None = None) -> TxResult:
        if self.sender is None:
            raise ChainError("this node has no wallet configured: cannot send transactions")
        data = self.encode(contract, fn, *args)
        return await self.sender.send(key, fn, contract.address, data, race_errors=race_errors, gas=gas)

