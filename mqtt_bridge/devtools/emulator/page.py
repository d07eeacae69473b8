"""The emulator's web page: the stored events as the Vision Events UI shows them, filterable, with labelled boxes.

Owns: one self-contained HTML document (no external resources; plants are often offline) with its stylesheet; the
script is `page_script.PAGE_SCRIPT`. The page polls `/_emulator/events` every 2 s and offers filters (use case,
device, stream, event type, time), the box counts per class of the events shown, each image with its boxes labelled
with class and confidence, and a detail view with the event's JSON.
"""

from __future__ import annotations

from .page_script import PAGE_SCRIPT

__all__ = ["PAGE_HTML"]

_STYLE = """
*{box-sizing:border-box} body{font:14px system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111}
header{background:#1f1b4d;color:#fff;padding:.7rem 1rem} header h1{font-size:1.15rem;margin:0}
.meta{color:#555;font-size:12px;font-family:ui-monospace,monospace;overflow-wrap:anywhere} header .meta{color:#c9c6f0}
#filters{display:flex;flex-wrap:wrap;gap:.5rem;padding:.6rem 1rem;background:#fff;border-bottom:1px solid #ddd}
#filters label{display:flex;flex-direction:column;font-size:11px;color:#555;gap:2px}
#filters select{font:inherit;padding:2px 4px;min-width:9rem}
main{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,26rem);gap:1rem;padding:1rem}
@media (max-width:900px){main{grid-template-columns:1fr}}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem;margin-bottom:1rem}
.panel h2{font-size:.95rem;margin:0 0 .4rem}
#classes table{border-collapse:collapse;width:100%} #classes td,#classes th{padding:2px 6px;text-align:left}
#classes td.n{text-align:right;font-variant-numeric:tabular-nums}
.sw{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.3em;vertical-align:-1px}
#events{display:grid;grid-template-columns:repeat(auto-fill,minmax(22rem,1fr));gap:.6rem;align-items:start}
.ev{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem;cursor:pointer;min-width:0}
.ev:hover{border-color:#7c6ff0} .ev.sel{border-color:#5a4bd6;box-shadow:0 0 0 2px #c9c3ff}
.ev .type{display:inline-block;background:#ece9ff;color:#3b2fa8;border-radius:4px;padding:0 6px;font-weight:600}
.warn{color:#b00020} .chips{margin-top:.3rem} .chip{display:inline-block;border-radius:10px;padding:0 7px;
margin:2px 4px 0 0;font-size:12px;color:#fff}
.imgs{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:.4rem}
.img{position:relative;display:inline-block;max-width:100%} .img img{display:block;width:100%}
.ev .img{width:100%;max-width:480px} .img svg{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible}
.img rect.box{fill:none;stroke-width:2;vector-effect:non-scaling-stroke}
.img text{fill:#fff;font-family:system-ui,sans-serif;font-weight:600}
#detail pre{background:#111827;color:#e5e7eb;padding:.6rem;border-radius:4px;overflow:auto;max-height:32rem;
font-size:12px;white-space:pre-wrap;word-break:break-all}
#detail .img{width:100%} button{font:inherit;cursor:pointer}
"""

PAGE_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Vision Events emulator</title><style>{_STYLE}</style></head><body>
<header><h1>Vision Events emulator</h1><div id="status" class="meta">loading…</div></header>
<form id="filters" onsubmit="return false">
 <label>Use case<select id="f-useCaseId"></select></label>
 <label>Device<select id="f-deviceId"></select></label>
 <label>Stream<select id="f-streamId"></select></label>
 <label>Event type<select id="f-eventType"></select></label>
 <label>Time<select id="f-since">
  <option value="">any time</option><option value="60">last minute</option><option value="300">last 5 minutes
  </option><option value="900">last 15 minutes</option><option value="3600">last hour</option>
  <option value="86400">last 24 hours</option></select></label>
 <label>&nbsp;<button type="button" id="f-clear">Clear filters</button></label>
</form>
<main><section><div id="events"></div></section>
<aside><div class="panel" id="classes"><h2>Boxes per class</h2><div id="class-counts">none</div></div>
<div class="panel" id="detail"><h2>Event detail</h2><div id="detail-body" class="meta">select an event</div></div>
</aside></main>
<script>{PAGE_SCRIPT}</script></body></html>
"""
