// Train: a job's settings, its live curves (Server-Sent Events), cancel, recent jobs.
import * as api from "./api.js";
import { $, clear, el, lineChart, problemText, table } from "./dom.js";
import { fixed4, parseCsv, plainMessage, utc } from "./lib.js";
import { emit, on, shared } from "./state.js";

// While the page follows no job, it looks for one started elsewhere (another tab, the command
// line, before a reload) this often; while one runs, the jobs list is refreshed as often.
const LOOK_MS = 3000;
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
let spec = null; // HyperparametersIn from the OpenAPI document: defaults and bounds
let current = null; // {id, source, points, cancelled}
let loaded = false;
let looking = 0;
let shownLast = false;

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
      : loc[0] === "min_validation_accuracy" ? $("#err-gate")
        : loc[0] === "note" ? $("#err-note") : null;
    if (target) {
      target.textContent = plainMessage(e.msg);
      named = true;
    }
  }
  $("#train-error").textContent = problem.detail ? plainMessage(problem.detail) : named ? "" : "the job was refused";
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
  const note = $("#note").value.trim();
  if (note) request.note = note;
  if ($("#ds-csv").checked) {
    // the one CSV rule (lib.js), with its species column
    const rows = parseCsv($("#train-csv").value, { features: shared.features, needSpecies: true });
    request.dataset = { samples: rows.map(({ line, ...sample }) => sample) };
  }
  return request;
}

function drawCurves(points, epochs) {
  const series = (key, label, cls) => ({ label, cls, points: points.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => [p.epoch, p[key]]) });
  lineChart($("#loss-chart"), [series("train_loss", "train", "train"), series("validation_loss", "validation", "val")], { yLabel: "loss", xMax: epochs });
  lineChart($("#acc-chart"), [series("train_accuracy", "train", "train"), series("validation_accuracy", "validation", "val")], { yLabel: "accuracy", yMin: 0, yMax: 1, xMax: epochs });
}

// The stored record's words: the epoch a job ended at is the stored one.
function describe(job) {
  const p = job.progress;
  if (job.status === "succeeded") {
    const where = job.activated ? "now served" : "stored, not activated";
    const gate = job.metrics?.quality_gate ? ` (${job.metrics.quality_gate})` : "";
    return `Job succeeded: version ${job.model_version}, ${where}${gate}.`;
  }
  if (job.status === "failed" || job.status === "cancelled") {
    return `Job ${job.status} at epoch ${p.epoch} of ${p.epochs}: ${plainMessage(job.error || "")}`;
  }
  return `Job ${job.status}: epoch ${p.epoch} of ${p.epochs}`;
}

function running(point) {
  const where = `epoch ${point.epoch} of ${point.epochs}`;
  // the acknowledgement stays until the job ends: the next epoch boundary stops it
  return current?.cancelled ? `Cancel requested; stopping after the current epoch (${where})` : `Job ${point.status}: ${where}`;
}

function idle() {
  current = null;
  $("#train-cancel").disabled = true;
  $("#train-start").disabled = false;
  shared.job = null;
  look();
}

async function showEnded(job) {
  $("#train-status").textContent = describe(job);
  $("#train-progress").value = job.progress.epoch / job.progress.epochs;
  if (job.model_version) {
    // The stored history has every epoch; the live stream had one point per heartbeat.
    const { history } = await api.history(job.model_version);
    drawCurves(history, job.progress.epochs);
  }
}

async function finished(job) {
  shownLast = true;
  forget(job.job_id);
  idle();
  if (job.activated) emit("serving", job.model_version);
  emit("models-changed");
  recent();
  try {
    await showEnded(job);
  } catch {
    $("#train-status").textContent = describe(job); // the curves could not be had
  }
}

// The points seen so far, kept for the tab: a reload goes on drawing from them (the server
// keeps a running job's latest point only).
const KEPT = "iris-job-points:";
const kept = (id) => {
  try {
    return JSON.parse(sessionStorage.getItem(KEPT + id) || "[]");
  } catch {
    return [];
  }
};
const keep = (id, points) => {
  try {
    sessionStorage.setItem(KEPT + id, JSON.stringify(points.slice(-2000)));
  } catch {
    // storage full or refused: the curve simply starts over after a reload
  }
};
const forget = (id) => sessionStorage.removeItem(KEPT + id);

// Following stopped without the job's end (the stream was refused, cut or the server is
// going away): Start and Cancel as for no job, and the jobs list says what became of it.
function stopped(mine, text) {
  mine.source?.close();
  if (current !== mine) return;
  if (text) $("#train-status").textContent = text;
  shownLast = false; // once the service answers: the job followed again, or how it ended
  idle();
}

