"""Screenshot a gallery page in headless Chromium: the README's picture (docs/gallery.png).

Run from the repository root after building or publishing the gallery (needs Chromium, chromedriver and
selenium: ``apt-get install chromium chromium-driver``, ``pip install -e '.[test]'``):

    python scripts/screenshot.py                         # gallery/index.html -> docs/gallery.png
    python scripts/screenshot.py cnnviz-gallery/index.html --out /tmp/page.png --height 2400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

import browser


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", type=Path, default=Path("gallery/index.html"))
    parser.add_argument("--out", type=Path, default=Path("docs/gallery.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500, help="Height of the page's top that is shot.")
    args = parser.parse_args()
    why = browser.missing()
    if why or not args.page.is_file():
        print(f"error: {why or f'no page at {args.page}'}", file=sys.stderr)
        return 2
    with browser.page(args.page, args.width, args.height) as driver:
        browser.emulate(driver, args.width, args.height)
        failed = browser.load_images(driver)
        errors = browser.console_errors(driver)
        driver.execute_script("window.scrollTo(0, 0);")
        png = driver.get_screenshot_as_png()
    if failed or errors:
        print(f"error: images not loaded {failed}, console errors {errors}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    tmp.write_bytes(png)
    with Image.open(tmp) as image:
        image.convert("RGB").save(args.out, optimize=True)
    tmp.unlink()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
