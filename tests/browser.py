"""Helpers of the browser tests: Debian's Chromium driven by Playwright, what a page did wrong, and a fake webcam."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from playwright.sync_api import Browser, Page, Playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WEBCAM_SIZE = (320, 240)


def launch_chromium(playwright: Playwright, *extra_args: str) -> Browser:
    """Headless Debian Chromium (Playwright's own browser download is not needed), with `extra_args`."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("Chromium is not installed; the browser tests need Debian's: `apt-get install chromium`.")
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=[*CHROMIUM_ARGS, *extra_args])


def fake_webcam_args(video: Path) -> list[str]:
    """Chromium's flags for a camera that plays `video` (a .y4m file) without asking the user."""
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]


def watch_page(page: Page, origin: str) -> list[str]:
    """The page's problems as they happen: console errors, uncaught exceptions, and requests that leave `origin`."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))

    def check_request(request) -> None:
        address = request.url.removeprefix("blob:")
        if not address.startswith(origin) and not address.startswith("data:"):
            problems.append(f"request outside {origin}: {request.url}")

    page.on("request", check_request)
    return problems


def write_y4m(
    path: Path, photos: Sequence[Path], frames_per_photo: int = 10, size: tuple[int, int] = WEBCAM_SIZE
) -> Path:
    """A Y4M video (4:2:0, full-range YCbCr as JPEG uses) showing each of `photos` in turn, cropped to `size`."""
    width, height = size
    frames = []
    for photo in photos:
        with Image.open(photo) as image:
            ycbcr = ImageOps.fit(image.convert("RGB"), size).convert("YCbCr")
        luma, blue, red = (np.asarray(plane) for plane in ycbcr.split())
        chroma = [np.asarray(Image.fromarray(plane).resize((width // 2, height // 2))) for plane in (blue, red)]
        frames.append(b"FRAME\n" + b"".join(plane.tobytes() for plane in (luma, *chroma)))
    header = f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + b"".join(frame for frame in frames for _ in range(frames_per_photo)))
    return path
