"""The dashboard's pages: each a function from the node's data to HTML (``node.api.routes.dashboard`` gathers it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from node.api.ui.explorer import LINKED, Market, details, hex0x
from node.api.ui.fmt import DASH, amount, duration, per_gpu_hour, plain, relative, short
from node.api.ui.html import Markup, badge, e, explore, facts, link, page, svg_chart, table

Data = dict[str, Any]

FILTER_FIELDS = (("model", "GPU model", "text"), ("min_gpus", "Min GPUs", "number"),
                 ("min_vram", "Min VRAM (MiB)", "number"), ("max_price_hour", "Max price (gDEV/GPU-h)", "text"),
                 ("region", "Region", "text"), ("duration", "Duration (s)", "number"))


def overview(status: Data, leases: Sequence[Data], money: Data, market: Market) -> str:
    chain = status.get("chain") or {}
    active = [lease for lease in leases if lease.get("status") not in ("FINALIZED", "CLOSED")]
    node = facts([
        ("Role", "provider" if status.get("provider") else "consumer"),
        ("Wallet", explore("provider", status.get("address")) if status.get("provider")
         else e(status.get("address"))),
        ("Peer id", short(status.get("peer_id"), 10)), ("Chain id", status.get("chain_id")),
        ("Chain endpoint", "up" if chain.get("up", True) else "down"),
        ("Uptime", duration(status.get("uptime_s"))),
    ])
    nums = facts([
        ("Offers in the book", link("/market", status.get("offers", 0))),
        ("My active leases", link("/leases", len(active))), ("All my leases", len(leases)),
        ("Token balance", amount(money.get("token")) if money else "no wallet"),
        ("Stake", amount(int(money.get("stake_free", 0)) + int(money.get("stake_locked", 0))) if money else DASH),
        ("Events followed", link("/explorer", len(market.events))),
    ])
    devices = table(["#", "GPU", "Memory", "Simulated"],
                    [(d.get("index"), d.get("name"), f"{d.get('memory_mib', 0)} MiB", "yes" if d.get("simulated")
                      else "no") for d in status.get("devices", [])], empty="No GPUs on this node.")
    return page("Overview", f'<section class="cards"><div><h2>Node</h2>{node}</div><div><h2>At a glance</h2>'
                f"{nums}</div></section><h2>GPUs</h2>{devices}", active="/")


def market_page(offers: Sequence[Data], filters: Mapping[str, str], stakes: Mapping[str, Data | None],
                market: Market, error: str | None = None) -> str:
    inputs = "".join(
        f'<label>{e(label)} <input name="{n}" type="{t}" min="0" value="{escape(filters.get(n, ""))}"></label>'
        for n, label, t in FILTER_FIELDS)
    form = f'<form class="filters" method="get" action="/market">{inputs}<button>Filter</button></form>'
    rows = []
    for o in offers:
        stake = stakes.get(o["provider"]) or {}
        left = max(0, int(o["gpu_count"]) - market.gpus_leased(o["offer_id"]))
        rows.append((explore("offer", o["offer_id"]), explore("provider", o["provider"]), o["gpu_model"],
                     f"{o['vram_mib']:,} MiB", left, per_gpu_hour(o["price_per_gpu_second"]),
                     amount(stake.get("free")) if stake else DASH,
                     f"{duration(o['min_duration'])} to {duration(o['max_duration'])}", o.get("region"),
                     Markup(relative(o["expires_at"])), _open_form(o)))
    err = f'<p class="error">{e(error)}</p>' if error else ""
    body = table(["Offer", "Provider", "GPU", "VRAM", "GPUs left", "Price", "Provider stake (free)", "Duration",
                  "Region", "Expires", "Lease"], rows, empty="No offers match.", cls="offers")
    return page("Market", f"{form}{err}{body}", active="/market", refresh=False)


def _open_form(o: Data) -> Markup:
    hour = plain(int(o["price_per_gpu_second"]) * 3600)
    return Markup(
        f'<form class="action" data-action="/v1/leases" data-method="POST">'
        f'<input type="hidden" name="offer_id" value="{escape(o["offer_id"])}">'
        f'<label>GPUs <input name="gpus" type="number" min="1" max="{int(o["gpu_count"])}" value="1"></label>'
        f'<label>Deposit (gDEV) <input name="deposit" data-unit="gdev" value="{escape(hour)}"></label>'
        f'<label>Job (JSON) <input name="job" placeholder=\'{{"argv": ["nvidia-smi"]}}\'></label>'
        f'<button>Open</button><output></output></form>')


def leases_page(leases: Sequence[Data]) -> str:
    rows = [(link(f"/leases/{v['lease_id']}", f"#{v['lease_id']}"), v["role"], badge(v["status"]),
             explore("provider", v["provider"]), v["gpus"], per_gpu_hour(v["price_per_gpu_second"]),
             amount(int(v["deposit"]) - int(v["paid"])), amount(v["paid"]), f"{v['settled_gpu_seconds']:,} GPU-s",
             Markup(relative(v.get("started_at"))), Markup(relative(v.get("ends_at"))))
            for v in leases]
    return page("My leases", table(["Lease", "Role", "Status", "Provider", "GPUs", "Price", "Deposit left",
                                    "Paid", "Settled", "Started", "Ends"], rows,
                                   empty="This node is party to no lease yet. Open one from the Market."),
                active="/leases")


def lease_page(v: Data, usage: Sequence[Data], market: Market) -> str:
    lid = int(v["lease_id"])
    chain = market.leases.get(lid)
    left = int(v["deposit"]) - int(v["paid"])
    top = facts([
        ("Status", badge(v["status"])), ("Role", v["role"]), ("Provider", explore("provider", v["provider"])),
        ("Consumer", explore("provider", v.get("consumer"))),
        ("Offer", explore("offer", chain.offer) if chain else e(None)),
        ("Opened in", explore("tx", chain.opened_tx) if chain else e(None)),
        ("GPUs", v["gpus"]), ("Price", per_gpu_hour(v["price_per_gpu_second"])),
        ("Deposit", amount(v["deposit"])), ("Paid", amount(v["paid"])), ("Deposit left", amount(left)),
        ("Fees", amount(v.get("fees"))), ("Refund", amount(v.get("refund"))),
        ("Started", Markup(relative(v.get("started_at")))), ("Ends", Markup(relative(v.get("ends_at")))),
        ("Closed", Markup(relative(v.get("closed_at")))), ("Close reason", v.get("close_reason")),
        ("Heartbeats", v.get("heartbeats")), ("Accepted usage", f"{v.get('accepted_gpu_seconds', 0):,} GPU-s"),
        ("Settled usage", f"{v.get('settled_gpu_seconds', 0):,} GPU-s"),
    ])
    t0 = usage[0]["at"] if usage else 0
    settled_at = [(ev["block"], ev) for ev in (chain.events if chain else []) if ev["event"] == "LeaseSettled"]
    chart = svg_chart([(u["at"] - t0, u["gpu_seconds"]) for u in usage], x_label="seconds since the first heartbeat",
                      y_label="GPU-s")
    settlements = table(["Seq", "Usage", "Amount", "Fee", "Block", "Transaction"],
                        [(ev["seq"], f"{ev['cumulativeGpuSeconds']:,} GPU-s", amount(ev["amount"]),
                          amount(ev["fee"]), ev["block"], explore("tx", ev["tx"])) for _, ev in settled_at],
                        empty="No settlement on-chain yet.")
    settle_tx = {int(ev["seq"]): ev["tx"] for _, ev in settled_at}
    checkpoints = table(["Seq", "Usage", "Status", "Reason", "Settled in"],
                        [(c["seq"], f"{c['gpu_seconds']:,} GPU-s", badge(c["status"]), c.get("reason") or "",
                          explore("tx", settle_tx.get(int(c["seq"])))) for c in v.get("checkpoints", [])],
                        empty="No checkpoint yet.")
    job = v.get("job_result")
    output = (f"<p>Exit code {e(job.get('exit_code'))}{' (simulated)' if job.get('simulated') else ''}</p>"
              f'<pre class="log">{e(job.get("log_tail", ""))}</pre>') if job else '<p class="empty">No output yet.</p>'
    actions = ""
    if v["role"] == "consumer" and v["status"] not in ("FINALIZED", "CLOSED", "CLOSING"):
        actions = (f'<section class="actions"><form class="action" data-action="/v1/leases/{lid}/topup" '
                   'data-method="POST"><label>Top up (gDEV) <input name="amount" data-unit="gdev" required></label>'
                   f'<button>Top up</button><output></output></form><form class="action" '
                   f'data-action="/v1/leases/{lid}/close" data-method="POST"><button>Close lease</button>'
                   "<output></output></form></section>")
    notices = table(["Notice"], [(json.dumps(n, default=str),) for n in v.get("notices", [])], empty="None.")
    return page(f"Lease #{lid}", f"{actions}{top}<h2>Usage</h2>{chart}<h2>Checkpoints</h2>{checkpoints}"
                f"<h2>Settlements</h2>{settlements}<h2>Job output</h2>{output}<h2>Notices</h2>{notices}",
                active="/leases")


def money_page(money: Data, market: Market) -> str:
    if not money:
        return page("Money", '<p class="empty">This node has no wallet.</p>', active="/money")
    me = money["address"].lower()
    p = market.providers.get(money["address"])
    body = facts([
        ("Wallet", money["address"]), ("ETH", amount(money["eth"], "ETH")), ("Token", amount(money["token"])),
        ("Stake (free)", amount(money["stake_free"])), ("Collateral locked", amount(money["stake_locked"])),
        ("Unbonding", amount(p.unbonding) if p else amount(0)),
        ("Earnings to withdraw", amount(money["earnings"])), ("Refunds to withdraw", amount(money["refunds"])),
    ])
    earned = [ev for ev in market.events if ev["event"] in ("LeaseSettled", "ClaimFinalized")
              and str(ev.get("provider", "")).lower() == me]
    flows = ("EarningsWithdrawn", "RefundWithdrawn", "Unbonded", "RefundCredited", "SlashProceedsWithdrawn")
    withdrawals = [ev for ev in market.events if ev["event"] in flows
                   and me in (str(ev.get("provider", "")).lower(), str(ev.get("consumer", "")).lower(),
                              str(ev.get("recipient", "")).lower())]
    total = sum(int(ev["amount"]) for ev in earned)
    earn_table = table(["Lease", "Amount", "Block", "Transaction"],
                       [(explore("lease", ev["leaseId"], f"#{ev['leaseId']}"), amount(ev["amount"]), ev["block"],
                         explore("tx", ev["tx"])) for ev in reversed(earned)], empty="No earnings yet.")
    wd_table = table(["What", "Amount", "Block", "Transaction"],
                     [(ev["event"], amount(ev["amount"]), ev["block"], explore("tx", ev["tx"]))
                      for ev in reversed(withdrawals)], empty="No withdrawals yet.")
    return page("Money", f"{body}<h2>Earnings ({e(amount(total))} settled to this wallet)</h2>{earn_table}"
                f"<h2>Withdrawals and refunds</h2>{wd_table}", active="/money")


def peers_page(peers: Sequence[Data], status: Data) -> str:
    rows = [(p["peer_id"], "yes" if p.get("in_mesh") else "no", Markup("<br>".join(escape(a) for a in p.get("addrs",
            [])))) for p in peers]
    own = facts([("Peer id", status.get("peer_id")),
                 ("Listening on", Markup("<br>".join(escape(a) for a in status.get("addrs", []))))])
    return page("Peers", f"{own}<h2>Connected ({len(peers)})</h2>"
                f"{table(['Peer id', 'In the offers mesh', 'Addresses'], rows, empty='No peer connected.')}",
                active="/peers")


def explorer_page(m: Market, focus: Mapping[str, str]) -> str:
    events = m.events
    title = "Explorer"
    head = ""
    if "lease" in focus:
        lid = int(focus["lease"])
        events = [ev for ev in events if ev.get("leaseId") == lid]
        title = f"Explorer · lease #{lid}"
        lv = m.leases.get(lid)
        if lv is not None:
            head = str(facts([
                ("Status", badge(lv.status)), ("Provider", explore("provider", lv.provider)),
                ("Consumer", e(lv.consumer)), ("Offer", explore("offer", lv.offer)),
                ("Opened in", explore("tx", lv.opened_tx)), ("GPUs", lv.gpus),
                ("Price", per_gpu_hour(lv.price_per_gpu_second)), ("Deposit", amount(lv.deposit)),
                ("Paid", amount(lv.paid)), ("Usage settled", f"{lv.gpu_seconds:,} GPU-s"),
                ("Settlements", lv.settlements), ("Claims", lv.claims), ("Challenges", lv.challenges),
                ("Slashed", amount(lv.slashed)), ("Refund", amount(lv.refund)),
                ("Started", Markup(relative(lv.started_at))), ("Ends", Markup(relative(lv.ends_at)))]))
    elif "provider" in focus:
        who = focus["provider"].lower()
        events = [ev for ev in events if who in (str(ev.get(k, "")).lower() for k in
                                                 ("provider", "consumer", "wronged", "finder", "recipient"))]
        title = f"Explorer · {short(focus['provider'])}"
        pv = next((p for a, p in m.providers.items() if a.lower() == who), None)
        if pv is not None:
            head = str(facts([("Address", pv.address), ("Registered", "yes" if pv.registered else "no"),
                              ("Stake", amount(pv.staked)), ("Collateral locked", amount(pv.locked)),
                              ("Unbonding", amount(pv.unbonding)), ("Slashed", amount(pv.slashed)),
                              ("Leases", Markup(", ".join(explore("lease", i, f"#{i}") for i in pv.leases)
                                                or DASH))]))
    elif "offer" in focus:
        offer = focus["offer"].lower()
        ids = {lv.lease_id for lv in m.leases.values() if lv.offer.lower() == offer}
        events = [ev for ev in events if ev.get("leaseId") in ids]
        title = f"Explorer · offer {short(focus['offer'])}"
        head = str(facts([("Offer", focus["offer"]), ("Leases from it", Markup(
            ", ".join(explore("lease", i, f"#{i}") for i in sorted(ids)) or "none seen")),
            ("GPUs in open leases", m.gpus_leased(focus["offer"]))]))
    elif "tx" in focus:
        tx = focus["tx"].lower()
        events = [ev for ev in events if str(ev.get("tx", "")).lower() == tx]
        title = f"Explorer · transaction {short(focus['tx'])}"
    else:
        head = _explorer_overview(m)
    rows = [(ev["block"], explore("tx", ev.get("tx")), ev["event"],
             explore("lease", ev["leaseId"], f"#{ev['leaseId']}") if "leaseId" in ev else "",
             explore("provider", ev.get("provider")) if "provider" in ev else "",
             explore("provider", ev.get("consumer")) if "consumer" in ev else "",
             explore("offer", hex0x(ev["offerHash"])) if "offerHash" in ev else "",
             _details(ev)) for ev in reversed(events)]
    log = table(["Block", "Transaction", "Event", "Lease", "Provider", "Consumer", "Offer", "Details"], rows,
                empty="No contract event seen.", cls="events")
    return page(title, f"{head}<h2>Events ({len(rows)})</h2>{log}", active="/explorer")


def _explorer_overview(m: Market) -> str:
    providers = table(["Provider", "Registered", "Stake", "Collateral locked", "Unbonding", "Slashed", "Leases"],
                      [(explore("provider", p.address), "yes" if p.registered else "no", amount(p.staked),
                        amount(p.locked), amount(p.unbonding), amount(p.slashed), len(p.leases))
                       for p in m.providers.values()], empty="No provider has staked yet.")
    leases = table(["Lease", "Status", "Offer", "Provider", "Consumer", "GPUs", "Price", "Deposit", "Paid",
                    "Settlements", "Claims", "Challenges", "Opened in"],
                   [(explore("lease", lv.lease_id, f"#{lv.lease_id}"), badge(lv.status), explore("offer", lv.offer),
                     explore("provider", lv.provider), explore("provider", lv.consumer), lv.gpus,
                     per_gpu_hour(lv.price_per_gpu_second), amount(lv.deposit), amount(lv.paid), lv.settlements,
                     lv.claims, lv.challenges, explore("tx", lv.opened_tx))
                    for lv in sorted(m.leases.values(), key=lambda v: -v.lease_id)], empty="No lease opened yet.")
    return (f'<p class="note">Rebuilt from the {len(m.events)} contract events this node has followed.</p>'
            f"<h2>Providers</h2>{providers}<h2>Leases</h2>{leases}")


AMOUNT_ARGS = {"amount", "deposit", "totalStake", "totalUnbonding", "totalLocked", "fee", "refund", "slashed",
               "collateral", "collateralUnlocked", "toWronged", "toFinder", "toTreasury"}
TIME_ARGS = {"startedAt", "endsAt", "closedAt", "readyAt", "deadline"}


def _details(ev: Data) -> Markup:
    parts = []
    for k, v in details(ev):
        if k in LINKED:
            continue
        if k in AMOUNT_ARGS:
            text: object = amount(v)
        elif k == "pricePerGpuSecond":
            text = per_gpu_hour(v)
        elif k in TIME_ARGS:
            text = Markup(relative(v))
        elif isinstance(v, str) and v.startswith("0x") and len(v) == 42:
            text = explore("provider", v)
        else:
            text = v
        parts.append(f"<span class=\"kv\"><b>{e(k)}</b> {e(text)}</span>")
    return Markup(" ".join(parts))
