// Explain: one flower's forward and backward pass, in the derivation's names and shapes.
import * as api from "./api.js";
import { $, FONT, clear, el, heatmap, problemText, responsive, scaleLegend, svg } from "./dom.js";
import { diverging, fixSentence, magnitude, round, title } from "./lib.js";
import { on, shared } from "./state.js";

// Short names, from the data set's: the initials of a feature's words, a class's first three letters.
let IN = [];
let OUT = [];
const MAX_DRAWN = 24; // hidden units drawn in the network diagram
const paramCache = new Map();
let visible = false;
let sequence = 0;

// Hidden units are numbered from 0 everywhere on the page, as the API's arrays index them.
const hidden = (H) => Array.from({ length: H }, (_, k) => `${k}`);

async function params(version) {
  if (!paramCache.has(version)) {
    // a failed fetch is not kept: the next draw asks again
    paramCache.set(version, api.parameters(version).catch((error) => {
      paramCache.delete(version);
      throw error;
    }));
  }
  return paramCache.get(version);
}

function network(W, p, g) {
  const H = p.hidden_units;
  const shown = Math.min(H, MAX_DRAWN);
  const rowH = 26, height = Math.max(4, shown, 3) * rowH + 44;
  // the columns leave room for their labels: "x SL" on the left, "ver 100.0%" on the right
  const colX = [12 + 5 * FONT * 0.6 + 14, W / 2, W - 12 - 10 * FONT * 0.6 - 14];
  const ys = (n) => Array.from({ length: n }, (_, i) => 26 + ((i + 0.5) * (height - 44)) / n);
  const [yIn, yHid, yOut] = [ys(4), ys(shown), ys(3)];
  const maxW = magnitude(p.W1, p.W2);
  const edge = (x1, y1, x2, y2, w, name) => {
    const { color } = diverging(w, maxW);
    return svg("line", { x1, y1, x2, y2, stroke: color, "stroke-width": (0.5 + (3 * Math.abs(w)) / maxW).toFixed(2), "data-weight": String(w) },
      svg("title", {}, `${name} = ${String(w)}`));
  };
  const node = (x, y, value, scale, label, name, side) => {
    const { color } = diverging(value, scale);
    return svg("g", {},
      svg("circle", { cx: x, cy: y, r: 9, fill: color }, svg("title", {}, `${name} = ${String(value)}`)),
      label ? svg("text", { x: x + (side < 0 ? -14 : 14), y: y + 4, "text-anchor": side < 0 ? "end" : "start" }, label) : null);
  };
  const x = g.activations.x[0], hs = g.activations.h_s[0], os = g.activations.o_s[0];
  const maxX = magnitude([x]), maxH = Math.max(magnitude([hs]), 1e-12);
  const parts = [];
  for (let j = 0; j < shown; j++) for (let i = 0; i < 4; i++) parts.push(edge(colX[0], yIn[i], colX[1], yHid[j], p.W1[j][i], `W1[${j}][${i}]`));
  for (let k = 0; k < 3; k++) for (let j = 0; j < shown; j++) parts.push(edge(colX[1], yHid[j], colX[2], yOut[k], p.W2[k][j], `W2[${k}][${j}]`));
  IN.forEach((name, i) => parts.push(node(colX[0], yIn[i], x[i], maxX, `x ${name}`, `x[${i}]`, -1)));
  for (let j = 0; j < shown; j++) parts.push(node(colX[1], yHid[j], hs[j], maxH, "", `h_s[${j}]`, 1));
  OUT.forEach((name, k) => parts.push(node(colX[2], yOut[k], os[k], 1, `${name} ${(100 * os[k]).toFixed(1)}%`, `o_s[${k}]`, 1)));
  parts.push(svg("text", { x: colX[0], y: 14, "text-anchor": "middle" }, "input 4"));
  parts.push(svg("text", { x: colX[1], y: 14, "text-anchor": "middle" }, H > shown ? `hidden ${H} (0-${shown - 1} drawn)` : `hidden ${H}`));
  parts.push(svg("text", { x: colX[2], y: 14, "text-anchor": "middle" }, "output 3"));
  const net = $("#net");
  net.setAttribute("viewBox", `0 0 ${W} ${height}`);
  net.setAttribute("width", W);
  net.setAttribute("height", height);
  clear(net, parts);
}

