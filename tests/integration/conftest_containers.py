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
import io
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
    tar_path = dest / "busybox-rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for d in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in _APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/tmp:/bin/sh\n"),
                           ("etc/group", "root:x:0:\nnogroup:x:65534:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return tar_path


def is_static_elf(path: str) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): runs in an image with no libc."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


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
