"""The status page: what a plant engineer looks at to see that the bridge works and where a message went.

Owns: the status document (`/status.json`: connection states, per-route rates, buffer depth, bytes and age, recent
dead letters with reasons, counters), the trace search answer (`/api/trace?q=`), the last hour's history
(`/status/history.json`, and its charts as a server-rendered fragment, `/status/charts`), and the page itself
(`/status`: one self-contained HTML file with inline CSS, the charts inline as SVG, and JS that polls the JSON; no
external assets, so it works air-gapped). Must not change the bridge's state; never shows secrets or payloads.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from mqtt_bridge import __version__
from mqtt_bridge.model.values import JsonDict, JsonValue
from mqtt_bridge.observe.charts import render_charts
from mqtt_bridge.observe.history import History
from mqtt_bridge.observe.redact import redact
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.observe.trace import MessageTrace

__all__ = ["PAGE_HTML", "BufferView", "StateView", "StatusReport"]

_RATE_WINDOW_S = 60.0


class StateView(Protocol):
    """What the status page reads: a `ServiceState`-like object."""

    @property
    def is_alive(self) -> bool: ...

    @property
    def is_ready(self) -> bool: ...

    @property
    def mqtt_connected(self) -> bool: ...

    @property
    def mqtt_subscribed(self) -> bool: ...

    @property
    def api_ready(self) -> bool: ...

    @property
    def buffer_writable(self) -> bool: ...

    @property
    def backpressured(self) -> bool: ...

    @property
    def buffer_depth(self) -> int: ...

    @property
    def dead_letters(self) -> int: ...

    @property
    def last_error(self) -> str: ...

    @property
    def api_not_ready_reason(self) -> str: ...

    @property
    def mqtt_problem(self) -> str: ...

    @property
    def mqtt_protocol(self) -> str: ...

    @property
    def not_ready_reason(self) -> str: ...


class BufferView(Protocol):
    """Buffer facts for the page (`metrics.BufferGauges`)."""

    @property
    def bytes(self) -> int: ...

    @property
    def oldest_age_s(self) -> float: ...

    @property
    def raw_depth(self) -> int: ...

    @property
    def raw_oldest_age_s(self) -> float: ...


class StatusReport:
    """Builds the status document; keeps a minute of counter samples to compute rates."""

    def __init__(self, stats: Stats, state: Callable[[], StateView], buffer: Callable[[], BufferView],
                 trace: MessageTrace, routes: list[str], receipts_enabled: bool = False,
                 history: History | None = None) -> None:
        self._stats = stats
        self._state = state
        self._buffer = buffer
        self._trace = trace
        self._routes = routes
        self._receipts_enabled = receipts_enabled
        self._history = history
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def _rates(self, now: float, totals: dict[str, int]) -> dict[str, float]:
        """Per-key rate over the last minute (since start while the bridge is younger than that)."""
        with self._lock:
            self._samples.append((now, totals))
            while len(self._samples) > 2 and now - self._samples[1][0] >= _RATE_WINDOW_S:
                self._samples.popleft()
            then, before = self._samples[0]
        if now - then < 1.0:
            then, before = self._stats.started_at_s, {}
        elapsed = max(now - then, 1e-3)
        return {key: max(0, value - before.get(key, 0)) / elapsed for key, value in totals.items()}

    def status(self) -> JsonDict:
        """The `/status.json` document."""
        now = time.time()
        state = self._state()
        buffer = self._buffer()
        counters = self._stats.counters()
        received: dict[str, int] = {}
        dead_by_reason: JsonDict = {}
        retries: JsonDict = {}
        lost: JsonDict = {}
        for (name, label), value in counters.items():
            if name == "messages_received":
                received[label] = received.get(label, 0) + value
            elif name == "dead_letters":
                dead_by_reason[label] = value
            elif name == "api_retries":
                retries[label] = value
            elif name == "receipts_lost":
                lost[label] = value
        delivered = counters.get(("events_delivered", ""), 0)
        totals = {f"route:{k}": v for k, v in received.items()} | {"delivered": delivered}
        rates = self._rates(now, totals)
        routes: list[JsonValue] = []
        for name in dict.fromkeys([*self._routes, *sorted(received)]):
            routes.append({"route": name, "received": received.get(name, 0),
                           "ratePerS": round(rates.get(f"route:{name}", 0.0), 3)})
        last_delivery = self._stats.gauge("last_delivery_time_seconds", 0.0)
        return {
            "version": __version__, "now": now, "startedAt": self._stats.started_at_s,
            "uptimeS": round(now - self._stats.started_at_s, 1),
            "state": {"alive": state.is_alive, "ready": state.is_ready, "mqttConnected": state.mqtt_connected,
                      "mqttSubscribed": state.mqtt_subscribed, "apiReady": state.api_ready,
                      "bufferWritable": state.buffer_writable, "backpressured": state.backpressured,
                      "apiReason": redact(state.api_not_ready_reason[:500]),
                      "lastError": redact(state.last_error[:500]), "mqttProblem": state.mqtt_problem[:500],
                      "mqttProtocol": state.mqtt_protocol, "notReadyReason": redact(state.not_ready_reason[:1000])},
            "buffer": {"depth": state.buffer_depth, "bytes": buffer.bytes,
                       "oldestAgeS": round(buffer.oldest_age_s, 3), "deadLetters": state.dead_letters,
                       "rawDepth": buffer.raw_depth, "rawOldestAgeS": round(buffer.raw_oldest_age_s, 3)},
            "totals": {"received": sum(received.values()), "buffered": counters.get(("events_buffered", ""), 0),
                       "delivered": delivered, "deliveredPerS": round(rates.get("delivered", 0.0), 3),
                       "deadLettered": sum(v for v in dead_by_reason.values() if isinstance(v, int)),
                       "imagesUploaded": counters.get(("images_uploaded", ""), 0),
                       "lastDeliveryAt": last_delivery or None},
            "routes": routes,
            "deadLettersByReason": dict(sorted(dead_by_reason.items())),
            "apiRetries": dict(sorted(retries.items())),
            "receipts": {"enabled": self._receipts_enabled,
                         "published": counters.get(("receipts_published", ""), 0), "lost": lost},
            "recentDeadLetters": list(self._trace.recent_dead_letters()),
            "traceSize": len(self._trace), "traceCapacity": self._trace.capacity,
        }

    def search(self, query: str) -> JsonDict:
        """The `/api/trace?q=` answer: matching messages with the stages they reached."""
        return {"query": query[:500], "results": list(self._trace.search(query[:500]))}

    @property
    def has_history(self) -> bool:
        """Whether the bridge keeps the last hour's history (the page then shows its charts)."""
        return self._history is not None

    def history(self) -> JsonDict:
        """The `/status/history.json` document (empty samples when no history is kept)."""
        if self._history is None:
            return {"intervalS": None, "capacity": 0, "samples": []}
        return self._history.to_json()

    def charts(self) -> str:
        """The "Last hour" charts as an HTML fragment of inline SVGs (`/status/charts`, which the page re-reads)."""
        return render_charts(self._history.samples() if self._history is not None else [])

    def page(self) -> str:
        """The `/status` page, with the charts drawn in (readable without JS; the script refreshes them)."""
        if self._history is None:
            return PAGE_HTML.replace(_CHARTS_SLOT, "")
        section = (f'<section class="wide"><h2>Last hour</h2><div class="body charts" id="charts" '
                   f'data-refresh-s="{max(2.0, self._history.interval_s):g}">{self.charts()}</div></section>')
        return PAGE_HTML.replace(_CHARTS_SLOT, section)


