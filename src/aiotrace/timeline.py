"""A self-contained HTML timeline: one lane per task, its waits and holds, who blocked whom.

``aiotrace run --html out.html``, ``aiotrace report trace.json --html out.html``
and ``pytest --aiotrace --aiotrace-html DIR`` write one HTML file that opens
from disk in any modern browser: the data is embedded as JSON, the viewer is
inline JavaScript drawing on a canvas (so 100,000 spans pan smoothly), and a
Content-Security-Policy forbids every request.

Safety: every string from the traced program (task, primitive and file names)
reaches the page only as JSON data, with ``<``, ``>``, ``&`` and the line
separators escaped, and is shown through ``textContent`` or drawn on the
canvas: never parsed as HTML.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Final

from aiotrace import semconv
from aiotrace._sites import short_path
from aiotrace.report import raised

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from aiotrace._assemble import SpanDraft

_WAITS: Final = semconv.WAIT_SPANS | {semconv.SPAN_FUTURE_WAIT}
_HOLDS: Final = semconv.HOLD_SPANS
_GROUPS: Final = frozenset(
    {semconv.SPAN_RUN, semconv.SPAN_PROCESS, semconv.SPAN_TEST, semconv.SPAN_TEST_WORKER}
)
_DETAIL_KEYS: Final = (
    semconv.ATTR_PRIMITIVE_NAME,
    semconv.ATTR_TASK_NAME,
    semconv.ATTR_OUTCOME,
    semconv.ATTR_WAITERS_AHEAD,
    semconv.ATTR_WAITERS_DURING,
    semconv.ATTR_BLOCKER_TASK,
    semconv.ATTR_BLOCKER_SITE,
    semconv.ATTR_WAKER_TASK,
    semconv.ATTR_WAKER_SITE,
    semconv.ATTR_WAKER_VIA_SITE,
    semconv.ATTR_VIA_SITE,
    semconv.ATTR_SEMAPHORE_VALUE,
    semconv.ATTR_SEMAPHORE_CAPACITY,
    semconv.ATTR_TASK_COROUTINE,
    semconv.ATTR_TEST_CASE_NAME,
    semconv.ATTR_FINDING_SUMMARY,
)

# Bar kinds (the viewer's legend and colours follow these numbers).
TASK: Final = 0
WAIT: Final = 1
HOLD: Final = 2
FUTURE: Final = 3
BLOCKED: Final = 4
OTHER: Final = 5


class TimelineData:
    """Lanes and bars, from drafts: what the viewer draws, as plain lists."""

    def __init__(self, drafts: Sequence[SpanDraft], title: str = "aiotrace") -> None:
        self.title = title
        self._strings: dict[str, int] = {}
        self.strings: list[str] = []
        by_id = {d.span_id: d for d in drafts}
        self.start = min((d.start for d in drafts), default=0)
        self.end = max((d.end for d in drafts), default=0)
        lane_of: dict[int, int] = {}  # span id of a task or group -> lane index
        self.lanes: list[list[Any]] = []  # [label, parent lane or -1, depth]
        for draft in sorted(drafts, key=lambda d: d.start):
            if draft.name == semconv.SPAN_TASK or draft.name in _GROUPS:
                lane_of[draft.span_id] = -1  # placed below, parents first
        ordered = sorted((by_id[i] for i in lane_of), key=lambda d: d.start)
        for draft in ordered:
            self._lane(draft, by_id, lane_of)
        self.bars: list[list[Any]] = []  # [lane, start, end, kind, name, span id, links, details]
        self.findings: list[list[Any]] = []
        for draft in drafts:
            self._bar(draft, by_id, lane_of)

    def _s(self, text: str) -> int:
        index = self._strings.get(text)
        if index is None:
            index = self._strings[text] = len(self.strings)
            self.strings.append(text)
        return index

    def _owner(self, draft: SpanDraft, by_id: dict[int, SpanDraft], lane_of: dict[int, int]) -> int:
        """The lane of the nearest task (or run, process, test) above ``draft``."""
        parent = by_id.get(draft.parent_id)
        while parent is not None:
            lane = lane_of.get(parent.span_id)
            if lane is not None and lane >= 0:
                return lane
            parent = by_id.get(parent.parent_id)
        return -1

    def _lane(self, draft: SpanDraft, by_id: dict[int, SpanDraft], lane_of: dict[int, int]) -> int:
        if lane_of.get(draft.span_id, -1) >= 0:
            return lane_of[draft.span_id]
        parent_lane = -1
        parent = by_id.get(draft.parent_id)
        while parent is not None:
            if parent.span_id in lane_of:
                parent_lane = self._lane(parent, by_id, lane_of)
                break
            parent = by_id.get(parent.parent_id)
        attrs = draft.attributes
        if draft.name == semconv.SPAN_TASK:
            label = str(attrs.get(semconv.ATTR_TASK_NAME, "task"))
            coroutine = attrs.get(semconv.ATTR_TASK_COROUTINE)
            if coroutine and coroutine != label:
                label += f"  {coroutine}"
        elif draft.name == semconv.SPAN_TEST:
            label = str(attrs.get(semconv.ATTR_TEST_CASE_NAME, "test"))
        elif draft.name == semconv.SPAN_TEST_WORKER:
            label = f"worker {attrs.get(semconv.ATTR_XDIST_WORKER, '')}"
        else:
            label = draft.name + (
                f" {attrs.get(semconv.ATTR_PROGRAM)}" if semconv.ATTR_PROGRAM in attrs else ""
            )
            if semconv.ATTR_PID in attrs:
                label += f" (pid {attrs[semconv.ATTR_PID]})"
        depth = self.lanes[parent_lane][2] + 1 if parent_lane >= 0 else 0
        index = len(self.lanes)
        self.lanes.append([self._s(label), parent_lane, depth])
        lane_of[draft.span_id] = index
        return index

    def _bar(self, draft: SpanDraft, by_id: dict[int, SpanDraft], lane_of: dict[int, int]) -> None:
        name = draft.name
        attrs = draft.attributes
        if name == semconv.SPAN_FINDING:
            self.findings.append(
                [
                    self._s(str(attrs.get(semconv.ATTR_FINDING_KIND, "?"))),
                    self._s(str(attrs.get(semconv.ATTR_FINDING_SUMMARY, ""))),
                    self._s(str(attrs.get(semconv.ATTR_FINDING_DETAIL, ""))),
                    draft.start - self.start,
                    [_id(link[1]) for link in draft.links],
                ]
            )
            return
        lane = lane_of.get(draft.span_id, -1)
        if name == semconv.SPAN_TASK or name in _GROUPS:
            kind = TASK
        else:
            lane = self._owner(draft, by_id, lane_of)
            if name in _WAITS:
                kind = FUTURE if name == semconv.SPAN_FUTURE_WAIT else WAIT
            elif name in _HOLDS:
                kind = HOLD
            elif name == semconv.SPAN_LOOP_BLOCKED:
                kind = BLOCKED
            else:
                kind = OTHER
        if lane < 0:
            return
        label = str(attrs.get(semconv.ATTR_PRIMITIVE_NAME, name))
        details = [[self._s(key), self._s(str(attrs[key]))] for key in _DETAIL_KEYS if key in attrs]
        path = attrs.get(semconv.ATTR_CODE_FILE_PATH)
        line = attrs.get(semconv.ATTR_CODE_LINE_NUMBER)
        if path and line:
            details.append([self._s("at"), self._s(f"{short_path(str(path))}:{line}")])
        if name == semconv.SPAN_TASK and draft.events:
            failure = raised(draft)
            if failure is not None:
                details.append([self._s("raised"), self._s(failure.text())])
        self.bars.append(
            [
                lane,
                draft.start - self.start,
                draft.end - self.start,
                kind,
                self._s(name),
                self._s(label),
                _id(draft.span_id),
                [_id(link[1]) for link in draft.links],
                details,
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "duration": self.end - self.start,
            "strings": self.strings,
            "lanes": self.lanes,
            "bars": self.bars,
            "findings": self.findings,
        }


def _id(span_id: int) -> str:
    return f"{span_id:016x}"


def safe_json(data: Any) -> str:
    """JSON that cannot end the ``<script>`` it sits in, nor be read as HTML."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def render_html(drafts: Sequence[SpanDraft], title: str = "aiotrace") -> str:
    """The whole page."""
    data = TimelineData(drafts, title)
    return _PAGE.replace("/*DATA*/null", safe_json(data.to_json()), 1)


