"""The page end to end: Debian's Chromium, driven by Playwright, against a real uvicorn server on localhost."""

from __future__ import annotations

import base64

from playwright.sync_api import expect, sync_playwright
from tests.browser import launch_chromium
from tests.conftest import best_photo_per_class
from tests.serve.conftest import running

from imgclf.serve import create_app

DROP = """([name, data]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
    const drop = document.getElementById("drop");
    drop.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
}"""


def test_the_page_shows_the_label_of_a_picked_and_a_dropped_photo(trained_run, cars_planes):
    photos = best_photo_per_class(trained_run, cars_planes / "val_set")
    with running(create_app(trained_run)) as url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        problems = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.goto(url)
        expect(page.locator("#model")).to_have_text("seed-cnn: cars, planes")

        page.set_input_files("#file", photos["cars"])
        expect(page.locator("#label")).to_have_text("cars")
        expect(page.locator("#bars li")).to_have_count(2)
        expect(page.locator("#bars li.top")).to_contain_text("cars")
        expect(page.locator("#latency")).to_contain_text(" ms")
        expect(page.locator("#preview")).to_be_visible()
        expect(page.locator("#gradcam")).to_be_visible()
        assert page.locator("#gradcam").evaluate("image => image.naturalWidth") > 0

        plane = photos["planes"]
        page.evaluate(DROP, [plane.name, base64.b64encode(plane.read_bytes()).decode()])
        expect(page.locator("#label")).to_have_text("planes")

        page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
        expect(page.locator("#error")).to_contain_text("not a JPEG")
        expect(page.locator("#result")).to_be_hidden()
        browser.close()
    # The 415 of the text file is logged by Chromium as a failed resource; anything else is a fault of the page.
    assert [p for p in problems if "415" not in p] == []
