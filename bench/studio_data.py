"""Time the studio's data view on a project of 5,000 photos: one page of the image list and its thumbnails,
before and after the first thumbnail pass.

    .venv/bin/python bench/studio_data.py                                  # in a temporary folder
    .venv/bin/python bench/studio_data.py --workspace /tmp/studio-bench   # keeps the photos for the next run

The photos are the tutorial's real ones, each made into several: a random crop of 60-100 % of it, mirrored
half the time, brightened or darkened by up to 20 %, resized to 400-800 px on its long side and saved as JPEG
(quality 85), spread over the classes. The studio is the real command, `imgclf studio WORKSPACE --no-browser`,
in a process of its own, started with no thumbnail made. A view is `GET /api/projects/P/images?limit=200` and
then the 200 thumbnails of that page, fetched by `--clients` threads (a browser opens 6 connections to a host),
each a full download (no cached copy in the browser). "first view": every thumbnail is made; "next views": the
same page again, and other pages made before, from the thumbnail cache. The issue's target: the data view of a
5,000-image project answers in under 1 s after the first thumbnail pass.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import httpx
from common import add_data_option
from PIL import Image, ImageEnhance, ImageOps

from imgclf.data.folders import list_images
from imgclf.studio.thumbnails import thumbnail_folder
from imgclf.studio.workspace import Workspace

PROJECT = "bench"
PAGE = 200
TARGET_S = 1.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--workspace", type=Path, help="workspace to make the project in (default: a temporary one)")
    parser.add_argument("--images", type=int, default=5000, help="photos in the project (default 5000)")
    parser.add_argument("--clients", type=int, default=6, help="threads fetching thumbnails (default 6)")
    parser.add_argument("--repeats", type=int, default=5, help="views timed after the first pass (default 5)")
    return parser.parse_args()


def make_photo(source: str, target: str, seed: int) -> None:
    """A new JPEG at `target`: `source` cropped, mirrored, brightened and resized as the module docstring says."""
    rng = random.Random(seed)
    with Image.open(source) as opened:
        photo = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = photo.size
    scale = rng.uniform(0.6, 1.0)
    crop_width, crop_height = int(width * scale), int(height * scale)
    left, top = rng.randint(0, width - crop_width), rng.randint(0, height - crop_height)
    photo = photo.crop((left, top, left + crop_width, top + crop_height))
    if rng.random() < 0.5:
        photo = ImageOps.mirror(photo)
    photo = ImageEnhance.Brightness(photo).enhance(rng.uniform(0.8, 1.2))
    long_side = rng.randint(400, 800)
    factor = long_side / max(photo.size)
    photo = photo.resize((round(photo.width * factor), round(photo.height * factor)), Image.Resampling.BILINEAR)
    photo.save(target, format="JPEG", quality=85)


def make_project(workspace: Workspace, data: Path, count: int) -> None:
    """The project `PROJECT` with `count` photos made from the real ones, unless it holds them already."""
    project = workspace.project(PROJECT) if PROJECT in [p.name for p in workspace.projects()] else None
    if project is not None and sum(1 for _ in project.data_dir.rglob("*.jpg")) == count:
        return
    project = project or workspace.create_project(PROJECT)
    sources = list_images([data / "training_set", data / "val_set"])
    jobs = []
    for number in range(count):
        source = sources[number % len(sources)]
        folder = project.data_dir / Path(source).parent.name
        folder.mkdir(exist_ok=True)
        jobs.append((source, str(folder / f"{Path(source).stem}-{number:05d}.jpg"), number))
    started = time.perf_counter()
    with ProcessPoolExecutor() as pool:
        list(pool.map(make_photo, *zip(*jobs), chunksize=50))
    print(f"made {count} photos in {time.perf_counter() - started:.1f} s")


class Studio:
    """`imgclf studio WORKSPACE --no-browser` on a free port of 127.0.0.1, in a process of its own, until `stop`."""

    def __init__(self, workspace: Workspace):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "imgclf", "studio", str(workspace.root), "--no-browser", "--port", str(port)]
        self.process = subprocess.Popen(command)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/api/projects").status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{' '.join(command)} did not answer within 120 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(30)


def view(url: str, offset: int, clients: int, pool: ThreadPoolExecutor, local: threading.local) -> dict[str, float]:
    """Seconds to list one page of images and to fetch its thumbnails."""

    def get(path: str) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
        response = local.client.get(path)
        response.raise_for_status()
        return response

    started = time.perf_counter()
    page = get(f"/api/projects/{PROJECT}/images?limit={PAGE}&offset={offset}").json()
    listed = time.perf_counter()
    thumbnails = [f"/api/projects/{PROJECT}/thumbnails/{image['id']}" for image in page["images"]]
    list(pool.map(get, thumbnails))
    done = time.perf_counter()
    return {"list_s": listed - started, "thumbnails_s": done - listed, "view_s": done - started}


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as scratch:
        workspace = Workspace(args.workspace or Path(scratch) / "workspace")
        make_project(workspace, args.data, args.images)
        shutil.rmtree(thumbnail_folder(workspace.root), ignore_errors=True)
        studio = Studio(workspace)
        local = threading.local()
        try:
            with ThreadPoolExecutor(args.clients) as pool:
                first = view(studio.url, 0, args.clients, pool, local)
                view(studio.url, PAGE, args.clients, pool, local)  # a second page, made before it is timed again
                warm = [view(studio.url, PAGE * (n % 2), args.clients, pool, local) for n in range(args.repeats)]
        finally:
            studio.stop()
    print(f"{args.images} photos, page of {PAGE}, {args.clients} clients, {os.cpu_count()} CPUs")
    print(
        f"first view: list {first['list_s']:.3f} s + thumbnails {first['thumbnails_s']:.2f} s = {first['view_s']:.2f} s"
    )
    for key in ("list_s", "thumbnails_s", "view_s"):
        values = [run[key] for run in warm]
        print(f"next views, {key[:-2]}: median {statistics.median(values):.3f} s, max {max(values):.3f} s")
    worst = max(run["view_s"] for run in warm)
    print(f"target: a view under {TARGET_S:g} s after the first pass -> {'met' if worst < TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
