"""A small network of Linux network namespaces for partition tests (root only; iproute2 and nftables).

One bridge in the root namespace (address ``.1`` of a private /24, where the test's chain proxy listens), and per
host a namespace joined to the bridge by a veth pair (address ``.10 + i``). ``partition(a, b)`` drops every frame
the bridge would forward between the two groups (an nftables ``bridge`` table); traffic to the bridge address
(the chain) is untouched. ``heal()`` removes the table. Every name carries a random tag, so concurrent runs do not
collide, and ``close()`` removes all of it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field


def netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    tag = "gpp" + secrets.token_hex(3)
    probe = subprocess.run(["ip", "netns", "add", tag], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns add failed: {probe.stderr.strip()[:200]}"
    subprocess.run(["ip", "netns", "del", tag], capture_output=True)
    return None


def _run(*args: str) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()[:300]}")


@dataclass
class NetLab:
    hosts: int
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: int = field(default_factory=lambda: 100 + secrets.randbelow(150))

    def __post_init__(self) -> None:
        self.bridge = f"gp{self.tag}b"
        self.table = f"gp{self.tag}"
        self._made: list[str] = []
        self._partitioned = False

    @property
    def gateway(self) -> str:
        return f"10.78.{self.subnet}.1"

    def ip(self, host: int) -> str:
        return f"10.78.{self.subnet}.{10 + host}"

    def ns(self, host: int) -> str:
        return f"gp{self.tag}n{host}"

    def exec_prefix(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def open(self) -> NetLab:
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self._made.append("bridge")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for i in range(self.hosts):
                ns, host_end, ns_end = self.ns(i), f"gp{self.tag}h{i}", f"gp{self.tag}v{i}"
                _run("ip", "netns", "add", ns)
                self._made.append(f"ns:{ns}")
                _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
                _run("ip", "link", "set", ns_end, "netns", ns)
                _run("ip", "link", "set", host_end, "master", self.bridge)
                _run("ip", "link", "set", host_end, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", ns_end)
                _run("ip", "-n", ns, "link", "set", ns_end, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise
        return self

    def partition(self, a: list[int], b: list[int]) -> None:
        """Drop every frame between group ``a`` and group ``b`` (both directions)."""
        self.heal()
        sa = ", ".join(self.ip(i) for i in a)
        sb = ", ".join(self.ip(i) for i in b)
        _run("nft", "add", "table", "bridge", self.table)
        self._partitioned = True
        _run("nft", "add", "chain", "bridge", self.table, "cut",
             "{ type filter hook forward priority 0; policy accept; }")
        _run("nft", "add", "rule", "bridge", self.table, "cut", "ip", "saddr", f"{{ {sa} }}", "ip", "daddr",
             f"{{ {sb} }}", "drop")
        _run("nft", "add", "rule", "bridge", self.table, "cut", "ip", "saddr", f"{{ {sb} }}", "ip", "daddr",
             f"{{ {sa} }}", "drop")

    def heal(self) -> None:
        if self._partitioned:
            subprocess.run(["nft", "delete", "table", "bridge", self.table], capture_output=True)
            self._partitioned = False

    def close(self) -> None:
        self.heal()
        for item in reversed(self._made):
            if item == "bridge":
                subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            elif item.startswith("ns:"):
                subprocess.run(["ip", "netns", "del", item[3:]], capture_output=True)
        self._made.clear()
