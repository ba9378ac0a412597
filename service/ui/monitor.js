// Monitor: the traffic split (stable, canary and its rule, shadow) and its changes, each
// version's figures, the inputs' drift as the panel sees it over time, the routing's history.
import * as api from "./api.js";
import { $, clear, el, lineChart, problemText, table } from "./dom.js";
import { plural, title, utc } from "./lib.js";
import { DASH, DECIDED, addDriftPoint, clock, driftLine, eventName, fraction, keptPoints, newestFirst, roleClass, routingErrors, routingLine, routingRequest, ruleText, share, timeTicks, trialText, versionRows } from "./rollout.js";
import { on } from "./state.js";

// While the panel is shown it asks this often (as Train looks for jobs); while the service
// cannot be reached it stops, and starts again when main.js finds the service back.
const POLL_MS = 3000;
// A line breaks where no point came for this long (a closed panel, an unreachable service).
const GAP_SECONDS = (4 * POLL_MS) / 1000;
const HISTORY = 50;
const KEPT = "iris-drift-points";
const FIELDS = {
  version: "canary-version", weight: "canary-weight", promote_after: "canary-promote-after",
  max_accuracy_drop: "canary-max-drop", shadow: "shadow-version",
};
let visible = false;
let polling = 0;
let sequence = 0;
let routing = null; // GET /routing's latest answer
let stored = null; // the stored versions (GET /models), for the forms' choices
let choices = ""; // what the forms' choices were made from
let shownCanary = null; // the canary the form was last filled from
let points = [];

const mono = (text) => el("span", { class: "mono" }, text);

// What each part was last drawn from: a poll that brings the same redraws nothing, so a
// selection or a screen reader's place survives it.
const drawn = new Map();
function changed(part, ...from) {
  const key = JSON.stringify(from);
  if (drawn.get(part) === key) return false;
  drawn.set(part, key);
  return true;
}

// -- the split ---------------------------------------------------------------------------------

function showRouting(plan, trial = null) {
  routing = plan;
  showChoices();
  if (!changed("split", plan, trial)) return;
  const { canary, shadow } = plan;
  const dl = $("#split");
  dl.dataset.revision = String(plan.revision);
  clear(dl,
    el("dt", {}, "Stable"),
    el("dd", { "data-role": "stable", "data-version": plan.stable || "" }, plan.stable ? mono(plan.stable) : "none"),
    el("dt", {}, "Canary"),
    canary
      ? el("dd", { "data-role": "canary", "data-version": canary.version, "data-weight": String(canary.weight) },
        mono(canary.version), el("br"),
        el("b", { class: "weight" }, share(canary.weight)), " of the requests that name no version", el("br"),
        el("span", { class: "muted small rule" }, `Rule: ${ruleText(canary)}`),
        trial ? [el("br"), el("span", { class: "small trial", "data-labels": trial.labels }, trialText(trial))] : null)
      : el("dd", { "data-role": "canary", "data-version": "" }, "none"),
    el("dt", {}, "Shadow"),
    el("dd", { "data-role": "shadow", "data-version": shadow?.version || "" }, shadow ? mono(shadow.version) : "none"),
    el("dt", {}, "Revision"),
    el("dd", {}, String(plan.revision)));
  $("#canary-clear").disabled = !canary;
  $("#shadow-clear").disabled = !shadow;
  // the form shows the canary as it is each time it changes (here or elsewhere); polls that
  // find it the same leave what a person is typing alone
  const key = JSON.stringify(canary);
  const typing = ["canary-weight", "canary-promote-after", "canary-max-drop"]
    .some((id) => document.activeElement === $(`#${id}`));
  if (canary && key !== shownCanary && !typing) {
    $("#canary-weight").value = canary.weight;
    $("#canary-promote-after").value = canary.promote_after ?? "";
    $("#canary-max-drop").value = canary.max_accuracy_drop || "";
  }
  shownCanary = key;
}

// The versions either part may name: every stored one but stable. Made again only when they
// change, so a poll never resets a choice being made.
function showChoices() {
  if (!routing || !stored) return;
  const others = stored.filter((v) => v !== routing.stable);
  const key = JSON.stringify([others, routing.canary?.version, routing.shadow?.version]);
  if (key === choices) return;
  choices = key;
  const fill = (select, now) => {
    const keep = select.value || now || "";
    clear(select,
      el("option", { value: "" }, others.length ? "choose a version" : "no stored version but stable"),
      others.map((v) => el("option", { value: v, selected: v === keep },
        v === routing.canary?.version ? `${v} (canary)` : v === routing.shadow?.version ? `${v} (shadow)` : v)));
  };
  fill($("#canary-version"), routing.canary?.version);
  fill($("#shadow-version"), routing.shadow?.version);
}

