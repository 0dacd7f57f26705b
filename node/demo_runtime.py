"""Where the demo and the benchmarks run their jobs: in a container when a runtime can be had here, else as a host
process (with the process executor's unsafe opt-in, which only a local demo may use).

A runtime is either a Docker Engine API socket that already answers (``GPUNET_CONTAINER_SOCKET``, Podman's or
Docker's usual sockets) together with a local image named by ``GPUNET_DEMO_IMAGE``, or a private
``podman system service`` started here (root, ``podman``, ``runc`` and a static ``busybox``: no registry is
needed, the image is a busybox root filesystem imported from a tarball). The private service, its storage and its
containers are removed by :meth:`DemoRuntime.stop`.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE = "localhost/gpunet-demo/busybox:latest"
_APPLETS = ("sh", "cat", "echo", "sleep", "seq", "printf", "nc", "httpd", "ls", "id", "head", "dd", "true")


@dataclass
class DemoRuntime:
    executor: str  # container | process
    description: str
    socket: str = ""
    image: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _base: Path | None = None
    _cmd: tuple[str, ...] = field(default=())

    def provider_toml(self) -> list[str]:
        """The ``[provider]`` lines that select this executor."""
        if self.executor == "container":
            return ['executor = "container"', f'container_socket = "{self.socket}"',
                    f'allowed_images = ["{self.image.rsplit(":", 1)[0]}"]']
        return ['executor = "process"', "allow_unsafe_process_executor = true"]

    def job(self, script: str, argv: list[str], timeout_s: int = 120) -> dict[str, Any]:
        """The job: ``script`` under ``sh -c`` in the image, or ``argv`` as a host process."""
        if self.executor == "container":
            return {"version": 2, "image": self.image, "command": ["sh", "-c", script], "timeout_s": timeout_s}
        return {"argv": argv, "timeout_s": timeout_s}

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            subprocess.run([*self._cmd, "rm", "--all", "--force"], capture_output=True, timeout=60, check=False)
            self._proc = None
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None


def _answers(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def busybox_rootfs_tar(tar_path: Path, busybox: str, applets: tuple[str, ...],
                       files: dict[str, str] | None = None) -> Path:
    """A tarball of a root filesystem: ``busybox`` as /bin/busybox with ``applets`` as symlinks to it, /etc/passwd
    and /etc/group with root and nobody, a world-writable /tmp, and ``files`` (path: text) beside them."""
    files = {"etc/passwd": "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/tmp:/bin/sh\n",
             "etc/group": "root:x:0:\nnogroup:x:65534:\n", **(files or {})}
    dirs = dict.fromkeys(["bin", "etc", "tmp", *(name.split("/")[0] for name in files if "/" in name)])
    with tarfile.open(tar_path, "w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return tar_path


def _why_no_private_podman() -> str | None:
    missing = [t for t in ("podman", "runc", "busybox") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    if os.geteuid() != 0:
        return "a private Podman service needs root here"
    if not is_static_elf(shutil.which("busybox") or ""):
        return "busybox is not statically linked (install busybox-static)"
    return None


def is_static_elf(path: str) -> bool:
    """A 64-bit ELF without a program interpreter (PT_INTERP): runs in an image with no libc."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def start_runtime(prefer: str = "auto") -> DemoRuntime:
    """A container runtime when one can be had (``prefer``: auto | container | process)."""
    if prefer == "process":
        return DemoRuntime("process", "process executor (asked for)")
    configured = os.environ.get("GPUNET_CONTAINER_SOCKET", "")
    image = os.environ.get("GPUNET_DEMO_IMAGE", "")
    if configured and image and _answers(configured):
        return DemoRuntime("container", f"container executor on unix://{configured}, image {image}",
                           configured, image)
    why = _why_no_private_podman()
    if why is None:
        base = Path(tempfile.mkdtemp(prefix="gpunet-rt-"))  # short: unix socket paths are limited to 108 bytes
        cmd = ("podman", "--root", str(base / "root"), "--runroot", str(base / "run"), "--tmpdir", str(base / "tmp"),
               "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file")
        sock = base / "podman.sock"
        log = open(base / "service.log", "wb")  # noqa: SIM115 - lives as long as the service
        proc = subprocess.Popen([*cmd, "system", "service", "--time=0", f"unix://{sock}"], stdout=log,
                                stderr=subprocess.STDOUT, cwd=base, start_new_session=True)
        rt = DemoRuntime("container", "", str(sock), IMAGE, proc, base, cmd)
        deadline = time.monotonic() + 30
        while not _answers(str(sock)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        rootfs = busybox_rootfs_tar(base / "rootfs.tar", shutil.which("busybox") or "", _APPLETS,
                                    {"www/index.html": "hello from a leased container\n"})
        imported = subprocess.run([*cmd, "import", str(rootfs), IMAGE], capture_output=True, text=True, timeout=120,
                                  check=False)
        if _answers(str(sock)) and imported.returncode == 0:
            version = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=False).stdout.strip()
            rt.description = f"container executor: {version} (private service on unix://{sock}), image {IMAGE}"
            return rt
        why = f"the private Podman service did not come up: {imported.stderr.strip()[-300:]}"
        rt.stop()
    if prefer == "container":
        raise RuntimeError(f"no container runtime: {why}")
    return DemoRuntime("process", f"process executor, unsafe opt-in for this local demo (no container runtime: "
                                  f"{why})")
