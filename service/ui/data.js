// Data: the shipped flowers as a scatter plot over the served model's decision regions.
import * as api from "./api.js";
import { $, FONT, clear, el, problemText, responsive, svg } from "./dom.js";
import { clampX, jitter, niceTicks, round, tickLabel, title } from "./lib.js";
import { on, shared } from "./state.js";

// The regions' grid: 80 x 80 cells, drawn as an image the browser smooths between cells.
const STEPS = 80;
// Measurements are given to 0.1 cm, so many flowers share a point: each is moved by up to
// this fraction of 0.1 cm, always the same way, so every one of them can be seen and counted.
const JITTER = 0.45;
// The classes' colours in the data set's order (app.css gives the points the same ones).
const COLOURS = [[14, 124, 134], [217, 119, 6], [124, 58, 237]];
let visible = false;
let sequence = 0;

// The regions as a PNG: one pixel a cell, its species' colour, deeper where more probable.
function regionsImage(grid) {
  const n = grid.y.values.length, m = grid.x.values.length;
  const canvas = document.createElement("canvas");
  canvas.width = m;
  canvas.height = n;
  const context = canvas.getContext("2d");
  const image = context.createImageData(m, n);
  grid.class_index.forEach((row, i) => row.forEach((k, j) => {
    const [r, g, b] = COLOURS[k] || [128, 128, 128];
    const at = 4 * ((n - 1 - i) * m + j); // row 0 is the lowest y: the image's last row
    const alpha = 0.12 + 0.375 * (grid.confidence[i][j] - 1 / 3);
    image.data.set([r, g, b, Math.round(255 * alpha)], at);
  }));
  context.putImageData(image, 0, 0);
  return canvas.toDataURL("image/png");
}

function render(W, grid, predicted, xf, yf) {
  const H = Math.round(Math.min(420, Math.max(300, W * 0.75)));
  const L = 20 + FONT + 30, R = 14, T = 12, B = 46;
  const xs = grid.x.values, ys = grid.y.values;
  const dx = (xs.at(-1) - xs[0]) / (xs.length - 1), dy = (ys.at(-1) - ys[0]) / (ys.length - 1);
  const [x0, x1, y0, y1] = [xs[0] - dx / 2, xs.at(-1) + dx / 2, ys[0] - dy / 2, ys.at(-1) + dy / 2];
  const sx = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const sy = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const parts = [svg("image", {
    href: regionsImage(grid), x: L, y: T, width: W - L - R, height: H - T - B,
    preserveAspectRatio: "none", class: "regions", "data-steps": xs.length,
  })];
  const xt = niceTicks(x0, x1, W < 420 ? 4 : 6).filter((v) => v >= x0 && v <= x1);
  const yt = niceTicks(y0, y1, 5).filter((v) => v >= y0 && v <= y1);
  for (const v of xt) {
    const text = tickLabel(v, xt);
    parts.push(svg("text", { x: clampX(sx(v), text, FONT, W), y: H - B + 17, "text-anchor": "middle" }, text));
  }
  for (const v of yt) parts.push(svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, tickLabel(v, yt)));
  parts.push(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  parts.push(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  parts.push(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, `${title(xf)} (cm)`));
  const mid = (T + H - B) / 2;
  parts.push(svg("text", { x: 14, y: mid, "text-anchor": "middle", transform: `rotate(-90 14 ${mid})` }, `${title(yf)} (cm)`));
  let wrong = 0;
  shared.iris.samples.forEach((s, i) => {
    const cx = sx(s[xf] + jitter(i, 1) * JITTER * 0.1), cy = sy(s[yf] + jitter(i, 2) * JITTER * 0.1);
    const label = predicted?.[i];
    const missed = label !== undefined && label !== s.species;
    wrong += missed;
    const where = shared.features.map((f) => `${f} ${s[f]}`).join(", ");
    const tip = missed ? `${s.species}, predicted ${label}: ${where}` : `${s.species}: ${where}`;
    parts.push(svg("circle", {
      class: `pt ${s.species}${missed ? " missed" : ""}`, cx: cx.toFixed(1), cy: cy.toFixed(1), r: missed ? 5 : 4,
      "data-predicted": label ?? null,
    }, svg("title", {}, tip)));
  });
  const plot = $("#scatter");
  plot.setAttribute("viewBox", `0 0 ${W} ${H}`);
  plot.setAttribute("width", W);
  plot.setAttribute("height", H);
  clear(plot, parts);
  return wrong;
}

async function draw() {
  if (!visible || !shared.iris || !shared.serving) return;
  const mine = ++sequence;
  const xf = $("#axis-x").value, yf = $("#axis-y").value;
  if (xf === yf) {
    $("#scatter-caption").textContent = "Choose two different features.";
    clear($("#scatter"));
    return;
  }
  let grid, predicted;
  try {
    [grid, predicted] = await Promise.all([
      api.regions(shared.serving, { x: xf, y: yf, steps: STEPS }),
      api.api("/predict", {
        method: "POST",
        body: { instances: shared.iris.samples.map((s) => Object.fromEntries(shared.features.map((f) => [f, s[f]]))), model_version: shared.serving },
      }).then((a) => a.predictions.map((p) => p.label)).catch(() => null), // over a row limit: unmarked
    ]);
  } catch (error) {
    $("#scatter-caption").textContent = problemText(error);
    return;
  }
  if (mine !== sequence) return;
  let wrong = 0;
  responsive($(".plot"), (width) => { wrong = render(width, grid, predicted, xf, yf); }, 560);
  const fixed = Object.entries(grid.fixed).map(([f, v]) => `${title(f).toLowerCase()} ${round(v, 3)} cm`).join(", ");
  const missed = predicted ? ` Ringed: the ${wrong} flowers model ${grid.model_version} gets wrong.` : "";
  $("#scatter-caption").textContent =
    `${shared.iris.samples.length} flowers, each moved a little so that flowers with the same measurements stay visible. ` +
    `Shaded: the species model ${grid.model_version} predicts, with ${fixed} (the data's means); deeper shade, higher probability.${missed}`;
}

export function setupData() {
  const options = (selected) => shared.features.map((f) => el("option", { value: f, selected: f === selected }, title(f)));
  const [x, y] = shared.features.slice(-2); // the petals, which part the species best
  clear($("#axis-x"), options(x));
  clear($("#axis-y"), options(y));
  clear($("#legend"), [
    ...shared.classes.map((c) => el("span", {}, el("span", { class: `dot ${c}` }), c)),
    el("span", {}, el("span", { class: "dot missed" }), "misclassified"),
  ]);
  $("#axis-x").addEventListener("change", draw);
  $("#axis-y").addEventListener("change", draw);
  on("serving", draw);
  on("reconnected", draw);
}

export function showData() {
  visible = true;
  draw();
}

export function hideData() {
  visible = false;
}
