// The Monitor panel's pure helpers (service/ui/rollout.js). Run: node --test tests/js/
import assert from "node:assert/strict";
import test from "node:test";
import {
  DASH, DECIDED, addDriftPoint, clock, driftLine, eventName, fraction, keptPoints, newestFirst,
  orDash, roleClass, routingErrors, routingLine, routingRequest, ruleText, share, timeTicks,
  trialText, versionRows,
} from "../../service/ui/rollout.js";

const STABLE = "20261206T102432.759282Z-65448dc3";
const CANARY = "20261206T102436.503774Z-ee2be4f6";
const SHADOW = "20261205T181500.000000Z-0a1b2c3d";
const drift = (psi, { reference = STABLE, rows = 1000 } = {}) => ({
  reference, reference_source: "training rows", window: 1000, rows, threshold: 0.2,
  features: Object.fromEntries(Object.entries(psi).map(([f, v]) => [f, { psi: v, drifted: v !== null && v > 0.2 }])),
});

test("null figures read as a dash, weights as shares, events as words", () => {
  assert.equal(fraction(null), DASH);
  assert.equal(fraction(undefined), DASH);
  assert.equal(fraction(0.7533333333333333), "0.7533");
  assert.equal(fraction(0), "0.0000");
  assert.equal(fraction(1), "1.0000");
  assert.equal(orDash(""), DASH);
  assert.equal(orDash(0), 0);
  assert.equal(share(0.25), "25 %");
  assert.equal(share(0.125), "12.5 %");
  assert.equal(share(0.1), "10 %"); // no float noise (10.000000000000002)
  assert.equal(share(0.07), "7 %");
  assert.equal(eventName("rolled_back"), "rolled back");
  assert.equal(eventName("routing_changed"), "routing changed");
});

test("the canary's rule in words", () => {
  assert.equal(ruleText(null), "");
  assert.equal(ruleText({ version: CANARY, weight: 0.1, promote_after: null, max_accuracy_drop: 0 }),
    "no rule: a person promotes or clears it");
  assert.equal(ruleText({ version: CANARY, weight: 0.1, promote_after: 100, max_accuracy_drop: 0.02 }),
    "after 100 feedback labels: promoted if its accuracy is at most 0.02 below stable's on the same rows, else rolled back");
  assert.equal(ruleText({ version: CANARY, weight: 0.1, promote_after: 1, max_accuracy_drop: 0 }),
    "after 1 feedback label: promoted if its accuracy is no lower than stable's on the same rows, else rolled back");
});

test("the history newest first, each entry's routing in a line", () => {
  const history = [{ id: 1, event: "routing_changed" }, { id: 3, event: "rolled_back" }, { id: 2, event: "routing_changed" }];
  assert.deepEqual(newestFirst(history).map((h) => h.id), [3, 2, 1]);
  assert.deepEqual(history.map((h) => h.id), [1, 3, 2]); // the answer is left as it was
  assert.deepEqual(newestFirst(undefined), []);
  assert.equal(routingLine({ stable: STABLE, canary: null, shadow: null, revision: 3 }),
    `stable ${STABLE}; no canary, no shadow`);
  assert.equal(routingLine({ stable: STABLE, canary: { version: CANARY, weight: 0.25 }, shadow: { version: SHADOW }, revision: 2 }),
    `stable ${STABLE}; canary ${CANARY} at 25 %; shadow ${SHADOW}`);
  assert.equal(routingLine({ canary: null, shadow: { version: SHADOW } }), `shadow ${SHADOW}`); // an older entry
  // the rule's decisions stand out; a change by hand or an activation does not
  assert.deepEqual(["routing_changed", "activated", "promoted", "rolled_back", "promotion_failed"].filter((e) => DECIDED.has(e)),
    ["promoted", "rolled_back", "promotion_failed"]);
});

test("the canary's trial, the figures its rule reads, in a sentence", () => {
  assert.equal(trialText(null), "");
  assert.equal(trialText({ labels: 0, promote_after: 100, canary_accuracy: null, stable_accuracy: null }),
    "Trial: 0 of 100 feedback labels so far.");
  assert.equal(trialText({ labels: 43, promote_after: 100, canary_accuracy: 0.9534883720930233, stable_accuracy: 1 }),
    "Trial: 43 of 100 feedback labels so far; on those rows the canary's accuracy is 0.9535, stable's 1.0000.");
  assert.equal(trialText({ labels: 7, promote_after: null, canary_accuracy: 0.5, stable_accuracy: 0.5 }),
    "Trial: 7 feedback labels so far; on those rows the canary's accuracy is 0.5000, stable's 0.5000.");
  assert.equal(roleClass("promoted canary"), "promoted-canary");
  assert.equal(roleClass("shadow"), "shadow");
});

