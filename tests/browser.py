"""Headless Chromium for the page tests (Debian's chromium + chromium-driver, via Selenium).

scripts/test.sh installs chromium and chromium-driver with apt-get when they are missing;
tests marked ``requires_chromium`` (a test) or ``pytestmark = BROWSER`` (a module) skip only
when they are still not there, and carry the ``browser`` marker (``pytest -m "not browser"``).
"""

import contextlib
import os
import shutil
import tempfile

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
_SKIP_WITHOUT_CHROMIUM = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium / chromedriver not installed (scripts/test.sh installs them: apt-get "
           "install chromium chromium-driver)")
BROWSER = [pytest.mark.browser, _SKIP_WITHOUT_CHROMIUM]


def requires_chromium(test):
    """A test that drives Chromium: marked ``browser``, skipped without Chromium."""
    return pytest.mark.browser(_SKIP_WITHOUT_CHROMIUM(test))


@contextlib.contextmanager
def headless_chromium(window_size=(1300, 900), extra_args=(), browser_log: bool = False):
    """A Selenium driver of a headless Chromium with a throw-away profile, offline (no
    Selenium Manager download, no background networking). ``browser_log``: keep the
    console messages for ``driver.get_log("browser")``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not go online
    profile = tempfile.mkdtemp(prefix="sf2f-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", "--window-size=%d,%d" % tuple(window_size),
                *extra_args):
        opts.add_argument(arg)
    if browser_log:
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
