// Train: a job's settings, its live curves (Server-Sent Events), cancel, recent jobs.
import * as api from "./api.js";
import { $, clear, el, lineChart, problemText, table } from "./dom.js";
import { parseCsv } from "./predict.js";
import { emit } from "./state.js";

let spec = null; // HyperparametersIn from the OpenAPI document: defaults and bounds
let current = null; // {id, source, points}
let loaded = false;

function hpField(name, s) {
  const id = `hp-${name}`;
  const input = s.type === "boolean"
    ? el("input", { type: "checkbox", id, name, checked: Boolean(s.default) })
    : el("input", {
      type: "number", id, name, value: s.default, min: s.minimum ?? s.exclusiveMinimum,
      max: s.maximum ?? s.exclusiveMaximum, step: s.type === "integer" ? 1 : "any",
      "aria-describedby": `err-${id}`,
    });
  const hint = s.type === "boolean" ? "" : ` (default ${s.default})`;
  return el("div", {}, el("label", { for: id }, name.replace(/_/g, " "), el("span", { class: "muted" }, hint)),
    input, el("p", { class: "error", id: `err-${id}` }));
}

function showErrors(problem) {
  for (const node of document.querySelectorAll("#train-form .error")) node.textContent = "";
  let named = false;
  for (const e of problem.errors || []) {
    const loc = e.loc || [];
    const target = loc[0] === "hyperparameters" ? $(`#err-hp-${loc[1]}`)
      : loc[0] === "min_validation_accuracy" ? $("#err-gate") : null;
    if (target) {
      target.textContent = e.msg;
      named = true;
    }
  }
  $("#train-error").textContent = problem.detail || (named ? "" : "the job was refused");
}

function body() {
  const hyperparameters = {};
  for (const [name, s] of Object.entries(spec.properties)) {
    const input = $(`#hp-${name}`);
    if (s.type === "boolean") hyperparameters[name] = input.checked;
    else if (input.value.trim() !== "") hyperparameters[name] = Number(input.value);
  }
  const request = { hyperparameters, activate: $("#activate").checked };
  const gate = $("#gate").value.trim();
  if (gate !== "") request.min_validation_accuracy = Number(gate);
  if ($("#ds-csv").checked) {
    const text = $("#train-csv").value;
    const head = text.trim().split(/\r?\n/)[0].split(",").map((h) => h.trim().toLowerCase());
    const speciesAt = head.indexOf("species");
    if (speciesAt < 0) throw new Error("the training CSV needs a header line with a species column");
    const species = text.trim().split(/\r?\n/).slice(1).filter((l) => l.trim()).map((l) => l.split(",")[speciesAt]?.trim());
    request.dataset = { samples: parseCsv(text).map((r, i) => ({
      sepal_length: r.sepal_length, sepal_width: r.sepal_width,
      petal_length: r.petal_length, petal_width: r.petal_width, species: species[i],
    })) };
  }
  return request;
}

function drawCurves(points, epochs) {
  const series = (key, label, cls) => ({ label, cls, points: points.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => [p.epoch, p[key]]) });
  lineChart($("#loss-chart"), [series("train_loss", "train", "train"), series("validation_loss", "validation", "val")], { yLabel: "loss", xMax: epochs });
  lineChart($("#acc-chart"), [series("train_accuracy", "train", "train"), series("validation_accuracy", "validation", "val")], { yLabel: "accuracy", yMin: 0, yMax: 1, xMax: epochs });
}

function describe(job) {
  const p = job.progress;
  if (job.status === "succeeded") {
    const where = job.activated ? "now served" : "stored, not activated";
    const gate = job.metrics?.quality_gate ? ` (${job.metrics.quality_gate})` : "";
    return `Job succeeded: version ${job.model_version}, ${where}${gate}.`;
  }
  if (job.status === "failed" || job.status === "cancelled") return `Job ${job.status}: ${job.error || ""}`;
  return `Job ${job.status}: epoch ${p.epoch} of ${p.epochs}`;
}