test("versions: stable, canary, shadow, then the rest newest first", () => {
  const figures = (role) => ({ role, served: 0, feedback: { count: 0, correct: 0, accuracy: null }, shadow: null });
  const rows = versionRows({
    "20261201T000000.000000Z-00000001": figures(null),
    [SHADOW]: figures("shadow"),
    "20261203T000000.000000Z-00000003": figures(null),
    [CANARY]: figures("canary"),
    [STABLE]: figures("stable"),
  });
  assert.deepEqual(rows.map((r) => r.version), [
    STABLE, CANARY, SHADOW, "20261203T000000.000000Z-00000003", "20261201T000000.000000Z-00000001",
  ]);
  assert.equal(rows[0].served, 0);
});

test("clock ticks are round times, as many as fit, and cover the range", () => {
  const lo = Date.UTC(2026, 11, 6, 10, 24, 47) / 1000;
  const ticks = timeTicks(lo, lo + 100, 5);
  assert.deepEqual(ticks.map((t) => clock(t, ticks)), ["10:24:30", "10:25:00", "10:25:30", "10:26:00", "10:26:30"]);
  const phone = timeTicks(lo, lo + 45, 2); // a phone's chart has room for three labels
  assert.deepEqual(phone.map((t) => clock(t, phone)), ["10:24", "10:25", "10:26"]);
  const days = timeTicks(lo, lo + 9 * 86400, 3);
  assert.ok(days.length <= 4 && (days[1] - days[0]) % 86400 === 0, String(days));
  const hour = timeTicks(lo, lo + 3600, 5);
  assert.deepEqual(hour.map((t) => clock(t, hour)), ["10:15", "10:30", "10:45", "11:00", "11:15", "11:30"]);
  for (let i = 0; i < 500; i++) {
    const a = lo + Math.random() * 1e5, b = a + Math.random() * 10 ** (Math.random() * 5);
    const t = timeTicks(a, b, 5);
    assert.ok(t[0] <= a && t.at(-1) >= b, `${a} ${b}: ${t}`);
    assert.ok(t.length >= 2 && t.length <= 6, `${a} ${b}: ${t}`);
    assert.equal(new Set(t.slice(1).map((v, i) => v - t[i])).size, 1); // even steps
  }
  assert.deepEqual(timeTicks(lo, lo, 3).length >= 2, true); // one point still has an axis
  assert.equal(clock(lo), "10:24:47");
});

test("drift points accumulate, one a poll, and start again with a new reference", () => {
  let points = [];
  points = addDriftPoint(points, drift({ sepal_length: null, petal_width: null }, { rows: 40 }), 1000);
  points = addDriftPoint(points, drift({ sepal_length: 0.05, petal_width: 0.31 }), 4000);
  points = addDriftPoint(points, drift({ sepal_length: 0.07, petal_width: 0.35 }), 7000);
  assert.equal(points.length, 3);
  assert.deepEqual(points[0].psi, { sepal_length: null, petal_width: null });
  assert.deepEqual(points[2], {
    at: 7000, reference: STABLE, rows: 1000, threshold: 0.2, psi: { sepal_length: 0.07, petal_width: 0.35 },
  });
  // a clock set back: the points after it are dropped, so the line only goes forward
  const late = addDriftPoint(points, drift({ sepal_length: 0.01, petal_width: 0.01 }), 5000);
  assert.deepEqual(late.map((p) => p.at), [1000, 4000, 5000]);
  // the input is not changed
  assert.equal(points.length, 3);
  // another stable version: another reference, another series
  const promoted = addDriftPoint(points, drift({ sepal_length: 0.01, petal_width: 0.02 }, { reference: CANARY }), 10000);
  assert.deepEqual(promoted.map((p) => p.at), [10000]);
  // bounded
  let many = [];
  for (let i = 0; i < 30; i++) many = addDriftPoint(many, drift({ sepal_length: i / 100 }), i * 3000, 10);
  assert.equal(many.length, 10);
  assert.equal(many[0].at, 20 * 3000);
});

test("a feature's line: seconds and PSI, broken by nulls and by gaps", () => {
  let points = [];
  for (const [at, v] of [[0, null], [3000, 0.1], [6000, 0.2], [60000, 0.3], [63000, 0.25]]) {
    points = addDriftPoint(points, drift({ petal_width: v }), at);
  }
  assert.deepEqual(driftLine(points, "petal_width", 12), [
    [0, null], [3, 0.1], [6, 0.2], [33, null], [60, 0.3], [63, 0.25],
  ]);
  assert.deepEqual(driftLine(points, "sepal_length", 12).filter((p) => p[1] !== null), []);
  assert.deepEqual(driftLine([], "petal_width"), []);
});

