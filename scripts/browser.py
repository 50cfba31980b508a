"""Open a gallery page in headless Chromium (Selenium with the system's chromedriver): load every image,
read the console, take a screenshot. Used by ``screenshot.py`` beside it and by the gallery's browser test.

Nothing is downloaded: Chromium and chromedriver come from the system (Debian's ``chromium`` and
``chromium-driver``), and Selenium is told not to fetch a driver of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
"""Headless, offline, and quiet: without the network switches Chromium reaches out at start and may hang."""


def missing() -> str | None:
    """Why a headless page cannot be opened here (None when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for name in ("chromium", "chromedriver"):
        if shutil.which(name) is None:
            return f"{name} is not on PATH (Debian: apt-get install chromium chromium-driver)"
    return None


@contextmanager
def page(html: Path, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Selenium driver showing ``html`` (a local file) in a ``width`` x ``height`` window, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    with tempfile.TemporaryDirectory(prefix="cnnviz-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
        try:
            driver.set_page_load_timeout(60)
            driver.get(Path(html).resolve().as_uri())
            yield driver
        finally:
            driver.quit()


def load_images(driver: Any, timeout: float = 30) -> list[str]:
    """Load every image now (lazy ones too) and wait for them; returns the sources that did not load."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.querySelectorAll('img').forEach(img => { img.loading = 'eager'; });")
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return Array.from(document.images).every(img => img.complete);"))
    return driver.execute_script(
        "return Array.from(document.images).filter(img => img.naturalWidth === 0).map(img => img.src);")


def console_errors(driver: Any) -> list[str]:
    """The console's error messages since the page opened."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def overflows(driver: Any) -> bool:
    """Whether the page is wider than the window (it would scroll sideways)."""
    return driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth;")


def emulate(driver: Any, width: int, height: int, mobile: bool = False) -> None:
    """Lay the page out for a ``width`` x ``height`` viewport (a phone's with ``mobile``), whatever the window."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
