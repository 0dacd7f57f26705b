"""Node configuration: one frozen dataclass, loaded once (TOML file → ``GPUNET_*`` environment → CLI flags).

Typed defaults live here and nowhere else. ``load_config`` validates every field and raises ``ConfigError`` with
the offending key on bad input.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    enabled: bool = False
    declared_gpus: str = "1xSIM-GPU:16384"  # used when NVML finds no GPU: COUNTxMODEL:VRAM_MIB (simulated)
    price_per_gpu_second: int = 10**12  # token base units
    min_duration: int = 10
    max_duration: int = 3600
    offer_ttl: int = 3600  # seconds an offer stays valid; re-announced (new nonce) at half-life
    stake: int = 0  # stake to top up to at start (0 = do not stake)
    region: str = "local"
    heartbeat_interval: float = 2.0
    checkpoint_interval: float = 6.0
    # seconds of a lease's full usage served without settlement before the job is stopped and the latest
    # checkpoint claimed on-chain (0: ten checkpoint intervals, at least a minute)
    max_unsettled: float = 0.0
    # the offer's price: fixed (price_per_gpu_second) | market | utilisation (docs/market.md, "Provider pricing
    # policies"); floor and ceiling in base units per GPU-second (0: half of, and four times, price_per_gpu_second)
    pricing: str = "fixed"
    price_floor: int = 0
    price_ceiling: int = 0
    price_percentile: int = 50  # market: the percentile of the other live offers of the same model and region
    price_target: float = 0.6  # utilisation: the share of this provider's GPUs leased that the price steers to
    price_step: float = 0.05  # utilisation: the most one move changes the price, as a share of it
    price_deadband: float = 0.05  # utilisation: within target +- this the price holds
    reannounce_interval: float = 900.0  # seconds: a new price is announced at most this often
    executor: str = "process"  # process | simulated | container
    work_dir: str = ""  # per-lease job directories (default: <data_dir>/jobs)
    # The process executor runs a job as the node's own user, with the node's files in reach: only for the
    # operator's own jobs unless this is switched on.
    allow_unsafe_process_executor: bool = False
    # executor = "container": the Docker Engine API socket (Docker, or `podman system service`); "" finds one
    container_socket: str = ""
    gpu_mode: str = "cdi"  # cdi (Podman, Docker >= 25 with CDI) | nvidia (Docker with the NVIDIA toolkit)
    allowed_images: tuple[str, ...] = ()  # registry/repository prefixes or sha256 digests; empty: any image
    default_image: str = ""
    allow_egress: bool = False  # containers get a network to the outside (never the host's loopback)
    max_memory_mib: int = 65536  # caps of one job; a job asking for more is refused with the cap named
    max_cpus: float = 16.0
    max_shm_mib: int = 16384
    max_scratch_mib: int = 102400


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    settle_interval: float = 2.0  # how often due settlements are batched and sent
    settle_every: float = 60.0  # settle a lease at most this often while it runs (always at close): gas vs risk
    auto_topup: int = 0  # token base units added when a lease is about to run dry (0: only suggest a top-up)
    max_rejections: int = 3
    checkpoint_tolerance: int = 2  # seconds of GPU time per GPU allowed above wall-clock elapsed
    # spend caps in token base units (0: none): a lease's deposit with its top-ups, and all deposits of a UTC day
    max_spend_per_lease: int = 0
    max_spend_per_day: int = 0
    # seconds without a heartbeat before the provider's liveness is challenged on-chain (0: 20 heartbeat
    # intervals, at least 30 s)
    challenge_after: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    data_dir: Path = Path(".gpunet")
    rpc_url: str = "http://127.0.0.1:8545"
    deployments: Path | None = None  # default: deployments/<chainId>.json in the repository
    keystore: Path | None = None  # encrypted eth-account keystore (JSON)
    password_file: Path | None = None
    dev_account: int | None = None  # devnet only: anvil's mnemonic account index
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = 0
    api_token: str | None = None  # default: random, written to <data_dir>/api-token (0600)
    api_hosts: tuple[str, ...] = ()  # names the API answers to besides loopback ones (Host header; e.g. a proxy's)
    confirmations: int = 0
    poll_interval: float = 0.25
    provider: ProviderConfig = field(default_factory=ProviderConfig)
    consumer: ConsumerConfig = field(default_factory=ConsumerConfig)


_ENV_PREFIX = "GPUNET_"


def _coerce(name: str, value: Any, target: Any) -> Any:
    """Coerce a raw value (from TOML, env or CLI) into the type of ``target`` (the default)."""
    try:
        if isinstance(target, bool):
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(target, int):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if isinstance(target, float):
            return float(value)
        if isinstance(target, tuple):
            if isinstance(value, str):
                return tuple(x.strip() for x in value.split(",") if x.strip())
            return tuple(str(x) for x in value)
        if isinstance(target, Path) or name in ("deployments", "keystore", "password_file", "data_dir"):
            return Path(value) if value not in (None, "") else None
        if name == "dev_account":
            return None if value in (None, "") else int(value)
        return value if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {name!r}: cannot use {value!r}") from exc


def _apply(obj: Any, values: dict[str, Any], where: str) -> Any:
    updates: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, raw in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r} in {where}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(raw, dict):
                raise ConfigError(f"config key {key!r} in {where} must be a table")
            updates[key] = _apply(current, raw, f"{where}.{key}")
        else:
            updates[key] = _coerce(key, raw, current)
    return dataclasses.replace(obj, **updates)


def load_config(path: Path | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> NodeConfig:
    cfg = NodeConfig()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        cfg = _apply(cfg, data, str(path))
    env = dict(os.environ) if env is None else env
    env_values: dict[str, Any] = {}
    for k, v in env.items():
        if not k.startswith(_ENV_PREFIX):
            continue
        name = k[len(_ENV_PREFIX):].lower()
        if name.startswith("provider__"):
            env_values.setdefault("provider", {})[name[len("provider__"):]] = v
        elif name.startswith("consumer__"):
            env_values.setdefault("consumer", {})[name[len("consumer__"):]] = v
        elif name in {f.name for f in dataclasses.fields(NodeConfig)}:
            env_values[name] = v
    if env_values:
        cfg = _apply(cfg, env_values, "environment")
    if overrides:
        cfg = _apply(cfg, {k: v for k, v in overrides.items() if v is not None}, "command line")
    validate_config(cfg)
    return cfg


def validate_config(cfg: NodeConfig) -> None:
    if cfg.api_host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"api_host {cfg.api_host!r}: the HTTP API only listens on loopback")
    if not (0 <= cfg.api_port <= 65535):
        raise ConfigError(f"api_port {cfg.api_port} out of range")
    if not cfg.rpc_url.startswith(("http://", "https://")):
        raise ConfigError(f"rpc_url {cfg.rpc_url!r} must be an http(s) URL")
    p = cfg.provider
    if p.price_per_gpu_second <= 0:
        raise ConfigError("provider.price_per_gpu_second must be > 0")
    if not (0 < p.min_duration <= p.max_duration):
        raise ConfigError("provider.min_duration must be > 0 and <= provider.max_duration")
    if p.offer_ttl < 10:
        raise ConfigError("provider.offer_ttl must be >= 10 seconds")
    if p.executor not in ("process", "simulated", "container"):
        raise ConfigError("provider.executor must be 'process', 'simulated' or 'container'")
    if p.gpu_mode not in ("cdi", "nvidia"):
        raise ConfigError("provider.gpu_mode must be 'cdi' or 'nvidia'")
    if min(p.max_memory_mib, p.max_shm_mib, p.max_scratch_mib) <= 0 or p.max_cpus <= 0:
        raise ConfigError("provider.max_memory_mib, max_cpus, max_shm_mib and max_scratch_mib must be > 0")
    if p.pricing not in ("fixed", "market", "utilisation"):
        raise ConfigError("provider.pricing must be 'fixed', 'market' or 'utilisation'")
    if p.price_floor < 0 or p.price_ceiling < 0 or (p.price_ceiling and p.price_floor > p.price_ceiling):
        raise ConfigError("provider.price_floor and price_ceiling must be >= 0, the floor not above the ceiling")
    if not (0 <= p.price_percentile <= 100 and 0 < p.price_target < 1 and 0 < p.price_step <= 1
            and 0 <= p.price_deadband < 1):
        raise ConfigError("provider.price_percentile must be in 0..100, price_target in (0, 1), price_step in "
                          "(0, 1], price_deadband in [0, 1)")
    if p.reannounce_interval <= 0:
        raise ConfigError("provider.reannounce_interval must be > 0")
    if cfg.consumer.max_spend_per_lease < 0 or cfg.consumer.max_spend_per_day < 0:
        raise ConfigError("consumer.max_spend_per_lease and max_spend_per_day must be >= 0 (0: no cap)")
    if cfg.consumer.settle_every < 0 or cfg.consumer.auto_topup < 0:
        raise ConfigError("consumer.settle_every and consumer.auto_topup must be >= 0")
    if p.heartbeat_interval <= 0 or p.checkpoint_interval < p.heartbeat_interval:
        raise ConfigError("provider.checkpoint_interval must be >= heartbeat_interval > 0")
    if cfg.keystore is None and cfg.dev_account is None:
        return  # a plain peer needs no wallet
    if cfg.keystore is not None and cfg.dev_account is not None:
        raise ConfigError("use either keystore or dev_account, not both")
