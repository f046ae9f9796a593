"""The studio end to end: Debian's Chromium, driven by Playwright, against the real server on 127.0.0.1 with a
fake webcam, from an empty workspace to a downloaded ONNX model."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from tests.browser import fake_webcam_args, launch_chromium, watch_page, write_y4m
from tests.serve.conftest import running
from tests.studio import walkthrough as walk

import imgclf
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


@pytest.mark.slow
def test_a_multi_label_run_shows_its_labels_scores_answers_and_grad_cam(multi_label_project_run):
    photo = sorted(multi_label_project_run.project.data_dir.glob("plane_*.jpg"))[0]
    expected = imgclf.load(multi_label_project_run.run_dir).predict(photo)
    with running(create_app(multi_label_project_run.workspace)) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        problems = watch_page(page, url)
        page.goto(f"{url}#runs")

        expect(page.locator("#runs-table tbody tr td").nth(6)).to_contain_text("mAP")
        expect(page.locator("#run-metrics")).to_contain_text("Mean average precision")
        expect(page.locator("#label-scores tbody tr")).to_have_count(3)
        expect(page.locator("#confusion-card")).to_be_hidden()
        expect(page.locator("#wrong-title")).to_have_text("Labels most surely wrong")
        expect(page.locator("#wrong-grid .tile .no-thumbnail").first).to_be_visible()  # photos of data/ itself

        page.click("#tabs a[data-view=test]")
        page.set_input_files("#test-file", photo)
        card = page.locator(f"#test-results li[data-file='{photo.name}']")
        expect(card.locator(".label")).to_have_text(", ".join(expected.labels) or "no label", timeout=walk.SLOW_MS)
        expect(card.locator(".bars .threshold")).to_have_count(3)
        button = card.locator("button[data-label]").first
        label = button.get_attribute("data-label")
        button.click()
        expect(card.locator("figure.explained figcaption")).to_contain_text(f"{label}: ")
        expect(card.locator("figure.explained figcaption")).to_contain_text("threshold")
        browser.close()
    assert problems == []
