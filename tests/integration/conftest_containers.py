"""A private Podman service for the container executor's tests.

``podman_service`` starts ``podman system service --time=0`` on a socket in a fresh temporary directory, with its
own storage (``--root``/``--runroot`` there, so nothing of the machine's containers is touched), ``runc`` and
the ``cgroupfs`` cgroup manager (what works as root on CI machines; crun refuses their cgroup setup), imports a
busybox image built from ``/bin/busybox`` (Debian ``busybox-static``: gives ``sh``, ``dd``, ``nc``, ...) and
stops the service and removes its storage at the end.

Where podman, runc or busybox cannot be had the tests skip with the reason; on CI (``CI`` set) they fail
instead: ``scripts/setup`` installs them there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.demo_runtime import busybox_rootfs_tar, is_static_elf

TEST_IMAGE = "localhost/gpunet-test/busybox:latest"
_APPLETS = ("sh", "cat", "echo", "sleep", "dd", "head", "yes", "printf", "nc", "ls", "id", "grep", "wc", "df",
            "touch", "seq", "tr", "du", "true", "mount")


@dataclass(frozen=True)
class PodmanService:
    socket_path: Path
    root: Path
    image: str
    base_cmd: tuple[str, ...]

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base_cmd, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"container runtime needed on CI: {reason} (scripts/setup installs podman runc busybox-static)")
    pytest.skip(f"no container runtime: {reason}")


def build_image_tar(dest: Path, busybox: str) -> Path:
    """A tarball of a root filesystem with busybox as /bin/busybox and its applets as symlinks."""
    return busybox_rootfs_tar(dest / "busybox-rootfs.tar", busybox, _APPLETS)


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"podman system service exited with {proc.returncode}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise RuntimeError(f"podman system service did not listen on {path} within {deadline_s} s")


def podman_command(base: Path) -> tuple[str, ...]:
    """``podman`` with private storage under ``base``, runc and cgroupfs."""
    return (
        "podman", "--root", str(base / "root"), "--runroot", str(base / "run"), "--tmpdir", str(base / "tmp"),
        "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
    )


def podman_unavailable_reason() -> str | None:
    """Why a private Podman service cannot be had here, or ``None``."""
    missing = [tool for tool in ("podman", "runc", "busybox") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install podman runc busybox-static)"
    busybox = shutil.which("busybox")
    assert busybox is not None
    if not is_static_elf(busybox):
        return f"{busybox} is not statically linked (install busybox-static)"
    if os.geteuid() != 0:
        return "podman runs here as root (with runc and cgroupfs); not root"
    return None


@contextlib.contextmanager
def private_podman() -> Iterator[PodmanService]:
    """A Podman service on a private socket and storage, with the busybox test image; stopped and removed after.

    Raises ``RuntimeError`` (with the service's log) when it does not come up.
    """
    busybox = shutil.which("busybox")
    assert busybox is not None
    base = Path(tempfile.mkdtemp(prefix="gpunet-podman-"))  # short: unix socket paths are limited to 108 bytes
    cmd = podman_command(base)
    sock = base / "podman.sock"
    log_file = open(base / "service.log", "wb")  # noqa: SIM115 - closed below
    # cwd: conmon (Podman 4) drops an "oom" marker file in its working directory when a container hits OOM.
    proc = subprocess.Popen([*cmd, "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=log_file, stderr=subprocess.STDOUT, cwd=base)
    try:
        try:
            wait_for_socket(sock, proc, 30)
        except RuntimeError as exc:
            log_file.flush()
            raise RuntimeError(f"{exc}: {(base / 'service.log').read_text(errors='replace')[-2000:]}") from exc
        service = PodmanService(sock, base, TEST_IMAGE, cmd)
        imported = service.podman("import", build_image_tar(base, busybox).as_posix(), TEST_IMAGE, timeout=120)
        if imported.returncode != 0:
            raise RuntimeError(f"podman import failed: {imported.stderr.strip()[-2000:]}")
        yield service
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log_file.close()
        subprocess.run([*cmd, "rm", "--all", "--force"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def podman_service() -> Iterator[PodmanService]:
    reason = podman_unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    try:
        with private_podman() as service:
            yield service
    except RuntimeError as exc:
        _unavailable(str(exc))
