// Predict: four measurements with sliders, the species and its probabilities; CSV batches.
import * as api from "./api.js";
import { $, clear, el, problemText, table } from "./dom.js";
import { fieldErrors, fixSentence, fixed4, localError, parseCsv, pct, title } from "./lib.js";
import { emit, on, shared } from "./state.js";

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
    el("label", { for: id, id: `label-${feature}` }, title(feature)),
    el("div", { class: "pair" }, number, el("span", { class: "unit", id: `unit-${feature}` }, "cm"), slider),
    el("p", { class: "error", id: `err-${feature}`, "aria-live": "polite" }));
}

function showFieldErrors(errors) {
  for (const feature of shared.features) {
    $(`#err-${feature}`).textContent = errors[feature] || "";
    $(`#field-${feature}`).classList.toggle("invalid", Boolean(errors[feature]));
    $(`#in-${feature}`).setAttribute("aria-invalid", errors[feature] ? "true" : "false");
  }
}

function readFlower() {
  const flower = {};
  for (const feature of shared.features) flower[feature] = $(`#in-${feature}`).value.trim();
  return flower;
}

function changed() {
  clearTimeout(timer);
  timer = setTimeout(run, 120);
}

function bars(probabilities) {
  clear($("#bars"), shared.classes.map((label) => {
    const fillBar = el("div", { class: `fill ${label}` });
    fillBar.style.width = `${(100 * probabilities[label]).toFixed(2)}%`;
    return el("div", { class: "bar", "data-label": label, "data-probability": String(probabilities[label]) },
      el("span", {}, label),
      el("div", { class: "track", role: "meter", "aria-valuemin": 0, "aria-valuemax": 1,
        "aria-valuenow": probabilities[label], "aria-label": `probability of ${label}` }, fillBar),
      el("span", { class: "pct" }, pct(probabilities[label])));
  }));
}

function showSpecies(label) {
  const node = $("#species");
  node.textContent = label ?? "No prediction";
  node.dataset.label = label ?? "";
  node.classList.toggle("none", label === null);
}

// No prediction while a measurement is invalid: the card says which fields to fix, and every
// invalid field keeps its own message (the page's for empty or non-numbers, the API's for the
// rest, as it words them).
function noPrediction(errors) {
  showFieldErrors(errors);
  shared.flowerValid = false;
  showSpecies(null);
  $("#predict-note").textContent = fixSentence(Object.keys(errors));
  clear($("#bars"));
  $("#predict-version").textContent = "";
  shared.invalid = Object.keys(errors);
  emit("flower", shared.flower);
}

async function run() {
  const mine = ++sequence;
  const typed = readFlower();
  const local = Object.fromEntries(shared.features.map((f) => [f, localError(typed[f])]).filter(([, e]) => e));
  const flower = Object.fromEntries(shared.features.map((f) => [f, f in local ? null : Number(typed[f])]));
  if (Object.keys(local).length) {
    // the API still judges the other fields, so each keeps its own message
    noPrediction(local);
    try {
      await api.predict([flower]);
    } catch (error) {
      if (mine === sequence) noPrediction({ ...fieldErrors(error.problem, shared.features), ...local });
    }
    return;
  }
  try {
    const answer = await api.predict([flower]);
    if (mine !== sequence) return;
    showFieldErrors({});
    const p = answer.predictions[0];
    showSpecies(p.label);
    $("#predict-note").textContent = "";
    bars(p.probabilities);
    $("#predict-version").textContent = `model ${answer.model_version}`;
    Object.assign(shared.flower, flower);
    shared.flowerValid = true;
    shared.invalid = [];
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
    const errors = fieldErrors(error.problem, shared.features);
    if (Object.keys(errors).length) noPrediction(errors);
    else if (!error.offline) {
      // no model served, or a limit: said where the answer was (the offline banner says the rest)
      showSpecies(null);
      $("#predict-note").textContent = problemText(error);
      clear($("#bars"));
    }
  }
}

// The download: the input's measurements, then the predicted species and its probabilities
// (the command line's column names: predicted_species, p_<class>).
function toCsv(rows) {
  const { features, classes } = shared;
  const head = [...features, "predicted_species", ...classes.map((c) => `p_${c}`)];
  const body = rows.map((r) => [...features.map((f) => r[f]), r.label, ...classes.map((c) => r.p[c])].join(","));
  return [head.join(","), ...body].join("\n") + "\n";
}

async function runCsv() {
  const status = $("#csv-status");
  const bar = $("#csv-progress");
  const link = $("#csv-download");
  link.hidden = true;
  let rows;
  try {
    rows = parseCsv($("#csv-text").value, { features: shared.features });
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
      const answer = await api.predict(chunk.map((r) => Object.fromEntries(shared.features.map((f) => [f, r[f]]))));
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
    ...shared.features.map((f) => ({ label: f, value: (r) => r[f], num: true })),
    { label: "predicted", value: (r) => r.label },
    ...shared.classes.map((c) => ({ label: `p(${c})`, value: (r) => fixed4(r.p[c]), num: true })),
  ], done.slice(0, 500));
  if (done.length) {
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([toCsv(done)], { type: "text/csv" }));
    link.hidden = false;
    if (done.length > 500) status.textContent += " (the table shows the first 500; the download has all)";
  }
}

export function setupPredict(iris) {
  clear($("#fields"), shared.features.map((f) => field(f, iris.summary[f])));
  const head = shared.features.join(",");
  $("#csv-help").textContent = `One flower a line: ${shared.features.join(", ")} (a header line is optional).`;
  $("#csv-text").placeholder = [head, "5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3"].join("\n");
  $("#csv-run").addEventListener("click", runCsv);
  $("#csv-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) $("#csv-text").value = await file.text();
  });
  run();
}

export const refreshPrediction = run;
on("reconnected", run);