async function finished(job) {
  $("#train-status").textContent = describe(job);
  $("#train-progress").value = job.progress.epoch / job.progress.epochs;
  $("#train-cancel").disabled = true;
  $("#train-start").disabled = false;
  if (job.model_version) {
    // The stored history has every epoch; the live stream had one point per heartbeat.
    const { history } = await api.history(job.model_version);
    drawCurves(history, job.progress.epochs);
  }
  if (job.activated) emit("serving", job.model_version);
  emit("models-changed");
  await recent();
}

function follow(job) {
  current = { id: job.job_id, points: [] };
  $("#train-cancel").disabled = false;
  $("#train-start").disabled = true;
  $("#train-status").textContent = describe(job);
  drawCurves([], job.progress.epochs);
  const source = api.jobEvents(job.job_id);
  current.source = source;
  source.addEventListener("progress", (event) => {
    const point = JSON.parse(event.data);
    $("#train-status").textContent = `Job ${point.status}: epoch ${point.epoch} of ${point.epochs}`;
    $("#train-progress").value = point.epoch / point.epochs;
    if (point.train_loss !== undefined && point.train_loss !== null) {
      current.points.push(point);
      drawCurves(current.points, point.epochs);
      $("#loss-chart").dataset.live = String(current.points.length);
    }
  });
  let ended = false;
  source.addEventListener("end", (event) => {
    // The server closes the stream after this event; closing it here could cut that short.
    // The close below only stops the browser from reconnecting (it waits `retry`, 2 s).
    ended = true;
    setTimeout(() => source.close(), 1000);
    finished(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    if (ended) source.close();
    else if (source.readyState === EventSource.CLOSED) $("#train-status").textContent = "The event stream closed.";
  });
}

async function start(event) {
  event.preventDefault();
  $("#train-error").textContent = "";
  let request;
  try {
    request = body();
  } catch (error) {
    $("#train-error").textContent = error.message;
    return;
  }
  try {
    const job = await api.startJob(request);
    for (const node of document.querySelectorAll("#train-form .error")) node.textContent = "";
    follow(job);
    recent();
  } catch (error) {
    if (error.problem) showErrors(error.problem);
    else $("#train-error").textContent = problemText(error);
  }
}

async function cancel() {
  if (!current) return;
  try {
    await api.cancelJob(current.id);
    $("#train-status").textContent = "Cancel requested…";
  } catch (error) {
    $("#train-error").textContent = problemText(error);
  }
}

async function recent() {
  const { jobs } = await api.jobs(10);
  const badge = (s) => el("span", { class: `badge ${s}` }, s);
  table($("#jobs"), [
    { label: "started", value: (j) => (j.created_at || "").replace("T", " ").slice(0, 19) },
    { label: "status", value: (j) => badge(j.status) },
    { label: "epochs", value: (j) => `${j.progress.epoch}/${j.progress.epochs}`, num: true },
    { label: "hidden", value: (j) => j.hyperparameters.hidden_units, num: true },
    { label: "data", value: (j) => `${j.dataset.source} (${j.dataset.rows})` },
    { label: "train acc.", value: (j) => (j.metrics?.train_accuracy ?? "").toString().slice(0, 6), num: true },
    { label: "version", value: (j) => el("span", { class: "mono" }, j.model_version || "") },
    { label: "outcome", value: (j) => (j.activated ? "activated" : j.error || j.metrics?.quality_gate || "") },
  ], jobs);
}

export async function showTrain() {
  if (!loaded) {
    loaded = true;
    try {
      const doc = await api.openapi();
      spec = doc.components.schemas.HyperparametersIn;
      clear($("#hp-fields"), Object.entries(spec.properties).map(([name, s]) => hpField(name, s)));
    } catch (error) {
      loaded = false;
      $("#train-error").textContent = problemText(error);
    }
  }
  await recent();
}

export function setupTrain() {
  $("#train-form").addEventListener("submit", start);
  $("#train-cancel").addEventListener("click", cancel);
  for (const radio of document.querySelectorAll("input[name=dataset]")) {
    radio.addEventListener("change", () => { $("#train-csv").disabled = !$("#ds-csv").checked; });
  }
  drawCurves([], 200);
}
