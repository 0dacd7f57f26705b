"""Executors. ProcessExecutor tests run real processes: no mocks of the OS."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from node.provider.executor import (
    EXIT_NOT_FOUND,
    KILLED_STOPPED,
    KILLED_TIMEOUT,
    ExecJob,
    InvalidJob,
    JobOutcome,
    ProcessExecutor,
    ResourceLimits,
    SimulatedExecutor,
    job_environment,
)
from node.provider.gpus import GpuDevice, declared_gpus
from node.types import LeaseId

PY = sys.executable
LEASE = LeaseId(42)
SIM_GPUS = declared_gpus("2xH100-80GB:81920")
REAL_GPUS = [
    GpuDevice(0, "GPU-11111111-2222-3333-4444-555555555555", "NVIDIA H100", 81559, False),
    GpuDevice(3, "GPU-66666666-7777-8888-9999-000000000000", "NVIDIA H100", 81559, False),
]


def make_executor(base: Path, **kwargs: object) -> ProcessExecutor:
    kwargs.setdefault("term_grace_s", 0.5)
    kwargs.setdefault("kill_wait_s", 2.0)
    kwargs.setdefault("drain_s", 0.5)
    return ProcessExecutor(base, **kwargs)  # type: ignore[arg-type]


def python_job(code: str, **kwargs: object) -> ExecJob:
    kwargs.setdefault("timeout_s", 10.0)
    return ExecJob(argv=[PY, "-c", code], **kwargs)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def wait_until_dead(pid: int, deadline_s: float = 5.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_runs_command_and_returns_exit_code_and_output(tmp_path: Path) -> None:
    handle = await make_executor(tmp_path).start(LEASE, python_job("import sys; print('hello'); sys.exit(3)"), [])
    outcome = await handle.wait()
    assert outcome.exit_code == 3
    assert outcome.log_tail == b"hello\n"
    assert (outcome.killed_reason, outcome.error, outcome.simulated) == (None, None, False)
    assert outcome.output_bytes == 6
    assert not handle.running
    assert 0 < outcome.duration_s < 10


async def test_stdout_and_stderr_are_merged_and_streamed(tmp_path: Path) -> None:
    chunks: list[bytes] = []

    async def on_output(chunk: bytes) -> None:
        chunks.append(chunk)

    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True)"
    handle = await make_executor(tmp_path).start(LEASE, python_job(code), [], on_output=on_output)
    outcome = await handle.wait()
    assert outcome.log_tail == b"out\nerr\n"
    assert b"".join(chunks) == outcome.log_tail


async def test_broken_output_callback_does_not_break_the_job(tmp_path: Path) -> None:
    async def on_output(chunk: bytes) -> None:
        raise RuntimeError("listener gone")

    handle = await make_executor(tmp_path).start(LEASE, python_job("print('x')"), [], on_output=on_output)
    outcome = await handle.wait()
    assert (outcome.exit_code, outcome.log_tail) == (0, b"x\n")


async def test_environment_is_scrubbed_and_gpus_are_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNET_SECRET", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    code = "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    job = python_job(code, env={"MY_VAR": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    handle = await make_executor(tmp_path).start(LEASE, job, SIM_GPUS)
    outcome = await handle.wait()
    assert outcome.exit_code == 0, outcome.log_tail
    seen = json.loads(outcome.log_tail)
    env = seen["env"]
    assert "GPUNET_SECRET" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["MY_VAR"] == "1"
    assert env["HOME"] == str(handle.workdir)
    assert env["TMPDIR"] == str(handle.workdir / "tmp")
    assert set(env) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "MY_VAR",
        "PYTHONDONTWRITEBYTECODE",
        "LC_CTYPE",  # LC_CTYPE: Python's own locale coercion may add it
    }
    # the working directory is a fresh per-lease directory under the base dir
    assert Path(seen["cwd"]) == handle.workdir
    assert handle.workdir.parent == tmp_path
    assert handle.workdir.name.startswith("lease-42-")
    assert handle.workdir.stat().st_mode & 0o777 == 0o700


async def test_each_job_gets_a_fresh_workdir(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    job = python_job("open('out.txt', 'x').write('1')")
    first = await executor.start(LEASE, job, [])
    second = await executor.start(LEASE, job, [])
    assert [(await first.wait()).exit_code, (await second.wait()).exit_code] == [0, 0]
    assert first.workdir != second.workdir


def test_real_gpus_are_selected_by_uuid(tmp_path: Path) -> None:
    env = job_environment(ExecJob(argv=["true"]), REAL_GPUS, tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == ",".join(d.uuid for d in REAL_GPUS)
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert job_environment(ExecJob(argv=["true"]), [], tmp_path)["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize(
    "key", ["LD_PRELOAD", "LD_AUDIT", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "PATH", "HOME", "GPUNET_X"]
)
async def test_forbidden_env_entries_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidJob, match=key):
        await make_executor(tmp_path).start(LEASE, ExecJob(argv=["true"], env={key: "v"}), [])
    assert list(tmp_path.iterdir()) == []  # refused before creating anything


def test_ld_library_path_is_allowed(tmp_path: Path) -> None:
    env = job_environment(ExecJob(argv=["true"], env={"LD_LIBRARY_PATH": "/opt/lib"}), [], tmp_path)
    assert env["LD_LIBRARY_PATH"] == "/opt/lib"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"argv": []},
        {"argv": "echo hi"},
        {"argv": [""]},
        {"argv": ["a\0b"]},
        {"argv": ["true"], "env": {"A=B": "x"}},
        {"argv": ["true"], "env": {"A": "x\0"}},
        {"argv": ["true"], "timeout_s": 0},
        {"argv": ["true"], "timeout_s": float("inf")},
        {"argv": ["true"], "timeout_s": True},
        {"argv": ["true"], "max_output_bytes": 0},
    ],
)
def test_malformed_jobs_are_refused(kwargs: dict) -> None:
    with pytest.raises(InvalidJob):
        ExecJob(**kwargs)


async def test_negative_lease_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidJob):
        await make_executor(tmp_path).start(LeaseId(-1), ExecJob(argv=["true"]), [])


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    job = ExecJob(argv=["sh", "-c", "sleep 100 & echo $! > child.pid; sleep 100"], timeout_s=0.5)
    started = time.monotonic()
    handle = await make_executor(tmp_path).start(LEASE, job, [])
    outcome = await handle.wait()
    assert time.monotonic() - started < 5
    assert outcome.killed_reason == KILLED_TIMEOUT
    assert outcome.exit_code is not None and outcome.exit_code < 0  # died of a signal
    assert handle.pid is not None and not alive(handle.pid)
    child = int((handle.workdir / "child.pid").read_text())
    assert await wait_until_dead(child)


async def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True); time.sleep(100)"
    )
    handle = await make_executor(tmp_path, term_grace_s=0.2).start(LEASE, python_job(code, timeout_s=0.5), [])
    outcome = await handle.wait()
    assert (outcome.killed_reason, outcome.exit_code) == (KILLED_TIMEOUT, -9)
    assert outcome.log_tail == b"ready\n"


async def test_stop_kills_a_running_job(tmp_path: Path) -> None:
    ready = asyncio.Event()

    async def on_output(chunk: bytes) -> None:
        ready.set()

    code = "import time; print('up', flush=True); time.sleep(100)"
    handle = await make_executor(tmp_path).start(LEASE, python_job(code, timeout_s=60), [], on_output=on_output)
    await asyncio.wait_for(ready.wait(), 5)
    assert handle.running
    outcome = await asyncio.wait_for(handle.stop(), 5)
    assert (outcome.killed_reason, outcome.exit_code) == (KILLED_STOPPED, -15)
    assert not handle.running
    assert await handle.stop() == outcome  # idempotent


async def test_leftover_background_processes_are_killed_when_main_exits(tmp_path: Path) -> None:
    # the background sleep keeps the output pipe open: wait() must not hang on it
    job = ExecJob(argv=["sh", "-c", "sleep 100 & echo $! > child.pid; echo done"], timeout_s=10)
    started = time.monotonic()
    handle = await make_executor(tmp_path).start(LEASE, job, [])
    outcome = await handle.wait()
    assert time.monotonic() - started < 3
    assert (outcome.exit_code, outcome.killed_reason, outcome.log_tail) == (0, None, b"done\n")
    assert await wait_until_dead(int((handle.workdir / "child.pid").read_text()))


async def test_process_that_escapes_the_session_cannot_hang_wait(tmp_path: Path) -> None:
    # a grandchild in its own session keeps the pipe open and survives; wait() gives up on the pipe after drain_s
    code = "import subprocess; subprocess.Popen(['sleep', '3'], start_new_session=True); print('bye')"
    started = time.monotonic()
    handle = await make_executor(tmp_path, drain_s=0.3).start(LEASE, python_job(code), [])
    outcome = await handle.wait()
    assert time.monotonic() - started < 2.5
    assert outcome.exit_code == 0


async def test_output_beyond_the_cap_keeps_only_the_tail(tmp_path: Path) -> None:
    code = "import sys\nfor i in range(20000): sys.stdout.write(f'{i:07d}\\n')"
    handle = await make_executor(tmp_path).start(LEASE, python_job(code, max_output_bytes=1000), [])
    outcome = await handle.wait()
    assert outcome.exit_code == 0
    assert len(outcome.log_tail) == 1000
    assert outcome.output_bytes == 20000 * 8
    assert outcome.log_tail.endswith(b"0019999\n")
    assert outcome.log_tail == b"".join(f"{i:07d}\n".encode() for i in range(20000))[-1000:]


async def test_memory_limit_is_enforced(tmp_path: Path) -> None:
    executor = make_executor(tmp_path, limits=ResourceLimits(address_space_bytes=512 * 1024**2))
    small = await executor.start(LEASE, python_job("b = bytearray(64 * 1024**2); print('ok')"), [])
    big = await executor.start(LEASE, python_job("b = bytearray(2 * 1024**3); print('ok')"), [])
    assert (await small.wait()).log_tail == b"ok\n"
    outcome = await big.wait()
    assert outcome.exit_code != 0
    assert b"MemoryError" in outcome.log_tail


async def test_file_size_and_open_file_limits_are_enforced(tmp_path: Path) -> None:
    executor = make_executor(tmp_path, limits=ResourceLimits(open_files=32, file_size_bytes=1024 * 1024))
    code = (
        "import resource\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE), flush=True)\n"
        "open('big', 'wb').write(b'x' * (2 * 1024 * 1024))\n"
    )
    outcome = await (await executor.start(LEASE, python_job(code), [])).wait()
    assert outcome.log_tail.startswith(b"(32, 32) (0, 0)\n")
    assert outcome.exit_code != 0  # SIGXFSZ is ignored by Python, so the write fails with EFBIG
    assert b"File too large" in outcome.log_tail


async def test_cpu_limit_is_enforced(tmp_path: Path) -> None:
    executor = make_executor(tmp_path, limits=ResourceLimits(cpu_seconds=1))
    outcome = await (await executor.start(LEASE, python_job("while True: pass"), [])).wait()
    assert outcome.killed_reason is None  # the kernel ended it, not the wall-clock timeout
    assert outcome.exit_code == -24  # SIGXCPU
    assert outcome.duration_s < 5


async def test_nonexistent_command_is_an_error_outcome(tmp_path: Path) -> None:
    handle = await make_executor(tmp_path).start(LEASE, ExecJob(argv=["no-such-command-gpunet"]), [])
    outcome = await handle.wait()
    assert outcome.exit_code == EXIT_NOT_FOUND
    assert outcome.error is not None and "command not found" in outcome.error
    assert "no-such-command-gpunet" in outcome.error
    assert not outcome.succeeded and not handle.running


async def test_command_is_looked_up_on_the_configured_path_only(tmp_path: Path) -> None:
    handle = await make_executor(tmp_path, path="/nonexistent").start(LEASE, ExecJob(argv=["sh", "-c", "true"]), [])
    assert (await handle.wait()).exit_code == EXIT_NOT_FOUND


async def test_cancelling_a_waiter_does_not_cancel_the_job(tmp_path: Path) -> None:
    handle = await make_executor(tmp_path).start(LEASE, python_job("import time; time.sleep(0.3); print('x')"), [])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handle.wait(), 0.05)
    assert (await handle.wait()).log_tail == b"x\n"


# --- SimulatedExecutor --------------------------------------------------------------------------------------


class FakeTime:
    """A clock that only the injected sleep advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_simulated_job_reports_after_its_duration() -> None:
    fake = FakeTime()
    executor = SimulatedExecutor(duration_s=30, exit_code=0, sleep=fake.sleep, clock=fake.clock)
    chunks: list[bytes] = []

    async def on_output(chunk: bytes) -> None:
        chunks.append(chunk)

    handle = await executor.start(LEASE, ExecJob(argv=["train.py"], timeout_s=60), SIM_GPUS, on_output=on_output)
    outcome = await handle.wait()
    assert fake.sleeps == [30]
    assert (outcome.exit_code, outcome.duration_s, outcome.simulated, outcome.killed_reason) == (0, 30, True, None)
    assert b"[simulated] lease 42" in outcome.log_tail
    assert b"".join(chunks) == outcome.log_tail
    assert not handle.running


