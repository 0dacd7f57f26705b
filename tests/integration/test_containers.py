"""The container executor against a real Podman service (private socket and storage, see conftest_containers).

Hostile jobs try what a stranger's job would try on a provider; each test asserts the outcome, and the
``executor`` fixture asserts after every test that no container of the job is left. The first tests are pure
(job spec, caps, allow-list, output cutting) and need no runtime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from node.provider.container import (
    LABEL_LEASE,
    LABEL_NODE,
    SIMULATED_GPUS_ENV,
    ContainerExecutor,
    ContainerRuntimeUnavailable,
    ContainerSettings,
    OutputSink,
    ResourceBeyondCap,
    ResourceCaps,
    RuntimeInfo,
    allowed_by_digest,
    allowed_by_name,
    normalise_reference,
    resolve_resources,
    utf8_incomplete_suffix,
    utf8_tail,
)
from node.provider.executor import (
    FAILED_IMAGE_NOT_ALLOWED,
    FAILED_IMAGE_PULL,
    FAILED_START,
    KILLED_OOM,
    KILLED_STOPPED,
    KILLED_TIMEOUT,
    ExecJob,
    InvalidJob,
    JobResources,
    ProcessExecutor,
    UnsafeExecutorRefused,
)
from node.provider.gpus import GpuDevice
from node.types import LeaseId
from tests.integration.conftest_containers import PodmanService, podman_service  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MiB = 1024**2
BLOCK = "█".encode()  # 3 bytes
REAL_GPUS = (GpuDevice(0, "GPU-aaaa", "H100", 81920, False), GpuDevice(1, "GPU-bbbb", "H100", 81920, False))
SIM_GPUS = (GpuDevice(0, "SIM-0-H100", "H100", 81920, True),)


# --- pure parts ---------------------------------------------------------------------------------------------


def test_runtime_times_are_read_with_their_zone_and_fraction() -> None:
    from datetime import UTC, datetime, timedelta

    from node.provider.container import _age_s

    ten_ago = datetime.now(UTC) - timedelta(seconds=10)
    for stamp in (ten_ago.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",  # nanoseconds, as the runtimes write them
                  ten_ago.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00",
                  (ten_ago + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"):
        assert 9.0 < _age_s(stamp) < 12.0, stamp
    assert _age_s("0001-01-01T00:00:00Z") == _age_s("") == _age_s(None) == _age_s("garbage") == 0.0


def test_exec_job_keeps_working_without_container_fields() -> None:
    job = ExecJob(["sh", "-c", "true"], {"A": "1"}, 5.0)
    assert (job.image, job.resources, job.ports, job.consumer) == (None, JobResources(), (), None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image": "bad image"},
        {"image": ""},
        {"ports": [0]},
        {"ports": [70000]},
        {"resources": {"memory_bytes": 1}},
    ],
    ids=["space", "empty", "port0", "port-high", "resources-not-a-dataclass"],
)
def test_malformed_container_fields_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidJob):
        ExecJob(["true"], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"memory_bytes": 0}, {"cpus": float("nan")}, {"scratch_bytes": True}])
def test_malformed_resources_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidJob):
        JobResources(**kwargs)  # type: ignore[arg-type]


async def test_process_executor_refuses_remote_consumers_unless_opted_in(tmp_path: Path) -> None:
    job = ExecJob(["true"], consumer="0x" + "ab" * 20)
    with pytest.raises(UnsafeExecutorRefused, match="allow_unsafe_process_executor"):
        await ProcessExecutor(tmp_path).start(LeaseId(1), job, [])
    handle = await ProcessExecutor(tmp_path, allow_unsafe_process_executor=True).start(LeaseId(1), job, [])
    assert (await handle.wait()).exit_code == 0
    own = await ProcessExecutor(tmp_path).start(LeaseId(2), ExecJob(["true"]), [])  # the operator's own job
    assert (await own.wait()).exit_code == 0


def test_resources_take_defaults_and_a_job_beyond_a_cap_names_it() -> None:
    caps = ResourceCaps(memory_bytes=4 * 1024 * MiB, cpus=2.0, shm_bytes=512 * MiB, scratch_bytes=8 * 1024 * MiB)
    defaults = JobResources(memory_bytes=MiB * 512, cpus=1.0, shm_bytes=64 * MiB, scratch_bytes=1024 * MiB)
    got = resolve_resources(JobResources(cpus=2), defaults, caps)
    assert (got.memory_bytes, got.cpus, got.shm_bytes) == (512 * MiB, 2, 64 * MiB)
    with pytest.raises(ResourceBeyondCap, match=r"resources.memory_bytes=.* cap memory_bytes=4294967296"):
        resolve_resources(JobResources(memory_bytes=8 * 1024 * MiB), defaults, caps)
    with pytest.raises(ResourceBeyondCap, match=r"cap cpus=2\.0"):
        resolve_resources(JobResources(cpus=2.5), defaults, caps)


def test_references_are_normalised_and_matched_on_component_boundaries() -> None:
    assert normalise_reference("busybox") == "docker.io/library/busybox:latest"
    assert normalise_reference("ghcr.io/acme/x") == "ghcr.io/acme/x:latest"
    assert normalise_reference("localhost/a/b:1") == "localhost/a/b:1"
    assert normalise_reference("reg:5000/a@sha256:ab") == "reg:5000/a@sha256:ab"
    allowed = ("ghcr.io/acme/", "docker.io/library/busybox", "sha256:" + "1" * 64)
    assert allowed_by_name("ghcr.io/acme/train:3", allowed)
    assert allowed_by_name("busybox:1.36", allowed)
    assert not allowed_by_name("docker.io/library/busyboxevil", allowed)
    assert not allowed_by_name("ghcr.io/acmeevil/x", allowed)
    assert not allowed_by_name("evil.io/x", allowed)
    assert allowed_by_name("evil.io/x@sha256:" + "1" * 64, allowed)
    assert allowed_by_name("anything", None)
    assert allowed_by_digest({"Id": "sha256:" + "1" * 64}, allowed)
    assert allowed_by_digest({"Id": "x", "RepoDigests": ["r/x@sha256:" + "1" * 64]}, allowed)
    assert not allowed_by_digest({"Id": "sha256:" + "2" * 64}, allowed)


def test_utf8_cutting() -> None:
    assert utf8_incomplete_suffix(b"ab" + BLOCK[:2]) == 2
    assert utf8_incomplete_suffix(b"ab" + BLOCK) == 0
    assert utf8_incomplete_suffix(b"\xff\xfe") == 0  # not UTF-8: nothing to wait for
    data = BLOCK * 10
    for cap in range(1, 12):
        tail = utf8_tail(data, cap)
        assert cap - 2 <= len(tail) <= cap and tail.decode() == "█" * (len(tail) // 3)


async def test_output_chunks_are_cut_on_utf8_boundaries_and_bounded() -> None:
    chunks: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        chunks.append(chunk)

    sink = OutputSink(1000, collect, 5.0)
    data = BLOCK * 50_000
    for i in range(0, len(data), 7):  # reads that split characters everywhere
        await sink.feed(data[i : i + 7])
    await sink.close()
    assert b"".join(chunks) == data and sink.total == len(data)
    assert all(len(c) <= 64 * 1024 and c.decode() for c in chunks)
    tail = sink.finish_tail()
    assert 998 <= len(tail) <= 1000 and tail.decode() == "█" * (len(tail) // 3)


def _settings(**kwargs: object) -> ContainerSettings:
    return ContainerSettings(node_id="n1", **kwargs)  # type: ignore[arg-type]


def _runtime(engine: str) -> RuntimeInfo:
    return RuntimeInfo(engine, "1", "1.41", ("runc",), "runc", "v2 (systemd)", True, ("/etc/cdi",),
                       ("/etc/cdi/nvidia.yaml",))


@pytest.mark.parametrize(
    ("engine", "mode", "expected"),
    [
        ("podman", "cdi", {"Devices": [{"PathOnHost": "nvidia.com/gpu=GPU-aaaa", "PathInContainer": "",
                                        "CgroupPermissions": ""},
                                       {"PathOnHost": "nvidia.com/gpu=GPU-bbbb", "PathInContainer": "",
                                        "CgroupPermissions": ""}]}),
        ("docker", "cdi", {"DeviceRequests": [{"Driver": "cdi",
                                               "DeviceIDs": ["nvidia.com/gpu=GPU-aaaa", "nvidia.com/gpu=GPU-bbbb"]}]}),
        ("docker", "nvidia", {"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["GPU-aaaa", "GPU-bbbb"],
                                                  "Capabilities": [["gpu"]]}]}),
    ],
)
def test_only_the_leased_gpus_are_requested(engine: str, mode: str, expected: dict[str, object]) -> None:
    ex = ContainerExecutor(None, _settings(gpu_mode=mode), _runtime(engine))  # type: ignore[arg-type]
    res = resolve_resources(JobResources(), ex.settings.defaults, ex.settings.caps)
    config = ex.container_config(LeaseId(7), ExecJob(["nvidia-smi", "-L"]), "img", res, REAL_GPUS)
    host = config["HostConfig"]
    for key, value in expected.items():
        assert host[key] == value
    assert "NVIDIA_VISIBLE_DEVICES=GPU-aaaa,GPU-bbbb" in config["Env"]
    assert not any(e.startswith(SIMULATED_GPUS_ENV) for e in config["Env"])
    sim = ex.container_config(LeaseId(7), ExecJob(["true"]), "img", res, SIM_GPUS)
    assert f"{SIMULATED_GPUS_ENV}=SIM-0-H100" in sim["Env"] and "NVIDIA_VISIBLE_DEVICES=void" in sim["Env"]
    assert "Devices" not in sim["HostConfig"] and "DeviceRequests" not in sim["HostConfig"]


def test_isolation_defaults_in_the_container_config() -> None:
    ex = ContainerExecutor(None, _settings(), _runtime("docker"))  # type: ignore[arg-type]
    res = resolve_resources(JobResources(memory_bytes=256 * MiB, cpus=0.5, scratch_bytes=32 * MiB),
                            ex.settings.defaults, ex.settings.caps)
    config = ex.container_config(LeaseId(7), ExecJob(["true"]), "img", res, ())
    host = config["HostConfig"]
    assert config["User"] == "65534:65534"
    assert config["Labels"] == {LABEL_NODE: "n1", LABEL_LEASE: "7"}
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["NetworkMode"] == "none" and host["Binds"] == [] and host["Mounts"] == []
    assert host["Memory"] == host["MemorySwap"] == 256 * MiB and host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 1024
    assert host["Tmpfs"] == {"/tmp": f"rw,exec,nosuid,nodev,size={32 * MiB},mode=1777"}


async def test_no_runtime_on_the_socket_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerRuntimeUnavailable, match="no Docker Engine API answers"):
        await ContainerExecutor.connect(tmp_path / "none.sock", _settings())


# --- against the runtime ------------------------------------------------------------------------------------

NODE_ID = "itest-" + secrets.token_hex(3)
SMALL = JobResources(memory_bytes=64 * MiB, cpus=1.0, shm_bytes=16 * MiB, scratch_bytes=8 * MiB)


@pytest_asyncio.fixture
async def executor(podman_service: PodmanService) -> AsyncIterator[ContainerExecutor]:  # noqa: F811
    settings = ContainerSettings(
        node_id=NODE_ID,
        allowed_images=("localhost/gpunet-test/", "localhost:1/"),
        default_image=podman_service.image,
        pids_limit=64,
        defaults=SMALL,
        pull_timeout_s=30,
        stop_grace_s=1,
    )
    ex = await ContainerExecutor.connect(podman_service.socket_path, settings)
    try:
        yield ex
        assert await ex.job_containers() == [], "a job's container outlived it"
    finally:
        await ex.cleanup_orphans()
        await ex.close()


def job(script: str, **kwargs: object) -> ExecJob:
    return ExecJob(["sh", "-c", script], **kwargs)  # type: ignore[arg-type]


async def run(ex: ContainerExecutor, j: ExecJob, devices: tuple[GpuDevice, ...] = ()):  # type: ignore[no-untyped-def]
    handle = await ex.start(LeaseId(7), j, devices)
    return await handle.wait()


async def test_runtime_check_reports_what_it_found(executor: ContainerExecutor) -> None:
    rt = executor.runtime
    assert rt.engine == "podman" and rt.version and rt.default_runtime == "runc"
    text = rt.describe()
    assert text.startswith("Podman ") and "NVIDIA:" in text
    if not rt.cdi_nvidia_specs:
        assert "nvidia-ctk cdi generate" in (rt.gpu_missing("cdi") or "")


async def test_job_runs_confined_and_reports_its_output_and_digest(executor: ContainerExecutor) -> None:
    await check_confined(executor)


async def test_containers_made_through_podmans_own_api_are_confined_the_same(executor: ContainerExecutor) -> None:
    # The path taken for GPUs on Podman (its Docker-compatible API cannot take CDI devices).
    libpod = ContainerExecutor(executor.docker, dataclasses.replace(executor.settings, podman_libpod_create=True),
                               executor.runtime)
    await check_confined(libpod)


async def test_leased_gpus_are_requested_as_cdi_devices_on_podman(executor: ContainerExecutor) -> None:
    missing = await run(executor, job("true"), REAL_GPUS)
    assert missing.failure == FAILED_START and "nvidia-ctk cdi generate" in (missing.error or "")
    # As if a CDI spec were there: the runtime is asked for exactly the leased devices and, having no spec for
    # them on this machine, refuses (it does not start the container without them).
    faked = ContainerExecutor(executor.docker, executor.settings,
                              dataclasses.replace(executor.runtime, cdi_nvidia_specs=("/etc/cdi/nvidia.yaml",)))
    outcome = await run(faked, job("true"), REAL_GPUS[:1])
    assert outcome.failure == FAILED_START and "nvidia.com/gpu=GPU-aaaa" in (outcome.error or ""), outcome
    assert "GPU-bbbb" not in (outcome.error or "")


async def check_confined(executor: ContainerExecutor) -> None:
    script = (
        "id -u; id -g; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; "
        "touch /bin/x 2>&1 || echo rootfs-ro; echo ok > /tmp/f && cat /tmp/f; "
        "ls /sys/class/net; echo $HOME $GPUNET_SIMULATED_GPUS; exit 3"
    )
    outcome = await run(executor, job(script, timeout_s=60), SIM_GPUS)
    text = outcome.log_tail.decode()
    assert outcome.exit_code == 3 and outcome.killed_reason is None and outcome.failure is None, text
    lines = text.split("\n")
    assert lines[:2] == ["65534", "65534"]
    assert "CapEff:\t0000000000000000" in text and "CapPrm:\t0000000000000000" in text
    assert "NoNewPrivs:\t1" in text
    assert "Read-only file system" in text and "rootfs-ro" in text
    assert "\nok\n" in text
    assert "\nlo\n" in text and "eth0" not in text  # no network but its own loopback
    assert "/tmp SIM-0-H100" in text
    assert outcome.image_digest and "sha256:" in outcome.image_digest


async def test_hostile_job_cannot_read_the_nodes_files_or_environment(executor: ContainerExecutor,
                                                                     tmp_path: Path) -> None:
    secret = "s3cret-" + secrets.token_hex(8)
    data_dir = tmp_path / "node-data"
    data_dir.mkdir()
    for name in ("keystore.json", "api-token", "node.key", "node.sqlite"):
        (data_dir / name).write_text(secret)
    os.environ["GPUNET_TEST_PASSWORD"] = secret  # stands in for a keystore password in the node's environment
    try:
        script = (
            f"cat {data_dir}/api-token {data_dir}/node.key {data_dir}/keystore.json {data_dir}/node.sqlite; "
            f"cat /proc/{os.getpid()}/environ; cat /proc/1/environ; cat /proc/*/environ; "
            "ls -d /proc/[0-9]*; echo end"
        )
        outcome = await run(executor, job(script, timeout_s=60))
    finally:
        del os.environ["GPUNET_TEST_PASSWORD"]
    text = outcome.log_tail.decode(errors="replace")
    assert secret not in text
    assert f"can't open '{data_dir}/api-token': No such file or directory" in text
    assert f"can't open '/proc/{os.getpid()}/environ': No such file or directory" in text or os.getpid() < 10
    assert "end" in text


async def test_hostile_job_cannot_reach_services_on_the_hosts_loopback(executor: ContainerExecutor) -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.write(b"API-BANNER\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await run(executor, job(f"echo hi | nc -w 2 127.0.0.1 {port}; echo rc=$?", timeout_s=30))
    finally:
        server.close()
        await server.wait_closed()
    text = outcome.log_tail.decode()
    assert connections == 0 and "API-BANNER" not in text and "rc=1" in text, text


async def test_job_beyond_its_memory_is_reported_as_oom(executor: ContainerExecutor) -> None:
    outcome = await run(executor, job("x=$(yes | head -c 200000000); echo survived", timeout_s=60))
    assert outcome.killed_reason == KILLED_OOM, outcome
    assert b"survived" not in outcome.log_tail and not outcome.succeeded


async def test_fork_bomb_is_held_by_the_pids_limit(executor: ContainerExecutor) -> None:
    # 200 background sleepers from a subshell (busybox sh exits when a fork fails): forks beyond the limit fail.
    # Then the processes are counted and the error read with builtins only (no fork left to make).
    counted = await run(executor, job("(for i in $(seq 200); do sleep 30 & done) 2>/tmp/err; "
                                      "set -- /proc/[0-9]*; echo procs=$#; read -r e </tmp/err; echo \"$e\"",
                                      timeout_s=5))
    text = counted.log_tail.decode()
    assert "procs=" in text, counted
    procs = int(text.split("procs=")[1].split()[0])
    assert 32 <= procs <= 64, text  # pids_limit=64, the shell itself included
    assert "can't fork" in text or "Resource temporarily unavailable" in text, text
    # A real fork bomb: held by the limit, ended at its timeout, nothing left.
    bomb = await run(executor, job("b() { b | b & }; b; sleep 100", timeout_s=3))
    assert bomb.killed_reason in (KILLED_TIMEOUT, None), bomb
    assert bomb.duration_s < 3 + 1 + 15


async def test_other_jobs_run_on_while_hostile_ones_do_their_worst(executor: ContainerExecutor) -> None:
    hostile = [
        await executor.start(LeaseId(20), job("b() { b | b & }; b; sleep 100", timeout_s=4), []),
        await executor.start(LeaseId(21), job("x=$(yes | head -c 200000000)", timeout_s=30), []),
        await executor.start(LeaseId(22), job("yes", timeout_s=4, max_output_bytes=1024), []),
    ]
    ordinary = await run(executor, job("i=0; while [ $i -lt 3 ]; do echo step $i; i=$((i+1)); done", timeout_s=60))
    assert ordinary.exit_code == 0 and ordinary.log_tail == b"step 0\nstep 1\nstep 2\n"
    outcomes = [await h.wait() for h in hostile]
    # The bomb's own shell may die of a failed fork before its timeout; either way it is over.
    assert outcomes[0].killed_reason in (KILLED_TIMEOUT, None), outcomes[0]
    assert [o.killed_reason for o in outcomes[1:]] == [KILLED_OOM, KILLED_TIMEOUT], outcomes


async def test_filling_the_scratch_stops_at_its_bound(executor: ContainerExecutor) -> None:
    script = "dd if=/dev/zero of=/tmp/fill bs=1M count=64; du -k /tmp/fill; df -k /tmp"
    outcome = await run(executor, job(script, timeout_s=60))
    text = outcome.log_tail.decode()
    assert "No space left on device" in text, text
    used_kib = int(next(line for line in text.splitlines() if line.endswith("/tmp/fill")).split()[0])
    assert used_kib <= 8 * 1024


async def test_background_processes_do_not_outlive_the_job(executor: ContainerExecutor) -> None:
    marker = 4000 + secrets.randbelow(1000)  # a sleep length no other process uses
    outcome = await run(executor, job(f"sleep {marker} & (sleep {marker + 1} &) ; echo left", timeout_s=30))
    assert outcome.exit_code == 0
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"sleep {marker}" not in ps and f"sleep {marker + 1}" not in ps


async def test_stop_at_lease_end_ends_the_job_and_its_children(executor: ContainerExecutor) -> None:
    marker = 5000 + secrets.randbelow(1000)
    handle = await executor.start(LeaseId(8), job(f"sleep {marker} & sleep {marker}", timeout_s=120), [])
    await asyncio.wait_for(handle.started.wait(), 30)
    outcome = await handle.stop()
    assert outcome.killed_reason == KILLED_STOPPED
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"sleep {marker}" not in ps


async def test_20_mib_of_output_keeps_an_exact_tail_and_streams_bounded(executor: ContainerExecutor) -> None:
    received = 0
    biggest = 0

    async def on_output(chunk: bytes) -> None:
        nonlocal received, biggest
        received += len(chunk)
        biggest = max(biggest, len(chunk))

    total = 20 * MiB
    handle = await executor.start(
        LeaseId(9), job(f"yes 0123456789abcdef | head -c {total}; printf END", timeout_s=120,
                        max_output_bytes=4096), [], on_output=on_output
    )
    outcome = await handle.wait()
    assert outcome.exit_code == 0 and outcome.output_bytes == total + 3 == received
    assert biggest <= 64 * 1024
    expected = (b"0123456789abcdef\n" * (total // 17 + 1))[:total] + b"END"
    assert outcome.log_tail == expected[-4096:]


async def test_invalid_utf8_and_block_characters_arrive_intact(executor: ContainerExecutor) -> None:
    outcome = await run(executor, job(r"printf 'a\377\376b\300'; echo", timeout_s=30))
    assert outcome.log_tail == b"a\xff\xfeb\xc0\n"
    chunks: list[bytes] = []

    async def on_output(chunk: bytes) -> None:
        chunks.append(chunk)

    bar = r"i=0; while [ $i -lt 3000 ]; do printf '\342\226\210\342\226\210\342\226\210'; i=$((i+1)); done"
    handle = await executor.start(LeaseId(10), job(bar, timeout_s=60, max_output_bytes=1000), [], on_output=on_output)
    outcome = await handle.wait()
    assert outcome.output_bytes == 3000 * 9 and b"".join(chunks) == BLOCK * 9000
    assert all(c.decode() for c in chunks)  # every chunk decodes on its own
    assert 998 <= len(outcome.log_tail) <= 1000 and outcome.log_tail.decode() == "█" * (len(outcome.log_tail) // 3)


async def test_image_not_allowed_is_a_distinct_outcome(executor: ContainerExecutor) -> None:
    outcome = await run(executor, job("true", image="docker.io/library/alpine:3.20"))
    assert outcome.failure == FAILED_IMAGE_NOT_ALLOWED and outcome.exit_code is None
    assert "not allowed" in (outcome.error or "")


async def test_unreachable_registry_is_a_pull_failure_not_a_hang(executor: ContainerExecutor) -> None:
    outcome = await asyncio.wait_for(run(executor, job("true", image="localhost:1/none/none:1")), 60)
    assert outcome.failure == FAILED_IMAGE_PULL and "cannot pull image localhost:1/none/none:1" in (outcome.error or "")


async def test_missing_command_is_a_start_failure(executor: ContainerExecutor) -> None:
    outcome = await run(executor, ExecJob(["/no/such/binary"], timeout_s=30))
    assert outcome.failure == FAILED_START and outcome.exit_code == 127, outcome


async def test_sleeping_past_the_timeout_is_ended(executor: ContainerExecutor) -> None:
    outcome = await run(executor, job("trap '' TERM; echo going; sleep 100", timeout_s=1.5))
    assert outcome.killed_reason == KILLED_TIMEOUT and b"going" in outcome.log_tail
    assert outcome.duration_s < 1.5 + 1 + 5  # timeout + grace (then SIGKILL) + slack


async def test_resources_beyond_the_caps_are_refused_before_anything_runs(executor: ContainerExecutor) -> None:
    with pytest.raises(ResourceBeyondCap, match="cap memory_bytes"):
        await executor.start(LeaseId(11), job("true", resources=JobResources(memory_bytes=1 << 50)), [])


async def test_orphans_of_this_node_are_removed_and_others_kept(executor: ContainerExecutor,
                                                                podman_service: PodmanService) -> None:  # noqa: F811
    other = "other-" + secrets.token_hex(3)
    names = []
    for node in (NODE_ID, other):
        name = f"orphan-{node}"
        created = podman_service.podman(
            "run", "-d", "--name", name, "--label", f"{LABEL_NODE}={node}", "--label", f"{LABEL_LEASE}=3",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", podman_service.image, "sleep", "300")
        assert created.returncode == 0, created.stderr
        names.append(name)
    try:
        removed = await executor.cleanup_orphans()
        assert [o.lease_id for o in removed] == [3]
        assert await executor.job_containers() == []
        assert len(await executor.job_containers(other)) == 1
    finally:
        podman_service.podman("rm", "-f", "-t", "0", *names)


# A node that starts one job and is then killed (SIGKILL: nothing of it runs after, its container is untouched).
_DOOMED_NODE = """
import asyncio, sys
from node.provider.container import ContainerExecutor, ContainerSettings
from node.provider.executor import ExecJob, JobResources
from node.types import LeaseId

