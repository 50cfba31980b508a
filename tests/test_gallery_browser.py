"""The quick gallery and a microscope in headless Chromium: every image loads, the console is clean, the pages
fit a phone.
Skips, saying why, where Chromium, chromedriver or selenium is missing (./setup.sh test installs them);
fails instead in CI."""

import shutil

import pytest
from PIL import Image

from cnnviz.gallery.site import MICROSCOPES, build_site

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


def test_microscope_pages_load_every_image_and_fit_a_phone(quick_gallery, small_microscope, tmp_path):
    folder = tmp_path / "gallery"
    shutil.copytree(quick_gallery[0], folder)
    shutil.copytree(small_microscope, folder / MICROSCOPES / "vgg16")
    build_site(folder)
    site = folder / MICROSCOPES / "vgg16"
    pages = [folder / "index.html", site / "index.html", site / "conv3_3" / "index.html", site / "conv3_3" / "unit_0.html"]
    for page in pages:
        with browser.page(page, 1280, 1000) as driver:
            browser.emulate(driver, 390, 844, mobile=True)
            assert browser.load_images(driver) == [], page
            assert driver.execute_script("return document.images.length;") >= 2, page
            assert browser.console_errors(driver) == [], page
            assert not browser.overflows(driver), f"{page} scrolls sideways at phone width"
            links = driver.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'));")
            if page == pages[0]:
                assert "microscope/vgg16/index.html" in links
