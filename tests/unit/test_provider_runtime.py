"""The provider's executor choice from its configuration (no runtime needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import ProviderConfig, load_config
from node.errors import ConfigError
from node.provider.container import MiB, ResourceBeyondCap, resolve_resources
from node.provider.executor import JobResources, ProcessExecutor, SimulatedExecutor
from node.provider.runtime import choose_executor, container_settings


def test_container_settings_carry_caps_allow_list_and_egress() -> None:
    pc = ProviderConfig(executor="container", allowed_images=("localhost/x/",), max_memory_mib=256, max_cpus=2.0,
                        max_shm_mib=32, max_scratch_mib=64, allow_egress=True, gpu_mode="nvidia")
    s = container_settings(pc, "node1")
    assert s.allowed_images == ("localhost/x/",) and s.allow_egress and s.gpu_mode == "nvidia"
    assert s.caps.memory_bytes == 256 * MiB and s.caps.cpus == 2.0
    assert s.defaults.memory_bytes == 256 * MiB and s.defaults.scratch_bytes == 64 * MiB  # lowered to the caps
    with pytest.raises(ResourceBeyondCap, match="memory_bytes"):
        resolve_resources(JobResources(memory_bytes=512 * MiB), s.defaults, s.caps)
    assert container_settings(ProviderConfig(), "n").allowed_images is None  # empty list: any image


def test_config_accepts_the_container_executor_and_checks_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[provider]\nexecutor = "container"\ncontainer_socket = "/x.sock"\n'
                    'allowed_images = ["ghcr.io/acme/"]\nmax_cpus = 4\n')
    pc = load_config(path, env={}).provider
    assert pc.executor == "container" and pc.allowed_images == ("ghcr.io/acme/",) and pc.max_cpus == 4.0
    with pytest.raises(ConfigError, match="gpu_mode"):
        load_config(None, env={"GPUNET_PROVIDER__GPU_MODE": "amd"})
    with pytest.raises(ConfigError, match="executor"):
        load_config(None, env={"GPUNET_PROVIDER__EXECUTOR": "vm"})


async def test_executor_choice(tmp_path: Path) -> None:
    sim = await choose_executor(ProviderConfig(executor="simulated"), tmp_path, "n")
    assert isinstance(sim.executor, SimulatedExecutor) and sim.kind == "simulated"
    proc = await choose_executor(ProviderConfig(executor="process"), tmp_path, "n")
    assert isinstance(proc.executor, ProcessExecutor) and "operator's own jobs only" in proc.description
    unsafe = await choose_executor(ProviderConfig(executor="process", allow_unsafe_process_executor=True),
                                   tmp_path, "n")
    assert "unsafe" in unsafe.description
    with pytest.raises(ConfigError, match="no Docker Engine API answers"):
        await choose_executor(ProviderConfig(executor="container", container_socket=str(tmp_path / "none.sock")),
                              tmp_path, "n")
