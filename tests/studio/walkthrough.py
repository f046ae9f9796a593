"""The studio's page driven as a person uses it, one step per function: the end-to-end test
(test_studio_page.py) and the docs' screenshots (scripts/studio_screenshots.py) walk the same way."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

PROJECT = "cars-planes"
TRAIN_EPOCHS = 4
SLOW_MS = 600_000  # the audit and the training on 2 CPU cores take minutes; expect() waits for them this long
# Every time the loss chart changes, the number of points it shows (one per series per epoch).
RECORD_LOSS_POINTS = """() => {
    window.lossPoints = [];
    const chart = document.getElementById("loss-chart");
    new MutationObserver(() => {
        const count = chart.querySelectorAll("circle.point").length;
        if (window.lossPoints.at(-1) !== count) window.lossPoints.push(count);
    }).observe(chart, { childList: true, subtree: true });
}"""


def create_project(page: Page, name: str = PROJECT) -> None:
    """Create the first project from the welcome screen."""
    expect(page.locator("#welcome")).to_be_visible()
    page.fill("#welcome-name", name)
    page.click("#welcome-form button[type=submit]")
    expect(page.locator("#project-select")).to_have_value(name)
    expect(page.locator("#data-empty")).to_contain_text("Start with the classes")


def add_folder(page: Page, folder: Path) -> dict[str, int]:
    """Upload a data folder (class sub-folders) with the folder chooser; wait for every photo. Returns the
    number of photos of each class."""
    counts = {c.name: sum(1 for p in c.iterdir() if p.is_file()) for c in sorted(folder.iterdir()) if c.is_dir()}
    page.set_input_files("#folder-input", folder)
    for name, count in counts.items():
        shown = page.locator(f"#class-list button[data-class='{name}'] .count")
        expect(shown).to_have_text(str(count), timeout=SLOW_MS)
    expect(page.locator("#upload-status")).to_be_hidden()
    return counts


def audit(page: Page, finding: str) -> None:
    """Audit the data and show the photos with `finding`."""
    page.click("#audit-button")
    expect(page.locator("#audit-summary")).to_contain_text("Auditing")
    expect(page.locator(f"#finding-filter option[value='{finding}']")).to_have_count(1, timeout=SLOW_MS)
    page.select_option("#finding-filter", finding)
    expect(page.locator(f"#grid .tile .badge.{finding}").first).to_be_visible()


def move_with_keys(page: Page, number: int) -> str:
    """Select the first photo of the grid and press `number` to move it to that class; returns the photo's id."""
    photo = page.locator("#grid .tile").first
    image_id = photo.get_attribute("data-id")
    photo.click()
    expect(photo).to_have_attribute("aria-selected", "true")
    page.keyboard.press(str(number))
    expect(page.locator("#toasts")).to_contain_text("Moved 1 photo")
    return image_id


def train_quick(page: Page, epochs: int = TRAIN_EPOCHS) -> list[int]:
    """Train the quick recipe for `epochs` and wait until it ends; returns the loss chart's point counts as they
    grew."""
    page.click("#tabs a[data-view=train]")
    page.click("#recipes button[data-recipe=quick]")
    page.fill("#option-epochs", str(epochs))
    page.evaluate(RECORD_LOSS_POINTS)
    page.click("#start-training")
    expect(page.locator("#live")).to_be_visible()
    expect(page.locator("#live-title")).to_contain_text("Finished", timeout=SLOW_MS)
    return page.evaluate("window.lossPoints")


def open_confusion_cell(page: Page, true: str, predicted: str) -> None:
    """Show the Runs view's newest run and the photos of one cell of its confusion matrix."""
    page.click("#tabs a[data-view=runs]")
    expect(page.locator("#runs-table tbody tr")).to_have_count(1)
    page.click(f"#confusion button[data-true='{true}'][data-predicted='{predicted}']")
    expect(page.locator("#cell-title")).to_have_text(f"{true} predicted as {predicted}")
    expect(page.locator("#cell-grid .tile").first).to_be_visible()


def open_photo(page: Page, grid: str) -> str:
    """Click the first photo of `grid` and wait for its Grad-CAM; returns the photo's id."""
    photo = page.locator(f"{grid} .tile").first
    image_id = photo.get_attribute("data-id")
    photo.click()
    expect(page.locator("#viewer-gradcam")).to_be_visible(timeout=SLOW_MS)
    return image_id


def predict_photo(page: Page, photo: Path) -> str:
    """Predict `photo` in the Test view; returns the label shown."""
    page.click("#tabs a[data-view=test]")
    page.set_input_files("#test-file", photo)
    result = page.locator(f"#test-results li[data-file='{photo.name}'] .label")
    expect(result).to_be_visible(timeout=SLOW_MS)
    return result.text_content()


def predict_webcam(page: Page, label: str) -> None:
    """Start the webcam in the Test view and wait until the live answer is `label`, several frames answered."""
    page.click("#tabs a[data-view=test]")
    page.click("#webcam-start")
    expect(page.locator("#webcam-label")).to_have_text(label, timeout=SLOW_MS)
    expect(page.locator("#webcam-rate")).to_contain_text("per second")
    expect(page.locator("#webcam-bars li")).to_have_count(2)


def build_export(page: Page) -> None:
    """Build the ONNX export of the chosen run in the Export view and wait for its download links."""
    page.click("#tabs a[data-view=export]")
    expect(page.locator("#serve-snippet")).to_contain_text("imgclf serve")
    page.click("#build-export")
    expect(page.locator("#export-files a")).to_have_count(2, timeout=SLOW_MS)
