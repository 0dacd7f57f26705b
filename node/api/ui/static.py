"""The dashboard's one style sheet and one script (served from ``/static``; the pages allow no inline code).

The script: keeps relative times current; keeps the API token in sessionStorage (asked for in the header, never
sent anywhere but this node, and only as ``Authorization: Bearer``); turns forms marked ``data-action`` into JSON
requests to the API and shows the answer; refreshes the page's content every few seconds while nobody is typing.
"""

from __future__ import annotations

CSS = """
:root{--fg:#1d232b;--muted:#6a7380;--line:#dde2e8;--bg:#f7f8fa;--accent:#2456c9;--bad:#b3261e;--good:#1f7a3a}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.5em;background:#fff;border-bottom:1px solid var(--line);
flex-wrap:wrap}header nav a{margin-right:1em;color:var(--muted);text-decoration:none}header nav a.on{color:var(--fg);
font-weight:600;border-bottom:2px solid var(--accent)}.token{margin-left:auto;font-size:12px;color:var(--muted)}
main{padding:1em 1.5em 3em;max-width:1400px}h1{font-size:1.4em;margin:.3em 0 .6em}
h2{font-size:1.1em;margin:1.4em 0 .5em}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}th,td{border-bottom:1px solid var(--line);
padding:5px 8px;text-align:left;vertical-align:top}th{background:#eef1f5;font-weight:600;white-space:nowrap}
a{color:var(--accent)}.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1.2em;background:#fff;
padding:.8em 1em;border:1px solid var(--line);margin:0}.facts dt{color:var(--muted)}.facts dd{margin:0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:1em}.empty,.note{color:var(--muted)}
.badge{padding:1px 7px;border-radius:9px;background:#e8ecf2;font-size:12px}.b-active,.b-open,.b-accepted,.b-settled
{background:#dcf2e3;color:var(--good)}.b-finalized,.b-closed{background:#e8ecf2}.b-rejected,.b-disputed{background:
#fbe1df;color:var(--bad)}.error{color:var(--bad)}.filters{display:flex;flex-wrap:wrap;gap:.6em;margin-bottom:1em}
.filters input{width:9em}form.action{display:flex;gap:.4em;flex-wrap:wrap;align-items:center}
form.action input{width:9em}
.actions{display:flex;gap:2em;margin-bottom:1em}output{color:var(--muted)}output.bad{color:var(--bad)}
pre.log{background:#111;color:#e6e6e6;padding:.8em;overflow:auto;max-height:24em}
.kv{margin-right:.8em;display:inline-block;overflow-wrap:anywhere}
.kv b{font-weight:500;color:var(--muted)}
svg.chart{background:#fff;border:1px solid var(--line);width:100%;max-width:760px}
svg.chart .axis{stroke:#9aa3ad}svg.chart .line{fill:none;stroke:var(--accent);stroke-width:2}svg.chart .mark{stroke:
#e0a000;stroke-dasharray:3 3}svg.chart text{font-size:11px;fill:var(--muted)}
"""

JS = r"""
"use strict";
(function () {
  const KEY = "gpunet-api-token";
  function ago(ts) {
    const d = Math.round(ts - Date.now() / 1000), a = Math.abs(d);
    if (a < 5) return "just now";
    const units = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
    for (const [size, unit] of units) {
      if (a >= size) { const t = Math.floor(a / size) + " " + unit; return d > 0 ? "in " + t : t + " ago"; }
    }
    return "just now";
  }
  function tick() {
    document.querySelectorAll("time[data-ts]").forEach(function (el) { el.textContent = ago(+el.dataset.ts); });
  }
  function tokenState() {
    const s = document.getElementById("token-state");
    if (s) s.textContent = sessionStorage.getItem(KEY) ? "kept for this tab" : "";
  }
  function bindToken() {
    const form = document.getElementById("token-form");
    if (!form) return;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const v = document.getElementById("token").value.trim();
      if (v) sessionStorage.setItem(KEY, v); else sessionStorage.removeItem(KEY);
      document.getElementById("token").value = "";
      tokenState();
    });
    tokenState();
  }
  function toBase(v) {  // "1.5" gDEV -> "1500000000000000000" base units, exactly
    if (!/^[0-9]+(\.[0-9]{0,18})?$/.test(v)) throw new Error("amounts are gDEV with at most 18 decimals");
    const parts = v.split(".");
    const frac = ((parts[1] || "") + "0".repeat(18)).slice(0, 18);
    return (BigInt(parts[0]) * 10n ** 18n + BigInt(frac)).toString();
  }
  function body(form) {
    const out = {};
    Array.from(form.elements).forEach(function (el) {
      if (!el.name) return;
      const v = String(el.value).trim();
      if (!v) return;
      if (el.name === "job") {
        try { out.job = JSON.parse(v); } catch (e) { throw new Error("job: not JSON"); }
      } else if (el.dataset.unit === "gdev") {
        out[el.name] = toBase(v);
      } else {
        out[el.name] = el.name === "gpus" ? Number(v) : v;
      }
    });
    return out;
  }
  function bindActions(root) {
    root.querySelectorAll("form[data-action]").forEach(function (form) {
      form.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        const out = form.querySelector("output");
        const token = sessionStorage.getItem(KEY);
        if (!token) { out.className = "bad"; out.textContent = "enter the API token in the header first"; return; }
        let payload;
        try { payload = body(form); } catch (e) { out.className = "bad"; out.textContent = e.message; return; }
        out.className = ""; out.textContent = "sending…";
        try {
          const r = await fetch(form.dataset.action, {method: form.dataset.method || "POST",
            headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
            body: JSON.stringify(payload)});
          const data = await r.json();
          out.className = r.ok ? "" : "bad";
          out.textContent = r.ok ? (data.lease_id !== undefined ? "done: lease #" + data.lease_id : "done")
                                 : data.error || r.statusText;
        } catch (e) { out.className = "bad"; out.textContent = String(e); }
      });
    });
  }
  async function refresh() {
    const active = document.activeElement;
    if (active && active.closest && active.closest("form")) return;
    try {
      const r = await fetch(location.href, {headers: {"Accept": "text/html"}});
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.querySelector("main");
      if (fresh) { document.querySelector("main").replaceWith(fresh); bindActions(fresh); tick(); }
    } catch (e) { /* the node may be restarting: try again next time */ }
  }
  document.addEventListener("DOMContentLoaded", function () {
    bindToken(); bindActions(document); tick();
    setInterval(tick, 5000);
    const every = +document.body.dataset.refresh;
    if (every) setInterval(refresh, every * 1000);
  });
})();
"""
