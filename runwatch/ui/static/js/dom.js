// Small DOM helpers, formatting and the hand-drawn SVG charts (no library).

const SVG = "http://www.w3.org/2000/svg";

/** h("div#id.card", {title: "x", onclick}, child, "text", [children]) */
export function h(spec, attrs, ...children) {
  const [head, ...classes] = spec.split(".");
  const [tag, id] = head.split("#");
  const el = document.createElement(tag || "div");
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(" ");
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children) if (child) el.append(child);
  return el;
}

export function num(value) {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : String(value);
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  let n = Number(value);
  for (const unit of ["B", "KB", "MB", "GB", "TB"]) {
    if (Math.abs(n) < 1024 || unit === "TB") return `${n.toFixed(unit === "B" ? 0 : 1)} ${unit}`;
    n /= 1024;
  }
  return String(value);
}

export function when(iso) {
  if (!iso) return "never";
  const t = new Date(iso);
  const seconds = Math.round((Date.now() - t.getTime()) / 1000);
  const ago = seconds < 60 ? `${Math.max(seconds, 0)} s ago`
    : seconds < 3600 ? `${Math.round(seconds / 60)} min ago`
    : seconds < 172800 ? `${Math.round(seconds / 3600)} h ago`
    : `${Math.round(seconds / 86400)} d ago`;
  return h("time", { datetime: iso, title: t.toISOString() }, ago);
}

export function stamp(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "–";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const n = Number(seconds);
  if (n < 60) return `${n} s`;
  if (n < 3600) return `${Math.floor(n / 60)} min ${n % 60} s`;
  return `${Math.floor(n / 3600)} h ${Math.floor((n % 3600) / 60)} min`;
}

export function badge(status) {
  const value = String(status || "unknown").toLowerCase();
  return h(`span.badge.s-${value}`, value.replace("_", " "));
}

export function table(headers, rows, empty) {
  if (!rows.length) return h("p.empty", empty);
  return h("table", h("thead", h("tr", headers.map((t) => h("th", t)))),
    h("tbody", rows));
}

export function message(kind, text, ...more) {
  return h(`div.message.${kind}`, { role: kind === "error" ? "alert" : "status" }, text, ...more);
}

/** Days (UTC dates, oldest first) for the last `n` days including today. */
export function lastDays(n) {
  const days = [];
  const today = new Date();
  for (let i = n - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    days.push(d.toISOString().slice(0, 10));
  }
  return days;
}

/** 7-day bars: one stacked bar per day, succeeded (green) below failed (red). */
export function dayBars(perDay) {
  const width = 7 * 10;
  const height = 24;
  const max = Math.max(1, ...perDay.map((d) => d.ok + d.failed + d.other));
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "bars",
    role: "img" });
  const label = perDay.map((d) => `${d.day}: ${d.ok} ok, ${d.failed} failed`).join("; ");
  svg.append(s("title", {}, document.createTextNode(label)));
  perDay.forEach((d, i) => {
    let y = height;
    for (const [count, cls] of [[d.ok, "ok"], [d.other, "other"], [d.failed, "failed"]]) {
      if (!count) continue;
      const barHeight = Math.max(2, Math.round((count / max) * (height - 2)));
      y -= barHeight;
      svg.append(s("rect", { x: i * 10 + 1, y, width: 8, height: barHeight, class: cls }));
    }
    if (!d.ok && !d.failed && !d.other) {
      svg.append(s("rect", { x: i * 10 + 1, y: height - 1, width: 8, height: 1, class: "none" }));
    }
  });
  return svg;
}

/** A line chart of `points` ({x: Date, y: number}) with axis labels; `unit` names y. */
export function lineChart(points, unit) {
  const width = 640;
  const height = 180;
  const pad = { left: 64, right: 12, top: 10, bottom: 24 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  svg.append(s("title", {}, document.createTextNode(`${unit}: ${points.length} samples`)));
  if (!points.length) return svg;
  const xs = points.map((p) => p.x.getTime());
  const ys = points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  const [y0, y1] = [0, Math.max(...ys, 1)];
  const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  for (const fraction of [0, 0.5, 1]) {
    const y = y0 + (y1 - y0) * fraction;
    svg.append(s("line", { x1: pad.left, x2: width - pad.right, y1: Y(y), y2: Y(y), class: "grid" }));
    svg.append(s("text", { x: pad.left - 6, y: Y(y) + 4, "text-anchor": "end" },
      document.createTextNode(num(Math.round(y)))));
  }
  svg.append(s("text", { x: pad.left, y: height - 6 },
    document.createTextNode(new Date(x0).toISOString().slice(11, 19))));
  svg.append(s("text", { x: width - pad.right, y: height - 6, "text-anchor": "end" },
    document.createTextNode(new Date(x1).toISOString().slice(11, 19) + " UTC")));
  const path = points.map((p, i) => `${i ? "L" : "M"}${X(p.x.getTime()).toFixed(1)},${Y(p.y).toFixed(1)}`);
  svg.append(s("path", { d: path.join(" "), class: "line" }));
  for (const p of points) {
    svg.append(s("circle", { cx: X(p.x.getTime()), cy: Y(p.y), r: 2.5, class: "dot" }));
  }
  return svg;
}

/** Lineage: datasets in columns by their distance from the sources, edges as curves. */
export function lineageGraph(nodes, edges, highlight) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const e of edges) {
      const next = (depth.get(e.sourceId) || 0) + 1;
      if (depth.has(e.targetId) && next > depth.get(e.targetId) && next < nodes.length) {
        depth.set(e.targetId, next);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const columns = new Map();
  for (const n of nodes) {
    const d = depth.get(n.id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(n);
  }
  const boxW = 170;
  const boxH = 30;
  const gapX = 70;
  const gapY = 16;
  const rows = Math.max(...[...columns.values()].map((c) => c.length));
  const width = columns.size * (boxW + gapX) - gapX + 20;
  const height = rows * (boxH + gapY) - gapY + 20;
  const at = new Map();
  for (const [d, column] of columns) {
    column.forEach((n, i) => at.set(n.id, { x: 10 + d * (boxW + gapX), y: 10 + i * (boxH + gapY) }));
  }
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "lineage",
    role: "img" });
  svg.append(s("title", {}, document.createTextNode(
    `lineage: ${nodes.length} datasets, ${edges.length} edges`)));
  for (const e of edges) {
    const a = at.get(e.sourceId);
    const b = at.get(e.targetId);
    if (!a || !b) continue;
    const x1 = a.x + boxW;
    const y1 = a.y + boxH / 2;
    const x2 = b.x;
    const y2 = b.y + boxH / 2;
    const mid = (x1 + x2) / 2;
    const cls = e.pipeline && e.pipeline.id === highlight ? "edge mine" : "edge";
    svg.append(s("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: cls }));
    svg.append(s("circle", { cx: x2, cy: y2, r: 3, class: cls }));
  }
  for (const n of nodes) {
    const p = at.get(n.id);
    const label = n.name.length > 24 ? `${n.name.slice(0, 23)}…` : n.name;
    const g = s("g", { class: "node" });
    g.append(s("title", {}, document.createTextNode(
      n.namespace ? `${n.namespace} / ${n.name}` : n.name)));
    g.append(s("rect", { x: p.x, y: p.y, width: boxW, height: boxH, rx: 5 }));
    g.append(s("text", { x: p.x + 8, y: p.y + 19 }, document.createTextNode(label)));
    svg.append(g);
  }
  return svg;
}
