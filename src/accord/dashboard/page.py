"""The dashboard's one page: HTML, inline CSS and JS (nothing loaded from elsewhere). It polls
``/api/state`` about once a second with the token of its own URL and draws the curves in SVG.
Every text that came from the federation (site, metric and file names, reasons) is set with
``textContent``, never parsed as markup."""

from __future__ import annotations

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Accord dashboard</title>
<style nonce="__NONCE__">
body { font-family: system-ui, sans-serif; margin: 1.2em 2em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.muted { color: #666; font-size: .9em; }
.badge { display: inline-block; padding: .1em .6em; border-radius: .8em; font-size: .85em; color: #fff; background: #888; }
.badge.running { background: #2a7d2e; } .badge.finished { background: #1f5fa8; } .badge.stopped { background: #b3261e; }
.grid { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
.late { color: #b3261e; font-weight: 600; }
table { border-collapse: collapse; font-size: .9em; }
td, th { padding: .15em .7em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
td:first-child, td:nth-child(2) { white-space: nowrap; }
svg { background: #fff; border: 1px solid #ddd; }
.axis { stroke: #999; } .tick { fill: #666; font-size: 11px; }
.agg-line { fill: none; stroke: #111; stroke-width: 2.5; } .agg-point { fill: #111; }
.site-line { fill: none; stroke-width: 1.2; opacity: .75; }
#legend span.swatch { display: inline-block; width: .9em; height: .9em; margin: 0 .3em 0 .8em; vertical-align: middle; }
#error { color: #b3261e; }
</style>
</head>
<body>
<h1>Accord dashboard <span id="badge" class="badge">connecting</span></h1>
<div class="muted">plan <span id="plan"></span> &middot; read only &middot; updated <span id="updated">never</span></div>
<div id="error"></div>
<h2>Round</h2>
<div class="grid">
  <div>round</div><div id="round">-</div>
  <div>phase</div><div id="phase">-</div>
  <div>open for</div><div id="open">-</div>
  <div>straggler policy</div><div id="policy">-</div>
  <div>reported</div><div id="reported">-</div>
  <div id="owed-label">waiting for</div><div id="owed">-</div>
  <div>left out of the previous round</div><div id="stragglers">-</div>
  <div>update bounds that bit</div><div id="bounds">-</div>
  <div>best score</div><div id="best">-</div>
</div>
<h2>Metrics</h2>
<label>metric <select id="metric"></select></label>
<span class="muted" id="points"></span> <span class="muted" id="metrics-more"></span>
<div><svg id="curve" width="760" height="320" viewBox="0 0 760 320" data-points="0"></svg></div>
<div id="legend" class="muted"></div>
<h2>Events</h2>
<table><thead><tr><th>time</th><th>round</th><th>event</th></tr></thead><tbody id="events"></tbody></table>
<h2>Model files</h2>
<table><thead><tr><th>file</th><th>size</th><th>modified</th></tr></thead><tbody id="models"></tbody></table>
<script nonce="__NONCE__">
"use strict";
const TOKEN = new URLSearchParams(window.location.search).get("token") || "";
if (TOKEN) window.history.replaceState(null, "", window.location.pathname);  // the token leaves the address bar and the history
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
let chosen = null;

function $(id) { return document.getElementById(id); }
function setText(id, text) { $(id).textContent = text; }
function clock(seconds) { return new Date(seconds * 1000).toLocaleTimeString(); }
function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) { const td = document.createElement("td"); td.textContent = cell; tr.appendChild(td); }
  return tr;
}
function names(list, more) { return list.join(", ") + (more ? " and " + more + " more" : ""); }
function fill(id, rows) { $(id).replaceChildren(...rows.map(row)); }
function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}
function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"]; let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return bytes.toFixed(i ? 1 : 0) + " " + units[i];
}

function describeEvent(e) {
  switch (e.kind) {
    case "started": return e.resumed ? "aggregator restarted, resuming" : "aggregator started";
    case "round_opened": return (e.final ? "final validation opened for " : "round opened for ") + e.cohort + " site(s)";
    case "phase_opened": return "phase " + e.phase + " opened for " + e.members + " site(s)";
    case "result_failed": return e.collaborator + " failed its task: " + e.reason;
    case "round_closed": {
      let text = "round closed in " + Number(e.seconds).toFixed(2) + " s";
      if (e.stragglers && e.stragglers.length) text += "; stragglers left out: " + names(e.stragglers, e.stragglers_more);
      if (e.failed && e.failed.length) text += "; failed: " + names(e.failed, e.failed_more);
      if (e.bounds && e.bounds.length) text += "; update bounds: " + names(e.bounds, e.bounds_more);
      return text;
    }
    case "refused":
      if (!e.reason) return "refused " + e.more + " more call(s), held back by the rate limit";
      return "refused a call: " + e.reason + (e.more ? " (and " + e.more + " more refusals)" : "");
    default: return String(e.kind);
  }
}

function showFederation(f) {
  const badge = $("badge");
  if (f.waiting) {
    badge.textContent = "no round saved yet"; badge.className = "badge";
    setText("round", f.waiting);
    return;
  }
  const state = f.finished ? "finished" : (f.running ? "running" : "stopped");
  badge.textContent = state === "stopped" ? "aggregator not running" : state; badge.className = "badge " + state;
  setText("round", f.finished ? "all " + f.rounds_to_train + " rounds ran" :
    (f.final_validation ? "final validation of the last model" : "round " + f.round + " of " + f.rounds_to_train) +
    " (" + (f.round + 1) + "/" + f.total_rounds + ")");
  setText("phase", f.finished ? "-" : f.phase);
  setText("open", f.finished ? "-" : Math.round(f.open_seconds) + " s");
  const p = f.policy;
  setText("policy", p.policy + " (at least " + p.min_reports + " report(s)" +
    (p.policy === "cutoff_time" ? ", cut-off " + p.cutoff_seconds + " s" : "") +
    (p.round_deadline_seconds !== null ? ", deadline " + p.round_deadline_seconds + " s" : "") + ")");
  setText("reported", f.finished ? "-" : (f.reported.length ? names(f.reported, f.reported_more) : "nobody yet"));
  const owed = Object.keys(f.outstanding).sort().map(name => name + " (" + f.outstanding[name].join(", ") + ")");
  setText("owed-label", f.late ? "late" : "waiting for");
  $("owed").className = f.late ? "late" : "";
  setText("owed", f.finished ? "-" : (owed.length ? names(owed, f.outstanding_more) : "nobody"));
  setText("stragglers", f.previous_stragglers.length ? names(f.previous_stragglers, f.previous_stragglers_more) : "none");
  setText("bounds", f.previous_bounds.length ? names(f.previous_bounds, f.previous_bounds_more) : "none");
  setText("best", f.best_score === null || f.best_score === undefined ? "-" : Number(f.best_score).toFixed(4));
}

function chooseMetric(keys, best) {
  const select = $("metric");
  const have = Array.from(select.options).map(o => o.value);
  if (have.join("\\n") !== keys.join("\\n")) {
    select.replaceChildren(...keys.map(k => { const o = document.createElement("option"); o.value = k; o.textContent = k; return o; }));
  }
  if (chosen === null || !keys.includes(chosen)) chosen = keys.includes(best) ? best : (keys[0] || null);
  if (chosen !== null) select.value = chosen;
}

function drawCurves(curves, best) {
  const keys = Object.keys(curves.aggregated).sort();
  chooseMetric(keys, best);
  setText("metrics-more", curves.left_out ? "(" + curves.left_out + " more metric(s) not listed)" : "");
  const svg = $("curve");
  const aggregated = chosen === null ? [] : curves.aggregated[chosen];
  const sites = chosen !== null && curves.sites[chosen] ? curves.sites[chosen] : {curves: {}, total: 0};
  const all = aggregated.slice();
  for (const points of Object.values(sites.curves)) all.push(...points);
  const W = 760, H = 320, L = 60, R = 20, T = 15, B = 35;
  const children = [svgEl("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}),
                    svgEl("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"})];
  if (all.length) {
    let x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
    let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const X = r => L + (r - x0) / (x1 - x0) * (W - L - R), Y = v => H - B - (v - y0) / (y1 - y0) * (H - T - B);
    for (const v of [y0, (y0 + y1) / 2, y1]) {
      const t = svgEl("text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end", class: "tick"}); t.textContent = v.toPrecision(3); children.push(t);
    }
    for (const r of new Set(all.map(p => p[0]))) {
      const t = svgEl("text", {x: X(r), y: H - B + 16, "text-anchor": "middle", class: "tick"}); t.textContent = String(r); children.push(t);
    }
    const xl = svgEl("text", {x: (W + L) / 2, y: H - 4, "text-anchor": "middle", class: "tick"}); xl.textContent = "round"; children.push(xl);
    const legend = [];
    Object.keys(sites.curves).sort().forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      const line = svgEl("polyline", {class: "site-line", stroke: color, points: sites.curves[name].map(p => X(p[0]) + "," + Y(p[1])).join(" ")});
      const title = document.createElementNS(SVG, "title"); title.textContent = name; line.appendChild(title);
      children.push(line);
      const swatch = document.createElement("span"); swatch.className = "swatch"; swatch.style.background = color;
      const label = document.createElement("span"); label.textContent = name;
      legend.push(swatch, label);
    });
    if (aggregated.length) {
      children.push(svgEl("polyline", {class: "agg-line", points: aggregated.map(p => X(p[0]) + "," + Y(p[1])).join(" ")}));
      for (const p of aggregated) {
        const dot = svgEl("circle", {class: "agg-point", cx: X(p[0]), cy: Y(p[1]), r: 4});
        const title = document.createElementNS(SVG, "title"); title.textContent = "round " + p[0] + ": " + p[1]; dot.appendChild(title);
        children.push(dot);
      }
      const swatch = document.createElement("span"); swatch.className = "swatch"; swatch.style.background = "#111";
      const label = document.createElement("span"); label.textContent = "aggregated";
      legend.unshift(swatch, label);
    }
    if (sites.total > Object.keys(sites.curves).length) {
      const more = document.createElement("span"); more.textContent = "  (" + Object.keys(sites.curves).length + " of " + sites.total + " sites drawn)";
      legend.push(more);
    }
    $("legend").replaceChildren(...legend);
  }
  svg.replaceChildren(...children);
  svg.setAttribute("data-points", String(aggregated.length));
  setText("points", chosen === null ? "no round has closed yet" : aggregated.length + " aggregated point(s)");
}

function show(state) {
  const other = state.federation.matches_plan === false ? " (the saved state is of ANOTHER plan than this workspace's)" : "";
  setText("plan", state.plan_hash.slice(0, 16) + "..." + other);
  setText("updated", clock(state.now));
  showFederation(state.federation);
  drawCurves(state.curves, state.best_metric);
  fill("events", state.events.slice().reverse().map(e => [clock(e.at), e.round === undefined ? "" : String(e.round), describeEvent(e)]));
  fill("models", state.models.map(m => [m.name, size(m.bytes), new Date(m.modified * 1000).toLocaleString()]));
}

async function poll() {
  try {
    const answer = await fetch("api/state", {headers: {"Authorization": "Bearer " + TOKEN}, cache: "no-store"});
    if (!answer.ok) {
      const refused = answer.status === 401 || answer.status === 403;
      throw new Error("the dashboard answered " + answer.status + (refused ? ": open the URL fx dashboard printed, with its token" : ""));
    }
    show(await answer.json());
    setText("error", "");
  } catch (err) {
    setText("error", String(err.message || err));
  }
  window.setTimeout(poll, 1000);
}
$("metric").addEventListener("change", e => { chosen = e.target.value; });
poll();
</script>
</body>
</html>
"""


def render_page(nonce: str) -> str:
    """The page, its inline style and script allowed by ``nonce`` (the response's CSP)."""
    return _PAGE.replace("__NONCE__", nonce)
