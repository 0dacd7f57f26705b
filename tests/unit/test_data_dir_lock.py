"""A data directory belongs to one node at a time: the lock names its holder and is let go at stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.service import lock_data_dir


def test_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    release = lock_data_dir(tmp_path)
    with pytest.raises(ConfigError, match=rf"in use by another node \(pid {os.getpid()}\)"):
        lock_data_dir(tmp_path)
    release()
    lock_data_dir(tmp_path)()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from node.service import lock_data_dir\n"
                               f"lock_data_dir(Path({str(tmp_path)!r}))\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            lock_data_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    lock_data_dir(tmp_path)()
