"""Live webcam prediction in the studio: how many frames a second the predict endpoint answers, end to end.

    .venv/bin/python bench/studio_webcam.py                     # trains an EfficientNet-Lite0 run first (~1 min)
    .venv/bin/python bench/studio_webcam.py --run runs/efficientnet_lite0-20261125-101500 --frames 200

The page's webcam loop sends one frame, waits for the answer, sends the next; so does this client. Frames are
640×480 JPEGs (quality 85) made from the tutorial's validation photos. An app with the studio's runs endpoints
serves in a process of its own with uvicorn on 127.0.0.1 (a workspace with one project holding a copy of the
run); the client sends each frame as the multipart field `file` over one keep-alive connection, and the figure
counts everything from the request to its answer. The issue's target: 10 frames a second or more on 2 cores
with the default model (efficientnet_lite0, frozen).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from common import add_data_option
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from PIL import Image, ImageOps
from serve_load import free_port, train_lite0
from starlette.exceptions import HTTPException

from imgclf.data.folders import list_images
from imgclf.runs import read_config
from imgclf.serve.routes import error_as_json
from imgclf.studio.run_cache import RunCache
from imgclf.studio.runs_routes import router
from imgclf.studio.workspace import NotFound, StudioError, Workspace

TARGET_FPS = 10.0
PROJECT, RUN = "webcam", "efficientnet_lite0-bench"
FRAME_SIZE = (640, 480)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory to predict with (default: train efficientnet_lite0)")
    add_data_option(parser)
    parser.add_argument("--frames", type=int, default=100, help="frames counted (default 100)")
    parser.add_argument("--serve", type=Path, metavar="WORKSPACE", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 1:
        parser.error(f"--frames must be at least 1. Received: --frames={args.frames}.")
    return args


def serve(workspace: Path, port: int) -> None:
    """The runs endpoints over `workspace`, as the studio's app has them, until SIGINT."""

    async def studio_error(request, error: StudioError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=404 if isinstance(error, NotFound) else 400)

    app = FastAPI()
    app.state.workspace = Workspace(workspace)
    app.state.runs = RunCache()
    app.add_exception_handler(HTTPException, error_as_json)
    app.add_exception_handler(StudioError, studio_error)
    app.include_router(router)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def make_workspace(run_dir: Path, scratch: Path) -> Path:
    """A workspace whose project `webcam` holds a copy of `run_dir` (its checkpoint left out)."""
    workspace = Workspace(scratch / "workspace")
    project = workspace.create_project(PROJECT)
    shutil.copytree(run_dir, project.runs_dir / RUN, ignore=shutil.ignore_patterns("checkpoint"))
    return workspace.root


def frames(data: Path) -> list[bytes]:
    """The validation photos as 640×480 JPEG frames, cropped to fill the frame as a webcam's would be."""
    encoded = []
    for path in list_images([data / "val_set"]):
        with Image.open(path) as photo:
            frame = ImageOps.fit(photo.convert("RGB"), FRAME_SIZE)
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=85)
        encoded.append(buffer.getvalue())
    return encoded


def multipart(frame: bytes) -> tuple[bytes, str]:
    """`frame` as the multipart field `file`, and the request's content type."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="frame.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + frame
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def start_server(workspace: Path, port: int, log: Path) -> subprocess.Popen:
    """This script in `--serve` mode, once the runs table answers."""
    command = [sys.executable, __file__, "--serve", str(workspace), "--port", str(port)]
    server = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"The server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/api/projects/{PROJECT}/runs")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit(f"The server did not answer within 120 s:\n{log.read_text()[-3000:]}")


def send(connection: http.client.HTTPConnection, body: bytes, content_type: str) -> dict:
    connection.request("POST", f"/api/projects/{PROJECT}/runs/{RUN}/predict", body, {"Content-Type": content_type})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        sys.exit(f"predict answered {response.status}: {answer}")
    return answer


def cpu_seconds(pid: int) -> float:
    """The CPU time process `pid` has used, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    wall_s: float
    round_trips_ms: list[float]
    server_ms: list[float]
    server_cpu_s: float


def measure(port: int, server_pid: int, requests: list[tuple[bytes, str]], count: int) -> Measured:
    """Send `count` frames one after another, after a warm-up (the run is loaded on the first request)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for body, content_type in requests[:5]:
        send(connection, body, content_type)
    round_trips, server_ms = [], []
    cpu = cpu_seconds(server_pid)
    started = time.perf_counter()
    for i in range(count):
        sent = time.perf_counter()
        answer = send(connection, *requests[i % len(requests)])
        round_trips.append((time.perf_counter() - sent) * 1000)
        server_ms.append(answer["latency_ms"])
    return Measured(time.perf_counter() - started, round_trips, server_ms, cpu_seconds(server_pid) - cpu)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    args = parse_args()
    if args.serve is not None:
        serve(args.serve, args.port)
        return 0
    requests = [multipart(frame) for frame in frames(args.data)]
    with tempfile.TemporaryDirectory(prefix="imgclf-studio-webcam-") as scratch:
        run_dir = args.run or train_lite0(args.data, Path(scratch))
        model = read_config(run_dir).train.model
        port = free_port()
        server = start_server(make_workspace(run_dir, Path(scratch)), port, Path(scratch) / "server.log")
        try:
            measured = measure(port, server.pid, requests, args.frames)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    fps = args.frames / measured.wall_s
    trips = measured.round_trips_ms
    rows = [
        ("model", f"{model} (PyTorch on the CPU)"),
        ("cores usable, load average", f"{len(os.sched_getaffinity(0))}, {os.getloadavg()[0]:.1f} (1 min)"),
        ("frames", f"{args.frames} JPEGs of {FRAME_SIZE[0]}×{FRAME_SIZE[1]}, one at a time"),
        ("frames per second", f"{fps:.1f}"),
        (
            "round trip ms p50 / p90 / max",
            f"{percentile(trips, 50):.1f} / {percentile(trips, 90):.1f} / {max(trips):.1f}",
        ),
        ("server's latency_ms p50", f"{percentile(measured.server_ms, 50):.1f}"),
        ("server CPU ms per frame", f"{measured.server_cpu_s / args.frames * 1000:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"target ({TARGET_FPS:g} frames/s or more): {'met' if fps >= TARGET_FPS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
