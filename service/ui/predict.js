// Predict: four measurements with sliders, the species and its probabilities; CSV batches.
import * as api from "./api.js";
import { $, clear, el, pct, problemText, table } from "./dom.js";
import { emit, shared } from "./state.js";

export const FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
export const LABELS = {
  sepal_length: "Sepal length", sepal_width: "Sepal width",
  petal_length: "Petal length", petal_width: "Petal width",
};
const CLASSES = ["setosa", "versicolor", "virginica"];
const BATCH = 200;
let sequence = 0;
let timer = 0;

function field(feature, range) {
  const id = `in-${feature}`;
  const number = el("input", {
    type: "number", id, name: feature, step: "0.1", inputmode: "decimal",
    value: shared.flower[feature], "aria-describedby": `unit-${feature} err-${feature}`,
  });
  const slider = el("input", {
    type: "range", id: `range-${feature}`, min: range.min, max: range.max, step: "0.1",
    value: shared.flower[feature], "aria-labelledby": `label-${feature}`,
    "aria-describedby": `unit-${feature}`,
  });
  number.addEventListener("input", () => {
    if (number.value !== "" && Number.isFinite(Number(number.value))) slider.value = number.value;
    changed();
  });
  slider.addEventListener("input", () => {
    number.value = slider.value;
    changed();
  });
  return el("div", { class: "field", id: `field-${feature}` },
    el("label", { for: id, id: `label-${feature}` }, LABELS[feature]),
    el("div", { class: "pair" }, number, el("span", { class: "unit", id: `unit-${feature}` }, "cm"), slider),
    el("p", { class: "error", id: `err-${feature}`, "aria-live": "polite" }));
}

function showFieldErrors(errors) {
  for (const feature of FEATURES) {
    $(`#err-${feature}`).textContent = errors[feature] || "";
    $(`#field-${feature}`).classList.toggle("invalid", Boolean(errors[feature]));
    $(`#in-${feature}`).setAttribute("aria-invalid", errors[feature] ? "true" : "false");
  }
}

// The API's problem document names each bad field by its location, e.g. instances.0.sepal_width.
export function fieldErrors(problem) {
  const found = {};
  for (const e of problem.errors || []) {
    const feature = (e.loc || []).find((part) => FEATURES.includes(part));
    if (feature && !found[feature]) found[feature] = e.msg;
  }
  return found;
}

function readFlower() {
  const flower = {};
  for (const feature of FEATURES) {
    const text = $(`#in-${feature}`).value.trim();
    // Sent as typed: the API judges the value and names what is wrong with it.
    flower[feature] = text === "" || !Number.isFinite(Number(text)) ? text : Number(text);
  }
  return flower;
}

function changed() {
  clearTimeout(timer);
  timer = setTimeout(run, 120);
}

function bars(probabilities) {
  clear($("#bars"), CLASSES.map((label) => {
    const fillBar = el("div", { class: `fill ${label}` });
    fillBar.style.width = `${(100 * probabilities[label]).toFixed(2)}%`;
    return el("div", { class: "bar", "data-label": label, "data-probability": String(probabilities[label]) },
      el("span", {}, label),
      el("div", { class: "track", role: "meter", "aria-valuemin": 0, "aria-valuemax": 1,
        "aria-valuenow": probabilities[label], "aria-label": `probability of ${label}` }, fillBar),
      el("span", { class: "pct" }, pct(probabilities[label])));
  }));
}

async function run() {
  const mine = ++sequence;
  const flower = readFlower();
  const missing = FEATURES.filter((f) => flower[f] === "");
  if (missing.length) {
    showFieldErrors(Object.fromEntries(missing.map((f) => [f, "enter a number"])));
    return;
  }
  try {
    const answer = await api.predict([flower]);
    if (mine !== sequence) return;
    showFieldErrors({});
    const p = answer.predictions[0];
    $("#species").textContent = p.label;
    $("#species").dataset.label = p.label;
    bars(p.probabilities);
    $("#predict-version").textContent = `model ${answer.model_version}`;
    Object.assign(shared.flower, flower);
    shared.flowerValid = true;
    emit("flower", shared.flower);
    if (answer.model_version !== shared.serving) {
      if (Date.now() < (shared.settleUntil || 0)) {
        clearTimeout(timer);
        timer = setTimeout(run, 250); // the worker has not swapped to the new version yet
      } else {
        emit("serving", answer.model_version);
      }
    }
  } catch (error) {
    if (mine !== sequence) return;
    shared.flowerValid = false;
    const errors = error.problem ? fieldErrors(error.problem) : {};
    if (Object.keys(errors).length) showFieldErrors(errors);
    else $("#species").textContent = problemText(error);
    $("#species").dataset.label = "";
  }
}