async def main():
    sock, node_id, image, lease, script = sys.argv[1:6]
    small = JobResources(memory_bytes=64 << 20, cpus=1.0, shm_bytes=16 << 20, scratch_bytes=8 << 20)
    ex = await ContainerExecutor.connect(sock, ContainerSettings(node_id=node_id, default_image=image,
                                                                 defaults=small, stop_grace_s=1))
    handle = await ex.start(LeaseId(int(lease)), ExecJob(["sh", "-c", script], timeout_s=60), [])
    await handle.started.wait()
    print("started", handle.container_id, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _labelled_container(podman: PodmanService, lease: int, *command: str) -> str:
    name = f"left-{NODE_ID}-{lease}"
    created = podman.podman(
        "run", "-d", "--name", name, "--label", f"{LABEL_NODE}={NODE_ID}", "--label", f"{LABEL_LEASE}={lease}",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", podman.image, *command)
    assert created.returncode == 0, created.stderr
    return name


async def test_a_job_outlives_a_killed_node_and_a_new_executor_reattaches_to_it(
        executor: ContainerExecutor, podman_service: PodmanService) -> None:  # noqa: F811
    script = "i=0; while [ $i -lt 25 ]; do echo tick-$i; i=$((i+1)); sleep 0.2; done; exit 3"
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED_NODE, str(podman_service.socket_path), NODE_ID, podman_service.image, "21",
        script, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    try:
        assert node.stdout is not None
        line = await asyncio.wait_for(node.stdout.readline(), 60)
        assert line.startswith(b"started "), line
    finally:
        node.kill()
        await node.wait()
    container_id = line.split()[1].decode()
    other = _labelled_container(podman_service, 22, "sleep", "300")  # a lease this node no longer serves
    try:
        assert await executor.reattach(LeaseId(20), job("true")) is None  # no container of that lease

        chunks: list[bytes] = []

        async def on_output(data: bytes) -> None:
            chunks.append(data)

        handle = await executor.reattach(LeaseId(21), job(script, timeout_s=60), on_output=on_output)
        assert handle is not None and handle.container_id == container_id
        await asyncio.wait_for(handle.started.wait(), 10)
        assert handle.running
        removed = await executor.cleanup_orphans()  # after the re-attach: only the other lease's container goes
        assert [o.lease_id for o in removed] == [22] and removed[0].container_id != container_id

        outcome = await asyncio.wait_for(handle.wait(), 30)
        assert outcome.exit_code == 3 and outcome.killed_reason is None and outcome.error is None
        assert outcome.failure is None and outcome.image_digest and outcome.image_digest.startswith(
            "localhost/gpunet-test/busybox@sha256:")
        assert outcome.duration_s >= 4.0  # counted from the container's own start
        lines = b"".join(chunks).decode().split()
        assert "tick-24" in lines  # output printed after the re-attach reaches the callback...
        assert "tick-0" not in lines  # ...what it printed before is not sent again
        assert lines == [f"tick-{i}" for i in range(25 - len(lines), 25)]  # in order, none lost after attaching
        assert outcome.log_tail.decode().split() == lines
    finally:
        podman_service.podman("rm", "-f", "-t", "0", other)


async def test_a_reattached_job_keeps_its_timeout_from_its_start_and_a_job_ended_meanwhile_reports_its_exit(
        executor: ContainerExecutor, podman_service: PodmanService) -> None:  # noqa: F811
    names = [_labelled_container(podman_service, 23, "sh", "-c", "echo bye; exit 5"),
             _labelled_container(podman_service, 24, "sleep", "300")]
    try:
        for _ in range(100):  # the first has exited
            state = podman_service.podman("inspect", "--format", "{{.State.Status}}", names[0]).stdout.strip()
            if state == "exited":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.2)
        ended = await executor.reattach(LeaseId(23), job("x"))
        assert ended is not None
        outcome = await asyncio.wait_for(ended.wait(), 30)
        assert outcome.exit_code == 5 and outcome.killed_reason is None and outcome.log_tail == b"bye\n"

        late = await executor.reattach(LeaseId(24), job("sleep 300", timeout_s=1))
        assert late is not None
        outcome = await asyncio.wait_for(late.wait(), 30)  # its 1 s had passed before it was re-attached
        assert outcome.killed_reason == KILLED_TIMEOUT and outcome.duration_s >= 1.0
        assert await executor.job_containers() == []  # both removed once their outcome was known
    finally:
        podman_service.podman("rm", "-f", "-t", "0", *names)


async def test_a_job_stopped_while_its_image_is_pulled_ends_without_a_container(
        executor: ContainerExecutor, podman_service: PodmanService) -> None:  # noqa: F811
    # A registry that accepts the connection and never answers: the pull hangs until stopped.
    connected, release = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow = ContainerExecutor(executor.docker, dataclasses.replace(executor.settings, allowed_images=None),
                             executor.runtime)
    try:
        handle = await slow.start(LeaseId(13), job("true", image=f"127.0.0.1:{port}/x/y:1"), [])
        await asyncio.wait_for(connected.wait(), 30)
        outcome = await asyncio.wait_for(handle.stop(), 30)
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert outcome.killed_reason == KILLED_STOPPED and outcome.exit_code is None


async def test_a_job_cancelled_by_node_shutdown_leaves_no_container(executor: ContainerExecutor) -> None:
    handle = await executor.start(LeaseId(12), job("sleep 100", timeout_s=120), [])
    await asyncio.wait_for(handle.started.wait(), 30)
    assert handle._result is not None
    handle._result.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handle._result
    assert await executor.job_containers() == []