async function readVersions() {
  try {
    stored = (await api.models()).models.filter((m) => !m.error).map((m) => m.version);
    showChoices();
  } catch {
    // the banner or the next poll says what is wrong
  }
}

// -- changing it -------------------------------------------------------------------------------

function showFieldErrors(errors) {
  for (const [name, id] of Object.entries(FIELDS)) {
    $(`#err-${id}`).textContent = errors[name] || "";
    $(`#${id}`).setAttribute("aria-invalid", errors[name] ? "true" : "false");
  }
}

function said(action, plan) {
  if (action === "set-canary") {
    return `Canary set: ${plan.canary.version} answers ${share(plan.canary.weight)} of the requests that name no version.`;
  }
  if (action === "set-shadow") return `Shadow set: ${plan.shadow.version} computes what stable answers.`;
  return action === "clear-canary" ? "Canary cleared: stable answers every request." : "Shadow cleared.";
}

async function change(action) {
  const part = action.endsWith("canary") ? "canary" : "shadow";
  const error = $(`#${part}-error`);
  $("#canary-error").textContent = "";
  $("#shadow-error").textContent = "";
  $("#routing-status").textContent = "";
  if (!routing) {
    error.textContent = "The routing has not been read yet; try again in a moment.";
    return;
  }
  const fields = {
    version: $("#canary-version").value,
    weight: $("#canary-weight").value,
    promote_after: $("#canary-promote-after").value,
    max_accuracy_drop: $("#canary-max-drop").value,
    shadow: $("#shadow-version").value,
  };
  const request = routingRequest(action, fields, routing);
  showFieldErrors(request.errors || {});
  if (request.errors) return;
  try {
    const plan = await api.setRouting(request.body);
    showRouting(plan);
    $("#routing-status").textContent = said(action, plan);
  } catch (failure) {
    if (!failure.offline) showFieldErrors(routingErrors(failure.problem));
    error.textContent = problemText(failure);
  }
  poll(); // the history has the change (or, after a 409, the routing is read again)
}

// -- the figures ------------------------------------------------------------------------------

function roles(version, role) {
  // a version may be the canary and the shadow at once, which the figures' one role cannot
  // say; a promoted canary whose activation is pending only the figures say
  const found = routing
    ? [["stable", routing.stable], ["canary", routing.canary?.version], ["shadow", routing.shadow?.version]]
      .filter(([, v]) => v === version).map(([name]) => name)
    : [];
  if (role && !found.includes(role)) found.push(role);
  return found;
}

function showVersions(versions) {
  if (!changed("versions", versions, routing)) return;
  table($("#monitor-versions"), [
    {
      label: "version", value: (v) => el("span", {}, mono(v.version),
        roles(v.version, v.role).flatMap((r) => [" ", el("span", { class: `badge ${roleClass(r)}` }, r)])),
    },
    { label: "served", value: (v) => v.served, num: true },
    { label: "live accuracy", value: (v) => fraction(v.feedback.accuracy), num: true },
    { label: "labels", value: (v) => v.feedback.count, num: true },
    { label: "shadow agreement", value: (v) => fraction(v.shadow?.agreement), num: true },
    { label: "shadowed rows", value: (v) => (v.shadow ? v.shadow.count : DASH), num: true },
  ], versionRows(versions), (v) => ({ "data-version": v.version }));
}

// -- drift -------------------------------------------------------------------------------------

function keep() {
  try {
    sessionStorage.setItem(KEPT, JSON.stringify(points));
  } catch {
    // storage full or refused: the lines start over after a reload
  }
}