test("points kept in the tab are read back, anything else dropped", () => {
  const points = addDriftPoint([], drift({ petal_width: 0.1 }), 3000);
  assert.deepEqual(keptPoints(JSON.stringify(points)), points);
  assert.deepEqual(keptPoints(null), []);
  assert.deepEqual(keptPoints("{not json"), []);
  assert.deepEqual(keptPoints('{"at": 1}'), []);
  assert.deepEqual(keptPoints('[{"at": "x", "reference": "a", "psi": {}}, null, 3]'), []);
});

const NOW = {
  stable: STABLE,
  canary: { version: CANARY, weight: 0.25, promote_after: 100, max_accuracy_drop: 0.02 },
  shadow: { version: SHADOW },
  revision: 4,
};

test("setting a canary sends it, the shadow as it is and the revision read", () => {
  const fields = { version: CANARY, weight: " 0.1 ", promote_after: "50", max_accuracy_drop: "0.05", shadow: "" };
  assert.deepEqual(routingRequest("set-canary", fields, NOW), { body: {
    canary: { version: CANARY, weight: 0.1, promote_after: 50, max_accuracy_drop: 0.05 },
    shadow: { version: SHADOW }, revision: 4,
  } });
  // the optional fields left blank: no rule, the API's default allowance
  const plain = routingRequest("set-canary", { version: CANARY, weight: "0.5", promote_after: "", max_accuracy_drop: " " },
    { stable: STABLE, canary: null, shadow: null, revision: 0 });
  assert.deepEqual(plain, { body: { canary: { version: CANARY, weight: 0.5 }, shadow: null, revision: 0 } });
});

test("the form says what it can before asking; the API judges the numbers", () => {
  assert.deepEqual(routingRequest("set-canary", { version: "", weight: "", promote_after: "x", max_accuracy_drop: "1e" }, NOW),
    { errors: { version: "choose a version", weight: "enter a number", promote_after: "not a number", max_accuracy_drop: "not a number" } });
  // out of range is the API's to say (its message is shown next to the field)
  assert.deepEqual(routingRequest("set-canary", { version: CANARY, weight: "1.5" }, NOW).body.canary,
    { version: CANARY, weight: 1.5 });
  assert.deepEqual(routingRequest("set-shadow", { shadow: "" }, NOW), { errors: { shadow: "choose a version" } });
});

test("clearing one part keeps the other; a shadow set keeps the canary and its rule", () => {
  assert.deepEqual(routingRequest("clear-canary", {}, NOW).body, { canary: null, shadow: { version: SHADOW }, revision: 4 });
  assert.deepEqual(routingRequest("clear-shadow", {}, NOW).body, { canary: NOW.canary, shadow: null, revision: 4 });
  assert.deepEqual(routingRequest("set-shadow", { shadow: CANARY }, NOW).body,
    { canary: NOW.canary, shadow: { version: CANARY }, revision: 4 });
  assert.notEqual(routingRequest("clear-shadow", {}, NOW).body.canary, NOW.canary); // a copy
  assert.throws(() => routingRequest("promote", {}, NOW), /unknown routing action/);
});

test("the API's refusals land next to the field they name", () => {
  const pydantic = {
    status: 422, detail: "invalid request: canary.weight: Input should be less than 1",
    errors: [
      { loc: ["canary", "weight"], msg: "Input should be less than 1" },
      { loc: ["canary", "promote_after"], msg: "Input should be a valid integer" },
      { loc: ["shadow", "version"], msg: "String should match pattern" },
    ],
  };
  assert.deepEqual(routingErrors(pydantic), {
    weight: "Input should be less than 1", promote_after: "Input should be a valid integer", shadow: "String should match pattern",
  });
  assert.deepEqual(routingErrors({ status: 422, detail: `canary.version: ${STABLE} is the stable version (the one served)` }),
    { version: `${STABLE} is the stable version (the one served)` });
  assert.deepEqual(routingErrors({ status: 422, detail: "shadow.version: no stored model version x" }),
    { shadow: "no stored model version x" });
  assert.deepEqual(routingErrors({ status: 401, detail: "invalid bearer token: send ..." }), {});
  assert.deepEqual(routingErrors({ status: 409, detail: "the routing changed meanwhile (revision 5, not 4): read it again" }), {});
  assert.deepEqual(routingErrors(undefined), {});
});
