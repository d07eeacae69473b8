"""The emulator page's script: polls the stored events, filters them, counts boxes per class, draws labelled boxes.

Owns: the JavaScript embedded by `page.PAGE_HTML` (no external resources). Boxes are `objectDetections` with x, y
as centres in pixels of the image; each gets a colour per class and a label "class 0.87".
"""

from __future__ import annotations

__all__ = ["PAGE_SCRIPT"]

PAGE_SCRIPT = r"""
"use strict";
const NS = "http://www.w3.org/2000/svg", SHOWN = 60;
const FIELDS = ["useCaseId", "deviceId", "streamId", "eventType"];
let last = "", data = {events: [], writes: {}}, selected = null;
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
const PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#e377c2", "#8c564b", "#17becf", "#bcbd22",
                 "#ff7f0e", "#7f7f7f"], COLOURS = new Map();
function colour(name) {  // a distinct colour per class, in the order the classes first appear
  const key = String(name);
  if (!COLOURS.has(key)) COLOURS.set(key, PALETTE[COLOURS.size % PALETTE.length]);
  return COLOURS.get(key);
}
function label(b) {
  return `${b.class ?? "?"}${b.confidence != null ? " " + Number(b.confidence).toFixed(2) : ""}`;
}
function drawBoxes(img, svg, boxes) {
  const w = img.naturalWidth, h = img.naturalHeight, size = Math.max(h / 22, 9);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.replaceChildren();
  for (const b of boxes) {
    const x = b.x - b.width / 2, y = b.y - b.height / 2, text = label(b), c = colour(b.class);
    const g = document.createElementNS(NS, "g"), r = document.createElementNS(NS, "rect");
    const bg = document.createElementNS(NS, "rect"), t = document.createElementNS(NS, "text");
    g.setAttribute("class", "det");
    r.setAttribute("class", "box");
    for (const [k, v] of [["x", x], ["y", y], ["width", b.width], ["height", b.height], ["stroke", c]]) {
      r.setAttribute(k, v);
    }
    const ty = y - size * 1.25 < 0 ? y + size * 1.25 : y;  // inside the box when there is no room above
    bg.setAttribute("x", x); bg.setAttribute("y", ty - size * 1.2); bg.setAttribute("fill", c);
    bg.setAttribute("height", size * 1.25); bg.setAttribute("width", text.length * size * 0.58 + 4);
    t.setAttribute("x", x + 2); t.setAttribute("y", ty - size * 0.3); t.setAttribute("font-size", size);
    t.textContent = text;
    g.append(r, bg, t);
    svg.append(g);
  }
}
function imageView(im) {
  const box = el("div", "img"), img = el("img"), svg = document.createElementNS(NS, "svg");
  svg.setAttribute("preserveAspectRatio", "none");
  img.onload = () => drawBoxes(img, svg, im.objectDetections ?? []);
  img.alt = im.sourceId ?? "image";
  img.src = new URL(im.url).pathname;  // same origin as this page
  box.append(img, svg);
  return box;
}
function chips(boxes) {
  const div = el("div", "chips");
  for (const b of boxes) {
    const chip = el("span", "chip", label(b));
    chip.style.background = colour(b.class);
    div.append(chip);
  }
  return div;
}
function boxesOf(ev) {
  return (ev.images ?? []).flatMap(im => im.objectDetections ?? []);
}
function filters() {
  const f = {};
  for (const k of FIELDS) f[k] = document.getElementById("f-" + k).value;
  f.since = document.getElementById("f-since").value;
  return f;
}
function matches(ev, f) {
  for (const k of FIELDS) if (f[k] && String(ev[k] ?? "") !== f[k]) return false;
  return !f.since || Date.parse(ev.timestamp) >= Date.now() - Number(f.since) * 1000;
}
function fillOptions(events) {
  for (const k of FIELDS) {
    const select = document.getElementById("f-" + k), keep = select.value;
    const values = [...new Set(events.map(ev => ev[k]).filter(v => v != null).map(String))].sort();
    if (keep && !values.includes(keep)) values.push(keep);
    const want = JSON.stringify(values);
    if (select.dataset.values === want) continue;
    select.dataset.values = want;
    select.replaceChildren(new Option("all", ""), ...values.map(v => new Option(v, v)));
    select.value = keep;
  }
}
function renderCounts(events) {
  const boxes = new Map(), inEvents = new Map();
  for (const ev of events) {
    const seen = new Set();
    for (const b of boxesOf(ev)) {
      const c = String(b.class ?? "?");
      boxes.set(c, (boxes.get(c) ?? 0) + 1);
      seen.add(c);
    }
    for (const c of seen) inEvents.set(c, (inEvents.get(c) ?? 0) + 1);
  }
  const target = document.getElementById("class-counts");
  if (!boxes.size) { target.replaceChildren("no boxes in the events shown"); return; }
  const table = el("table"), head = el("tr");
  head.append(el("th", "", "class"), el("th", "", "boxes"), el("th", "", "events"));
  table.append(head);
  for (const [c, n] of [...boxes].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))) {
    const tr = el("tr"), name = el("td"), sw = el("span", "sw");
    tr.dataset.class = c;
    sw.style.background = colour(c);
    name.append(sw, c);
    tr.append(name, el("td", "n", String(n)), el("td", "n", String(inEvents.get(c))));
    table.append(tr);
  }
  target.replaceChildren(table);
}
function renderDetail() {
  const body = document.getElementById("detail-body");
  const ev = data.events.find(e => e.eventId === selected);
  if (!ev) { body.className = "meta"; body.replaceChildren("select an event"); return; }
  body.className = "";
  const close = el("button", "", "close");
  close.type = "button";
  close.onclick = () => { selected = null; render(); };
  const pre = el("pre", "", JSON.stringify(ev, null, 2));
  pre.id = "detail-json";
  const parts = [el("div", "meta", `${ev.eventId} · writes ${data.writes[ev.eventId] ?? 0} `), close];
  for (const im of ev.images ?? []) if (im.url) parts.push(imageView(im));
  body.replaceChildren(...parts, pre);
}
function card(ev) {
  const div = el("div", "ev" + (ev.eventId === selected ? " sel" : ""));
  div.dataset.eventId = ev.eventId;
  div.onclick = () => { selected = ev.eventId; render(); };
  const when = new Date(Date.parse(ev.timestamp));
  div.append(el("span", "type", ev.eventType), el("span", "meta", "  " +
    (isNaN(when) ? ev.timestamp : when.toLocaleString())), el("div", "meta",
    `${ev.eventId} · useCase ${ev.useCaseId} · device ${ev.deviceId ?? "-"} · stream ${ev.streamId ?? "-"}` +
    ` · writes ${data.writes[ev.eventId] ?? 0}`));
  if (ev.eventData) div.append(el("div", "meta", "eventData " + JSON.stringify(ev.eventData)));
  for (const w of ev.warnings ?? []) div.append(el("div", "warn", "warning: " + w));
  const boxes = boxesOf(ev);
  if (boxes.length) div.append(chips(boxes));
  const imgs = el("div", "imgs");
  for (const im of ev.images ?? []) if (im.url) imgs.append(imageView(im));
  if (imgs.childElementCount) div.append(imgs);
  return div;
}
function render() {
  const all = data.events.slice().reverse(), f = filters();  // newest first
  fillOptions(all);
  const shown = all.filter(ev => matches(ev, f));
  document.getElementById("status").textContent = `${shown.length} of ${all.length} event(s)` +
    (shown.length > SHOWN ? `, the newest ${SHOWN} listed` : "") + ", newest first";
  document.getElementById("events").replaceChildren(...shown.slice(0, SHOWN).map(card));
  renderCounts(shown);
  renderDetail();
}
async function refresh() {
  try {
    const text = await (await fetch("/_emulator/events")).text();
    if (text !== last) { last = text; data = JSON.parse(text); render(); }
  } catch (e) {
    document.getElementById("status").textContent = "emulator unreachable: " + e;
  }
}
for (const id of [...FIELDS, "since"]) document.getElementById("f-" + id).onchange = render;
document.getElementById("f-clear").onclick = () => {
  for (const id of [...FIELDS, "since"]) document.getElementById("f-" + id).value = "";
  render();
};
refresh();
setInterval(refresh, 2000);
"""