_CHARTS_SLOT = "<!--charts-->"


PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mqtt-vision-bridge status</title>
<style>
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mute:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328}
header{display:flex;align-items:center;gap:12px;padding:10px 20px;background:#24292f;color:#fff}
header h1{font-size:17px;margin:0}header .sub{color:#d0d7de;font-size:12px}
main{padding:14px 20px;display:grid;gap:14px;grid-template-columns:repeat(auto-fit,minmax(330px,1fr))}
section{border:1px solid var(--line);border-radius:6px;background:#fff}
section h2{font-size:13px;margin:0;padding:8px 12px;background:var(--bg);border-bottom:1px solid var(--line)}
section .body{padding:10px 12px}.wide{grid-column:1/-1}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.ok{background:var(--ok)}.bad{background:var(--bad)}.warn{background:var(--warn)}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eaeef2;
vertical-align:top}th{color:var(--mute);font-weight:600;font-size:12px}td.n{text-align:right;
font-variant-numeric:tabular-nums}
.big{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}.kpis{display:flex;gap:22px;flex-wrap:wrap}
.kpi .l{color:var(--mute);font-size:12px}.err{color:var(--bad);font-family:monospace;white-space:pre-wrap}
form{display:flex;gap:8px}input[type=search]{flex:1;padding:6px 8px;border:1px solid var(--line);border-radius:6px}
button{padding:6px 14px;border:1px solid var(--line);border-radius:6px;background:var(--bg);cursor:pointer}
.stages{display:flex;gap:4px;flex-wrap:wrap}.stage{padding:1px 6px;border-radius:4px;background:#ddf4ff;
font-size:12px}.stage.dead_lettered{background:#ffebe9}.stage.delivered{background:#dafbe1}
.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}.mute{color:var(--mute)}
.charts{display:grid;gap:12px 18px;grid-template-columns:repeat(auto-fit,minmax(260px,1fr))}
.chart{margin:0;min-width:0}.chart figcaption{font-size:12px;font-weight:600;color:var(--mute)}
.chart svg{display:block;width:100%;height:auto}.chart .now{float:right;color:#1f2328}
.chart .collecting{color:var(--mute);margin:6px 0;font-style:italic}.legend{font-size:11px;color:var(--mute)}
.legend .key{margin-right:10px;white-space:nowrap}.legend i{display:inline-block;width:10px;height:3px;
margin-right:4px;vertical-align:middle}
@media (max-width:420px){main{padding:10px;grid-template-columns:minmax(0,1fr)}section .body{overflow-x:auto}}
</style></head><body>
<header><h1>mqtt-vision-bridge</h1><span id="overall" class="pill warn">loading</span>
<span class="sub" id="meta"></span></header>
<main>
<section><h2>Connections</h2><div class="body"><table id="conn"></table></div></section>
<section><h2>Buffer</h2><div class="body kpis" id="buffer"></div></section>
<section><h2>Throughput</h2><div class="body kpis" id="totals"></div></section>
<section><h2>Routes</h2><div class="body"><table id="routes"><tr><th>route</th><th>received</th>
<th>msg/s (1 min)</th></tr></table></div></section>
<!--charts-->
<section class="wide"><h2>Find a message (eventId or topic)</h2><div class="body">
<form id="search"><input type="search" id="q" placeholder="eventId, or a topic / topic prefix" autocomplete="off">
<button type="submit">Search</button></form><div id="results" class="mute" style="margin-top:8px">
received &rarr; buffered &rarr; image uploaded &rarr; delivered or dead-lettered</div></div></section>
<section class="wide"><h2>Recent dead letters</h2><div class="body"><table id="dead"></table>
<div id="reasons" class="mute"></div></div></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",
  '"':"&quot;","'":"&#39;"}[c]));