def write_html(drafts: Iterable[SpanDraft], path: str, title: str = "aiotrace") -> int:
    """Write the timeline; returns its size in bytes."""
    page = render_html(list(drafts), title)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)
    return len(page.encode())


class TimelineSink:
    """Keeps the drafts a timeline needs (a pipeline sink); writes the page at the end."""

    LIMIT: Final = 2_000_000

    def __init__(self, path: str, title: str) -> None:
        self.path = path
        self.title = title
        self.drafts: list[SpanDraft] = []
        self.truncated = 0
        self.size: int | None = None

    def export(self, drafts: list[SpanDraft], resource: object = None) -> None:
        """Keep a batch; ``resource`` is not needed: a process's tasks nest under its span."""
        room = self.LIMIT - len(self.drafts)
        if room >= len(drafts):
            self.drafts.extend(drafts)
        else:
            self.drafts.extend(drafts[: max(room, 0)])
            self.truncated += len(drafts) - max(room, 0)

    def flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        self.size = write_html(self.drafts, self.path, self.title)


_PAGE: Final = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aiotrace timeline</title>
<style>
  :root { --bg:#fff; --fg:#1d232b; --muted:#6a7480; --grid:#eef1f4; --sel:#ff8a00; }
  * { box-sizing: border-box; }
  body { margin:0; font:13px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
  header { padding:8px 12px; border-bottom:1px solid #dde2e7; display:flex; gap:16px; align-items:center; flex-wrap:wrap; }
  header h1 { font-size:15px; margin:0; font-weight:600; }
  .legend span { display:inline-flex; align-items:center; gap:4px; margin-right:10px; color:var(--muted); }
  .sw { width:18px; height:10px; display:inline-block; border-radius:2px; }
  button { font:inherit; padding:2px 8px; }
  #findings { margin:0; padding:6px 12px; border-bottom:1px solid #dde2e7; max-height:22vh; overflow:auto; }
  #findings:empty { display:none; }
  #findings li { list-style:none; cursor:pointer; padding:2px 4px; border-radius:3px; }
  #findings li:hover { background:#fff3e0; }
  #findings .kind { font-weight:700; text-transform:uppercase; margin-right:6px; }
  #findings .deadlock .kind, #findings .hang .kind { color:#c62828; }
  #findings .kind { color:#b26a00; }
  #wrap { position:relative; }
  canvas { display:block; width:100%; cursor:grab; }
  #tip { position:fixed; pointer-events:none; background:#1d232bf0; color:#fff; padding:6px 8px; border-radius:4px; font-size:12px; white-space:pre; display:none; max-width:60vw; overflow:hidden; z-index:2; }
  #selected { padding:6px 12px; border-top:1px solid #dde2e7; white-space:pre-wrap; color:var(--muted); min-height:2.5em; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <span id="summary" class="legend"></span>
  <span class="legend">
    <span><i class="sw" style="background:#cfd8dc"></i>task</span>
    <span><i class="sw" style="background:repeating-linear-gradient(45deg,#e57373 0 3px,#fff 3px 6px);border:1px solid #e57373"></i>wait</span>
    <span><i class="sw" style="background:linear-gradient(90deg,#5c8dd6,#5cc9a7,#d6a55c)"></i>hold (a colour per primitive)</span>
    <span><i class="sw" style="background:repeating-linear-gradient(45deg,#9575cd 0 3px,#fff 3px 6px);border:1px solid #9575cd"></i>awaiting a future</span>
    <span><i class="sw" style="background:#d32f2f"></i>loop blocked</span>
  </span>
  <span>wheel: zoom &middot; drag: pan &middot; click a wait: who blocked it</span>
  <button id="reset" type="button">reset view</button>
</header>
<ul id="findings"></ul>
<div id="wrap"><canvas id="c"></canvas></div>
<div id="selected"></div>
<div id="tip"></div>
<script>
"use strict";
const DATA = /*DATA*/null;
(function () {
  const S = DATA.strings, LANE_H = 20, LABEL_W = 260, AXIS_H = 22;
  const canvas = document.getElementById("c"), ctx = canvas.getContext("2d");
  const tip = document.getElementById("tip"), selected = document.getElementById("selected");
  document.getElementById("title").textContent = DATA.title;
  // Lanes in tree order: each task under the task that created it.
  const children = DATA.lanes.map(() => []), roots = [];
  DATA.lanes.forEach((l, i) => (l[1] >= 0 ? children[l[1]] : roots).push(i));
  const order = [];
  (function walk(list) { for (const i of list) { order.push(i); walk(children[i]); } })(roots);
  const row = new Int32Array(DATA.lanes.length);
  order.forEach((lane, r) => { row[lane] = r; });
  // Bars per lane, sorted by start, as columns for speed.
  const perLane = DATA.lanes.map(() => []);
  const byId = new Map();
  DATA.bars.forEach((b, i) => { perLane[b[0]].push(i); byId.set(b[6], i); });
  const maxDur = new Float64Array(DATA.lanes.length);
  perLane.forEach((list, lane) => {
    list.sort((a, b) => DATA.bars[a][1] - DATA.bars[b][1]);
    for (const i of list) maxDur[lane] = Math.max(maxDur[lane], DATA.bars[i][2] - DATA.bars[i][1]);
  });
  const counts = [0, 0, 0, 0, 0, 0];
  DATA.bars.forEach(b => { counts[b[3]]++; });
  document.getElementById("summary").textContent =
    `${DATA.lanes.length} lanes · ${counts[1] + counts[3]} waits · ${counts[2]} holds · ` +
    `${DATA.findings.length} findings · ${(DATA.duration / 1e6).toFixed(1)} ms`;
  const colours = ["#cfd8dc", "#e57373", "#5c8dd6", "#9575cd", "#d32f2f", "#90a4ae"];
  function hue(text) { let h = 0; for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) >>> 0; return h % 360; }
  const holdColour = new Map();
  function colourOf(bar) {
    if (bar[3] !== 2) return colours[bar[3]];
    let c = holdColour.get(bar[5]);
    if (!c) { c = `hsl(${hue(S[bar[5]])},55%,58%)`; holdColour.set(bar[5], c); }
    return c;
  }
  let view = { t0: 0, t1: Math.max(DATA.duration, 1), top: 0 };
  let highlight = new Set(), highlightLanes = new Set(), focus = null, drawMs = [];
  let width = 0, height = 0, dpr = 1;
  function resize() {
    dpr = window.devicePixelRatio || 1;
    width = canvas.clientWidth;
    height = Math.max(240, Math.min(window.innerHeight - canvas.getBoundingClientRect().top - 60, AXIS_H + order.length * LANE_H + 4));
    canvas.style.height = height + "px";
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    draw();
  }
  function x(t) { return LABEL_W + (t - view.t0) / (view.t1 - view.t0) * (width - LABEL_W); }
  function tAt(px) { return view.t0 + (px - LABEL_W) / (width - LABEL_W) * (view.t1 - view.t0); }
  function firstVisible(list, from) {
    let lo = 0, hi = list.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (DATA.bars[list[mid]][1] < from) lo = mid + 1; else hi = mid; }
    return lo;
  }
  function rectOf(i) {
    const b = DATA.bars[i], y = AXIS_H + (row[b[0]] - view.top) * LANE_H;
    const inset = b[3] === 0 ? 7 : b[3] === 2 ? 2 : 4;
    return { x: x(b[1]), y: y + inset, w: Math.max(1, x(b[2]) - x(b[1])), h: LANE_H - 2 * inset };
  }
  function draw() {
    const started = performance.now();
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    const firstRow = Math.max(0, Math.floor(view.top)), lastRow = Math.min(order.length, Math.ceil(view.top + (height - AXIS_H) / LANE_H));
    // time axis
    ctx.fillStyle = "#6a7480"; ctx.strokeStyle = "#eef1f4";
    const span = view.t1 - view.t0, room = Math.max(1, (width - LABEL_W) / 90);
    let step = Math.pow(10, Math.floor(Math.log10(span / room)));
    for (const k of [1, 2, 5, 10]) { if (span / (step * k) <= room) { step *= k; break; } }
    for (let t = Math.ceil(view.t0 / step) * step; t < view.t1; t += step) {
      const px = x(t); ctx.beginPath(); ctx.moveTo(px, AXIS_H); ctx.lineTo(px, height); ctx.stroke();
      ctx.fillText(fmt(t), px + 2, 14);
    }
    for (let r = firstRow; r < lastRow; r++) {
      const lane = order[r], y = AXIS_H + (r - view.top) * LANE_H;
      if (highlightLanes.has(lane)) { ctx.fillStyle = "#fff3e0"; ctx.fillRect(0, y, width, LANE_H); }
      else if (r % 2) { ctx.fillStyle = "#f8f9fb"; ctx.fillRect(0, y, width, LANE_H); }
      const list = perLane[lane];
      let i = firstVisible(list, view.t0 - maxDur[lane]);
      let lastX = -1, lastKind = -1;
      for (; i < list.length; i++) {
        const b = DATA.bars[list[i]];
        if (b[1] > view.t1) break;
        if (b[2] < view.t0) continue;
        const r2 = rectOf(list[i]);
        if (r2.w <= 1 && Math.floor(r2.x) === lastX && b[3] === lastKind) continue;
        lastX = Math.floor(r2.x); lastKind = b[3];
        const c = colourOf(b);
        if (b[3] === 1 || b[3] === 3) {
          ctx.fillStyle = "#fff"; ctx.fillRect(r2.x, r2.y, r2.w, r2.h);
          ctx.strokeStyle = c; ctx.lineWidth = 1;
          if (r2.w > 4) {
            ctx.save(); ctx.beginPath(); ctx.rect(r2.x, r2.y, r2.w, r2.h); ctx.clip();
            for (let hx = r2.x - r2.h; hx < r2.x + r2.w; hx += 5) { ctx.beginPath(); ctx.moveTo(hx, r2.y + r2.h); ctx.lineTo(hx + r2.h, r2.y); ctx.stroke(); }
            ctx.restore();
          }
          ctx.strokeRect(r2.x + 0.5, r2.y + 0.5, Math.max(r2.w - 1, 0.5), r2.h - 1);
        } else { ctx.fillStyle = c; ctx.fillRect(r2.x, r2.y, r2.w, r2.h); }
        if (highlight.has(b[6])) { ctx.strokeStyle = "#ff8a00"; ctx.lineWidth = 2; ctx.strokeRect(r2.x - 1, r2.y - 1, r2.w + 2, r2.h + 2); }
      }
      // label column on top
      ctx.fillStyle = "#ffffff"; ctx.fillRect(0, y, LABEL_W, LANE_H);
      ctx.fillStyle = highlightLanes.has(lane) ? "#b25800" : "#1d232b";
      const depth = DATA.lanes[lane][2];
      ctx.save(); ctx.beginPath(); ctx.rect(0, y, LABEL_W - 6, LANE_H); ctx.clip();
      ctx.fillText(S[DATA.lanes[lane][0]], 6 + Math.min(depth, 12) * 10, y + 14);
      ctx.restore();
    }
    if (focus !== null) arrows(focus);
    ctx.strokeStyle = "#dde2e7"; ctx.beginPath(); ctx.moveTo(LABEL_W, 0); ctx.lineTo(LABEL_W, height); ctx.stroke();
    drawMs.push(performance.now() - started); if (drawMs.length > 50) drawMs.shift();
  }
  function arrows(i) {
    const from = rectOf(i);
    for (const id of DATA.bars[i][7]) {
      const j = byId.get(id); if (j === undefined) continue;
      const to = rectOf(j);
      ctx.strokeStyle = "#ff8a00"; ctx.lineWidth = 1.5; ctx.beginPath();
      ctx.moveTo(to.x + to.w, to.y + to.h / 2); ctx.lineTo(from.x + from.w, from.y + from.h / 2); ctx.stroke();
    }
  }
  function fmt(ns) { return ns >= 1e9 ? (ns / 1e9).toFixed(3) + " s" : ns >= 1e6 ? (ns / 1e6).toFixed(1) + " ms" : (ns / 1e3).toFixed(0) + " µs"; }
  function hit(px, py) {
    if (px < LABEL_W || py < AXIS_H) return -1;
    const r = Math.floor((py - AXIS_H) / LANE_H + view.top); if (r < 0 || r >= order.length) return -1;
    const lane = order[r], list = perLane[lane], t = tAt(px), slack = (view.t1 - view.t0) / (width - LABEL_W) * 2;
    let best = -1;
    for (let i = firstVisible(list, t - maxDur[lane] - slack); i < list.length; i++) {
      const b = DATA.bars[list[i]];
      if (b[1] > t + slack) break;
      if (b[2] + slack >= t && (best < 0 || b[3] !== 0)) best = list[i];
    }
    return best;
  }
  function describe(i) {
    const b = DATA.bars[i];
    const lines = [S[b[4]] + "  " + fmt(b[2] - b[1]), S[b[5]]];
    for (const [k, v] of b[8]) lines.push(S[k] + ": " + S[v]);
    return lines.join("\n");
  }
  function select(i) {
    highlight = new Set(); highlightLanes = new Set(); focus = null;
    if (i >= 0) {
      const b = DATA.bars[i];
      highlight.add(b[6]); focus = i;
      for (const id of b[7]) {
        const j = byId.get(id);
        highlight.add(id);
        if (j !== undefined) highlightLanes.add(DATA.bars[j][0]);
      }
      selected.textContent = describe(i) + (b[7].length ? "\nblocked by: " + b[7].map(id => {
        const j = byId.get(id); return j === undefined ? id : S[DATA.lanes[DATA.bars[j][0]][0]] + " (" + S[DATA.bars[j][4]] + ")";
      }).join(", ") : "");
    } else selected.textContent = "";
    draw();
  }
  function focusFinding(n) {
    const f = DATA.findings[n];
    highlight = new Set(f[4]); highlightLanes = new Set(); focus = null;
    let t0 = f[3], t1 = f[3], top = null;
    for (const id of f[4]) {
      const j = byId.get(id); if (j === undefined) continue;
      const b = DATA.bars[j]; highlightLanes.add(b[0]);
      t0 = Math.min(t0, b[1]); t1 = Math.max(t1, b[2]);
      top = top === null ? row[b[0]] : Math.min(top, row[b[0]]);
    }
    const pad = Math.max((t1 - t0) * 0.1, DATA.duration * 0.01, 1);
    view.t0 = Math.max(0, t0 - pad); view.t1 = Math.min(Math.max(DATA.duration, 1), t1 + pad);
    if (top !== null) view.top = Math.max(0, top - 1);
    selected.textContent = S[f[0]].toUpperCase() + ": " + S[f[1]] + "\n" + S[f[2]];
    draw();
  }
  // findings list (DOM, textContent only)
  const list = document.getElementById("findings");
  DATA.findings.forEach((f, n) => {
    const li = document.createElement("li"), kind = document.createElement("span");
    li.className = S[f[0]].replace(/[^a-z]/g, "");
    kind.className = "kind"; kind.textContent = S[f[0]];
    li.appendChild(kind); li.appendChild(document.createTextNode(S[f[1]]));
    li.addEventListener("click", () => focusFinding(n));
    list.appendChild(li);
  });
  // interaction
  let drag = null;
  canvas.addEventListener("mousedown", e => { drag = { x: e.clientX, y: e.clientY, t0: view.t0, t1: view.t1, top: view.top, moved: false }; });
  window.addEventListener("mouseup", e => {
    if (drag && !drag.moved) { const r = canvas.getBoundingClientRect(); select(hit(e.clientX - r.left, e.clientY - r.top)); }
    drag = null; canvas.style.cursor = "grab";
  });
  canvas.addEventListener("mousemove", e => {
    const r = canvas.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) {
        canvas.style.cursor = "grabbing";
        const dt = dx / (width - LABEL_W) * (drag.t1 - drag.t0);
        view.t0 = drag.t0 - dt; view.t1 = drag.t1 - dt;
        view.top = Math.max(0, Math.min(order.length - 1, drag.top - dy / LANE_H));
        draw();
      }
      tip.style.display = "none"; return;
    }
    const i = hit(px, py);
    if (i >= 0) { tip.textContent = describe(i); tip.style.display = "block"; tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px"; }
    else tip.style.display = "none";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  canvas.addEventListener("wheel", e => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect(), px = e.clientX - r.left;
    if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
      const dt = (e.deltaX || e.deltaY) / (width - LABEL_W) * (view.t1 - view.t0); view.t0 += dt; view.t1 += dt;
    } else if (px > LABEL_W) {
      const t = tAt(px), k = Math.exp(e.deltaY * 0.0015);
      view.t0 = t - (t - view.t0) * k; view.t1 = t + (view.t1 - t) * k;
      if (view.t1 - view.t0 < 1000) { view.t1 = view.t0 + 1000; }
    } else view.top = Math.max(0, Math.min(order.length - 1, view.top + e.deltaY / LANE_H));
    draw();
  }, { passive: false });
  document.getElementById("reset").addEventListener("click", () => { view = { t0: 0, t1: Math.max(DATA.duration, 1), top: 0 }; select(-1); });
  window.addEventListener("resize", resize);
  // For tests and scripts: read-only views of what is drawn.
  window.aiotraceTimeline = {
    lanes: () => order.map(l => S[DATA.lanes[l][0]]),
    bars: () => DATA.bars.map(b => ({ id: b[6], lane: S[DATA.lanes[b[0]][0]], kind: ["task", "wait", "hold", "future", "blocked", "other"][b[3]], name: S[b[4]], label: S[b[5]] })),
    barRect: id => { const i = byId.get(id); if (i === undefined) return null; const r = canvas.getBoundingClientRect(), q = rectOf(i); return { x: r.left + q.x + q.w / 2, y: r.top + q.y + q.h / 2, w: q.w }; },
    show: id => { const i = byId.get(id); const b = DATA.bars[i]; const pad = Math.max((b[2] - b[1]) * 2, 1e5); view.t0 = Math.max(0, b[1] - pad); view.t1 = b[2] + pad; view.top = Math.max(0, row[b[0]] - 2); draw(); },
    highlighted: () => Array.from(highlight),
    highlightedLanes: () => Array.from(highlightLanes).map(l => S[DATA.lanes[l][0]]),
    pan: dx => { const dt = dx / (width - LABEL_W) * (view.t1 - view.t0); view.t0 += dt; view.t1 += dt; draw(); },
    zoom: k => { const mid = (view.t0 + view.t1) / 2; view.t0 = mid - (mid - view.t0) * k; view.t1 = mid + (view.t1 - mid) * k; draw(); },
    drawTimes: () => drawMs.slice(),
    findings: () => DATA.findings.map(f => S[f[0]] + ": " + S[f[1]]),
    focusFinding,
    ready: true,
  };
  resize();
})();
</script>
</body>
</html>
"""

__all__ = ["TimelineData", "TimelineSink", "render_html", "safe_json", "write_html"]
