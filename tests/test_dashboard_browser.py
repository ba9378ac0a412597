"""The dashboard in a real browser: headless Chromium against a real ``iris-serve``.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the tests skip, except
under CI=true, where a missing browser fails. Every value the page shows is checked against
the public API's own answer for the same input.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from harness.api import VIRGINICA, a_poor_version, disagreeing_rows
from harness.browser import (
    DESKTOP,
    PHONE,
    READY,
    Browser,
    Traffic,
    chromium,
    js,
    missing_browser,
    type_into,
)
from harness.servers import ServerProcess, server_pool
from model.data import CLASSES, FEATURES

pytestmark = [pytest.mark.slow, pytest.mark.browser]
TOKEN = "browser-test-token-42"
FIRST_LOAD_LIMIT = 300_000  # bytes, the budget for the first load
FIRST_LOAD_PATHS = frozenset({"/", "/ui/main.js", "/ui/app.css", "/datasets/iris", "/predict"})
WAIT_SECONDS = 20.0
VERSICOLOR = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.1, "petal_width": 1.2}
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
POOR = "a poor canary"  # the note of the version a_poor_version trains
# A job of several seconds, so several heartbeats' points arrive before it ends: 30,000 steps
# of 8 rows, 2.5-25 s of training on the machines seen.
LONG_JOB = {
    "hidden_units": "256",
    "epochs": "2000",
    "batch_size": "8",
    "validation_fraction": "0.2",
}
T = TypeVar("T")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_pool(tmp_path_factory.mktemp("browser")) as start:
        # 160 rows a request: a CSV of 450 rows takes three batches of at most 160
        yield start(None, {"IRIS_API_TOKEN": TOKEN, "IRIS_MAX_INSTANCES": "160"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests need Chromium in CI: {reason}")
        pytest.skip(reason)
    with chromium(DESKTOP) as b:
        yield b


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def until(probe: Callable[[], T | None], what: str, seconds: float = WAIT_SECONDS) -> T:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:  # a stale element while the page redraws
            last = error
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds:g} s (last: {last!r})")


def settled(b: Browser, what: str, paths: frozenset[str] = frozenset()) -> Traffic:
    """Wait until the page has asked for every one of ``paths`` (URLs without the origin)
    and no request of its is still under way; returns what it fetched."""

    def probe() -> Traffic | None:
        traffic = b.collect()
        fetched = {urlsplit(r.url).path for r in traffic.requests.values()}
        return traffic if paths <= fetched and not traffic.pending() else None

    return until(probe, what)


def open_page(b: Browser, server: ServerProcess, panel: str = "predict") -> None:
    b.driver.get("about:blank")  # a new document, even when only the fragment differs
    b.reset()  # judge what this test does from here on
    b.driver.get(f"{server.url}/#{panel}")
    until(lambda: js(b, "return document.querySelector('#species').dataset.label"), "a prediction")


def click_tab(b: Browser, name: str) -> None:
    b.driver.find_element("id", f"tab-{name}").click()
    until(lambda: js(b, f"return !document.getElementById('{name}-panel').hidden"), f"{name} shown")


def type_flower(b: Browser, flower: dict[str, float]) -> None:
    for feature in FEATURES:
        type_into(b, f"in-{feature}", str(flower[feature]))


def shown_probabilities(b: Browser) -> dict[str, float]:
    bars = js(
        b,
        "return [...document.querySelectorAll('#bars .bar')]"
        ".map(b => [b.dataset.label, b.dataset.probability])",
    )
    return {label: float(value) for label, value in bars}


def assert_clean(b: Browser, server: ServerProcess, allowed_statuses: tuple[int, ...] = ()) -> None:
    """No console error, no failed request, nothing fetched from another host."""
    allowed = tuple(f"status of {code}" for code in allowed_statuses)
    assert b.console_errors(allowed) == []
    assert b.traffic.failures(allowed_statuses) == []
    assert b.traffic.foreign(server.url) == []


def two_versions(server: ServerProcess, api: httpx.Client) -> None:
    """At least two stored versions, one made by a job with a note (Compare and the version
    actions need two; the note and the job widen the table)."""
    if sum(m["note"] is not None for m in api.get("/models").json()["models"]) >= 1:
        return
    note = "a version made by a job, with a note as long as people write them, for the width tests"
    body = {"hyperparameters": {"epochs": 50}, "activate": False, "note": note}
    job_id = api.post("/train", json=body, headers=server.auth()).json()["job_id"]
    until(lambda: api.get(f"/train/{job_id}").json()["status"] == "succeeded", "trained", 60)


# -- first load ----------------------------------------------------------------------------------


def test_first_load_is_small_and_local(browser: Browser, server: ServerProcess) -> None:
    open_page(browser, server)
    traffic = settled(browser, "the first load done", FIRST_LOAD_PATHS)
    total = traffic.total_bytes()
    print(f"first load: {total} bytes in {len(traffic.requests)} requests")
    assert 10_000 < total < FIRST_LOAD_LIMIT
    assert traffic.foreign(server.url) == []
    assert_clean(browser, server)
    urls = {r.url.removeprefix(server.url) for r in traffic.requests.values()}
    assert urls >= FIRST_LOAD_PATHS


# -- predict -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flower", [VIRGINICA, VERSICOLOR])
def test_typing_a_flower_shows_what_predict_answers(
    browser: Browser, server: ServerProcess, api: httpx.Client, flower: dict[str, float]
) -> None:
    open_page(browser, server)
    expected = api.post("/predict", json={"instances": [flower]}).json()["predictions"][0]
    type_flower(browser, flower)
    until(lambda: shown_probabilities(browser) == expected["probabilities"], "the API's numbers")
    species = browser.driver.find_element("id", "species")
    assert species.text.lower() == expected["label"]
    # the slider follows the number field
    assert js(browser, "return document.getElementById('range-petal_length').value") == str(
        flower["petal_length"]
    )
    labels = js(
        browser, "return [...document.querySelectorAll('#fields label')].map(l => l.textContent)"
    )
    assert labels == ["Sepal length", "Sepal width", "Petal length", "Petal width"]
    assert_clean(browser, server)


def test_a_negative_measurement_shows_the_api_message_next_to_its_field(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    open_page(browser, server)
    bad = VIRGINICA | {"sepal_width": -1.5}
    problem = api.post("/predict", json={"instances": [bad]}).json()
    assert problem["status"] == 422
    message = next(e["msg"] for e in problem["errors"] if "sepal_width" in e["loc"])
    type_into(browser, "in-sepal_width", "-1.5")
    error = browser.driver.find_element("id", "err-sepal_width")
    until(lambda: error.text == message, f"the message {message!r} next to sepal width")
    assert browser.driver.find_element("id", "in-sepal_width").get_attribute("aria-invalid") == (
        "true"
    )
    assert browser.driver.find_element("id", "err-sepal_length").text == ""
    type_into(browser, "in-sepal_width", "3")
    until(lambda: error.text == "", "the message gone once the value is good")
    assert_clean(browser, server, allowed_statuses=(422,))


def test_a_pasted_csv_is_predicted_in_batches_within_the_row_limit(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    open_page(browser, server)
    rows = [
        VIRGINICA,
        VERSICOLOR,
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    ] * 150  # 450 rows: three batches
    text = "sepal_length,sepal_width,petal_length,petal_width\n" + "\n".join(
        ",".join(str(r[f]) for f in FEATURES) for r in rows
    )
    js(browser, "document.getElementById('csv-text').value = arguments[0]", text)
    browser.reset()
    browser.driver.find_element("id", "csv-run").click()
    status = browser.driver.find_element("id", "csv-status")
    until(lambda: status.text.startswith("450 of 450"), "all rows predicted")
    batches = [r for r in browser.collect().requests.values() if r.url.endswith("/predict")]
    assert [r.status for r in batches] == [200, 200, 200]  # within IRIS_MAX_INSTANCES
    expected = api.post("/predict", json={"instances": rows[:3]}).json()["predictions"]
    shown = js(
        browser,
        "return [...document.querySelectorAll('#csv-table tbody tr')]"
        ".map(r => r.children[5].textContent)",
    )
    assert len(shown) == 450
    assert shown[:3] == [p["label"] for p in expected]
    assert js(browser, "return document.getElementById('csv-download').hidden") is False
    assert js(browser, "return document.getElementById('csv-progress').value") == 450
    assert_clean(browser, server)


# -- explain -------------------------------------------------------------------------------------

EXPLAINED = (
    "x",
    "h_a",
    "h_s",
    "o_a",
    "o_s",
    "L",
    "do_a",
    "dh_s",
    "dh_a",
    "dW1",
    "db1",
    "dW2",
    "db2",
)


def shown_matrix(b: Browser, name: str) -> list[list[float]]:
    cells = js(
        b,
        "return [...document.querySelectorAll(`figure[data-name='${arguments[0]}'] tbody tr`)]"
        ".map(r => [...r.querySelectorAll('td')].map(td => td.dataset.value))",
        name,
    )
    return [[float(v) for v in row] for row in cells]


@pytest.mark.parametrize("label", ["versicolor", "setosa"])
def test_the_explain_panel_shows_exactly_what_gradients_answers(
    browser: Browser, server: ServerProcess, api: httpx.Client, label: str
) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, server)
    type_flower(browser, VIRGINICA)
    until(lambda: browser.driver.find_element("id", "species").text.lower() == "virginica", "set")
    click_tab(browser, "explain")
    Select(browser.driver.find_element("id", "true-species")).select_by_value(label)
    until(
        lambda: (
            js(browser, "return document.getElementById('explain-panel').dataset.label") == label
            and shown_matrix(browser, "x")
        ),
        "the explain panel drawn",
    )
    answer = api.post(
        "/gradients",
        json={
            "instances": [VIRGINICA],
            "labels": [label],
            "include": ["activations", "intermediates"],
        },
    ).json()
    expected = {
        **answer["activations"],
        **answer["intermediates"],
        "L": [[answer["loss"]]],
        **{f"d{k}": v for k, v in answer["gradients"].items()},
    }
    expected["db1"], expected["db2"] = [expected["db1"]], [expected["db2"]]
    for name in EXPLAINED:
        assert shown_matrix(browser, name) == expected[name], name
    # the network: one edge per weight drawn, coloured by its value
    weights = js(browser, "return document.querySelectorAll('#net line[data-weight]').length")
    hidden = len(answer["gradients"]["b1"])
    assert weights == min(hidden, 24) * 7
    assert_clean(browser, server)


# -- data ----------------------------------------------------------------------------------------


def test_the_scatter_plot_shows_every_flower_over_the_regions(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, server, "data")
    until(
        lambda: js(browser, "return document.querySelectorAll('#scatter .pt').length") == 150,
        "150 flowers",
    )
    # the regions: an 80 x 80 grid drawn as one image the browser smooths
    assert js(browser, "return document.querySelector('#scatter image.regions').dataset.steps") == (
        "80"
    )
    # the misclassified flowers are marked: exactly those /predict gets wrong
    missed = js(
        browser,
        "return [...document.querySelectorAll('#scatter .pt')]"
        ".filter(c => c.classList.contains('missed')).length",
    )
    iris = api.get("/datasets/iris").json()["samples"]
    labels = [
        p["label"]
        for p in api.post(
            "/predict", json={"instances": [{f: s[f] for f in FEATURES} for s in iris]}
        ).json()["predictions"]
    ]
    assert missed == sum(p != s["species"] for p, s in zip(labels, iris, strict=True))
    Select(browser.driver.find_element("id", "axis-x")).select_by_value("sepal_length")
    caption = browser.driver.find_element("id", "scatter-caption")
    until(lambda: "petal length" in caption.text, "the caption names the fixed features")
    species = js(
        browser,
        "return [...new Set([...document.querySelectorAll('#scatter .pt')]"
        ".map(c => c.classList[1]))]",
    )
    assert sorted(species) == list(CLASSES)
    assert_clean(browser, server)


# -- train and models ----------------------------------------------------------------------------


def test_training_from_the_page_streams_points_then_serves_the_new_version_and_rolls_back(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    before = api.get("/models").json()["current"]
    open_page(browser, server, "train")
    until(lambda: browser.driver.find_elements("id", "hp-hidden_units"), "the form")
    type_into(browser, "token", TOKEN)
    browser.driver.find_element("css selector", "#token-form button[type=submit]").click()
    for name, value in LONG_JOB.items():
        type_into(browser, f"hp-{name}", value)
    serve = browser.driver.find_element("id", "activate")
    assert not serve.is_selected()  # a new version is not served unless asked
    serve.click()
    browser.driver.find_element("id", "train-start").click()
    job_id = until(lambda: api.get("/train").json()["jobs"][0]["job_id"], "the job")
    # points arrive while the job is still running
    until(
        lambda: (
            int(js(browser, "return document.getElementById('loss-chart').dataset.live || '0'"))
            >= 2
        ),
        "two live points",
    )
    assert api.get(f"/train/{job_id}").json()["status"] == "running"
    live_path = js(
        browser, "return document.querySelector('#loss-chart path.train').dataset.points"
    )
    assert int(live_path) >= 2
    status = browser.driver.find_element("id", "train-status")
    until(lambda: status.text.startswith("Job succeeded"), "the job's end", seconds=60)
    job = api.get(f"/train/{job_id}").json()
    new = job["model_version"]
    assert job["activated"] is True
    assert new in status.text
    assert api.get("/models").json()["current"] == new
    until(lambda: new in browser.driver.find_element("id", "serving").text, "the new version")
    # the full stored history replaces the live points
    points = js(browser, "return document.querySelector('#loss-chart path.train').dataset.points")
    assert int(points) == int(LONG_JOB["epochs"])
    assert js(browser, "return document.querySelector('#jobs tbody tr .badge').textContent") == (
        "succeeded"
    )

    # 256 hidden units: the explain panel's wide matrices scroll inside their cards
    click_tab(browser, "explain")
    until(
        lambda: (
            js(browser, "return document.getElementById('explain-panel').dataset.version") == new
            and js(browser, READY["explain"])
        ),
        "the new version explained",
    )
    assert js(browser, "return document.documentElement.scrollWidth") <= DESKTOP[0]

    click_tab(browser, "models")
    button = until(
        lambda: browser.driver.find_element("css selector", f"button[data-activate='{before}']"),
        "the roll-back button",
    )
    assert button.text == "Roll back"
    button.click()
    # asked first: nothing changes until the question is answered
    question = browser.driver.find_element("id", "models-question")
    until(question.is_displayed, "the question")
    assert before in question.text
    assert api.get("/models").json()["current"] == new
    browser.driver.find_element("id", "models-confirm-yes").click()
    until(lambda: api.get("/models").json()["current"] == before, "CURRENT back")
    status = browser.driver.find_element("id", "models-status")
    until(lambda: f"version {before} is now served" in status.text, "the confirmation message")
    served = until(
        lambda: (
            (v := api.post("/predict", json={"instances": [VIRGINICA]}).json()["model_version"])
            == before
            and v
        ),
        "/predict serving the old version",
    )
    assert served == before
    until(lambda: before in browser.driver.find_element("id", "serving").text, "header updated")
    until(
        lambda: len(browser.driver.find_elements("css selector", "#compare .card")) == 2,
        "two versions compared",
    )
    matrices = js(
        browser,
        "return [...document.querySelectorAll('#compare table.confusion')]"
        ".map(t => [...t.querySelectorAll('td')].map(td => +td.textContent))",
    )
    for cells in matrices:
        assert sum(cells) == 150
    # the curves of both versions on one pair of axes, and the message still there
    series = js(
        browser,
        "return [...document.querySelectorAll('#cmp-loss path.line')].map(p => p.dataset.series)",
    )
    assert {"A train", "B train"} <= set(series)
    assert f"version {before} is now served" in status.text
    assert_clean(browser, server)


def test_cancel_from_the_page_ends_the_job(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    open_page(browser, server, "train")
    until(lambda: browser.driver.find_elements("id", "hp-epochs"), "the form")
    for name, value in (LONG_JOB | {"epochs": "5000"}).items():
        type_into(browser, f"hp-{name}", value)
    browser.driver.find_element("id", "train-start").click()
    cancel = browser.driver.find_element("id", "train-cancel")
    until(cancel.is_enabled, "cancel enabled")
    job_id = api.get("/train").json()["jobs"][0]["job_id"]
    until(lambda: api.get(f"/train/{job_id}").json()["status"] == "running", "running")
    cancel.click()
    status = browser.driver.find_element("id", "train-status")
    until(lambda: status.text.startswith(("Cancel requested", "Job cancelled")), "the cancel said")
    seen: list[str] = []

    def ended() -> bool:
        seen.append(status.text)
        return status.text.startswith("Job cancelled")

    until(ended, "the cancelled end", seconds=30)
    # the acknowledgement stayed until the end: no progress line replaced it
    asked = [text for text in seen if not text.startswith("Job cancelled")]
    assert all(text.startswith("Cancel requested") for text in asked), asked
    job = api.get(f"/train/{job_id}").json()
    assert job["status"] == "cancelled"
    # the epoch shown is the stored one, and the stored message names the same epoch
    epoch = job["progress"]["epoch"]
    assert status.text.startswith(f"Job cancelled at epoch {epoch} of 5000"), status.text
    assert f"after epoch {epoch}" in job["error"], job["error"]
    assert_clean(browser, server)


# -- every panel, keyboard, phone ----------------------------------------------------------------


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_panel_loads_cleanly_and_fits(
    browser: Browser, server: ServerProcess, size: tuple[int, int]
) -> None:
    browser.resize(size)
    try:
        for panel, ready in READY.items():
            browser.reset()
            open_page(browser, server, panel)
            until(lambda ready=ready: js(browser, ready), f"{panel} drawn")
            settled(browser, f"{panel}: every request answered")
            assert_clean(browser, server)
            width = js(browser, "return document.documentElement.scrollWidth")
            assert width <= size[0], f"{panel} is {width} px wide at {size[0]} px"
    finally:
        browser.resize(DESKTOP)


def test_the_tabs_work_with_the_keyboard(browser: Browser, server: ServerProcess) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    tab = browser.driver.find_element("id", "tab-predict")
    tab.send_keys(Keys.ARROW_RIGHT)
    active = browser.driver.switch_to.active_element
    assert active.get_attribute("id") == "tab-explain"
    assert active.get_attribute("aria-selected") == "true"
    assert js(browser, "return document.getElementById('explain-panel').hidden") is False
    active.send_keys(Keys.END)
    assert browser.driver.switch_to.active_element.get_attribute("id") == "tab-monitor"
    browser.driver.switch_to.active_element.send_keys(Keys.HOME)
    assert browser.driver.switch_to.active_element.get_attribute("id") == "tab-predict"
    # from the tab, Tab reaches the panel, then the first measurement
    browser.driver.switch_to.active_element.send_keys(Keys.TAB)
    browser.driver.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.driver.switch_to.active_element.get_attribute("id") == "in-sepal_length"
    # every input has a label bound to it
    unlabelled = js(
        browser,
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter(e => !e.labels?.length && !e.getAttribute('aria-labelledby')"
        " && !e.getAttribute('aria-label')).map(e => e.id)",
    )
    assert unlabelled == []
    outline = js(
        browser,
        "return getComputedStyle(document.activeElement).outlineStyle",
    )
    assert outline != "none"


def test_the_token_stays_out_of_urls_and_storage_other_than_the_session(
    browser: Browser, server: ServerProcess
) -> None:
    browser.reset()
    open_page(browser, server, "models")
    type_into(browser, "token", TOKEN)
    browser.driver.find_element("css selector", "#token-form button[type=submit]").click()
    state = browser.driver.find_element("id", "token-state")
    until(lambda: state.text.startswith("token accepted"), "the token checked")
    assert js(browser, "return sessionStorage.getItem('iris-api-token')") == TOKEN
    assert js(browser, "return localStorage.length") == 0
    assert js(browser, "return document.getElementById('token').value") == ""
    until(lambda: js(browser, READY["models"]), "models drawn")
    traffic = browser.collect()
    assert all(TOKEN not in r.url for r in traffic.requests.values())
    assert TOKEN not in browser.driver.current_url


def test_page_strings_from_the_server_are_text(browser: Browser, server: ServerProcess) -> None:
    """A problem detail holding markup is shown as text, never parsed."""
    open_page(browser, server, "train")
    until(lambda: browser.driver.find_elements("id", "hp-seed"), "the form")
    js(browser, "sessionStorage.setItem('iris-api-token', '<img src=x onerror=alert(1)>')")
    browser.driver.find_element("id", "train-start").click()
    error = browser.driver.find_element("id", "train-error")
    until(lambda: "invalid bearer token" in error.text, "the 401 shown")
    assert "Bearer <token>" in error.text  # the detail's own angle brackets, as text
    assert js(browser, "return document.querySelectorAll('#train-panel img').length") == 0
    js(browser, "sessionStorage.clear()")


# -- honest states ---------------------------------------------------------------------------------


def test_an_invalid_field_hides_the_prediction_and_every_field_keeps_its_message(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    open_page(browser, server)
    problem = api.post("/predict", json={"instances": [VIRGINICA | {"sepal_width": -2}]}).json()
    message = next(e["msg"] for e in problem["errors"] if "sepal_width" in e["loc"])
    type_into(browser, "in-sepal_width", "-2")
    error = browser.driver.find_element("id", "err-sepal_width")
    until(lambda: error.text == message, "the API's message for -2")
    species = browser.driver.find_element("id", "species")
    assert species.text == "No prediction"
    assert js(browser, "return document.querySelectorAll('#bars .bar').length") == 0
    # another field emptied: both keep their messages, and the card names both
    type_into(browser, "in-petal_width", "")
    until(
        lambda: browser.driver.find_element("id", "err-petal_width").text == "enter a number",
        "the empty field's message",
    )
    note = browser.driver.find_element("id", "predict-note")
    until(lambda: "petal width" in note.text, "the card names the empty field")
    assert error.text == message
    assert "sepal width" in note.text
    assert species.text == "No prediction"
    type_into(browser, "in-sepal_width", str(VIRGINICA["sepal_width"]))
    type_into(browser, "in-petal_width", str(VIRGINICA["petal_width"]))
    until(lambda: species.text.lower() == "virginica", "the prediction back")
    assert note.text == ""
    assert_clean(browser, server, allowed_statuses=(422,))


def test_a_stopped_server_shows_a_banner_and_the_page_recovers_by_itself(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with server_pool(tmp_path_factory.mktemp("offline")) as start:
        own = start(None, {"IRIS_API_TOKEN": TOKEN})
        open_page(browser, own)
        own.stop()
        for feature, value in SETOSA.items():  # a change the page cannot send
            type_into(browser, f"in-{feature}", str(value))
        banner = browser.driver.find_element("id", "banner")
        until(banner.is_displayed, "the banner")
        assert "cannot be reached" in banner.text
        assert "fetch" not in banner.text.lower()
        assert js(browser, "return document.body.classList.contains('stale')") is True
        assert "not reachable" in browser.driver.find_element("id", "serving").text
        assert "fetch" not in browser.driver.find_element("id", "species").text.lower()
        own.restart()
        until(lambda: not banner.is_displayed(), "the banner gone", seconds=30)
        species = browser.driver.find_element("id", "species")
        until(lambda: species.text.lower() == "setosa", "the change predicted once back")
        assert js(browser, "return document.body.classList.contains('stale')") is False
        assert "Serving model" in browser.driver.find_element("id", "serving").text


def test_keeping_a_wrong_token_says_so_at_once_and_keeps_nothing(
    browser: Browser, server: ServerProcess
) -> None:
    open_page(browser, server)
    js(browser, "sessionStorage.clear()")
    type_into(browser, "token", "not-the-token")
    browser.driver.find_element("css selector", "#token-form button[type=submit]").click()
    state = browser.driver.find_element("id", "token-state")
    until(lambda: state.text == "wrong token: not kept", "the wrong token found")
    assert js(browser, "return sessionStorage.getItem('iris-api-token')") is None
    type_into(browser, "token", TOKEN)
    browser.driver.find_element("css selector", "#token-form button[type=submit]").click()
    until(lambda: state.text.startswith("token accepted"), "the right token accepted")
    assert js(browser, "return sessionStorage.getItem('iris-api-token')") == TOKEN
    js(browser, "sessionStorage.clear()")
    assert_clean(browser, server, allowed_statuses=(401,))


def test_a_job_started_through_the_api_is_followed_by_a_freshly_opened_page(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    body = {
        "hyperparameters": {k: int(v) if "." not in v else float(v) for k, v in LONG_JOB.items()}
        | {"epochs": 5000},
        "activate": False,
    }
    job_id = api.post("/train", json=body, headers=server.auth()).json()["job_id"]
    try:
        open_page(browser, server, "train")
        status = browser.driver.find_element("id", "train-status")
        until(lambda: "epoch" in status.text and status.text.startswith("Job running"), "followed")
        first = int(status.text.split("epoch ")[1].split(" ")[0])
        until(
            lambda: int(status.text.split("epoch ")[1].split(" ")[0]) > first,
            "the epochs moving",
        )
        assert browser.driver.find_element("id", "train-cancel").is_enabled()
        assert js(browser, "return document.getElementById('train-panel').dataset.following") == (
            job_id
        )
        # the jobs list refreshes while the job runs: its row's epoch count moves too
        row_epochs = (
            "return document.querySelector('#jobs tbody tr td[data-label=epochs]')?.textContent"
        )
        shown = until(lambda: js(browser, row_epochs), "the job in the list")
        until(lambda: js(browser, row_epochs) not in (None, shown), "the jobs list refreshed")
    finally:
        cancelled = api.post(f"/train/{job_id}/cancel", headers=server.auth()).json()
    # what a page opened now would show: the request is on the job's record
    assert cancelled["cancel_requested"] is True
    until(lambda: status.text.startswith("Job cancelled"), "the end seen", seconds=30)
    assert not browser.driver.find_element("id", "train-cancel").is_enabled()
    assert_clean(browser, server)


def test_a_headerless_csv_is_predicted(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    open_page(browser, server)
    js(browser, "document.getElementById('csv-text').value = arguments[0]", "5.1,3.5,1.4,0.2\n")
    browser.driver.find_element("id", "csv-run").click()
    status = browser.driver.find_element("id", "csv-status")
    until(lambda: status.text.startswith("1 of 1"), "the row predicted")
    expected = api.post("/predict", json={"instances": [SETOSA]}).json()["predictions"][0]["label"]
    shown = js(
        browser, "return document.querySelector('#csv-table tbody tr').children[5].textContent"
    )
    assert shown == expected
    assert_clean(browser, server)


def test_the_curve_of_a_3000_epoch_run_ends_on_a_tick_reading_3000(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    body = {"hyperparameters": {"epochs": 3000}, "activate": False}
    job_id = api.post("/train", json=body, headers=server.auth()).json()["job_id"]
    until(lambda: api.get(f"/train/{job_id}").json()["status"] == "succeeded", "trained", 60)
    open_page(browser, server, "train")
    ticks = until(
        lambda: js(
            browser,
            "return [...document.querySelectorAll('#loss-chart svg text')]"
            ".map(t => t.textContent).filter(t => /^[0-9]+$/.test(t))",
        ),
        "the curve drawn",
    )
    until(
        lambda: (
            js(browser, "return document.querySelector('#loss-chart path.train')?.dataset.points")
            == "3000"
        ),
        "the stored history drawn",
    )
    ticks = js(
        browser,
        "return [...document.querySelectorAll('#loss-chart svg text')]"
        ".map(t => t.textContent).filter(t => /^[0-9]+$/.test(t))",
    )
    assert ticks[-1] == "3000", ticks
    assert ticks == ["0", "1000", "2000", "3000"]


# -- every width ---------------------------------------------------------------------------------

# Every SVG text inside its SVG and clear of the others; every visible text at least 11 px tall
# as drawn (SVG text scaled by its drawing's width); every button within the viewport's width.
SVG_TEXT_OUTSIDE = """
return [...document.querySelectorAll('svg text')]
  .filter(t => t.getClientRects().length).filter(t => {
  const box = t.getBoundingClientRect(), frame = t.ownerSVGElement.getBoundingClientRect();
  return box.left < frame.left - 0.5 || box.right > frame.right + 0.5
    || box.top < frame.top - 0.5 || box.bottom > frame.bottom + 0.5;
}).map(t => t.textContent)
"""
SMALL_TEXT = """
return [...document.querySelectorAll('body *')]
  .filter(e => e.getClientRects().length && e.getBoundingClientRect().width > 0)
  .filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
  .map(e => {
    let size = parseFloat(getComputedStyle(e).fontSize);
    const frame = e.ownerSVGElement;
    if (frame && frame.viewBox.baseVal && frame.viewBox.baseVal.width) {
      size *= frame.getBoundingClientRect().width / frame.viewBox.baseVal.width;
    }
    return [e.tagName, e.textContent.trim().slice(0, 24), Math.round(size * 10) / 10];
  })
  .filter(([, , size]) => size < 11)
