// The page's CSV reader against the cases the command line is tested with (tests/csv_cases.json).
// Run: node --test tests/js/   (tests/test_csv_rule.py runs it too, when node is installed)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import test from "node:test";
import { parseCsv } from "../../service/ui/lib.js";

const FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
const { cases } = JSON.parse(readFileSync(new URL("../csv_cases.json", import.meta.url), "utf8"));

for (const c of cases) {
  test(c.name, () => {
    if (c.error) {
      assert.throws(() => parseCsv(c.csv), (error) => {
        if (c.error.line !== null) assert.ok(error.message.startsWith(`line ${c.error.line}: `), error.message);
        for (const words of c.error.contains) assert.ok(error.message.includes(words), error.message);
        return true;
      });
      return;
    }
    const rows = parseCsv(c.csv);
    assert.deepEqual(rows.map((r) => FEATURES.map((f) => r[f])), c.rows);
    assert.deepEqual(rows.map((r) => r.line), c.lines);
    assert.deepEqual(c.species === null ? rows.map((r) => "species" in r) : rows.map((r) => r.species),
      c.species === null ? rows.map(() => false) : c.species);
  });
}
