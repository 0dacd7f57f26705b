"""``gpunet verify --out DIR``: what block explorers need to verify the deployed contracts, prepared offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from node.cli.app import fail, json_option, main, print_json, print_table


@main.command()
@click.option("--deployments", type=click.Path(dir_okay=False, path_type=Path, exists=True), required=True,
              envvar="GPUNET_DEPLOYMENTS", help="the deployments file (its .sources/ folder sits next to it)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="folder to write into (one sub-folder per contract)")
@json_option
def verify(deployments: Path, out_dir: Path, as_json: bool) -> None:
    """Write, per contract, what Sourcify (metadata.json and the sources), Etherscan-style explorers and
    Blockscout (standard-JSON input, compiler version, constructor arguments) need to verify it.

    Example: gpunet verify --deployments deployments/11155111.json --out verify/
    """
    from node.chain.artifacts import load_deployment

    d = load_deployment(deployments)
    done: list[dict[str, Any]] = []
    for name in ("DevToken", "ProviderStaking", "LeaseEscrow"):
        rec = d.records.get(name, {})
        if "standardJsonInput" not in rec or "metadata" not in rec:
            fail(f"{deployments} keeps no compiler input for {name}: it was written before they were kept; "
                 "deploy again with this version")
        std_input = json.loads((deployments.parent / rec["standardJsonInput"]).read_text())
        raw_metadata = (deployments.parent / rec["metadata"]).read_text()
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target)
        (target / "sourcify" / "sources").mkdir(parents=True)
        (target / "sourcify" / "metadata.json").write_text(raw_metadata)
        for path, src in std_input["sources"].items():
            f = target / "sourcify" / "sources" / path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(src["content"])
        (target / "standard-input.json").write_text(json.dumps(std_input, indent=1) + "\n")
        meta = json.loads(raw_metadata)
        info = {
            "chainId": d.chain_id, "address": d.address_of(name), "contract": f"{rec['sourceName']}:{name}",
            "compilerVersion": "v" + str(rec.get("compilerVersion") or meta["compiler"]["version"]),
            "optimizer": meta["settings"].get("optimizer", {}), "evmVersion": meta["settings"].get("evmVersion"),
            "constructorArgs": rec.get("constructorArgs", "0x"), "deployTx": rec.get("deployTx"),
            "blockNumber": rec.get("blockNumber"), "licenseType": "MIT",
        }
        (target / "verify.json").write_text(json.dumps(info, indent=2) + "\n")
        (target / "abi.json").write_text(json.dumps(rec.get("abi", []), indent=1) + "\n")
        done.append({"contract": name, "address": info["address"], "dir": str(target)})
    (out_dir / "README.txt").write_text(
        "Per contract:\n"
        "  sourcify/metadata.json + sourcify/sources/  -> Sourcify (upload the folder; a full match with metadata\n"
        "                                                  in the bytecode, a partial match without)\n"
        "  standard-input.json + verify.json            -> Etherscan-style and Blockscout 'Standard JSON input':\n"
        "                                                  compiler version, contract name, constructor\n"
        "                                                  arguments (ABI-encoded, without 0x) from verify.json\n"
        "  abi.json                                     -> the contract's ABI\n")
    if as_json:
        print_json(done)
    else:
        print_table(f"verification inputs written to {out_dir}", ["contract", "address", "folder"],
                    [[r["contract"], r["address"], r["dir"]] for r in done])
