"""The dashboard page."""

from __future__ import annotations

from aiohttp import web

from node.api.registry import Api, Reply


def register(api: Api) -> None:
    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(text=DASHBOARD, content_type="text/html")

    api.route("GET", "/", dashboard, summary="Dashboard", tag="dashboard",
              responses={200: Reply("HTML page", {"type": "string"}, "text/html")})


DASHBOARD = """<!doctype html><html><head><meta charset="utf-8"><title>gpunet node</title>
<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}
</style></head><body><h1>gpunet node</h1><pre id="status"></pre><h2>Offers</h2><table id="offers"></table>
<h2>Leases</h2><table id="leases"></table><h2>Events</h2><table id="events"></table>
<script>
function fill(id, rows){const t=document.getElementById(id);t.textContent='';if(!rows.length)return;
const h=t.insertRow();Object.keys(rows[0]).forEach(k=>{const c=document.createElement('th');
c.textContent=k;h.appendChild(c)});
rows.forEach(r=>{const tr=t.insertRow();Object.values(r).forEach(v=>{tr.insertCell().textContent=
typeof v==='object'?JSON.stringify(v):String(v)})})}
async function load(){const j=u=>fetch(u).then(r=>r.json());
document.getElementById('status').textContent=JSON.stringify(await j('/v1/status'),null,1);
fill('offers',(await j('/v1/offers?limit=50')).offers);fill('leases',(await j('/v1/leases')).leases);
fill('events',(await j('/v1/events?limit=50')).events)}
load();setInterval(load,3000);
</script></body></html>"""
