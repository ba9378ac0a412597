"""The dashboard's own code: its pure helpers under Node, and how its modules depend.

tests/js/lib.test.mjs tests service/ui/lib.js (ticks, labels, field errors, colour scales,
jitter); tests/js/csv_rule.test.mjs the CSV rule it shares with the command line.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.programs import node_tests
from model.data import CLASSES, FEATURES

UI = Path(__file__).resolve().parents[1] / "service" / "ui"
PANELS = ("predict", "explain", "data", "train", "models")
IMPORT = re.compile(r'^import .* from "\./([a-z]+)\.js";$', re.MULTILINE)


def test_the_page_helpers_pass_their_node_tests() -> None:
    output = node_tests(Path(__file__).with_name("js") / "lib.test.mjs")
    assert re.search(r"^# pass [1-9]", output, re.MULTILINE), output


def imports(module: str) -> set[str]:
    return set(IMPORT.findall((UI / f"{module}.js").read_text(encoding="utf-8")))


def test_no_panel_imports_another_and_the_helpers_touch_no_page() -> None:
    for panel in PANELS:
        assert imports(panel) <= {"api", "dom", "lib", "state"}, panel
    assert imports("lib") == set()
    lib = (UI / "lib.js").read_text(encoding="utf-8")
    for word in ("document.", "window.", "fetch(", "sessionStorage"):
        assert word not in lib, word
    assert imports("main") >= set(PANELS)


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
