// Small DOM and SVG helpers. Server strings only ever become text nodes or attribute values.
const SVG = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const el = (tag, attrs, ...children) => fill(document.createElement(tag), attrs, children);
export const svg = (tag, attrs, ...children) =>
  fill(document.createElementNS(SVG, tag), attrs, children);
export const $ = (selector) => document.querySelector(selector);

export function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

export const round = (v, digits = 3) => (Number.isFinite(v) ? Number(v.toPrecision(digits)) : v);
export const pct = (v) => `${(100 * v).toFixed(1)} %`;
export const title = (name) => name.replace("_", " ").replace(/^./, (c) => c.toUpperCase());

// Red for positive, blue for negative, white at zero; `scale` is the largest magnitude.
export function diverging(value, scale) {
  const t = scale > 0 ? Math.max(-1, Math.min(1, value / scale)) : 0;
  const a = Math.abs(t);
  const [r, g, b] = t >= 0 ? [220, 38, 38] : [37, 99, 235];
  const mix = (c) => Math.round(255 + (c - 255) * a);
  return { color: `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`, dark: a > 0.6 };
}

function ticks(lo, hi, count = 4) {
  const step = (hi - lo) / count;
  return Array.from({ length: count + 1 }, (_, i) => lo + i * step);
}

// A line chart: series [{label, cls, points: [[x, y], ...]}] in an SVG of its own.
export function lineChart(container, series, { xLabel = "epoch", yLabel = "", yMin, yMax, xMax } = {}) {
  const W = 420, H = 220, L = 50, R = 10, T = 10, B = 36;
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).filter(Number.isFinite);
  const x0 = 0, x1 = Math.max(xMax || 0, ...xs, 1);
  let y0 = yMin ?? Math.min(0, ...ys), y1 = yMax ?? (ys.length ? Math.max(...ys) : 1);
  if (y1 <= y0) y1 = y0 + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${yLabel} by ${xLabel}` });
  for (const v of ticks(y0, y1)) {
    chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
    chart.append(svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, String(round(v, 2))));
  }
  for (const v of ticks(x0, x1)) {
    chart.append(svg("text", { x: sx(v), y: H - B + 16, "text-anchor": "middle" }, String(Math.round(v))));
  }
  chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  chart.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  chart.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, xLabel));
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (!pts.length) continue;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    chart.append(svg("path", { class: `line ${s.cls}`, d, "data-series": s.label, "data-points": pts.length },
      svg("title", {}, `${s.label}: ${pts.length} points`)));
  }
  const legend = el("div", { class: "legend" },
    series.filter((s) => s.points.length).map((s) => el("span", {}, el("span", { class: `dot ${s.cls}` }), s.label)));
  clear(container, chart, legend);
}

// A labelled heatmap of a matrix: every cell carries its exact value (title and data-value).
export function heatmap(name, caption, rows, { rowLabels = [], colLabels = [], scale } = {}) {
  const flat = rows.flat();
  const max = scale ?? Math.max(...flat.map(Math.abs), 0);
  const head = el("tr", {}, el("th"), colLabels.map((c) => el("th", { scope: "col" }, c)));
  const body = rows.map((row, i) =>
    el("tr", {}, el("th", { scope: "row" }, rowLabels[i] ?? ""),
      row.map((v, j) => {
        const { color, dark } = diverging(v, max);
        const cell = el("td", {
          title: `${name}[${rows.length > 1 ? `${i}][` : ""}${j}] = ${String(v)}`,
          "data-value": String(v), "data-i": i, "data-j": j, class: dark ? "dark" : null,
        }, String(round(v)));
        cell.style.backgroundColor = color;
        return cell;
      })));
  return el("figure", { class: "mat", "data-name": name },
    el("figcaption", {}, el("b", {}, name), ` ${caption}`),
    el("div", { class: "scroll" }, el("table", { class: "heat" }, colLabels.length ? el("thead", {}, head) : null, el("tbody", {}, body))));
}

export function table(node, columns, rows) {
  clear(node,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c.label)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) => {
      const value = c.value(row);
      return el("td", { class: c.num ? "num" : null }, value instanceof Node ? value : String(value ?? ""));
    })))));
}

export function problemText(error) {
  const p = error.problem || {};
  return p.detail || p.error || error.message || String(error);
}