// Follow a job, whoever started it: its live points, Cancel, its end.
function follow(job) {
  if (current?.id === job.job_id) return;
  if (current?.source) current.source.close();
  clearTimeout(looking);
  current = { id: job.job_id, points: kept(job.job_id), cancelled: Boolean(job.cancel_requested) };
  shared.job = job.job_id;
  $("#train-cancel").disabled = false;
  $("#train-start").disabled = true;
  $("#train-status").textContent = running(job.progress ? { ...job.progress, status: job.status } : { epoch: 0, epochs: 0, status: job.status });
  $("#train-panel").dataset.following = job.job_id;
  drawCurves(current.points, job.progress?.epochs);
  const mine = current;
  const source = api.jobEvents(job.job_id);
  mine.source = source;
  let lastList = 0;
  source.addEventListener("progress", (event) => {
    if (current !== mine) return;
    const point = JSON.parse(event.data);
    $("#train-status").textContent = running(point);
    $("#train-progress").value = point.epoch / point.epochs;
    if (point.train_loss !== undefined && point.train_loss !== null) {
      mine.points.push(point);
      keep(mine.id, mine.points);
      drawCurves(mine.points, point.epochs);
      $("#loss-chart").dataset.live = String(mine.points.length);
    }
    if (Date.now() - lastList > LOOK_MS) {
      lastList = Date.now();
      recent();
    }
  });
  let ended = false;
  source.addEventListener("end", (event) => {
    // The server closes the stream after this event; closing it here could cut that short.
    // The close below only stops the browser from reconnecting (it waits `retry`, 2 s).
    ended = true;
    setTimeout(() => source.close(), 1000);
    if (current === mine) finished(JSON.parse(event.data));
  });
  source.addEventListener("going-away", () => {
    // The server is shutting down; once it answers, the job is followed again or its end shown.
    stopped(mine, "The server is restarting; the job is followed again once it answers.");
  });
  source.addEventListener("error", () => {
    if (ended) source.close();
    else if (source.readyState === EventSource.CLOSED) stopped(mine);
  });
}

// Find a running job (or, having lost one, learn how it ended) and follow it.
async function look() {
  clearTimeout(looking);
  if (current) return;
  try {
    const { jobs } = await api.jobs(10);
    if (current) return;
    const live = jobs.find((j) => !FINAL.has(j.status));
    if (live) {
      follow(live);
      return;
    }
    showJobs(jobs);
    if (!shownLast && jobs.length) {
      // a reload loses nothing: the last job as it ended, with its stored curves
      shownLast = true;
      await showEnded(jobs[0]).catch(() => {});
    }
  } catch {
    // unreachable or refused: the banner says so; try again
  }
  looking = setTimeout(look, LOOK_MS);
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
    if (error.problem && !error.offline) showErrors(error.problem);
    else $("#train-error").textContent = problemText(error);
    if (error.status === 409) look(); // another job runs: follow it
  }
}

async function cancel() {
  if (!current) return;
  const mine = current;
  try {
    await api.cancelJob(mine.id);
    mine.cancelled = true;
    if (current === mine) $("#train-status").textContent = "Cancel requested; stopping after the current epoch";
  } catch (error) {
    $("#train-error").textContent = problemText(error);
  }
}

function showJobs(jobs) {
  const badge = (s) => el("span", { class: `badge ${s}` }, s);
  table($("#jobs"), [
    { label: "started", value: (j) => utc(j.created_at) },
    { label: "status", value: (j) => badge(j.status) },
    { label: "epochs", value: (j) => `${j.progress.epoch}/${j.progress.epochs}`, num: true },
    { label: "hidden", value: (j) => j.hyperparameters.hidden_units, num: true },
    { label: "data", value: (j) => `${j.dataset.source} (${j.dataset.rows})` },
    { label: "train acc.", value: (j) => fixed4(j.metrics?.train_accuracy), num: true },
    { label: "version", value: (j) => el("span", { class: "mono" }, j.model_version || "") },
    { label: "note", value: (j) => j.note || "" },
    { label: "outcome", value: (j) => (j.activated ? "activated" : plainMessage(j.error || j.metrics?.quality_gate || "")) },
  ], jobs);
}

async function recent() {
  try {
    showJobs((await api.jobs(10)).jobs);
  } catch {
    // the banner says when the service is unreachable
  }
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
  $("#train-csv").placeholder = [...shared.features, "species"].join(",");
  on("reconnected", look);
  $("#train-form").addEventListener("submit", start);
  $("#train-cancel").addEventListener("click", cancel);
  for (const radio of document.querySelectorAll("input[name=dataset]")) {
    radio.addEventListener("change", () => { $("#train-csv").disabled = !$("#ds-csv").checked; });
  }
  drawCurves([], 200);
  look(); // a job already running is followed from the start
}