// Each pass has one colour scale, its largest magnitude, shown once above its matrices.
function matrices(g, label) {
  const H = g.gradients.b1.length;
  const a = g.activations, d = g.intermediates, G = g.gradients;
  const forward = magnitude(a.x, a.h_a, a.h_s, a.o_a, a.o_s, [[g.loss]]);
  const backward = magnitude(d.do_a, G.W2, [G.b2], d.dh_s, d.dh_a, G.W1, [G.b1]);
  const row = (scale) => (name, v, cols, caption) => heatmap(name, caption, v, { colLabels: cols, rowLabels: [""], scale });
  const f = row(forward), b = row(backward);
  clear($("#forward"),
    scaleLegend(forward, "forward pass"),
    f("x", a.x, IN, "(1×4) standardised measurements"),
    f("h_a", a.h_a, hidden(H), `(1×${H}) = W1 x + b1`),
    f("h_s", a.h_s, hidden(H), `(1×${H}) = ReLU(h_a)`),
    f("o_a", a.o_a, OUT, "(1×3) = W2 h_s + b2"),
    f("o_s", a.o_s, OUT, "(1×3) = softmax(o_a)"),
    heatmap("L", `= −log o_s[${label}]`, [[g.loss]], { rowLabels: [""], scale: forward }));
  clear($("#backward"),
    scaleLegend(backward, "backward pass"),
    b("do_a", d.do_a, OUT, "(1×3) = o_s − onehot(y)"),
    heatmap("dW2", `(3×${H}) = do_aᵀ h_s`, G.W2, { rowLabels: OUT, colLabels: hidden(H), scale: backward }),
    b("db2", [G.b2], OUT, "(3) = do_a"),
    b("dh_s", d.dh_s, hidden(H), `(1×${H}) = do_a W2`),
    b("dh_a", d.dh_a, hidden(H), `(1×${H}) = dh_s · 1[h_a > 0]`),
    heatmap("dW1", `(${H}×4) = dh_aᵀ x`, G.W1, { rowLabels: hidden(H), colLabels: IN, scale: backward }),
    b("db1", [G.b1], hidden(H), `(${H}) = dh_a`));
}

async function refresh() {
  if (!visible) return;
  const mine = ++sequence;
  const label = $("#true-species").value;
  if (!shared.flowerValid) {
    $("#explain-flower").textContent = `${fixSentence(shared.invalid || [])} (on the Predict panel)`;
    $("#explain-loss").textContent = "";
    clear($("#net"));
    clear($("#forward"));
    clear($("#backward"));
    return;
  }
  const f = shared.flower;
  $("#explain-flower").textContent =
    `Flower: ${shared.features.map((name) => `${title(name).toLowerCase()} ${f[name]} cm`).join(", ")} (from the Predict panel).`;
  try {
    const g = await api.gradients(f, label);
    const p = await params(g.model_version);
    if (mine !== sequence) return;
    $("#explain-loss").textContent = `L = ${round(g.loss, 4)}`;
    $("#explain-panel").dataset.version = g.model_version;
    $("#explain-panel").dataset.label = label;
    responsive($("#net-box"), (width) => network(Math.max(300, width), p, g), 520);
    matrices(g, label);
  } catch (error) {
    if (mine !== sequence) return;
    $("#explain-loss").textContent = problemText(error);
  }
}

export function setupExplain() {
  IN = shared.features.map((f) => f.split("_").map((word) => word[0].toUpperCase()).join(""));
  OUT = shared.classes.map((c) => c.slice(0, 3));
  clear($("#true-species"), shared.classes.map((c, i) => el("option", { value: c, selected: i === 1 }, c)));
  $("#true-species").addEventListener("change", refresh);
  on("reconnected", refresh);
  on("flower", refresh);
  on("serving", refresh);
}

export function showExplain() {
  visible = true;
  refresh();
}

export function hideExplain() {
  visible = false;
}
