"""The dashboard's own code: its pure helpers under Node, and how its modules depend.

tests/js/lib.test.mjs tests service/ui/lib.js (ticks, labels, field errors, colour scales,
jitter); tests/js/csv_rule.test.mjs the CSV rule it shares with the command line;
tests/js/rollout.test.mjs the Monitor panel's helpers in service/ui/rollout.js (its words and
numbers, the drift series it collects, the routing form's checks and body).
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.programs import node_tests
from model.data import CLASSES, FEATURES

UI = Path(__file__).resolve().parents[1] / "service" / "ui"
PANELS = ("predict", "explain", "data", "train", "models", "monitor")
# Pure modules of helpers: no DOM, no network, tested under Node.
HELPERS = ("lib", "rollout")
IMPORT = re.compile(r'^import .* from "\./([a-z]+)\.js";$', re.MULTILINE)


def test_the_page_helpers_pass_their_node_tests() -> None:
    for name in HELPERS:
        output = node_tests(Path(__file__).with_name("js") / f"{name}.test.mjs")
        assert re.search(r"^# pass [1-9]", output, re.MULTILINE), output


def imports(module: str) -> set[str]:
    return set(IMPORT.findall((UI / f"{module}.js").read_text(encoding="utf-8")))


def test_no_panel_imports_another_and_the_helpers_touch_no_page() -> None:
    for panel in PANELS:
        # the Monitor panel's own helpers are a module of their own
        helpers = {"rollout"} if panel == "monitor" else set()
        assert imports(panel) <= {"api", "dom", "lib", "state"} | helpers, panel
    assert imports("monitor") >= {"rollout"}
    assert imports("lib") == set()
    assert imports("rollout") == {"lib"}
    for helper in HELPERS:
        text = (UI / f"{helper}.js").read_text(encoding="utf-8")
        for word in ("document.", "window.", "fetch(", "sessionStorage", "localStorage"):
            assert word not in text, (helper, word)
    assert imports("main") >= set(PANELS)
    for script in UI.glob("*.js"):  # an import over several lines would escape IMPORT
        text = script.read_text(encoding="utf-8")
        statements = re.findall(r"^import\b", text, re.MULTILINE)
        assert len(statements) == len(IMPORT.findall(text)), script.name


def test_the_features_and_classes_come_from_the_data_set_not_the_page() -> None:
    """GET /datasets/iris is the one source; a page file that spelled them, quoted, as a key
    or abbreviated, would drift (lib.js names the features once, as the CSV rule's default,
    and its tests)."""
    files = [UI / "index.html", *(path for path in UI.glob("*.js") if path.name != "lib.js")]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for name in (*FEATURES, *CLASSES):
            assert not re.search(rf"\b{name}\b", text), (path.name, name)
        for short in ("SL", "SW", "PL", "PW"):
            assert not re.search(rf'"{short}"', text), (path.name, short)
        assert "import(" not in text, path.name  # every import is a static one, seen above
