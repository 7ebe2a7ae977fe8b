"""A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium,
and `graphbuild serve` started for it, for the web view's tests.

Chromium runs as CI does (root, no sandbox) and never reaches for the network on its
own: background networking, component updates and sync are off, as the machine has no
route out. Screenshots go to test-output/web/ at the top of the checkout, where a CI
job can keep them as artifacts.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .example import ROOT, environment
from .site import require

SHOTS = ROOT / "test-output" / "web"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
)  # fmt: skip


@contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """A headless Chromium with its own empty profile; its console log is kept, so a test
    can see what the page's Content-Security-Policy refused."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require("chromium")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(require("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def serving(root: Path, *args: str) -> Iterator[str]:
    """`graphbuild serve --port 0 ARGS` in `root`; its base URL (http://127.0.0.1:PORT)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "graphbuild", "serve", "--port", "0", *args],
        cwd=root, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60  # generous: proves it starts, not how fast
        line = ""
        while time.monotonic() < deadline and process.poll() is None:
            line = process.stderr.readline()
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)/", line):
                break
        else:
            raise AssertionError(f"serve did not start: {line}{process.stderr.read()}")
        # the log line per request keeps coming: read, so the pipe never fills and blocks it
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def shot(driver: object, name: str) -> Path:
    """The page as it looks now, in test-output/web/NAME.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), name  # type: ignore[attr-defined]
    return path
