"""``gpunet offers`` and ``gpunet cancel-offers``: the offer book of a running node."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from node.cli.app import (
    NodeRef,
    json_option,
    main,
    node_options,
    parse_gdev,
    per_gpu_hour,
    print_json,
    print_table,
    when,
)


@main.command()
@node_options
@click.option("--model", help="GPU model, e.g. A100")
@click.option("--min-gpus", type=click.IntRange(1), help="at least this many GPUs free")
@click.option("--min-vram", type=click.IntRange(1), help="at least this much memory per GPU (MiB)")
@click.option("--max-price", help="at most this price, gDEV per GPU-hour")
@click.option("--region")
@click.option("--duration", type=click.IntRange(1), help="offers that allow a lease of this many seconds")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="print the offer ids only, cheapest first")
@json_option
def offers(node: NodeRef, model: str | None, min_gpus: int | None, min_vram: int | None, max_price: str | None,
           region: str | None, duration: int | None, limit: int, quiet: bool, as_json: bool) -> None:
    """List offers from a running node's book, cheapest first.

    Example: gpunet offers --data-dir consumer-node --min-gpus 1 --max-price 0.5
    """
    price = None
    if max_price is not None:  # per GPU-hour in gDEV → base units per GPU-second (rounded down)
        price = max(1, parse_gdev(max_price, "--max-price") // 3600)
    q = {k: v for k, v in {"model": model, "min_gpus": min_gpus, "min_vram": min_vram, "max_price": price,
                           "region": region, "duration": duration, "limit": limit}.items() if v is not None}
    found: list[dict[str, Any]] = node.get("/v1/offers?" + urlencode(q))["offers"]
    if quiet:
        for o in found:
            click.echo(o["offer_id"])
    elif as_json:
        print_json(found)
    elif not found:
        click.echo("no offers match")
    else:
        print_table(None, ["offer", "provider", "GPUs", "model", "VRAM", "price", "duration", "region", "expires"],
                    [[o["offer_id"], o["provider"], o["gpu_count"], o["gpu_model"], f"{o['vram_mib']} MiB",
                      per_gpu_hour(o["price_per_gpu_second"]), f"{o['min_duration']}-{o['max_duration']}s",
                      o.get("region") or "-", when(o["expires_at"])] for o in found])


@main.command("cancel-offers")
@node_options
@json_option
def cancel_offers(node: NodeRef, as_json: bool) -> None:
    """Provider: withdraw all of this node's offers (gossip withdrawal and on-chain cancelOffersBelow).

    Example: gpunet cancel-offers --data-dir provider-node
    """
    out = node.post("/v1/offers/cancel", {})
    if as_json:
        print_json(out)
    else:
        click.echo(f"offers below nonce {out['nonce_below']} withdrawn (tx {out['tx']})")


__all__ = ["offers"]