function showDrift(drift) {
  const features = Object.keys(drift.features);
  const none = features.every((f) => drift.features[f].psi === null);
  const against = drift.reference_source
    ? `against the training data of stable ${drift.reference} (${drift.reference_source})`
    : `and stable ${drift.reference}, whose training rows the service does not know: no PSI to show`;
  $("#drift-caption").textContent =
    `The last ${plural(drift.rows, "input row")} (the window holds ${drift.window}) ${against}; ` +
    `a feature above ${drift.threshold} has drifted.` +
    (none && drift.reference_source ? " PSI shows once the window holds enough rows to tell drift from chance." : "");
  clear($("#drift-now"), features.map((f, i) => {
    const d = drift.features[f];
    return el("li", { "data-feature": f, "data-drifted": String(d.drifted), "data-psi": d.psi === null ? "" : String(d.psi) },
      el("span", { class: `dot f${i % 4}` }), `${title(f)} `,
      el("b", { class: "mono" }, d.psi === null ? DASH : d.psi.toFixed(3)),
      d.drifted ? [" ", el("span", { class: "badge drifted" }, "drifted")] : null);
  }));
  const series = features.map((f, i) => ({
    label: title(f), cls: `f${i % 4}${drift.features[f].drifted ? " drifted" : ""}`,
    points: driftLine(points, f, GAP_SECONDS),
  }));
  const chart = $("#drift-chart");
  chart.dataset.points = String(points.length);
  lineChart(chart, series, {
    xLabel: "time (UTC)", yLabel: "PSI", yMin: 0, xMin: null,
    xTicks: timeTicks, xFormat: clock, readoutX: (x) => `${clock(x)} UTC`,
    xCount: (width) => Math.max(2, Math.min(5, Math.floor((width - 60) / 110))), // "10:24:46" is 58 px
    rules: [{ y: drift.threshold, label: "threshold", cls: "threshold" }],
  });
}

// -- history -------------------------------------------------------------------------------------

function showHistory(history) {
  if (!changed("history", history)) return;
  const rows = newestFirst(history);
  table($("#routing-history"), [
    { label: "time", value: (h) => utc(h.at) },
    { label: "event", value: (h) => el("span", { class: `badge ${h.event}` }, eventName(h.event)) },
    { label: "reason", value: (h) => h.reason },
    { label: "routing after", value: (h) => routingLine(h.routing) },
  ], rows, (h) => ({ class: `${h.event}${DECIDED.has(h.event) ? " decided" : ""}`, "data-event": h.event, "data-id": h.id }));
  if (!rows.length) clear($("#routing-history"), el("caption", { class: "muted" }, "No change of the routing yet."));
}

// -- polling -----------------------------------------------------------------------------------

async function poll() {
  clearTimeout(polling);
  if (!visible) return;
  const mine = ++sequence;
  try {
    const [plan, figures, { history }] = await Promise.all([
      api.routing(), api.monitoring(), api.routingHistory(HISTORY),
    ]);
    if (mine !== sequence || !visible) return;
    if (routing && plan.stable !== routing.stable) readVersions(); // a promotion or activation
    const trial = plan.canary ? figures.versions[plan.canary.version]?.trial : null;
    showRouting(plan, trial);
    showVersions(figures.versions);
    points = addDriftPoint(points, figures.drift, Date.now());
    keep();
    showDrift(figures.drift);
    showHistory(history);
    $("#monitor-status").textContent = `Updated ${clock(Date.now() / 1000)} UTC; asked again every ${POLL_MS / 1000} s.`;
  } catch (error) {
    if (mine !== sequence) return;
    // unreachable: the banner says so, and "reconnected" starts the polls again
    if (error.offline) return;
    $("#monitor-status").textContent = problemText(error); // no model served yet, say
  }
  if (mine === sequence && visible) polling = setTimeout(poll, POLL_MS);
}

export function setupMonitor() {
  try {
    points = keptPoints(sessionStorage.getItem(KEPT));
  } catch {
    points = [];
  }
  $("#routing-form").addEventListener("submit", (event) => {
    event.preventDefault();
    change("set-canary");
  });
  $("#canary-clear").addEventListener("click", () => change("clear-canary"));
  $("#shadow-set").addEventListener("click", () => change("set-shadow"));
  $("#shadow-clear").addEventListener("click", () => change("clear-shadow"));
  on("reconnected", () => {
    if (!visible) return;
    readVersions();
    poll();
  });
  on("models-changed", () => {
    if (visible) readVersions();
  });
  on("serving", () => {
    if (visible) poll();
  });
}

export function showMonitor() {
  visible = true;
  readVersions();
  poll();
}

export function hideMonitor() {
  visible = false;
  clearTimeout(polling);
}
