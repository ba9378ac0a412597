// The page's pure helpers (service/ui/lib.js). Run: node --test tests/js/
import assert from "node:assert/strict";
import test from "node:test";
import {
  clampX, differing, diverging, fieldErrors, fixSentence, fixed4, jitter, localError, magnitude,
  nearest, niceTicks, plainMessage, plural, textWidth, tickLabel, title, utc,
} from "../../service/ui/lib.js";

const FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
const labels = (lo, hi, count) => {
  const ticks = niceTicks(lo, hi, count);
  return ticks.map((v) => tickLabel(v, ticks));
};

test("ticks are round and cover the range, the last one the end of a 3000-epoch run", () => {
  assert.deepEqual(labels(0, 3000, 5), ["0", "1000", "2000", "3000"]);
  assert.deepEqual(labels(0, 10000, 5), ["0", "2000", "4000", "6000", "8000", "10000"]);
  assert.deepEqual(labels(0, 200, 5), ["0", "50", "100", "150", "200"]);
  assert.deepEqual(labels(0, 1, 4), ["0.00", "0.25", "0.50", "0.75", "1.00"]);
  assert.deepEqual(labels(0.1, 2.5, 5), ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"]);
  assert.deepEqual(labels(4.3, 7.9, 5), ["4", "5", "6", "7", "8"]);
});

test("ticks never carry float noise and always cover both ends", () => {
  for (let i = 0; i < 2000; i++) {
    const lo = Math.round(Math.random() * 1e4) / 1e3, hi = lo + Math.random() * 10 ** (Math.random() * 6 - 3);
    if (!(hi > lo)) continue;
    const ticks = niceTicks(lo, hi, 5);
    assert.ok(ticks[0] <= lo + 1e-9 && ticks.at(-1) >= hi - 1e-9, `${lo} ${hi}: ${ticks}`);
    assert.ok(ticks.length >= 2 && ticks.length <= 8, `${lo} ${hi}: ${ticks}`);
    for (const label of ticks.map((v) => tickLabel(v, ticks))) assert.ok(label.length < 12, label);
  }
});

test("a tick's label stays inside the drawing", () => {
  const width = 400, size = 12;
  for (const x of [0, 5, 200, 395, 400]) {
    const at = clampX(x, "10000", size, width);
    assert.ok(at - textWidth("10000", size) / 2 >= 0 && at + textWidth("10000", size) / 2 <= width, `${x} -> ${at}`);
  }
  assert.equal(clampX(200, "3000", size, width), 200);
});

test("fields: empty and non-numbers are named before asking the API", () => {
  assert.equal(localError(""), "enter a number");
  assert.equal(localError("  "), "enter a number");
  assert.equal(localError("abc"), "not a number");
  assert.equal(localError("1e"), "not a number");
  assert.equal(localError("-2"), null); // the API says what is wrong with it
  assert.equal(localError(" 5.1 "), null);
});

test("the API's field errors map to features, in its words without Pydantic's prefix", () => {
  const problem = { errors: [
    { loc: ["body", "instances", 0, "sepal_width"], msg: "Input should be greater than 0" },
    { loc: ["body", "instances", 0, "petal_width"], msg: "Value error, not a finite number" },
    { loc: ["body", "instances", 0, "sepal_width"], msg: "a second message" },
  ] };
  assert.deepEqual(fieldErrors(problem, FEATURES), {
    sepal_width: "Input should be greater than 0", petal_width: "not a finite number",
  });
  assert.deepEqual(fieldErrors(undefined, FEATURES), {});
  assert.equal(fixSentence(["sepal_width"]), "Fix sepal width to see a prediction.");
  assert.equal(fixSentence(["sepal_width", "petal_length", "petal_width"]),
    "Fix sepal width, petal length and petal width to see a prediction.");
});

test("words and numbers read one way on every panel", () => {
  assert.equal(plural(1, "stored version"), "1 stored version");
  assert.equal(plural(3, "stored version"), "3 stored versions");
  assert.equal(fixed4(0.99165), "0.9917"); // rounded, not cut
  assert.equal(fixed4(null), "");
  assert.equal(title("petal_width"), "Petal width");
  assert.equal(utc("2026-12-06T07:46:52.002438+00:00"), "2026-12-06 07:46:52 UTC");
  assert.equal(plainMessage("Value error, bad\u001b[2Jthing\n"), "bad [2Jthing"); // no control character left
});

test("one colour scale: zero is white, the ends saturate, beyond the scale clamps", () => {
  assert.equal(diverging(0, 1).color, "rgb(255, 255, 255)");
  assert.equal(diverging(1, 1).color, "rgb(220, 38, 38)");
  assert.equal(diverging(-5, 1).color, "rgb(37, 99, 235)");
  assert.equal(diverging(0.5, 0).color, "rgb(255, 255, 255)");
  assert.equal(magnitude([[1, -3]], [[2]], [[-0.5]]), 3);
});

test("jitter is the same on every draw and within its bound", () => {
  const a = Array.from({ length: 150 }, (_, i) => jitter(i, 1));
  const b = Array.from({ length: 150 }, (_, i) => jitter(i, 1));
  assert.deepEqual(a, b);
  assert.ok(a.every((v) => v >= -1 && v <= 1));
  assert.ok(new Set(a.map((v) => v.toFixed(3))).size > 130); // points spread, not stacked
  assert.notDeepEqual(a, Array.from({ length: 150 }, (_, i) => jitter(i, 2)));
});

test("the readout finds the nearest epoch; compare marks differing hyperparameters", () => {
  assert.deepEqual(nearest([[1, 0.5], [10, 0.2], [20, 0.1]], 14), [10, 0.2]);
  assert.equal(nearest([], 3), null);
  assert.deepEqual(differing({ epochs: 200, seed: 0, lr: 0.1 }, { epochs: 3000, seed: 0, l2: 0 }), ["epochs", "l2", "lr"]);
});
