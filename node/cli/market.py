"""``gpunet market``: what the market looks like from a running node; and leases chosen by need
(``gpunet lease open --model ... --gpus ... --hours ...``, with ``--quote`` to see the cost without opening).

Prices are shown in gDEV per GPU-hour; ``--json`` prints the API's answer as it is (token base units).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import urlencode

import click

from node.cli.app import NodeRef, gdev, json_option, main, node_options, parse_gdev, print_json, print_table


def market_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """``GET /v1/market``'s answer as table columns and rows (prices in gDEV per GPU-hour)."""
    rows = []
    for m in data["markets"]:
        p = m["prices_per_gpu_hour"] or {}
        day = next((w for w in m["windows"] if w["window_s"] == 86_400), m["windows"][0] if m["windows"] else None)
        rows.append([m["gpu_model"], m["region"], str(m["gpus_offered"]), str(m["gpus_free"]), str(m["gpus_leased"]),
                     f"{m['utilisation'] * 100:.0f}%", gdev(p.get("min")), gdev(p.get("median")), gdev(p.get("p75")),
                     "-" if day is None else f"{day['gpu_hours_settled']:g}",
                     "-" if day is None else gdev(day["realised_price_per_gpu_hour"])])
    window = next((w for w in data["windows"] if w == 86_400), data["windows"][0] if data["windows"] else 0)
    return ["model", "region", "GPUs", "free", "leased", "util", "min gDEV/GPU·h", "median", "p75",
            f"GPU·h ({window}s)", "realised"], rows


@main.command("market")
@node_options
@click.option("--model", help="one GPU model, e.g. H100-80GB")
@click.option("--region", help="one region (default: each model over all regions)")
@click.option("--window", help="settlement windows, e.g. 1h,1d,7d (the default)")
@click.option("--provider", help="show one provider's record from the chain and its offers instead")
@json_option
def market(node: NodeRef, model: str | None, region: str | None, window: str | None, provider: str | None,
           as_json: bool) -> None:
    """Supply, demand and prices per GPU model (and region): GPUs offered and free, utilisation, live prices in
    gDEV per GPU-hour, GPU-hours settled and the realised price.

    Example: gpunet market --data-dir consumer-node --model H100-80GB --region eu-west
    """
    if provider:
        data = node.get(f"/v1/providers/{url_quote(provider)}")
        if as_json:
            print_json(data)
            return
        rec = data["record"]
        click.echo(f"provider {data['provider']}: score {rec['score']:.2f}"
                   + ("" if rec["known"] else " (no history on the chain)"))
        if rec["known"]:
            click.echo(f"  stake {gdev(rec['stake'])} gDEV, leases {rec['leases_completed']}/{rec['leases_opened']} "
                       f"completed, {rec['gpu_hours_settled']:g} GPU·h settled, claims disputed "
                       f"{rec['claims_disputed']}, challenges missed {rec['challenges_missed']}, "
                       f"equivocations {rec['equivocations']}")
        for o in data["offers"]:
            click.echo(f"  offer {o['offer_id']}: {o['gpu_count']}x {o['gpu_model']} at "
                       f"{gdev(int(o['price_per_gpu_second']) * 3600)} gDEV/GPU·h, region {o['region'] or '-'}")
        return
    q = {k: v for k, v in {"model": model, "region": region, "window": window}.items() if v}
    data = node.get("/v1/market" + ("?" + urlencode(q) if q else ""))
    if as_json:
        print_json(data)
        return
    columns, rows = market_rows(data)
    if rows:
        print_table(None, columns, rows)
    else:
        click.echo("no market data yet (no live offers or leases seen)")


# ---------------------------------------------------------------------------------------------- by need
def need_body(model: str, gpus: int, hours: float, min_vram: int | None, region: str | None,
              max_price: str | None) -> dict[str, Any]:
    """The API's need object; ``max_price`` in gDEV per GPU-hour."""
    body: dict[str, Any] = {"model": model, "gpus": gpus, "hours": hours}
    if min_vram:
        body["min_vram"] = min_vram
    if region:
        body["region"] = region
    if max_price is not None:
        body["max_price"] = str(parse_gdev(max_price, "--max-price"))
    return body


def choice_text(out: dict[str, Any], opened: bool) -> str:
    """What was chosen, why, and what it costs (or what nothing matched)."""
    chosen = out["chosen"]
    if chosen is None:
        return f"no offer matches: {out['reason']}"
    q = out["quote"]
    head = (f"lease {out['lease']['lease_id']} open" if opened else "quote") + (
        f": {q['gpus']} GPU(s) for {q['duration_s']} s from {chosen['provider']} "
        f"(offer {chosen['offer_id']}, region {chosen['region'] or '-'}) at {gdev(q['price_per_gpu_hour'])} gDEV/GPU·h"
        f", {gdev(q['total'])} gDEV in all")
    lines = [head, f"why: {out['reason']}"]
    if out["excluded_total"]:
        reasons: dict[str, int] = {}
        for e in out["excluded"]:
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
        lines.append(f"left out: {out['excluded_total']} offer(s), e.g. "
                     + ", ".join(f"{n} for {r}" for r, n in sorted(reasons.items())))
    return "\n".join(lines)


def open_by_need(post: Callable[[str, dict[str, Any]], Any], body: dict[str, Any], quote_only: bool,
                 as_json: bool) -> None:
    """``lease open --model ...``: quote (``POST /v1/quote``) or open (``POST /v1/leases/select``) and report."""
    out = post("/v1/quote" if quote_only else "/v1/leases/select", body)
    if as_json:
        print_json(out)
    else:
        click.echo(choice_text(out, not quote_only))
