// Data: the shipped flowers as a scatter plot over the served model's decision regions.
import * as api from "./api.js";
import { $, clear, el, problemText, round, svg } from "./dom.js";
import { FEATURES, LABELS } from "./predict.js";
import { on, shared } from "./state.js";

const CLASSES = ["setosa", "versicolor", "virginica"];
const STEPS = 40;
let visible = false;
let sequence = 0;

async function draw() {
  if (!visible || !shared.iris || !shared.serving) return;
  const mine = ++sequence;
  const xf = $("#axis-x").value, yf = $("#axis-y").value;
  const plot = $("#scatter");
  if (xf === yf) {
    $("#scatter-caption").textContent = "Choose two different features.";
    clear(plot);
    return;
  }
  let grid;
  try {
    grid = await api.regions(shared.serving, { x: xf, y: yf, steps: STEPS });
  } catch (error) {
    $("#scatter-caption").textContent = problemText(error);
    return;
  }
  if (mine !== sequence) return;
  const W = 560, H = 420, L = 48, R = 12, T = 12, B = 44;
  const xs = grid.x.values, ys = grid.y.values;
  const [x0, x1, y0, y1] = [xs[0], xs.at(-1), ys[0], ys.at(-1)];
  const dx = (x1 - x0) / (xs.length - 1), dy = (y1 - y0) / (ys.length - 1);
  const sx = (v) => L + ((v - (x0 - dx / 2)) / (x1 - x0 + dx)) * (W - L - R);
  const sy = (v) => T + (1 - (v - (y0 - dy / 2)) / (y1 - y0 + dy)) * (H - T - B);
  const cw = sx(x0 + dx) - sx(x0), ch = sy(y0) - sy(y0 + dy);
  const parts = [];
  grid.class_index.forEach((row, i) => row.forEach((k, j) => {
    parts.push(svg("rect", {
      class: `reg ${CLASSES[k]}`, x: (sx(xs[j]) - cw / 2).toFixed(2), y: (sy(ys[i]) - ch / 2).toFixed(2),
      width: cw.toFixed(2), height: ch.toFixed(2), "shape-rendering": "crispEdges",
      "fill-opacity": (0.12 + 0.25 * (grid.confidence[i][j] - 1 / 3) * 1.5).toFixed(3),
    }));
  }));
  const tick = (lo, hi) => Array.from({ length: 6 }, (_, i) => lo + ((hi - lo) * i) / 5);
  for (const v of tick(x0, x1)) parts.push(svg("text", { x: sx(v), y: H - B + 16, "text-anchor": "middle" }, String(round(v, 2))));
  for (const v of tick(y0, y1)) parts.push(svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, String(round(v, 2))));
  parts.push(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  parts.push(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  parts.push(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, `${LABELS[xf]} (cm)`));
  parts.push(svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, `${LABELS[yf]} (cm)`));
  for (const s of shared.iris.samples) {
    parts.push(svg("circle", { class: `pt ${s.species}`, cx: sx(s[xf]).toFixed(1), cy: sy(s[yf]).toFixed(1), r: 4 },
      svg("title", {}, `${s.species}: ${FEATURES.map((f) => `${f} ${s[f]}`).join(", ")}`)));
  }
  plot.setAttribute("viewBox", `0 0 ${W} ${H}`);
  clear(plot, parts);
  const fixed = Object.entries(grid.fixed).map(([f, v]) => `${LABELS[f].toLowerCase()} ${round(v, 3)} cm`).join(", ");
  $("#scatter-caption").textContent =
    `${shared.iris.samples.length} flowers. Shaded: the species model ${grid.model_version} predicts, with ${fixed} (the data's means); deeper shade, higher probability.`;
}

export function setupData() {
  const options = (selected) => FEATURES.map((f) => el("option", { value: f, selected: f === selected }, LABELS[f]));
  clear($("#axis-x"), options("petal_length"));
  clear($("#axis-y"), options("petal_width"));
  clear($("#legend"), CLASSES.map((c) => el("span", {}, el("span", { class: `dot ${c}` }), c)));
  $("#axis-x").addEventListener("change", draw);
  $("#axis-y").addEventListener("change", draw);
  on("serving", draw);
}

export function showData() {
  visible = true;
  draw();
}

export function hideData() {
  visible = false;
}