const pill = (ok, yes, no, warn) => `<span class="pill ${ok ? "ok" : (warn ? "warn" : "bad")}">${ok ? yes : no}</span>`;
const when = (t) => t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "-";
const age = (s) => s < 1 ? "-" : s < 120 ? s.toFixed(0) + " s" : s < 7200 ? (s / 60).toFixed(0) + " min"
  : (s / 3600).toFixed(1) + " h";
const bytes = (b) => b < 1048576 ? (b / 1024).toFixed(0) + " KiB" : (b / 1048576).toFixed(1) + " MiB";
const kpi = (label, value, id) => `<div class="kpi"><div class="l">${label}</div>
  <div class="big" ${id ? `id="${id}"` : ""}>${value}</div></div>`;
async function getJson(url) {
  const r = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}
function render(s) {
  const st = s.state;
  $("overall").className = "pill " + (st.ready ? "ok" : st.alive ? "warn" : "bad");
  $("overall").textContent = st.ready ? "ready" : st.alive ? "not ready" : "stopped";
  $("meta").textContent = `v${s.version} · up ${age(s.uptimeS)} · ${when(s.now)}`;
  $("conn").innerHTML = [
    ["MQTT broker", pill(st.mqttConnected, "connected" + (st.mqttProtocol ? " (MQTT " + esc(st.mqttProtocol) +
      ")" : ""), "disconnected") +
      (st.mqttProblem ? `<div class="err" id="mqttproblem">${esc(st.mqttProblem)}</div>` : "")],
    ["Subscriptions", pill(st.mqttSubscribed, "subscribed", "not subscribed")],
    ["Vision Events API", pill(st.apiReady, "key accepted", esc(st.apiReason || "key refused"))],
    ["Buffer", pill(st.bufferWritable && !st.backpressured, "writable",
      st.backpressured ? "over high-water mark" : "not writable", st.backpressured)],
    ["Receipts", s.receipts.enabled ? `${s.receipts.published} sent` +
      (Object.keys(s.receipts.lost).length ? `, lost: ${esc(JSON.stringify(s.receipts.lost))}` : "") : "off"],
  ].map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("") +
    (!st.ready && st.notReadyReason ? `<tr><th>Not ready</th>
      <td class="err" id="notready">${esc(st.notReadyReason)}</td></tr>` : "") +
    (st.lastError ? `<tr><th>Last error</th><td class="err">${esc(st.lastError)}</td></tr>` : "");
  const b = s.buffer;
  $("buffer").innerHTML = kpi("waiting", b.depth, "depth") + kpi("oldest", age(b.oldestAgeS), "oldest") +
    kpi("on disk", bytes(b.bytes)) + kpi("dead letters", b.deadLetters, "deadcount") +
    kpi("raw, unprocessed", b.rawDepth, "rawdepth") + kpi("oldest raw", age(b.rawOldestAgeS), "rawoldest");
  const t = s.totals;
  $("totals").innerHTML = kpi("received", t.received, "received") + kpi("delivered", t.delivered, "delivered") +
    kpi("delivered/s", t.deliveredPerS.toFixed(1)) + kpi("dead-lettered", t.deadLettered) +
    `<div class="kpi"><div class="l">last delivery</div><div>${when(t.lastDeliveryAt)}</div></div>`;
  $("routes").innerHTML = "<tr><th>route</th><th>received</th><th>msg/s (1 min)</th></tr>" +
    s.routes.map((r) => `<tr><td>${esc(r.route)}</td><td class="n">${r.received}</td>
    <td class="n">${r.ratePerS.toFixed(2)}</td></tr>`).join("");
  $("dead").innerHTML = "<tr><th>when</th><th>reason</th><th>route</th><th>topic</th><th>detail</th></tr>" +
    (s.recentDeadLetters.length ? s.recentDeadLetters.map((d) => `<tr><td>${when(d.at)}</td>
    <td><b>${esc(d.reason)}</b></td><td>${esc(d.route)}</td><td class="mono">${esc(d.topic)}</td>
    <td class="mono">${esc(d.detail)}</td></tr>`).join("") : `<tr><td colspan="5" class="mute">none</td></tr>`);
  $("reasons").textContent = Object.entries(s.deadLettersByReason).map(([k, v]) => `${k}: ${v}`).join(" · ");
}
async function refresh() {
  try { render(await getJson("status.json")); }
  catch (e) { $("overall").className = "pill bad"; $("overall").textContent = "unreachable"; }
}
$("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  try {
    const a = await getJson("api/trace?q=" + encodeURIComponent(q));
    $("results").className = "";
    $("results").innerHTML = a.results.length ? `<table id="trace"><tr><th>eventId</th><th>topic</th>
      <th>route</th><th>where</th><th>stages</th></tr>` + a.results.map((r) => `<tr>
      <td class="mono">${esc(r.eventId || "(none)")}</td><td class="mono">${esc(r.topic)}</td>
      <td>${esc(r.route)}</td><td><b class="status">${esc(r.status.replace("_", " "))}</b>
      ${r.reason ? `<div class="err">${esc(r.reason)}</div>` : ""}</td><td class="stages">` +
      Object.entries(r.stages).map(([k, v]) => `<span class="stage ${k}">${k.replace("_", " ")}
      ${when(v).slice(11)}</span>`).join("") + "</td></tr>").join("") + "</table>"
      : `<span class="mute">no recent message matches ${esc(q)} (the trace keeps the last messages only)</span>`;
  } catch (e) { $("results").textContent = String(e); }
});
refresh();
setInterval(refresh, 2000);
const charts = $("charts");
if (charts) {
  setInterval(async () => {
    try {
      const r = await fetch("status/charts", {credentials: "same-origin", cache: "no-store"});
      if (r.ok) charts.innerHTML = await r.text();
    } catch (e) { /* the status line says unreachable; the charts keep their last picture */ }
  }, Math.max(2, Number(charts.dataset.refreshS) || 10) * 1000);
}
</script></body></html>
"""
