"""The studio end to end: Debian's Chromium, driven by Playwright, against the real server on 127.0.0.1 with a
fake webcam, from an empty workspace to a downloaded ONNX model."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from tests.browser import fake_webcam_args, launch_chromium, watch_page, write_y4m
from tests.serve.conftest import running
from tests.studio import walkthrough as walk

from imgclf.studio.app import create_app

# Photos of val_set/, which the project never sees: one predicted from a file, one shown to the webcam.
UNSEEN_CAR = Path("val_set/cars/ford-63930__340.jpg")
UNSEEN_PLANE = Path("val_set/planes/plane-544851__340.jpg")


@pytest.mark.slow
def test_the_studio_takes_photos_to_an_exported_model(tmp_path, cars_planes):
    webcam = write_y4m(tmp_path / "webcam.y4m", [cars_planes / UNSEEN_PLANE])
    project = tmp_path / "workspace" / walk.PROJECT
    with running(create_app(tmp_path / "workspace")) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright, *fake_webcam_args(webcam))
        page = browser.new_page(accept_downloads=True)
        problems = watch_page(page, url)
        page.goto(url)

        walk.create_project(page)
        assert walk.add_folder(page, cars_planes / "training_set") == {"cars": 80, "planes": 80}
        # The tutorial's photos hold the same airliner twice, at two sizes.
        walk.audit(page, "near-duplicate")
        expect(page.locator("#grid .tile[data-id^='planes/airplane-1554870']")).to_have_count(2)
        page.keyboard.press("?")
        expect(page.locator("#help")).to_contain_text("Quarantine the selected photos")
        page.keyboard.press("Escape")
        page.click("#class-list button[data-class='cars']")
        photo = walk.move_with_keys(page, 2)
        expect(page.locator("#class-list button[data-class='planes'] .count")).to_have_text("81")
        assert (project / "data" / "planes" / Path(photo).name).is_file()
        page.keyboard.press("Control+z")
        expect(page.locator("#class-list button[data-class='planes'] .count")).to_have_text("80")
        assert (project / "data" / photo).is_file()

        grown = walk.train_quick(page, epochs=4)
        assert grown == [0, 2, 4, 6, 8]  # train and validation loss, drawn as each epoch ended

        walk.open_confusion_cell(page, "planes", "planes")
        photo = walk.open_photo(page, "#cell-grid")
        page.click("#viewer-actions button[data-move-to=cars]")
        moved = project / "data" / "cars" / Path(photo).name
        expect(page.locator("#toasts")).to_contain_text("Moved 1 photo to cars")
        assert moved.is_file() and not (project / "data" / photo).exists()
        page.click("#cell-undo")
        expect(page.locator("#toasts")).to_contain_text("Undone")
        assert (project / "data" / photo).is_file() and not moved.exists()

        assert walk.predict_photo(page, cars_planes / UNSEEN_CAR) == "cars"
        walk.predict_webcam(page, "planes")

        walk.build_export(page)
        with page.expect_download() as download:
            page.click("#export-files a[download='model.onnx']")
        (run_dir,) = (project / "runs").iterdir()
        assert Path(download.value.path()).read_bytes() == (run_dir / "export" / "model.onnx").read_bytes()
        browser.close()
    assert problems == []
