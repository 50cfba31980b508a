"""The quick gallery in headless Chromium: every image loads, the console is clean, the page fits a phone.
Skips, saying why, where Chromium, chromedriver or selenium is missing (./setup.sh test installs them);
fails instead in CI."""

import pytest
from PIL import Image

import browser
from conftest import skip_or_fail


@pytest.fixture(autouse=True)
def _browser():
    if browser.missing() is not None:
        skip_or_fail(f"no headless browser: {browser.missing()}")


def test_page_loads_every_image_without_console_errors(quick_gallery, tmp_path):
    folder, _ = quick_gallery
    shot = tmp_path / "gallery.png"
    with browser.page(folder / "index.html", 1280, 1500) as driver:
        browser.emulate(driver, 1280, 1500)
        assert browser.load_images(driver) == []
        assert driver.execute_script("return document.images.length;") >= 6
        assert browser.console_errors(driver) == []
        assert not browser.overflows(driver)
        driver.save_screenshot(str(shot))
        browser.emulate(driver, 390, 844, mobile=True)
        assert not browser.overflows(driver), "the page scrolls sideways at phone width"
    print(f"screenshot: {shot}")
    assert Image.open(shot).size == (1280, 1500)
