"""The one CSV rule of the command line and the dashboard, from the cases in csv_cases.json.

tests/js/csv_rule.test.mjs runs the same cases against the page's parser (service/ui).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from iris_client.csvio import column_name, parse_text, read_table, split_line
from iris_client.errors import InputError

from harness.programs import node_tests

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).with_name("csv_cases.json")).read_text(encoding="utf-8")
)["cases"]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_client_reads_every_shared_case_as_the_rule_says(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(InputError) as caught:
            parse_text(case["csv"], "cases.csv")
        message = str(caught.value)
        line = case["error"]["line"]
        if line is not None:
            assert f"cases.csv line {line}: " in message
        for words in case["error"]["contains"]:
            assert words in message
        return
    table = parse_text(case["csv"], "cases.csv")
    assert [[row[f] for f in FEATURES] for row in table.rows] == case["rows"]
    assert table.lines == case["lines"]
    assert table.species == case["species"]


def test_a_stream_and_a_file_read_alike(tmp_path: Path) -> None:
    text = (
        "\ufeffSepal Length (cm),sepal width (cm),petal length (cm),petal width (cm)\r\n1,2,3,4\r\n"
    )
    path = tmp_path / "bom.csv"
    path.write_bytes(text.encode("utf-8"))
    from_file = read_table(path)
    from_stream = read_table(io.StringIO(text))
    assert (
        from_file.rows
        == from_stream.rows
        == [dict(zip(FEATURES, [1.0, 2.0, 3.0, 4.0], strict=True))]
    )
    assert from_file.header == ["Sepal Length (cm)", "sepal width (cm)", "petal length (cm)",
                                "petal width (cm)"]  # fmt: skip


def test_names_compare_as_the_rule_says() -> None:
    assert column_name(" Sepal Length (cm) ") == "sepal_length"
    assert column_name("Sepal.Width") == "sepal_width"
    assert column_name("petal-length(cm)") == "petal_length"
    assert column_name("species") == "species"


def test_quoted_values_are_split_as_a_spreadsheet_writes_them() -> None:
    assert split_line('a, "b, c" ,"d ""e""",') == ["a", "b, c", 'd "e"', ""]
    assert split_line("1, 2 ,3") == ["1", "2", "3"]


def test_a_headerless_file_keeps_no_header_and_its_cells() -> None:
    table = parse_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    assert table.header is None
    assert table.cells == [["5.1", "3.5", "1.4", "0.2"], ["6.7", "3.0", "5.2", "2.3"]]


def test_training_data_needs_a_named_species_column() -> None:
    with pytest.raises(InputError, match="no header naming a species column"):
        parse_text("5.1,3.5,1.4,0.2\n", need_species=True)
    with pytest.raises(InputError, match="line 2: species 'rose' is not one of"):
        parse_text("sepal_length,sepal_width,petal_length,petal_width,species\n1,2,3,4,rose\n",
                   need_species=True)  # fmt: skip


def test_the_page_reads_every_shared_case_alike() -> None:
    """tests/js/csv_rule.test.mjs: the same cases against the page's parseCsv, under Node."""
    output = node_tests(Path(__file__).with_name("js") / "csv_rule.test.mjs")
    assert f"# pass {len(CASES)}" in output
