"""The emulator's web page: lists stored events newest first and draws each event's boxes on its image.

Owns: one self-contained HTML document (no external resources) that polls `/_emulator/events` every 2 s.
"""

from __future__ import annotations

__all__ = ["PAGE_HTML"]

PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vision Events emulator</title>
<style>
body{font:14px system-ui,sans-serif;margin:1rem;background:#f5f5f5} .warn{color:#b00020}
.ev{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem;margin:.6rem 0}
.meta{color:#555;font-size:12px;font-family:ui-monospace,monospace} .img img{display:block;max-width:100%}
.img{position:relative;display:inline-block;max-width:640px;margin-top:.4rem}
.img svg{position:absolute;left:0;top:0;width:100%;height:100%} text{fill:#e0f;font-family:sans-serif}
rect{fill:none;stroke:#e0f;stroke-width:2;vector-effect:non-scaling-stroke}
</style></head><body>
<h1>Vision Events emulator</h1><p id="status" class="meta">loading…</p><div id="events"></div>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
let last = "";
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function drawBoxes(img, svg, boxes) {  // x, y are box centres in pixels of the image
  const h = img.naturalHeight;
  svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${h}`);
  for (const b of boxes) {
    const r = document.createElementNS(NS, "rect"), t = document.createElementNS(NS, "text");
    r.setAttribute("x", b.x - b.width / 2); r.setAttribute("y", b.y - b.height / 2);
    r.setAttribute("width", b.width); r.setAttribute("height", b.height);
    t.setAttribute("x", b.x - b.width / 2); t.setAttribute("y", Math.max(b.y - b.height / 2 - 4, h / 30));
    t.setAttribute("font-size", Math.max(h / 30, 8));
    t.textContent = `${b.class ?? ""} ${b.confidence != null ? Number(b.confidence).toFixed(2) : ""}`;
    svg.append(r, t);
  }
}
function render(data) {
  const list = document.getElementById("events"), events = data.events.slice().reverse();
  list.replaceChildren();
  document.getElementById("status").textContent = `${events.length} event(s), newest first`;
  for (const ev of events) {
    const card = el("div", "ev");
    card.append(el("b", "", ev.eventType), el("div", "meta",
      `${ev.eventId} · useCase ${ev.useCaseId} · device ${ev.deviceId ?? "-"}` +
      ` · stream ${ev.streamId ?? "-"} · ${ev.timestamp} · writes ${data.writes[ev.eventId] ?? 0}`));
    for (const key of ["eventData", "customMetadata"]) {
      if (ev[key]) card.append(el("div", "meta", key + " " + JSON.stringify(ev[key])));
    }
    for (const w of ev.warnings ?? []) card.append(el("div", "warn", "warning: " + w));
    for (const im of ev.images ?? []) {
      if (!im.url) continue;
      const box = el("div", "img"), img = el("img"), svg = document.createElementNS(NS, "svg");
      svg.setAttribute("preserveAspectRatio", "none");
      img.onload = () => drawBoxes(img, svg, im.objectDetections ?? []);
      img.alt = im.sourceId;
      img.src = new URL(im.url).pathname;  // same origin as this page
      box.append(img, svg);
      card.append(el("div"), box);
    }
    list.append(card);
  }
}
async function refresh() {
  try {
    const text = await (await fetch("/_emulator/events")).text();
    if (text !== last) { last = text; render(JSON.parse(text)); }
  } catch (e) {
    document.getElementById("status").textContent = "emulator unreachable: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script></body></html>
"""
