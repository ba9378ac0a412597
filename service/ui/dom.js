// Small DOM and SVG helpers. Server strings only ever become text nodes or attribute values.
import { clampX, diverging, fixed4, nearest, niceTicks, plainMessage, round, textWidth, tickLabel } from "./lib.js";

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

// Every chart is drawn at the pixel width it is shown at, so its 12 px text is 12 px on a
// phone as on a desktop; it is drawn again when its container's width changes.
export const FONT = 12;
const drawn = new WeakMap();
const resized = typeof ResizeObserver === "undefined" ? null : new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = drawn.get(entry.target);
    if (chart && Math.abs(entry.contentRect.width - chart.width) >= 1) chart.draw();
  }
});

export function responsive(container, render, fallback = 420) {
  const draw = () => {
    const width = Math.round(container.clientWidth || fallback);
    drawn.set(container, { width, draw });
    render(width);
  };
  if (resized && !drawn.has(container)) resized.observe(container);
  draw();
}

// A line chart: series [{label, cls, dash, points: [[x, y], ...]}], with round ticks, labels
// kept inside the drawing, and a readout of the nearest x under the pointer. A point whose y is
// null breaks its line. `rules` are horizontal lines across the drawing ([{y, label, cls}], a
// threshold); `xMin` null starts the axis at the first point, `xTicks` and `xFormat` make and
// name the x ticks (a clock's, say), `xCount(width)` says how many steps fit, `readoutX` names
// the x in the readout.
export function lineChart(container, series, {
  xLabel = "epoch", yLabel = "", yMin, yMax, xMin = 0, xMax, rules = [],
  xTicks = niceTicks, xFormat = tickLabel, readoutX = (x) => `${xLabel} ${x}`,
  xCount = (W) => (W < 360 ? 3 : 5),
} = {}) {
  responsive(container, (W) => {
    const H = 220, L = 12 + textWidth("0.000", FONT), R = 12, T = 10, B = 42;
    const all = series.flatMap((s) => s.points);
    const xs = all.map((p) => p[0]).filter(Number.isFinite);
    const ys = [...all.map((p) => p[1]), ...rules.map((r) => r.y)].filter(Number.isFinite);
    const lo = xMin ?? (xs.length ? Math.min(...xs) : 0);
    const xt = xTicks(lo, Math.max(xMax ?? lo, ...xs, lo + 1), xCount(W));
    const yt = niceTicks(yMin ?? Math.min(0, ...ys), yMax ?? (ys.length ? Math.max(...ys) : 1), 4);
    const [x0, x1, y0, y1] = [xt[0], xt.at(-1), yt[0], yt.at(-1)];
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": `${yLabel} by ${xLabel}` });
    for (const v of yt) {
      chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
      chart.append(svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, tickLabel(v, yt)));
    }
    for (const v of xt) {
      const text = xFormat(v, xt);
      // low enough to clear the lowest y label when a wide one (a time) sits at the corner
      chart.append(svg("text", { x: clampX(sx(v), text, FONT, W), y: H - B + 20, "text-anchor": "middle" }, text));
    }
    chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    chart.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    chart.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, xLabel));
    for (const r of rules) {
      if (!Number.isFinite(r.y)) continue;
      chart.append(svg("line", {
        class: `rule ${r.cls || ""}`, x1: L, x2: W - R, y1: sy(r.y), y2: sy(r.y), "data-value": String(r.y),
      }, svg("title", {}, `${r.label}: ${r.y}`)));
    }
    const drawnSeries = [];
    for (const s of series) {
      const pts = s.points.filter((p) => Number.isFinite(p[1]));
      if (!pts.length) continue;
      drawnSeries.push({ ...s, points: pts });
      // one stroke per run of points between nulls; a lone point is a stroke of no length,
      // which a round line cap shows as a dot
      const runs = [[]];
      for (const p of s.points) {
        if (Number.isFinite(p[1])) runs.at(-1).push(`${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
        else if (runs.at(-1).length) runs.push([]);
      }
      const d = runs.filter((run) => run.length)
        .map((run) => `M${run.join("L")}${run.length === 1 ? "h0" : ""}`).join("");
      chart.append(svg("path", {
        class: `line ${s.cls}`, d, "data-series": s.label, "data-points": pts.length,
        "stroke-dasharray": s.dash || null,
      }, svg("title", {}, `${s.label}: ${pts.length} points`)));
    }
    const guide = svg("line", { class: "guide", x1: 0, x2: 0, y1: T, y2: H - B, visibility: "hidden" });
    const readout = el("p", { class: "readout small", "aria-live": "off" }, "\u00a0");
    chart.append(guide);
    const show = (event) => {
      if (!drawnSeries.length) return;
      const box = chart.getBoundingClientRect();
      const x = x0 + ((event.clientX - box.left) * (W / box.width) - L) / (W - L - R) * (x1 - x0);
      const at = nearest(drawnSeries[0].points, x);
      if (!at) return;
      guide.setAttribute("x1", sx(at[0]));
      guide.setAttribute("x2", sx(at[0]));
      guide.setAttribute("visibility", "visible");
      const values = drawnSeries.map((s) => {
        const p = nearest(s.points, at[0]);
        return p && p[0] === at[0] ? `${s.label} ${fixed4(p[1])}` : null;
      }).filter(Boolean);
      readout.textContent = `${readoutX(at[0])}: ${values.join(", ")}`;
    };
    chart.addEventListener("pointermove", show);
    chart.addEventListener("pointerdown", show); // a tap on a phone
    chart.addEventListener("pointerleave", () => {
      guide.setAttribute("visibility", "hidden");
      readout.textContent = "\u00a0";
    });
    const legend = el("div", { class: "legend" },
      drawnSeries.map((s) => el("span", { "data-series": s.label }, el("span", { class: `dot ${s.cls}${s.dash ? " dashed" : ""}` }), s.label)),
      rules.filter((r) => Number.isFinite(r.y)).map((r) => el("span", {}, el("span", { class: `dot dashed ${r.cls || ""}` }), `${r.label} ${r.y}`)));
    clear(container, chart, readout, legend);
  });
}

// A colour scale from -max to +max, for a pass's heatmaps.
export function scaleLegend(max, what) {
  const bar = el("span", { class: "scale-bar" });
  bar.style.background = `linear-gradient(to right, ${diverging(-1, 1).color}, #fff, ${diverging(1, 1).color})`;
  return el("p", { class: "scale small", "data-max": String(max) },
    el("span", {}, `${round(-max)}`), bar, el("span", {}, `+${round(max)}`),
    el("span", { class: "muted" }, ` ${what}: one scale for every matrix here`));
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

// A table, one row an item; `rowAttrs(item)` gives a row its attributes (a class, data-*).
export function table(node, columns, rows, rowAttrs = () => ({})) {
  clear(node,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c.label)))),
    el("tbody", {}, rows.map((row) => el("tr", rowAttrs(row), columns.map((c) => {
      const value = c.value(row);
      return el("td", { class: c.num ? "num" : null, "data-label": c.label || null },
        value instanceof Node ? value : String(value ?? ""));
    })))));
}

// What went wrong, as a person should read it; never the browser's own network text.
export function problemText(error) {
  if (error?.offline) return "The service cannot be reached.";
  const p = error?.problem || {};
  return plainMessage(p.detail || p.error || error?.message || String(error));
}