"""
SVG_TEXT_OVERLAPPING = """
const boxes = [...document.querySelectorAll('svg text')]
  .filter(t => t.getClientRects().length && t.textContent.trim())
  .map(t => [t, t.getBoundingClientRect()]);
const found = [];
boxes.forEach(([a, r], i) => boxes.slice(i + 1).forEach(([b, q]) => {
  const x = Math.min(r.right, q.right) - Math.max(r.left, q.left);
  const y = Math.min(r.bottom, q.bottom) - Math.max(r.top, q.top);
  if (a.ownerSVGElement === b.ownerSVGElement && x > 1 && y > 1) {
    found.push(a.textContent + ' / ' + b.textContent);
  }
}));
return found
"""
BUTTONS_OUTSIDE = """
return [...document.querySelectorAll('main button, header button, nav button')]
  .filter(b => b.getClientRects().length)
  .filter(b => {
    const r = b.getBoundingClientRect(), box = b.closest('.scroll')?.getBoundingClientRect();
    return r.left < 0 || r.right > innerWidth
      || (box && (r.left < box.left - 0.5 || r.right > box.right + 0.5));  // scrolled out of view
  })
  .map(b => b.textContent)
"""


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_panel_keeps_its_text_readable_and_its_actions_in_reach(
    browser: Browser, server: ServerProcess, api: httpx.Client, size: tuple[int, int]
) -> None:
    two_versions(server, api)
    browser.resize(size)
    try:
        for panel, ready in READY.items():
            open_page(browser, server, panel)
            until(lambda ready=ready: js(browser, ready), f"{panel} drawn")
            settled(browser, f"{panel}: every request answered")
            assert js(browser, SVG_TEXT_OUTSIDE) == [], panel
            assert js(browser, SVG_TEXT_OVERLAPPING) == [], panel
            assert js(browser, SMALL_TEXT) == [], panel
            assert js(browser, BUTTONS_OUTSIDE) == [], panel
            if panel == "models":
                actions = js(
                    browser, "return document.querySelectorAll('button[data-activate]').length"
                )
                assert actions >= 1
    finally:
        browser.resize(DESKTOP)


# -- charts a person trusts ----------------------------------------------------------------------


def test_a_curve_reads_out_the_epoch_under_the_pointer(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    two_versions(server, api)
    open_page(browser, server, "models")
    until(lambda: js(browser, READY["models"]), "models drawn")
    version = browser.driver.find_element("id", "cmp-a").get_attribute("value")
    history = api.get(f"/models/{version}/history").json()["history"]
    chart = until(
        lambda: browser.driver.find_element("css selector", "#cmp-loss svg"), "the loss chart"
    )
    ActionChains(browser.driver).move_to_element(chart).perform()
    readout = browser.driver.find_element("css selector", "#cmp-loss .readout")
    until(lambda: readout.text.startswith("epoch "), "the readout")
    epoch = int(readout.text.split()[1].rstrip(":"))
    point = next(h for h in history if h["epoch"] == epoch)
    assert f"A train {point['train_loss']:.4f}" in readout.text


def test_explain_uses_one_colour_scale_a_pass_and_numbers_hidden_units_from_zero(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    open_page(browser, server, "explain")
    until(lambda: js(browser, READY["explain"]), "explain drawn")
    label = js(browser, "return document.getElementById('true-species').value")
    flower = js(browser, "return document.getElementById('explain-flower').textContent")
    assert flower
    scales = js(
        browser, "return [...document.querySelectorAll('.mats .scale')].map(s => +s.dataset.max)"
    )
    assert len(scales) == 2
    instance = {
        f: float(js(browser, f"return document.getElementById('in-{f}').value")) for f in FEATURES
    }
    answer = api.post(
        "/gradients",
        json={
            "instances": [instance],
            "labels": [label],
            "include": ["activations", "intermediates"],
        },
    ).json()
    forward = [abs(v) for m in answer["activations"].values() for row in m for v in row]
    assert scales[0] == max([*forward, abs(answer["loss"])])
    # every hidden-unit label and hover text counts from 0, as the API's arrays do
    heads = js(
        browser,
        'return [...document.querySelectorAll("figure[data-name=h_a] thead th")]'
        ".map(th => th.textContent).filter(Boolean)",
    )
    assert heads[0] == "0"
    assert heads[-1] == str(len(answer["gradients"]["b1"]) - 1)
    first = js(browser, "return document.querySelector('figure[data-name=h_a] td').title")
    assert first.startswith("h_a[0] = ")


# -- versions ------------------------------------------------------------------------------------


def test_a_version_is_deleted_from_the_page_after_its_question_and_shows_its_note(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    body = {"hyperparameters": {"epochs": 20}, "activate": False, "note": "to be deleted"}
    job_id = api.post("/train", json=body, headers=server.auth()).json()["job_id"]
    until(lambda: api.get(f"/train/{job_id}").json()["status"] == "succeeded", "trained", 60)
    version = api.get(f"/train/{job_id}").json()["model_version"]
    open_page(browser, server, "models")
    js(browser, "sessionStorage.setItem('iris-api-token', arguments[0])", TOKEN)
    button = until(
        lambda: browser.driver.find_element("css selector", f"button[data-delete='{version}']"),
        "the delete button",
    )
    row = button.find_element("xpath", "ancestor::tr")
    assert "to be deleted" in row.text
    assert job_id[:8] in row.text
    sha = row.find_element("css selector", ".sha").get_attribute("data-sha256")
    assert sha == api.get(f"/models/{version}").json()["data_sha256"]
    button.click()
    question = browser.driver.find_element("id", "models-question")
    until(question.is_displayed, "the question")
    assert version in question.text
    browser.driver.find_element("id", "models-confirm-no").click()
    assert api.get(f"/models/{version}").status_code == 200  # "no" changes nothing
    button = browser.driver.find_element("css selector", f"button[data-delete='{version}']")
    button.click()
    until(question.is_displayed, "the question again")
    browser.driver.find_element("id", "models-confirm-yes").click()
    status = browser.driver.find_element("id", "models-status")
    until(lambda: status.text == f"Version {version} is deleted.", "the deletion said")
    assert api.get(f"/models/{version}").status_code == 404
    until(
        lambda: (
            not browser.driver.find_elements("css selector", f"button[data-delete='{version}']")
        ),
        "the row gone",
    )
    # the served version offers no delete
    served = api.get("/models").json()["current"]
    assert not browser.driver.find_elements("css selector", f"button[data-delete='{served}']")
    js(browser, "sessionStorage.clear()")
    assert_clean(browser, server)


# -- monitor -------------------------------------------------------------------------------------


def open_monitor(b: Browser, server: ServerProcess) -> None:
    open_page(b, server, "monitor")
    until(lambda: js(b, READY["monitor"]), "the monitor drawn")


def shown_split(b: Browser) -> dict[str, str]:
    return dict(
        js(
            b,
            "return [...document.querySelectorAll('#split dd[data-role]')]"
            ".map(d => [d.dataset.role, d.dataset.version])",
        )
    )


def history_rows(b: Browser) -> list[dict[str, str]]:
    return list(
        js(
            b,
            "return [...document.querySelectorAll('#routing-history tbody tr')].map(r => ({"
            " kind: r.dataset.event, id: r.dataset.id, decided: r.classList.contains('decided'),"
            " ...Object.fromEntries([...r.cells].map(c => [c.dataset.label, c.textContent]))}))",
        )
    )


def test_a_canary_set_with_the_token_shows_in_the_split_the_figures_and_the_history(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    from selenium.webdriver.support.ui import Select

    canary = a_poor_version(api, server.auth(), POOR)
    stable = api.get("/models").json()["current"]
    rows, labels = disagreeing_rows(api, canary, stable)
    api.put("/routing", json={}, headers=server.auth()).raise_for_status()
    try:
        open_monitor(browser, server)
        assert shown_split(browser) == {"stable": stable, "canary": "", "shadow": ""}
        type_into(browser, "token", TOKEN)
        browser.driver.find_element("css selector", "#token-form button[type=submit]").click()
        state = browser.driver.find_element("id", "token-state")
        until(lambda: state.text.startswith("token accepted"), "the token accepted")
        offered = "return [...document.getElementById('canary-version').options].map(o => o.value)"
        until(lambda: canary in js(browser, offered), "the version offered")
        assert stable not in js(browser, offered)  # stable is never its own canary
        Select(browser.driver.find_element("id", "canary-version")).select_by_value(canary)
        type_into(browser, "canary-weight", "0.25")
        type_into(browser, "canary-promote-after", str(len(rows)))
        type_into(browser, "canary-max-drop", "0")
        browser.driver.find_element("id", "canary-set").click()

        # the split shows what the API now routes
        until(lambda: shown_split(browser)["canary"] == canary, "the canary in the split")
        routing = api.get("/routing").json()
        assert routing["canary"] == {
            "version": canary,
            "weight": 0.25,
            "promote_after": len(rows),
            "max_accuracy_drop": 0.0,
        }
        split = browser.driver.find_element("id", "split").text
        assert "25 % of the requests that name no version" in split
        assert f"after {len(rows)} feedback label" in split
        status = browser.driver.find_element("id", "routing-status")
        assert status.text.startswith(f"Canary set: {canary} answers 25 %")
        # the history, newest first, has the change as the API records it
        entry = api.get("/routing/history").json()["history"][-1]
        until(
            lambda: history_rows(browser)[0]["id"] == str(entry["id"]), "the change in the history"
        )
        newest = history_rows(browser)[0]
        assert (newest["kind"], newest["event"]) == ("routing_changed", "routing changed")
        assert newest["reason"] == entry["reason"]
        assert newest["routing after"] == f"stable {stable}; canary {canary} at 25 %"
        assert not newest["decided"]
        # the canary's trial, from /monitoring
        trial = "return document.querySelector('#split .trial')?.textContent"
        none_yet = f"Trial: 0 of {len(rows)} feedback labels so far."
        until(lambda: js(browser, trial) == none_yet, "the trial, no labels yet")

        # feedback the canary gets wrong: the rule rolls it back, and the page shows it
        answer = api.post(
            "/feedback",
            json={"model_version": canary, "instances": rows, "labels": labels},
            headers=server.auth(),
        ).json()
        assert answer["decision"]["event"] == "rolled_back"
        until(lambda: history_rows(browser)[0]["kind"] == "rolled_back", "the rollback shown")
        rollback = history_rows(browser)[0]
        assert rollback["decided"]  # it stands out
        assert rollback["event"] == "rolled back"
        assert rollback["reason"] == answer["decision"]["reason"]
        assert rollback["routing after"] == f"stable {stable}; no canary, no shadow"
        assert history_rows(browser)[1]["id"] == str(entry["id"])
        until(lambda: shown_split(browser)["canary"] == "", "the split without the canary")
        # the canary's live accuracy, as /monitoring counts it
        figures = api.get("/monitoring").json()["versions"][canary]
        cell = (
            "return document.querySelector("
            f"`#monitor-versions tr[data-version='{canary}'] td[data-label='${{arguments[0]}}']`"
            ")?.textContent"
        )
        until(lambda: js(browser, cell, "labels") == str(figures["feedback"]["count"]), "labels")
        assert figures["feedback"]["accuracy"] == 0.0
        assert js(browser, cell, "live accuracy") == "0.0000"
        assert js(browser, cell, "served") == str(figures["served"])
        if figures["shadow"] is None:  # never computed in shadow: a dash, not a number
            assert js(browser, cell, "shadow agreement") == "\u2014"
        assert_clean(browser, server)
    finally:
        api.put("/routing", json={}, headers=server.auth())
        js(browser, "sessionStorage.clear()")


def test_a_wrong_token_and_a_refused_weight_are_shown_next_to_the_routing_form(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    from selenium.webdriver.support.ui import Select

    canary = a_poor_version(api, server.auth(), POOR)
    api.put("/routing", json={}, headers=server.auth()).raise_for_status()
    before = api.get("/routing").json()
    open_monitor(browser, server)
    js(browser, "sessionStorage.setItem('iris-api-token', 'not-the-token')")
    until(
        lambda: canary in js(browser, "return document.getElementById('canary-version').innerText"),
        "the version offered",
    )
    Select(browser.driver.find_element("id", "canary-version")).select_by_value(canary)
    type_into(browser, "canary-weight", "0.5")
    browser.driver.find_element("id", "canary-set").click()
    error = browser.driver.find_element("id", "canary-error")
    detail = api.put(
        "/routing",
        json={"canary": {"version": canary, "weight": 0.5}},
        headers=server.auth("not-the-token"),
    ).json()["detail"]
    until(lambda: error.text == detail, "the 401's detail next to the form")
    assert detail.startswith("invalid bearer token")
    assert error.value_of_css_property("color") == "rgba(185, 28, 28, 1)"  # the page's --bad
    assert api.get("/routing").json() == before

    # the right token, a weight the API refuses: its message next to the weight
    js(browser, "sessionStorage.setItem('iris-api-token', arguments[0])", TOKEN)
    type_into(browser, "canary-weight", "1.5")
    browser.driver.find_element("id", "canary-set").click()
    problem = api.put(
        "/routing",
        json={"canary": {"version": canary, "weight": 1.5}, "revision": before["revision"]},
        headers=server.auth(),
    ).json()
    assert problem["status"] == 422
    weight_error = browser.driver.find_element("id", "err-canary-weight")
    until(lambda: weight_error.text == problem["errors"][0]["msg"], "the weight's message")
    assert error.text == problem["detail"]
    assert browser.driver.find_element("id", "canary-weight").get_attribute("aria-invalid") == (
        "true"
    )
    # what the page can judge itself is said without asking
    browser.reset()
    type_into(browser, "canary-weight", "")
    browser.driver.find_element("id", "canary-set").click()
    until(lambda: weight_error.text == "enter a number", "the empty weight's message")
    puts = [r for r in browser.collect().requests.values() if r.method == "PUT"]
    assert puts == []
    assert api.get("/routing").json() == before
    js(browser, "sessionStorage.clear()")
    assert_clean(browser, server, allowed_statuses=(401, 422))


def test_the_drift_chart_draws_each_feature_against_the_threshold_and_flags_drift(
    browser: Browser, server: ServerProcess, api: httpx.Client
) -> None:
    samples = api.get("/datasets/iris").json()["samples"]
    rows = [{f: s[f] for f in FEATURES} for s in samples]
    # petal lengths 3 cm longer than any seen in training: that feature drifts
    shifted = [r | {"petal_length": round(r["petal_length"] + 3, 1)} for r in rows]
    for batch in (rows, shifted, shifted, shifted):
        assert api.post("/predict", json={"instances": batch}).status_code == 200
    drifted = until(
        lambda: (
            (d := api.get("/monitoring").json()["drift"])["features"]["petal_length"]["drifted"]
            and d
        ),
        "the drift counted",
    )
    open_monitor(browser, server)

    def shown() -> dict[str, bool]:
        items = js(
            browser,
            "return [...document.querySelectorAll('#drift-now li')]"
            ".map(li => [li.dataset.feature, li.dataset.drifted])",
        )
        return {feature: flag == "true" for feature, flag in items}

    def expected() -> dict[str, bool]:
        features = api.get("/monitoring").json()["drift"]["features"]
        return {f: d["drifted"] for f, d in features.items()}

    until(lambda: shown() == expected(), "the features flagged as the API does")
    assert list(shown()) == list(FEATURES)
    flagged = browser.driver.find_element("css selector", "#drift-now li[data-drifted=true]")
    assert "drifted" in flagged.find_element("css selector", ".badge").text
    # a line per feature, from two polls on; the threshold across the drawing
    paths = (
        "return [...document.querySelectorAll('#drift-chart path.line')]"
        ".map(p => ({series: p.dataset.series, points: p.dataset.points}))"
    )
    until(
        lambda: (p := js(browser, paths)) and len(p) == 4 and all(int(d["points"]) >= 2 for d in p),
        "two points a feature",
    )
    labels = [d["series"] for d in js(browser, paths)]
    assert labels == ["Sepal length", "Sepal width", "Petal length", "Petal width"]
    petal = js(
        browser,
        "return document.querySelector('#drift-chart path.f2').classList.contains('drifted')",
    )
    assert petal is True
    rule = browser.driver.find_element("css selector", "#drift-chart line.rule.threshold")
    assert float(rule.get_attribute("data-value")) == drifted["threshold"]
    frame = browser.driver.find_element("css selector", "#drift-chart svg").rect
    assert frame["y"] <= rule.rect["y"] <= frame["y"] + frame["height"]
    caption = browser.driver.find_element("id", "drift-caption").text
    assert drifted["reference"] in caption
    # the points are the tab's: a reload draws on from them
    before = int(js(browser, "return document.getElementById('drift-chart').dataset.points"))
    open_monitor(browser, server)
    until(
        lambda: (
            int(js(browser, "return document.getElementById('drift-chart').dataset.points"))
            > before
        ),
        "the series kept over a reload",
    )
    js(browser, "sessionStorage.clear()")
    assert_clean(browser, server)


def test_the_monitor_stops_asking_while_the_service_is_away_and_goes_on_when_it_is_back(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    points = "return +document.getElementById('drift-chart').dataset.points"

    def failed(path: str) -> int:
        requests = browser.collect().requests.values()
        return sum(urlsplit(r.url).path == path and r.failed is not None for r in requests)

    with server_pool(tmp_path_factory.mktemp("monitor-offline")) as start:
        own = start(None, {"IRIS_API_TOKEN": TOKEN})
        open_monitor(browser, own)
        until(lambda: js(browser, points) >= 2, "two polls")
        own.stop()
        banner = browser.driver.find_element("id", "banner")
        until(banner.is_displayed, "the banner")
        # the page looks for the service every two seconds; over those eight seconds and more
        # the panel, which asks every three, does not (one poll may have been under way when
        # the service went)
        until(lambda: failed("/models") >= 5, "five looks for the service", seconds=30)
        assert failed("/monitoring") <= 2
        seen = js(browser, points)
        own.restart()
        until(lambda: not banner.is_displayed(), "the banner gone", seconds=30)
        until(lambda: js(browser, points) > seen, "the panel asking again")
        assert js(browser, "return document.body.classList.contains('stale')") is False
        status = browser.driver.find_element("id", "monitor-status").text
        assert status.startswith("Updated "), status
    js(browser, "sessionStorage.clear()")
