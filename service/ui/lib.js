// The page's pure helpers: no DOM, no network. Tested with `node --test tests/js/`.

// -- names and numbers -----------------------------------------------------------------------

// "sepal_length" -> "Sepal length": the one way a feature or class is named on the page.
export const title = (name) => name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

// Accuracies, losses and probabilities: four decimals everywhere (rounded, never cut).
export const fixed4 = (v) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(4) : "");
export const pct = (v) => `${(100 * v).toFixed(1)} %`;
export const round = (v, digits = 3) => (Number.isFinite(v) ? Number(v.toPrecision(digits)) : v);

// The API's times are UTC; shown so, to the second.
export const utc = (iso) => (iso ? `${iso.replace("T", " ").slice(0, 19)} UTC` : "");

// A message from the API as a person should read it: Pydantic's "Value error, " prefix dropped,
// control characters shown as spaces.
export function plainMessage(text) {
  // eslint-disable-next-line no-control-regex
  return String(text ?? "").replace(/^Value error, /, "").replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
}

// -- measurements ----------------------------------------------------------------------------

const NUMBER = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

// What the page can tell of a field before asking the API: empty or not a number. The API
// judges every number (range, finiteness) and its message is shown as it says.
export function localError(text) {
  const value = String(text).trim();
  if (value === "") return "enter a number";
  if (!NUMBER.test(value)) return "not a number";
  return null;
}

// The API's problem document names each bad field by its location, e.g. instances.0.sepal_width.
export function fieldErrors(problem, features) {
  const found = {};
  for (const e of problem?.errors || []) {
    const feature = (e.loc || []).find((part) => features.includes(part));
    if (feature && !found[feature]) found[feature] = plainMessage(e.msg);
  }
  return found;
}

// "Fix sepal width and petal width to see a prediction."
export function fixSentence(names) {
  const list = names.map((n) => title(n).toLowerCase());
  const joined = list.length > 1 ? `${list.slice(0, -1).join(", ")} and ${list.at(-1)}` : list[0];
  return `Fix ${joined} to see a prediction.`;
}

// -- CSV ---------------------------------------------------------------------------------------
// The rule the iris command line follows too (client/iris_client/csvio.py; cases:
// tests/csv_cases.json): a header is optional (a first line of numbers is data), names compare
// loosely ("sepal length (cm)"), blank and # lines are skipped but counted, a measurement is a
// number.

function normal(name) {
  return name.trim().toLowerCase().replace(/\(cm\)/g, "").trim().replace(/[\s.-]+/g, "_");
}

function split(line) {
  if (!line.includes('"')) return line.split(",").map((v) => v.trim());
  const value = /\s*(?:"((?:[^"]|"")*)"|([^,]*))\s*(,|$)/y;
  const values = [];
  for (;;) {
    const m = value.exec(line);
    values.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2].trim());
    if (!m[3]) return values;
  }
}

export const FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

// Rows {line, <feature>: number, species?}; `needSpecies` asks for a species column (training).
export function parseCsv(text, { features = FEATURES, needSpecies = false } = {}) {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/)
    .map((l, i) => ({ line: i + 1, text: l.trim() }))
    .filter((l) => l.text && !l.text.startsWith("#"))
    .map((l) => ({ line: l.line, cells: split(l.text) }))
    .filter((l) => l.cells.some((c) => c));
  if (!lines.length) throw new Error("the CSV has no rows");
  let columns = features.map((_, k) => k);
  let width = features.length;
  let species = -1;
  if (!lines[0].cells.every((c) => c === "" || NUMBER.test(c))) {
    const head = lines[0].cells.map(normal);
    columns = features.map((f) => head.indexOf(f));
    const missing = features.filter((f, i) => columns[i] < 0);
    if (missing.length) throw new Error(`line ${lines[0].line}: the header lacks ${missing.join(", ")}`);
    width = head.length;
    species = head.indexOf("species");
    lines.shift();
  }
  if (needSpecies && species < 0) throw new Error("the training CSV needs a header line with a species column");
  if (!lines.length) throw new Error("the CSV has no rows after the header");
  return lines.map(({ line, cells }) => {
    if (cells.length !== width) throw new Error(`line ${line}: ${cells.length} values, expected ${width}`);
    const row = { line };
    features.forEach((f, k) => {
      const cell = cells[columns[k]];
      if (!NUMBER.test(cell)) throw new Error(`line ${line}: ${f} ${JSON.stringify(cell)} is not a number`);
      row[f] = Number(cell);
    });
    if (species >= 0) row.species = cells[species];
    return row;
  });
}

// -- charts ------------------------------------------------------------------------------------

// Round ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, at most `count` + 1
// of them, the first at or below lo and the last at or above hi.
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw * (1 - 1e-9));
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks = [];
  for (let v = first; v < hi + step * (1 - 1e-9); v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks.at(-1) < hi) ticks.push(Number((ticks.at(-1) + step).toPrecision(12)));
  return ticks;
}

// A tick's label: as many decimals as the step needs, no float noise (0.30000000000000004).
export function tickLabel(value, ticks) {
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  let decimals = 0;
  while (decimals < 6 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-6) decimals++;
  return value.toFixed(decimals);
}

// The estimated width of a label in pixels (system sans-serif digits are about 0.6 em).
export const textWidth = (text, size) => String(text).length * size * 0.6;

// A label's x so that it stays inside [0, width] with the given anchor's half width.
export function clampX(x, text, size, width, margin = 2) {
  const half = textWidth(text, size) / 2;
  return Math.min(Math.max(x, half + margin), width - half - margin);
}

// Deterministic jitter in [-1, 1] for the i-th point (the same on every draw).
export function jitter(i, salt = 0) {
  const s = Math.sin((i + 1) * 12.9898 + salt * 78.233) * 43758.5453;
  return 2 * (s - Math.floor(s)) - 1;
}

// Red for positive, blue for negative, white at zero; `scale` is the largest magnitude.
export function diverging(value, scale) {
  const t = scale > 0 ? Math.max(-1, Math.min(1, value / scale)) : 0;
  const a = Math.abs(t);
  const [r, g, b] = t >= 0 ? [220, 38, 38] : [37, 99, 235];
  const mix = (c) => Math.round(255 + (c - 255) * a);
  return { color: `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`, dark: a > 0.6 };
}

// The largest magnitude among matrices (one colour scale for a whole pass).
export const magnitude = (...matrices) => Math.max(0, ...matrices.flat(2).map((v) => Math.abs(v)));

// The point of a series nearest to x (by x), or null.
export function nearest(points, x) {
  let best = null;
  for (const p of points) if (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
  return best;
}

// The keys whose values differ between two flat objects (hyperparameters), in a stable order.
export function differing(a, b) {
  const keys = [...new Set([...Object.keys(a || {}), ...Object.keys(b || {})])].sort();
  return keys.filter((k) => JSON.stringify(a?.[k]) !== JSON.stringify(b?.[k]));
}
