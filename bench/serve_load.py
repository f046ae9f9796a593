"""Load-test `imgclf serve`: start it on 127.0.0.1, send real photos from concurrent clients, report throughput,
latency percentiles and errors.

    .venv/bin/python bench/serve_load.py                        # trains an EfficientNet-Lite0 run first (~1 min)
    .venv/bin/python bench/serve_load.py --run runs/efficientnet_lite0-20261125-101500 --engine torch
    .venv/bin/python bench/serve_load.py --clients 16 --requests 500

The server is the real command, `python -m imgclf serve RUN --port P --engine E`, in a process of its own. Each
client is a thread with one keep-alive connection that sends a photo of the validation set as the request body
and waits for the answer before sending the next, so at most `--clients` requests are in flight; `--requests`
are sent in all, after `2 × --clients` warm-up requests that are not counted. Latency is the client's, from
sending a request to having read the whole answer; "server" is the `latency_ms` the service reports. A request
counts as an error when it fails, times out (`--request-timeout`) or gets any status but 200. Clients and server
share the machine's cores, as they would on a laptop. The issue's target: 0 errors and p99 < 250 ms for
efficientnet_lite0 on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from common import add_data_option

import imgclf
from imgclf.data.folders import list_images

TARGET_P99_MS = 250.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory to serve (default: train efficientnet_lite0 first)")
    add_data_option(parser)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, default=2000, help="requests counted, in all (default 2000)")
    parser.add_argument("--engine", default="auto", help="the server's --engine (default auto)")
    parser.add_argument("--request-timeout", type=float, default=30.0, metavar="S", help="client timeout per request")
    parser.add_argument("--startup-timeout", type=float, default=300.0, metavar="S", help="wait for /health this long")
    args = parser.parse_args()
    if args.clients < 1 or args.requests < 1:
        parser.error(f"--clients and --requests must be at least 1. Received: {args.clients}, {args.requests}.")
    return args


def train_lite0(data: Path, scratch: Path) -> Path:
    """A default `imgclf train` run (EfficientNet-Lite0, frozen, linear head) on `data`, in `scratch`."""
    os.environ["IMGCLF_CACHE"] = str(scratch / "cache")
    print(f"Training efficientnet_lite0 on {data / 'training_set'} ...", flush=True)
    run = imgclf.train(data / "training_set", val=str(data / "val_set"), out=str(scratch / "lite0"), seed=0)
    return run.run_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run_dir: Path, engine: str, port: int, log: Path, timeout: float) -> subprocess.Popen:
    """Start `imgclf serve` and wait until /health answers; its output goes to `log`."""
    command = [sys.executable, "-m", "imgclf", "serve", str(run_dir), "--port", str(port), "--engine", engine]
    server = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"The server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            get_json(port, "/health")
            return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    sys.exit(f"The server did not answer /health within {timeout:g} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


class Load:
    """`total` requests to POST /predict shared by client threads; each outcome is recorded as it comes back."""

    def __init__(self, port: int, photos: list[bytes], total: int, timeout: float):
        self.port = port
        self.photos = photos
        self.total = total
        self.timeout = timeout
        self.sent = 0
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.server_ms: list[float] = []
        self.errors: Counter[str] = Counter()

    def _next(self) -> int | None:
        with self.lock:
            if self.sent == self.total:
                return None
            self.sent += 1
            return self.sent

    def client(self) -> None:
        # http.client sends headers and body in one write with TCP_NODELAY, as curl and browsers do (httpx's two
        # writes made each request wait ~40 ms for a delayed ACK), and it leaves more of the cores to the server.
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            while (number := self._next()) is not None:
                photo = self.photos[number % len(self.photos)]
                started = time.perf_counter()
                try:
                    connection.request("POST", "/predict", body=photo, headers={"Content-Type": "image/jpeg"})
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as error:
                    connection.close()  # the next request reconnects
                    with self.lock:
                        self.errors[type(error).__name__] += 1
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with self.lock:
                    if response.status == 200:
                        self.latencies_ms.append(elapsed)
                        self.server_ms.append(json.loads(answer)["latency_ms"])
                    else:
                        self.errors[f"HTTP {response.status}"] += 1
        finally:
            connection.close()

    def run(self, clients: int) -> float:
        """Run the clients to the end; returns the wall seconds."""
        threads = [threading.Thread(target=self.client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started


def get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), interpolated between the nearest ranks; NaN when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: list[float], quantiles: tuple[float, ...]) -> str:
    return " / ".join(f"{percentile(values, q):.1f}" for q in quantiles)


def main() -> int:
    args = parse_args()
    photos = [Path(path).read_bytes() for path in list_images([args.data / "val_set"])]
    with tempfile.TemporaryDirectory(prefix="imgclf-serve-load-") as scratch:
        run_dir = args.run or train_lite0(args.data, Path(scratch))
        port = free_port()
        print(f"Starting imgclf serve {run_dir} --engine {args.engine} on port {port} ...", flush=True)
        server = start_server(run_dir, args.engine, port, Path(scratch) / "server.log", args.startup_timeout)
        try:
            info = get_json(port, "/model")
            Load(port, photos, 2 * args.clients, args.request_timeout).run(args.clients)
            before = get_json(port, "/health")
            server_cpu, clients_cpu = cpu_seconds(server.pid), time.process_time()
            load = Load(port, photos, args.requests, args.request_timeout)
            wall = load.run(args.clients)
            server_cpu, clients_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - clients_cpu
            after = get_json(port, "/health")
        finally:
            stop_server(server)

    errors = sum(load.errors.values())
    answered = len(load.latencies_ms)
    images = after["images"] - before["images"]
    rows = [
        ("model, engine", f"{info['model']}, {info['engine']}"),
        ("cores usable", str(len(os.sched_getaffinity(0)))),
        ("clients, requests", f"{args.clients}, {args.requests}"),
        ("answered 200", str(answered)),
        ("errors", f"{errors} {dict(load.errors) if errors else ''}".strip()),
        ("wall s", f"{wall:.1f}"),
        ("throughput req/s", f"{answered / wall:.1f}"),
        ("latency ms p50 / p90 / p99 / max", spread(load.latencies_ms, (50, 90, 99, 100))),
        ("server's latency_ms p50 / p99", spread(load.server_ms, (50, 99))),
        ("images per model call (mean)", f"{images / max(after['batches'] - before['batches'], 1):.2f}"),
        (
            "CPU ms per request: server, clients",
            f"{server_cpu / args.requests * 1000:.1f}, {clients_cpu / args.requests * 1000:.1f}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    met = errors == 0 and percentile(load.latencies_ms, 99) < TARGET_P99_MS
    print(f"target (0 errors, p99 < {TARGET_P99_MS:g} ms): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
