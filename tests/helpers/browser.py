"""A real browser for tests: Debian's chromium, headless, driven through Debian's chromedriver by selenium.

The driver's path is given explicitly, so Selenium Manager never tries to download a browser or a driver, and
chromium starts with a fresh profile and without its background traffic (updates, sync, field trials), so it
never calls out to the network. ``.ci/setup.sh dev`` installs both packages.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PHONE = (390, 844, 2.0, True)  # CSS width, height, device pixel ratio, mobile
DESKTOP = (1280, 800, 1.0, False)


@contextlib.contextmanager
def chromium() -> Iterator["object"]:
    """A headless chromium session (selenium WebDriver), closed at the end."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail("Debian's chromium and chromium-driver are not installed (.ci/setup.sh dev installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="edgeface-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def use_screen(driver, screen: tuple[int, int, float, bool]) -> None:
    """Make the page's viewport a phone's or a desktop's (CSS pixels, pixel ratio, touch)."""
    width, height, scale, mobile = screen
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})


def screenshot(driver, path: Path, screen: tuple[int, int, float, bool]) -> Path:
    """The whole page (not only what fits the screen) as a PNG, at ``screen``'s width."""
    width, height, scale, _ = screen
    full = int(driver.execute_script("return Math.max(document.documentElement.scrollHeight, "
                                     "document.body.scrollHeight)"))
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": max(height, full), "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
