"""Take the docs' screenshots of the studio: one per view, as the end-to-end test walks through it.

    .venv/bin/python scripts/studio_screenshots.py
    .venv/bin/python scripts/studio_screenshots.py --data ../shared/datasets/cars-planes --out docs/images

Starts the studio on a temporary workspace on 127.0.0.1, drives Debian's Chromium (with a fake webcam showing a
photo of val_set/) through the steps of tests/studio/walkthrough.py: create a project, add training_set/, audit,
train the quick recipe, open a confusion cell, predict, export. Saves docs/images/studio-{data,train,runs,test,
export}.png at 1280×800. Takes a few minutes on a 2-core CPU (the audit and the training).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the walk-through lives with the tests

from PIL import Image  # noqa: E402
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402
from tests.browser import fake_webcam_args, launch_chromium, watch_page, write_y4m  # noqa: E402
from tests.serve.conftest import running  # noqa: E402
from tests.studio import walkthrough as walk  # noqa: E402

from imgclf.studio.app import create_app  # noqa: E402

VIEWPORT = {"width": 1280, "height": 800}
WEBCAM_PHOTO = Path("val_set/planes/plane-544851__340.jpg")
TEST_PHOTOS = [Path("val_set/cars/ford-63930__340.jpg"), Path("val_set/planes/qantas-2881401__340.jpg")]


def shoot(page: Page, out: Path, view: str, top: str | None = None) -> None:
    """Save the window as `out/studio-VIEW.png`, no toast in the way, scrolled to the element with id `top`
    (else to the top of the page)."""
    page.evaluate(
        """(top) => {
            document.getElementById("toasts").replaceChildren();
            if (top) document.getElementById(top).scrollIntoView();
            else window.scrollTo(0, 0);
        }""",
        top,
    )
    path = out / f"studio-{view}.png"
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    # 256 colours keep the text sharp at a third of the size; the photos are only illustrations.
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path}")


def walk_and_shoot(page: Page, data: Path, out: Path) -> None:
    """The walk-through, with a screenshot of each view on the way."""
    walk.create_project(page)
    walk.add_folder(page, data / "training_set")
    walk.audit(page, "near-duplicate")
    page.select_option("#finding-filter", "")
    page.click("#class-list button[data-class='planes']")
    expect(page.locator("#grid .tile .badge").first).to_be_visible()
    page.locator("#grid .tile").nth(2).click()
    shoot(page, out, "data")
    walk.train_quick(page)
    shoot(page, out, "train", top="live")
    walk.open_confusion_cell(page, "planes", "planes")
    shoot(page, out, "runs", top="run-detail")
    for photo in TEST_PHOTOS:
        walk.predict_photo(page, data / photo)
    walk.predict_webcam(page, "planes")
    shoot(page, out, "test")
    walk.build_export(page)
    shoot(page, out, "export")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "datasets" / "cars-planes")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        webcam = write_y4m(Path(scratch) / "webcam.y4m", [args.data / WEBCAM_PHOTO])
        with running(create_app(Path(scratch) / "workspace")) as url, sync_playwright() as playwright:
            browser = launch_chromium(playwright, *fake_webcam_args(webcam))
            page = browser.new_page(viewport=VIEWPORT)
            problems = watch_page(page, url)
            page.goto(url)
            walk_and_shoot(page, args.data, args.out)
            browser.close()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