// -- CSV ---------------------------------------------------------------------------------
// The rule the iris command line follows too (iris_client/csvio.py; cases: tests/csv_cases.json):
// a header is optional (a first line of numbers is data), names compare loosely
// ("sepal length (cm)"), blank and # lines are skipped but counted, a measurement is a number.

const NUMBER = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

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

export function parseCsv(text) {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/)
    .map((l, i) => ({ line: i + 1, text: l.trim() }))
    .filter((l) => l.text && !l.text.startsWith("#"))
    .map((l) => ({ line: l.line, cells: split(l.text) }))
    .filter((l) => l.cells.some((c) => c));
  if (!lines.length) throw new Error("the CSV has no rows");
  let columns = [0, 1, 2, 3];
  let width = 4;
  let species = -1;
  if (!lines[0].cells.every((c) => c === "" || NUMBER.test(c))) {
    const head = lines[0].cells.map(normal);
    columns = FEATURES.map((f) => head.indexOf(f));
    const missing = FEATURES.filter((f, i) => columns[i] < 0);
    if (missing.length) throw new Error(`line ${lines[0].line}: the header lacks ${missing.join(", ")}`);
    width = head.length;
    species = head.indexOf("species");
    lines.shift();
  }
  if (!lines.length) throw new Error("the CSV has no rows after the header");
  return lines.map(({ line, cells }) => {
    if (cells.length !== width) throw new Error(`line ${line}: ${cells.length} values, expected ${width}`);
    const row = { line };
    FEATURES.forEach((f, k) => {
      const cell = cells[columns[k]];
      if (!NUMBER.test(cell)) throw new Error(`line ${line}: ${f} ${JSON.stringify(cell)} is not a number`);
      row[f] = Number(cell);
    });
    if (species >= 0) row.species = cells[species];
    return row;
  });
}

function toCsv(rows) {
  const head = [...FEATURES, "species", ...CLASSES.map((c) => `p_${c}`)];
  const body = rows.map((r) => [...FEATURES.map((f) => r[f]), r.label, ...CLASSES.map((c) => r.p[c])].join(","));
  return [head.join(","), ...body].join("\n") + "\n";
}

async function runCsv() {
  const status = $("#csv-status");
  const bar = $("#csv-progress");
  const link = $("#csv-download");
  link.hidden = true;
  let rows;
  try {
    rows = parseCsv($("#csv-text").value);
  } catch (error) {
    status.textContent = error.message;
    return;
  }
  // Batches fit the server's row limit (IRIS_MAX_INSTANCES).
  let batch = BATCH;
  try {
    batch = Math.max(1, Math.min(BATCH, (await api.limits()).max_instances));
  } catch {
    // an older server without /limits: the default batch
  }
  bar.hidden = false;
  bar.max = rows.length;
  bar.value = 0;
  const done = [];
  for (let start = 0; start < rows.length; start += batch) {
    const chunk = rows.slice(start, start + batch);
    try {
      const answer = await api.predict(chunk.map((r) => Object.fromEntries(FEATURES.map((f) => [f, r[f]]))));
      answer.predictions.forEach((p, i) => done.push({ ...chunk[i], label: p.label, p: p.probabilities }));
    } catch (error) {
      const e = (error.problem.errors || [])[0];
      const where = e && Number.isInteger(e.loc?.[1]) ? `line ${chunk[e.loc[1]].line}, ${e.loc[2] ?? ""}: ${e.msg}` : problemText(error);
      status.textContent = `Stopped at ${where}`;
      break;
    }
    bar.value = done.length;
    status.textContent = `${done.length} of ${rows.length} flowers predicted`;
  }
  table($("#csv-table"), [
    { label: "line", value: (r) => r.line, num: true },
    ...FEATURES.map((f) => ({ label: f, value: (r) => r[f], num: true })),
    { label: "species", value: (r) => r.label },
    ...CLASSES.map((c) => ({ label: `p(${c})`, value: (r) => r.p[c].toFixed(4), num: true })),
  ], done.slice(0, 500));
  if (done.length) {
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([toCsv(done)], { type: "text/csv" }));
    link.hidden = false;
    if (done.length > 500) status.textContent += " (the table shows the first 500; the download has all)";
  }
}

export function setupPredict(iris) {
  clear($("#fields"), FEATURES.map((f) => field(f, iris.summary[f])));
  $("#csv-run").addEventListener("click", runCsv);
  $("#csv-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("#csv-text").value = await file.text();
  });
  run();
}

export const refreshPrediction = run;
