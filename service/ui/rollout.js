// The Monitor panel's pure helpers: the routing's words, the drift series the page collects,
// the routing form's checks and body. No DOM, no network. Tested with `node --test tests/js/`.
import { fixed4, localError, plainMessage, plural } from "./lib.js";

// -- words and numbers -------------------------------------------------------------------------

// What the API gives as null (no feedback, never shadowed) is shown as a dash.
export const DASH = "\u2014";
export const orDash = (text) => (text === null || text === undefined || text === "" ? DASH : text);

// A canary's weight as a share of requests: 0.25 -> "25 %", 0.125 -> "12.5 %".
export const share = (weight) => `${Number((100 * weight).toPrecision(6))} %`;

// A fraction of counted rows, four decimals like every accuracy on the page; null -> "—".
export const fraction = (value) => orDash(fixed4(value));

// "routing_changed" -> "routing changed"
export const eventName = (event) => String(event).replace(/_/g, " ");

// The events the rule decides, which the history makes stand out (an activation by hand or
// by a training job, "activated", is a change of stable but no decision of the rule).
export const DECIDED = new Set(["promoted", "rolled_back", "promotion_failed"]);

// The canary's rule in a sentence.
export function ruleText(canary) {
  if (!canary) return "";
  if (canary.promote_after === null || canary.promote_after === undefined) {
    return "no rule: a person promotes or clears it";
  }
  const drop = Number(canary.max_accuracy_drop ?? 0);
  const allowance = drop > 0 ? `at most ${drop} below stable's` : "no lower than stable's";
  return `after ${plural(canary.promote_after, "feedback label")}: promoted if its accuracy is ` +
    `${allowance} on the same rows, else rolled back`;
}

// A history entry's routing after the change, in a line.
export function routingLine(routing) {
  const parts = [];
  if (routing?.stable) parts.push(`stable ${routing.stable}`);
  if (routing?.canary) parts.push(`canary ${routing.canary.version} at ${share(routing.canary.weight)}`);
  if (routing?.shadow) parts.push(`shadow ${routing.shadow.version}`);
  if (!routing?.canary && !routing?.shadow) parts.push("no canary, no shadow");
  return parts.join("; ");
}

// The canary's trial (GET /monitoring's, the figures its rule reads) in a sentence.
export function trialText(trial) {
  if (!trial) return "";
  const count = trial.promote_after ? `${trial.labels} of ${trial.promote_after}` : `${trial.labels}`;
  if (!trial.labels) return `Trial: ${count} feedback labels so far.`;
  return `Trial: ${count} feedback labels so far; on those rows the canary's accuracy is ` +
    `${fraction(trial.canary_accuracy)}, stable's ${fraction(trial.stable_accuracy)}.`;
}

// A role as a class name: "promoted canary" -> "promoted-canary".
export const roleClass = (role) => String(role).replace(/\s+/g, "-");

// GET /routing/history is oldest first: the page lists it newest first.
export const newestFirst = (history) => [...(history || [])].sort((a, b) => b.id - a.id);

// The monitoring's versions in the order a person reads them: stable, canary, shadow, then
// the others, newest first (versions are timestamps, so their names sort by time).
const RANK = { stable: 0, canary: 1, shadow: 2 };
export function versionRows(versions) {
  return Object.entries(versions || {})
    .map(([version, figures]) => ({ version, ...figures }))
    .sort((a, b) => (RANK[a.role] ?? 3) - (RANK[b.role] ?? 3) || (a.version < b.version ? 1 : -1));
}

// -- time --------------------------------------------------------------------------------------

// Round steps of a clock, in seconds.
const CLOCK_STEPS = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
  21600, 43200, 86400];

// Ticks at round clock times (seconds since 1970) covering [lo, hi] in at most `count` steps:
// the first at or below lo, the last at or above hi.
export function timeTicks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const steps = (s) => Math.ceil(hi / s) - Math.floor(lo / s);
  let step = CLOCK_STEPS.find((s) => steps(s) <= count);
  for (let days = 2; step === undefined; days++) if (steps(days * 86400) <= count) step = days * 86400;
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; ; v += step) {
    ticks.push(v);
    if (v >= hi) return ticks;
  }
}

// A time in UTC, to the second ("10:24:46"); on ticks a minute or more apart, to the minute.
export function clock(seconds, ticks) {
  const text = new Date(Math.round(seconds) * 1000).toISOString().slice(11, 19);
  const step = ticks && ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  return step >= 60 && step % 60 === 0 ? text.slice(0, 5) : text;
}

