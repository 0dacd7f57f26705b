"""Layers import downward only: the pure protocol and crypto modules never reach up into I/O or assembly code.

Imports are read from the source (``ast``), so a lazy import inside a function or under ``TYPE_CHECKING`` counts
too, and nothing is executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

UPPER = (
    "node.chain",
    "node.p2p",
    "node.storage",
    "node.api",
    "node.service",
    "node.assembly",
    "node.leases",
    "node.market",
    "node.provider",
    "node.cli",
    "node.demo",
)
# package -> packages it must not import
RULES: dict[str, tuple[str, ...]] = {
    "node.protocol": UPPER,
    "node.crypto": (*UPPER, "node.protocol"),
    "node.types": (*UPPER, "node.protocol", "node.crypto"),
    "node.errors": (*UPPER, "node.protocol", "node.crypto"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                own = module_name(path)
                package = own if path.name == "__init__.py" else own.rpartition(".")[0]
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                module = f"{prefix}.{node.module}" if node.module else prefix
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)  # `from node import chain`
    return out


def sources(package: str) -> list[Path]:
    rel = Path(*package.split("."))
    single = ROOT / rel.with_suffix(".py")
    if single.exists():
        return [single]
    return sorted((ROOT / rel).rglob("*.py"))


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sources(package):
        for mod in sorted(imported_modules(path)):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)} imports {mod}")
    return out


@pytest.mark.parametrize("package", sorted(RULES))
def test_layer_imports_downward_only(package: str) -> None:
    assert sources(package), f"no sources found for {package}"
    assert violations(package, RULES[package]) == []


def test_the_check_sees_upward_imports(tmp_path: Path) -> None:
    """The parser catches plain, from-, relative and lazy imports (so the rule above can fail)."""
    src = tmp_path / "mod.py"
    src.write_text(
        "import node.chain.client\n"
        "from node import market\n"
        "def f():\n"
        "    from node.p2p.host import P2PHost\n"
    )
    found = imported_modules(src)
    assert {"node.chain.client", "node.market", "node.p2p.host"} <= found
    assert "node.crypto.eip712" in imported_modules(ROOT / "node" / "protocol" / "offers.py")
    assert "node.p2p.sync" in imported_modules(ROOT / "node" / "p2p" / "offer_sync.py")  # `from . import sync`
