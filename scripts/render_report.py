"""Render an HTML page (a report.html) in headless Chromium to a PNG and check that it is not blank.

    .venv/bin/python scripts/render_report.py runs/seed-cnn-20261125-101500/report.html report.png

Uses Playwright with Debian's `chromium` (`apt-get install chromium`); Playwright's own browser download is not
needed. The network is blocked for the page, so anything the report failed to embed shows up as missing.
Exits 1 when the page is blank (nearly one colour) or requested anything outside the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Chromium is launched as the browser tests launch it

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tests.browser import launch_chromium  # noqa: E402

MIN_PIXEL_STD = 5.0


def render(page_path: Path, png_path: Path, width: int = 1200) -> list[str]:
    """Screenshot the full page to `png_path`; returns the URLs the page tried to fetch from outside itself."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as playwright:
        try:
            browser = launch_chromium(playwright)
        except RuntimeError as error:
            raise SystemExit(str(error)) from None
        page = browser.new_page(viewport={"width": width, "height": 900})

        def block(route) -> None:
            url = route.request.url
            if url.startswith(("data:", "file:")) or url == "about:blank":
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        page.route("**/*", block)
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.screenshot(path=str(png_path), full_page=True)
        browser.close()
    return outside


def is_blank(png_path: Path) -> bool:
    """True when the screenshot is (nearly) a single colour."""
    pixels = np.asarray(Image.open(png_path).convert("L"), dtype=np.float32)
    return float(pixels.std()) < MIN_PIXEL_STD


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the HTML file, e.g. RUN/report.html")
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    args = parser.parse_args(argv)
    outside = render(args.page, args.png)
    if outside:
        print(f"{args.page} requested {len(outside)} outside resources, e.g. {outside[0]}", file=sys.stderr)
        return 1
    if is_blank(args.png):
        print(f"{args.png} is blank: the page rendered nothing visible", file=sys.stderr)
        return 1
    height = Image.open(args.png).height
    print(f"Rendered {args.page} to {args.png} ({height} px tall), not blank, no outside requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
