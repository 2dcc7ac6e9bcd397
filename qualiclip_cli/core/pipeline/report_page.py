"""The review page's HTML, CSS and script: one self-contained file (no CDN, no server), data in a JSON block.

Every text that comes from a file (names, errors) reaches the page through that JSON block and is put into the
document with ``textContent`` only, never parsed as HTML. `PAGE` has two slots: ``__TITLE__`` (HTML-escaped by
the writer) and ``__DATA__`` (JSON with ``<``, ``>`` and ``&`` written as ``\\u003c``... so that nothing in it can
end the script element).
"""

#: Marks a page as ours: `report.write_page` replaces an existing file only when it carries this line.
GENERATOR = '<meta name="generator" content="qualiclip report">'

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
""" + GENERATOR + """
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root { --bg: #f4f4f2; --card: #fff; --ink: #222; --muted: #777; --bad: #c62828; --good: #2e7d32; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.35 system-ui, sans-serif; background: var(--bg); color: var(--ink); }
header { position: sticky; top: 0; z-index: 5; background: #fff; border-bottom: 1px solid #ddd; padding: 8px 16px;
         display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: center; }
header h1 { font-size: 16px; margin: 0; }
header label { white-space: nowrap; }
#threshold { width: 220px; vertical-align: middle; }
#cull-line { flex-basis: 100%; display: flex; gap: 10px; align-items: center; }
#cull-command { background: #f0f0f0; padding: 2px 6px; border-radius: 3px; user-select: all; overflow-wrap: anywhere; }
main { padding: 12px 16px; }
#grid { display: flex; flex-wrap: wrap; gap: 10px; }
.card { width: 212px; background: var(--card); border: 2px solid transparent; border-radius: 6px; padding: 6px;
        content-visibility: auto; contain-intrinsic-size: 212px 290px; position: relative; }
.card.culled { border-color: var(--bad); background: #fdecec; }
.card.culled .thumb img:not(.heat) { opacity: .55; }
.thumb { width: 196px; height: 147px; position: relative; background: #e6e6e6; display: flex;
         align-items: center; justify-content: center; overflow: hidden; }
.thumb img { max-width: 196px; max-height: 147px; }
.thumb img.heat { position: absolute; inset: 0; margin: auto; }
.name { margin-top: 4px; font-size: 12px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.score { font-weight: 600; }
.bars { display: grid; grid-template-columns: 64px 1fr; gap: 1px 4px; font-size: 10px; color: var(--muted);
        margin-top: 3px; }
.bar { height: 7px; margin-top: 2px; background: #e3e3e3; }
.bar > i { display: block; height: 100%; background: #5c7cfa; }
.status { font-size: 11px; color: var(--muted); }
.best-mark { position: absolute; top: 10px; left: 10px; background: #ffd54f; padding: 0 5px; border-radius: 3px;
             font-size: 11px; font-weight: 600; z-index: 2; }
.group { display: flex; flex-wrap: wrap; gap: 6px; padding: 6px; border: 1px dashed #aaa; border-radius: 8px;
         background: #ebebe7; }
.group > .group-label { flex-basis: 100%; font-size: 12px; color: var(--muted); }
button.heat-toggle { font-size: 11px; margin-top: 3px; }
#errors li { margin: 2px 0; }
#errors .reason { color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <span id="summary"></span>
  <label>Sort <select id="sort">
    <option value="score">score, worst first</option>
    <option value="-score">score, best first</option>
    <option value="name">name</option>
    <option value="time">capture time</option>
    <option value="group" id="sort-group" hidden>group (bursts)</option>
  </select></label>
  <label>Cull below <input id="threshold" type="range" min="0" max="1" step="0.001" value="0">
    <output id="threshold-value">0.000</output></label>
  <span><b id="cull-count">0</b> would be culled</span>
  <div id="cull-line"><span>Command:</span> <code id="cull-command"></code>
    <button id="copy" type="button">copy</button></div>
</header>
<main>
  <div id="grid"></div>
  <section id="errors-section" hidden>
    <h2>Could not be scored (<span id="error-count"></span>)</h2>
    <ul id="errors"></ul>
  </section>
</main>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const PAIRS = DATA.pairs;
const photos = DATA.photos.filter(p => p.status === "ok");
const failed = DATA.photos.filter(p => p.status !== "ok");
const hasGroups = photos.some(p => p.group !== null && p.group !== undefined);
const grid = document.getElementById("grid");
const cards = new Map();

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function makeCard(p) {
  const card = el("div", "card");
  card.dataset.index = p.index;
  const thumb = el("div", "thumb");
  if (p.thumb) {
    const img = el("img");
    img.loading = "lazy"; img.decoding = "async"; img.alt = p.name;
    img.width = p.thumb_width; img.height = p.thumb_height;
    img.src = p.thumb;
    thumb.appendChild(img);
  } else {
    thumb.appendChild(el("span", "status", "no thumbnail"));
  }
  card.appendChild(thumb);
  if (p.best) card.appendChild(el("span", "best-mark", "\\u2605 best"));
  const name = el("div", "name", p.name); name.title = p.where; card.appendChild(name);
  card.appendChild(el("div", "score", p.score.toFixed(3)));
  const bars = el("div", "bars");
  PAIRS.forEach((pair, i) => {
    bars.appendChild(el("span", "", pair));
    const bar = el("div", "bar"); const fill = el("i");
    fill.style.width = (100 * p.pairs[i]).toFixed(1) + "%";
    bar.title = pair + " " + p.pairs[i].toFixed(3);
    bar.appendChild(fill); bars.appendChild(bar);
  });
  card.appendChild(bars);
  card.appendChild(el("div", "status", p.cached ? "ok (from cache)" : "ok"));
  if (p.heat) {
    const button = el("button", "heat-toggle", "heat map"); button.type = "button";
    button.addEventListener("click", () => toggleHeat(card, p));
    card.appendChild(button);
  }
  return card;
}

function toggleHeat(card, p) {
  const thumb = card.querySelector(".thumb");
  let heat = thumb.querySelector("img.heat");
  if (heat) { heat.hidden = !heat.hidden; return; }
  heat = el("img", "heat"); heat.alt = "heat map of " + p.name;
  heat.width = p.thumb_width; heat.height = p.thumb_height;
  heat.src = p.heat;  // loaded only now, on demand
  thumb.appendChild(heat);
}

function compareName(a, b) { return a.name < b.name ? -1 : a.name > b.name ? 1 : 0; }
const ORDERS = {
  "score": (a, b) => a.score - b.score || compareName(a, b),
  "-score": (a, b) => b.score - a.score || compareName(a, b),
  "name": compareName,
  "time": (a, b) => (a.taken === b.taken ? 0 : a.taken === null ? 1 : b.taken === null ? -1
                     : a.taken < b.taken ? -1 : 1) || compareName(a, b),
};

function render(order) {
  const frag = document.createDocumentFragment();
  if (order === "group") {
    const groups = new Map();
    for (const p of photos) {
      const key = p.group === null || p.group === undefined ? "\\u0000" + p.index : "g" + p.group;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(p);
    }
    const lists = [...groups.values()].map(list => list.sort(
      (a, b) => (b.best === true) - (a.best === true) || b.score - a.score || compareName(a, b)));
    lists.sort((a, b) => a[0].score - b[0].score || compareName(a[0], b[0]));
    for (const list of lists) {
      if (list.length === 1 && (list[0].group === null || list[0].group === undefined)) {
        frag.appendChild(cards.get(list[0].index)); continue;
      }
      const box = el("div", "group"); box.dataset.group = String(list[0].group);
      box.appendChild(el("div", "group-label", "group " + list[0].group + " \\u00b7 " + list.length + " photos"));
      for (const p of list) box.appendChild(cards.get(p.index));
      frag.appendChild(box);
    }
  } else {
    for (const p of [...photos].sort(ORDERS[order])) frag.appendChild(cards.get(p.index));
  }
  grid.replaceChildren(frag);
}

const slider = document.getElementById("threshold");
function thresholdText() { return Number(slider.value).toFixed(3); }
function updateThreshold() {
  const t = Number(thresholdText());
  let culled = 0;
  for (const p of photos) {
    const out = p.score < t;  // as cull --below: strictly below
    cards.get(p.index).classList.toggle("culled", out);
    culled += out;
  }
  document.getElementById("threshold-value").textContent = thresholdText();
  document.getElementById("cull-count").textContent = String(culled);
  document.getElementById("cull-command").textContent = DATA.cull_command + " --below " + thresholdText();
}

document.getElementById("title").textContent = DATA.title;
document.getElementById("summary").textContent =
  photos.length + " photos" + (failed.length ? ", " + failed.length + " could not be scored" : "");
for (const p of photos) cards.set(p.index, makeCard(p));
if (hasGroups) document.getElementById("sort-group").hidden = false;
const sortSelect = document.getElementById("sort");
sortSelect.addEventListener("change", () => render(sortSelect.value));
slider.addEventListener("input", updateThreshold);
document.getElementById("copy").addEventListener("click", () => {
  const text = document.getElementById("cull-command").textContent;
  if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
});
if (failed.length) {
  document.getElementById("errors-section").hidden = false;
  document.getElementById("error-count").textContent = String(failed.length);
  const list = document.getElementById("errors");
  for (const p of failed) {
    const item = el("li"); item.appendChild(el("span", "path", p.where));
    item.appendChild(document.createTextNode(": "));
    item.appendChild(el("span", "reason", p.error || "")); list.appendChild(item);
  }
}
render("score");
updateThreshold();
document.body.dataset.ready = "1";
</script>
</body>
</html>
"""
