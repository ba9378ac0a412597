"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.

Used by the dashboard's browser tests and by ``make screenshots``. The DevTools logs
(performance and browser) are kept, so a caller can list every request the page made,
every failed one and every console error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("IRIS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IRIS_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
DESKTOP = (1280, 900)
PHONE = (390, 844)


def missing_browser() -> str | None:
    """Why no browser test can run here, or None when Chromium and its driver are present."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return f"{path} not found: apt-get install {package}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@dataclass
class Request:
    url: str
    method: str
    status: int | None = None
    failed: str | None = None
    bytes: int = 0
    done: bool = False  # loaded or failed: nothing more will come for it


@dataclass
class Traffic:
    """What the DevTools performance log said about the page's network use."""

    requests: dict[str, Request] = field(default_factory=dict)
    console: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            message = json.loads(entry["message"])["message"]
            method, params = message.get("method", ""), message.get("params", {})
            request_id = params.get("requestId", "")
            if method == "Network.requestWillBeSent":
                request = params["request"]
                self.requests[request_id] = Request(request["url"], request["method"])
            elif method == "Network.responseReceived" and request_id in self.requests:
                self.requests[request_id].status = params["response"]["status"]
            elif method == "Network.loadingFinished" and request_id in self.requests:
                self.requests[request_id].bytes = int(params.get("encodedDataLength", 0))
                self.requests[request_id].done = True
            elif method == "Network.loadingFailed" and request_id in self.requests:
                self.requests[request_id].failed = params.get("errorText", "failed")
                self.requests[request_id].done = True

    def foreign(self, origin: str) -> list[str]:
        """Requests to any other host than ``origin`` (data: URLs are not requests)."""
        own = urlsplit(origin).netloc
        return [
            r.url
            for r in self.requests.values()
            if urlsplit(r.url).scheme in ("http", "https", "ws", "wss")
            and urlsplit(r.url).netloc != own
        ]

    def failures(self, allowed_statuses: tuple[int, ...] = ()) -> list[str]:
        bad = []
        for r in self.requests.values():
            if r.failed is not None:
                bad.append(f"{r.method} {r.url}: {r.failed}")
            elif r.status is not None and r.status >= 400 and r.status not in allowed_statuses:
                bad.append(f"{r.method} {r.url}: HTTP {r.status}")
        return bad

    def pending(self) -> list[str]:
        """Requests still under way (neither loaded nor failed yet)."""
        return [f"{r.method} {r.url}" for r in self.requests.values() if not r.done]

    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.requests.values())


class Browser:
    """A Chrome session plus the traffic and console messages seen so far."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.traffic = Traffic()

    def collect(self) -> Traffic:
        self.traffic.add(self.driver.get_log("performance"))
        for entry in self.driver.get_log("browser"):
            self.traffic.console.append(entry)
        return self.traffic

    def reset(self) -> None:
        self.collect()
        self.traffic = Traffic()

    def console_errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        self.collect()
        return [
            e["message"]
            for e in self.traffic.console
            if e.get("level") == "SEVERE" and not any(words in e["message"] for words in allowed)
        ]

    def resize(self, size: tuple[int, int]) -> None:
        width, height = size
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )


@contextmanager
def chromium(size: tuple[int, int] = DESKTOP) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile, closed (and the profile removed) on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="iris-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        browser = Browser(driver)
        browser.resize(size)
        yield browser
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- the dashboard ---------------------------------------------------------------------------

# Per panel: a script that returns true once the panel is drawn.
READY = {
    "predict": "return document.querySelectorAll('#bars .bar').length === 3",
    "explain": "return document.querySelectorAll('figure[data-name=dW1] td').length > 0",
    "data": "return document.querySelectorAll('#scatter .pt').length === 150",
    "train": "return document.querySelectorAll('#jobs tbody tr').length > 0",
    "models": (
        "return document.querySelectorAll('#model-table tbody tr').length > 0 && ("
        "document.querySelectorAll('#compare table.confusion').length === 2"
        " || document.querySelectorAll('#model-table tbody tr').length === 1)"
    ),
    # the split, the versions' figures, the drift now and its chart
    "monitor": (
        "return document.querySelectorAll('#split dd').length > 0"
        " && document.querySelectorAll('#monitor-versions tbody tr').length > 0"
        " && document.querySelectorAll('#drift-now li').length > 0"
        " && document.querySelector('#drift-chart svg') !== null"
    ),
}


def js(b: Browser, script: str, *args: Any) -> Any:
    return b.driver.execute_script(script, *args)


def type_into(b: Browser, element_id: str, text: str) -> None:
    """Replace the text of an input as a user does: select all, delete, type."""
    from selenium.webdriver.common.keys import Keys

    field = b.driver.find_element("id", element_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(text)
