"""Screenshots of every dashboard panel at desktop and phone widths (``make screenshots``).

Starts ``iris-serve`` on a free port of 127.0.0.1 with a fresh data directory, trains from
the page itself when it shows Train (so Train and Models have something to show), gives
Monitor a rollout to show (a canary rolled back by its rule, another canary with feedback, a
shadow, inputs that drift while the panel watches), and writes
``docs/screenshots/<panel>-desktop.png`` and ``<panel>-phone.png``. Needs Debian's chromium
and chromium-driver.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from harness.api import a_poor_version, disagreeing_rows
from harness.browser import DESKTOP, PHONE, READY, Browser, chromium, js, missing_browser, type_into
from harness.servers import ServerProcess, running_server, wait_for
from model.data import FEATURES

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "screenshot-token"
# Polls of the Monitor panel watched while the inputs drift, one batch of rows each.
DRIFT_POLLS = 12
FLOWER = {"sepal_length": "6.3", "sepal_width": "2.8", "petal_length": "4.9", "petal_width": "1.6"}
CSV = (
    "sepal_length,sepal_width,petal_length,petal_width\n"
    "5.1,3.5,1.4,0.2\n6.3,2.8,4.9,1.6\n6.7,3.0,5.2,2.3\n"
)
MAX_HEIGHT = {"desktop": 1400, "phone": 2200}
TALLER = {"monitor": {"desktop": 1800, "phone": 3400}}


def ready(b: Browser, panel: str) -> None:
    wait_for(lambda: js(b, READY[panel]) is True, 30, f"{panel} drawn")
    time.sleep(0.4)  # transitions


def prepare(b: Browser, panel: str, server: ServerProcess) -> None:
    """Bring a panel into the state the screenshot shows."""
    wait_for(
        lambda: bool(js(b, "return document.querySelector('#species').dataset.label")),
        30,
        "the page started",
    )
    if panel == "predict":
        for feature, value in FLOWER.items():
            type_into(b, f"in-{feature}", value)
        js(b, "document.getElementById('csv-text').value = arguments[0]", CSV)
        b.driver.find_element("id", "csv-run").click()
        wait_for(
            lambda: js(b, "return document.querySelectorAll('#csv-table tr').length") > 0, 10, "csv"
        )
    if panel == "train":
        train_from_the_page(b)
    if panel == "explain":
        from selenium.webdriver.support.ui import Select

        Select(b.driver.find_element("id", "true-species")).select_by_value("versicolor")
    if panel == "monitor":
        watch_drift(b, server)
    ready(b, panel)


def roll_out(server: ServerProcess) -> None:
    """A canary rolled back by its rule, then another canary with a rule and feedback, and a
    shadow: what the Monitor panel shows."""
    with server.client() as api:
        samples = api.get("/datasets/iris").json()["samples"]
        rows = [{f: s[f] for f in FEATURES} for s in samples]
        species = [s["species"] for s in samples]
        models = api.get("/models").json()
        stable = models["current"]
        others = [m["version"] for m in models["models"] if m["version"] != stable]
        poor = a_poor_version(api, server.auth(), "trained for one epoch")
        wrong, theirs = disagreeing_rows(api, poor, stable)
        canary = {"version": poor, "weight": 0.1, "promote_after": len(wrong)}
        api.put("/routing", json={"canary": canary}, headers=server.auth()).raise_for_status()
        feedback = {"model_version": poor, "instances": wrong, "labels": theirs}
        api.post("/feedback", json=feedback, headers=server.auth()).raise_for_status()
        routing = {
            "canary": {
                "version": others[-1],
                "weight": 0.2,
                "promote_after": 500,
                "max_accuracy_drop": 0.02,
            },
            "shadow": {"version": others[0]},
        }
        api.put("/routing", json=routing, headers=server.auth()).raise_for_status()
        for _ in range(3):
            api.post("/predict", json={"instances": rows}).raise_for_status()
        for version in (stable, others[-1]):
            body = {"model_version": version, "instances": rows, "labels": species}
            api.post("/feedback", json=body, headers=server.auth()).raise_for_status()


def drift_points(b: Browser) -> int:
    return int(js(b, "return +document.getElementById('drift-chart').dataset.points"))


def more_points(b: Browser, than: int) -> bool:
    return drift_points(b) > than


def watch_drift(b: Browser, server: ServerProcess) -> None:
    """The flowers with petals a little wider at every poll of the panel, until it has drawn
    DRIFT_POLLS points of them (the phone's page goes on from the desktop's, kept in the tab)."""
    ready(b, "monitor")
    with server.client() as api:
        if api.get("/routing").json()["canary"] is None:  # the desktop's turn: not rolled out yet
            roll_out(server)
        iris = api.get("/datasets/iris").json()
        samples, features = iris["samples"], iris["features"]
        if drift_points(b) > DRIFT_POLLS:
            return  # drawn already (the desktop's points, kept in the tab)
        for k in range(DRIFT_POLLS):
            grown = [
                {f: s[f] for f in features} | {"petal_width": round(s["petal_width"] + k * 0.03, 2)}
                for s in samples
            ]
            api.post("/predict", json={"instances": grown}).raise_for_status()
            wait_for(partial(more_points, b, drift_points(b)), 15, "the next point")


def train_from_the_page(b: Browser) -> None:
    wait_for(
        lambda: len(b.driver.find_elements("id", "hp-hidden_units")) > 0, 30, "the training form"
    )
    type_into(b, "token", TOKEN)
    b.driver.find_element("css selector", "#token-form button[type=submit]").click()
    # Two different jobs (one per width), so Models compares two different versions.
    hidden = "16" if js(b, "return window.innerWidth") < 600 else "8"
    settings = {"hidden_units": hidden, "epochs": "300", "validation_fraction": "0.2"}
    for name, value in settings.items():
        type_into(b, f"hp-{name}", value)
    type_into(b, "note", f"{hidden} hidden units, 300 epochs")
    b.driver.find_element("id", "activate").click()  # serve it when it passes
    b.driver.find_element("id", "train-start").click()
    status = b.driver.find_element("id", "train-status")
    wait_for(lambda: status.text.startswith("Job succeeded"), 60, "the job's end")


def shoot(
    b: Browser, path: Path, size: tuple[int, int], max_height: int, colors: int = 128
) -> None:
    """The page from the top, as tall as its content (at most ``max_height``)."""
    width = size[0]
    height = min(int(js(b, "return document.documentElement.scrollHeight")), max_height)
    b.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    time.sleep(0.2)
    js(b, "document.activeElement?.blur(); window.scrollTo(0, 0)")
    shot = b.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    small(base64.b64decode(shot["data"]), path, colors)


def small(png: bytes, path: Path, colors: int = 128) -> None:
    """The screenshot as a palette PNG: flat colours and text survive, the file shrinks 3x."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    palette = image.quantize(
        colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    palette.save(path, "PNG", optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        print(f"screenshots need a browser: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iris-shots-") as tmp:
        data_dir, log = Path(tmp) / "data", Path(tmp) / "server.log"
        with (
            running_server(data_dir, log, {"IRIS_API_TOKEN": TOKEN}) as server,
            chromium(DESKTOP) as browser,
        ):
            for panel in READY:
                for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
                    browser.resize(size)
                    browser.driver.get("about:blank")
                    browser.driver.get(f"{server.url}/#{panel}")
                    prepare(browser, panel, server)
                    path = args.out / f"{panel}-{name}.png"
                    tall = TALLER.get(panel, MAX_HEIGHT)[name]
                    # Monitor's four feature colours need more of the palette to stay apart
                    shoot(browser, path, size, tall, 256 if panel == "monitor" else 128)
                    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    print(f"{shown}: {path.stat().st_size // 1024} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
