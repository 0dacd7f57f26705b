"""``gpunet`` command line: run a node, deploy contracts, manage keys, query and drive a running node's API.

One module per command group. Each registers its commands on the shared groups of :mod:`node.cli.app`
(``@main.command()``, ``@main.group()``, ``@lease.command()``); every module of this package is imported here, so
adding a command group is adding a module.

Bad arguments end in a one-line error and exit status 2 (click's usage errors) or 1 (a failure while running);
no traceback is shown for expected errors.
"""

from __future__ import annotations

import importlib
import pkgutil

from node.cli.app import lease, main

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in ("app",) and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["lease", "main"]
