"""Listen addresses that survive a restart: a listen address configured with TCP port 0 gets a random port the
first time; that port is kept in the data directory (``listen-ports.json``) and asked for again at the next start,
so peers that knew the node (its consumers, with leases running) find it where it was. Delete the file to get a
new port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "listen-ports.json"


def _with_port(addr: str, port: int) -> str:
    parts = addr.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == "tcp" and parts[i + 1] == "0":
            parts[i + 1] = str(port)
            return "/".join(parts)
    return addr


def _port_of(addr: str) -> int | None:
    parts = addr.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == "tcp":
            with contextlib.suppress(ValueError):
                return int(parts[i + 1])
    return None


def _host_of(addr: str) -> str:
    parts = addr.split("/")
    return "/".join(parts[:3])  # /ip4/127.0.0.1


def _load(data_dir: Path) -> dict[str, int]:
    try:
        raw = json.loads((data_dir / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int) and 0 < v < 65536} if isinstance(
        raw, dict) else {}


def stable_listen_addrs(configured: tuple[str, ...], data_dir: Path) -> tuple[str, ...]:
    """``configured`` with each TCP port 0 replaced by the port kept from an earlier run (if any)."""
    kept = _load(data_dir)
    return tuple(_with_port(a, kept[a]) if a in kept else a for a in configured)


def remember_listen_addrs(configured: tuple[str, ...], actual: tuple[str, ...], data_dir: Path) -> None:
    """Keep the ports the host got for the configured port-0 addresses (matched by host part)."""
    kept = _load(data_dir)
    changed = False
    for addr in configured:
        if _port_of(addr) != 0:
            continue
        ports = [p for got in actual if (p := _port_of(got))]
        same_host = [p for got in actual if _host_of(got) == _host_of(addr) and (p := _port_of(got))]
        candidates = same_host or ports
        port = candidates[0] if candidates else 0
        if port and kept.get(addr) != port:
            kept[addr] = port
            changed = True
    if not changed:
        return
    tmp = data_dir / (FILE + ".tmp")
    tmp.write_text(json.dumps(kept, sort_keys=True))
    os.replace(tmp, data_dir / FILE)
    log.info("listen ports kept for restarts", extra={"ports": kept})