// -- the drift the page collects ----------------------------------------------------------------

// GET /monitoring gives each feature's PSI now; the page keeps what it saw, one point a poll,
// for as long as the tab lives (an hour at one point in three seconds).
export const DRIFT_POINTS = 1200;

// The points with one more, taken at `at` (milliseconds). A new reference (another stable
// version) starts the series again: PSI measured against other training data is another line.
export function addDriftPoint(points, drift, at, max = DRIFT_POINTS) {
  const psi = {};
  for (const [feature, d] of Object.entries(drift?.features || {})) {
    psi[feature] = Number.isFinite(d?.psi) ? d.psi : null;
  }
  const point = { at, reference: drift.reference, rows: drift.rows, threshold: drift.threshold, psi };
  const kept = (points || []).filter((p) => p.reference === drift.reference && p.at < at);
  return [...kept, point].slice(-max);
}

// Points read back from the tab's storage: whatever is not a list of such points is dropped.
export function keptPoints(text) {
  let value;
  try {
    value = JSON.parse(text || "[]");
  } catch {
    return [];
  }
  if (!Array.isArray(value)) return [];
  return value.filter((p) => p && Number.isFinite(p.at) && typeof p.reference === "string" &&
    p.psi && typeof p.psi === "object");
}

// One feature's line: [seconds, psi] per point; a poll missed for longer than `gap` seconds
// (the panel was closed, the service unreachable) and a null PSI break the line.
export function driftLine(points, feature, gap = 15) {
  const line = [];
  let last = null;
  for (const p of points) {
    const x = p.at / 1000;
    if (last !== null && x - last > gap) line.push([(last + x) / 2, null]);
    const y = p.psi?.[feature];
    line.push([x, Number.isFinite(y) ? y : null]);
    last = x;
  }
  return line;
}

// -- the routing form -------------------------------------------------------------------------

// PUT /routing sets the whole plan but stable, so a change of one part sends the other as it
// is now, with the revision it was read at (the API refuses with a 409 if it moved since).
// `fields` are the form's texts; returns {body} or {errors} by field.
export function routingRequest(action, fields, current) {
  const canaryNow = current?.canary ? { ...current.canary } : null;
  const shadowNow = current?.shadow ? { version: current.shadow.version } : null;
  const errors = {};
  let canary = canaryNow;
  let shadow = shadowNow;
  if (action === "set-canary") {
    if (!fields.version) errors.version = "choose a version";
    const weight = String(fields.weight ?? "").trim();
    const weightError = localError(weight);
    if (weightError) errors.weight = weightError;
    canary = { version: fields.version, weight: Number(weight) };
    for (const name of ["promote_after", "max_accuracy_drop"]) {
      const text = String(fields[name] ?? "").trim();
      if (text === "") continue; // optional: no rule, no allowance
      const error = localError(text);
      if (error) errors[name] = error;
      else canary[name] = Number(text);
    }
  } else if (action === "clear-canary") {
    canary = null;
  } else if (action === "set-shadow") {
    if (!fields.shadow) errors.shadow = "choose a version";
    shadow = { version: fields.shadow };
  } else if (action === "clear-shadow") {
    shadow = null;
  } else {
    throw new Error(`unknown routing action ${action}`);
  }
  if (Object.keys(errors).length) return { errors };
  const body = { canary, shadow };
  if (Number.isInteger(current?.revision)) body.revision = current.revision;
  return { body };
}

// The form's field that a part of the API's refusal names: its errors' locations
// (["canary", "weight"]), or a detail that starts with one ("canary.version: ...").
const FIELDS = {
  "canary.version": "version", "canary.weight": "weight", "canary.promote_after": "promote_after",
  "canary.max_accuracy_drop": "max_accuracy_drop", "shadow.version": "shadow",
};
export function routingErrors(problem) {
  const found = {};
  for (const e of problem?.errors || []) {
    const field = FIELDS[(e.loc || []).filter((part) => part !== "body").slice(0, 2).join(".")];
    if (field && !found[field]) found[field] = plainMessage(e.msg);
  }
  const named = /^(canary|shadow)\.([a-z_]+): (.+)$/s.exec(String(problem?.detail ?? ""));
  if (named && FIELDS[`${named[1]}.${named[2]}`] && !problem?.errors?.length) {
    found[FIELDS[`${named[1]}.${named[2]}`]] = plainMessage(named[3]);
  }
  return found;
}