async def test_simulated_job_times_out() -> None:
    fake = FakeTime()
    executor = SimulatedExecutor(duration_s=30, sleep=fake.sleep, clock=fake.clock)
    outcome = await (await executor.start(LEASE, ExecJob(argv=["x"], timeout_s=5), [])).wait()
    assert (outcome.killed_reason, outcome.duration_s, outcome.simulated) == (KILLED_TIMEOUT, 5, True)


async def test_simulated_job_can_be_stopped() -> None:
    release = asyncio.Event()

    async def blocked_sleep(seconds: float) -> None:
        await release.wait()

    executor = SimulatedExecutor(duration_s=30, sleep=blocked_sleep)
    handle = await executor.start(LEASE, ExecJob(argv=["x"]), [])
    await asyncio.sleep(0)
    assert handle.running
    outcome = await asyncio.wait_for(handle.stop(), 1)
    assert (outcome.killed_reason, outcome.simulated) == (KILLED_STOPPED, True)


async def test_simulated_executor_refuses_forbidden_env() -> None:
    with pytest.raises(InvalidJob):
        await SimulatedExecutor().start(LEASE, ExecJob(argv=["x"], env={"LD_PRELOAD": "/evil.so"}), [])


def test_outcome_succeeded_only_for_clean_exit() -> None:
    assert JobOutcome(0, b"", 1.0, simulated=False).succeeded
    assert not JobOutcome(1, b"", 1.0, simulated=False).succeeded
    assert not JobOutcome(0, b"", 1.0, simulated=True, killed_reason=KILLED_STOPPED).succeeded
