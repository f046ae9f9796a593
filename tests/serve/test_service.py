"""The web service through FastAPI's test client: every endpoint, every error, concurrency, and `imgclf serve`."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import io
import itertools
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.conftest import best_photo_per_class
from tests.serve.conftest import held

from imgclf.cli import main
from imgclf.config import ConfigError
from imgclf.deploy.predictor import Run
from imgclf.serve import ServeOptions, create_app

PREDICTION_KEYS = {"label", "index", "probability", "probabilities", "model", "latency_ms"}
SMALL_LIMIT = 100_000  # above every __340 photo of the validation set, below klm.jpg (1.5 MB)


@pytest.fixture(scope="module")
def photos(trained_run, cars_planes) -> dict[str, Path]:
    return best_photo_per_class(trained_run, cars_planes / "val_set")


@pytest.fixture(scope="module")
def client(trained_run):
    with TestClient(create_app(trained_run)) as client:
        yield client


@pytest.fixture(scope="module")
def small_limit_client(trained_run):
    with TestClient(create_app(trained_run, ServeOptions(max_upload_bytes=SMALL_LIMIT))) as client:
        yield client


def slowed(run: Run, seconds: float) -> Run:
    """A copy of `run` whose every model call first sleeps `seconds` (a busy or slow model)."""
    slow = copy.copy(run)

    def predict_tensors(images):
        time.sleep(seconds)
        return run.predict_tensors(images)

    slow.predict_tensors = predict_tensors
    return slow


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file that declares `width` × `height` grey pixels: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def one_bit_png(side: int) -> bytes:
    """A blank 1-bit PNG of `side`² pixels: a few KB that decode to side² × 3 bytes and more."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def icon() -> bytes:
    """A Windows icon: Pillow reads it, but it is not one of the formats the service accepts."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="ICO")
    return buffer.getvalue()


def test_predict_real_photos_as_multipart_and_as_raw_body(client, trained_run, photos):
    for class_name, photo in photos.items():
        expected = trained_run.predict(photo)
        by_form = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
        by_body = client.post("/predict", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
        for response in (by_form, by_body):
            assert response.status_code == 200, response.text
            answer = response.json()
            assert set(answer) == PREDICTION_KEYS
            assert answer["label"] == class_name
            assert answer["index"] == trained_run.class_names.index(class_name)
            assert answer["model"] == "seed-cnn"
            assert answer["latency_ms"] > 0
            assert answer["probability"] == pytest.approx(max(answer["probabilities"].values()))
            assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)


def test_explain_returns_the_photo_with_a_grad_cam_overlay(client, photos):
    photo = photos["planes"]
    response = client.post("/explain", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    original = Image.open(photo)
    assert max(overlay.size) == min(512, max(original.size))
    assert overlay.width / overlay.height == pytest.approx(original.width / original.height, rel=0.01)
    assert not np.array_equal(np.asarray(overlay.convert("RGB")), np.asarray(original.convert("RGB")))
    assert client.post("/explain", content=b"not an image").status_code in (400, 415)


def test_explain_with_a_label_explains_that_class_and_names_the_classes_when_it_is_unknown(client, photos):
    photo = photos["planes"]
    upload = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    overlays = {}
    for label in (None, "planes", "cars"):
        response = client.post("/explain", files=upload, params={} if label is None else {"label": label})
        assert response.status_code == 200, response.text
        overlays[label] = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    predicted = client.post("/predict", files=upload).json()["label"]
    other = next(name for name in ("cars", "planes") if name != predicted)
    assert np.array_equal(overlays[None], overlays[predicted])
    assert not np.array_equal(overlays[predicted], overlays[other])

    response = client.post("/explain", files=upload, params={"label": "boats"})
    assert response.status_code == 422
    assert "boats" in response.json()["error"] and "cars" in response.json()["error"]


def test_answers_below_the_runs_min_confidence_are_unsure(trained_run, cars_planes):
    photo = min((cars_planes / "val_set").rglob("*.jpg"), key=lambda path: trained_run.predict(path).probability)
    unsure_run = copy.copy(trained_run)
    unsure_run.min_confidence = trained_run.predict(photo).probability + 1e-6
    with TestClient(create_app(unsure_run)) as client:
        answer = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    assert answer["label"] == "unsure" and answer["index"] is None
    assert answer["probability"] == pytest.approx(max(answer["probabilities"].values()))


def test_batch_answers_in_order_and_keeps_going_past_an_unreadable_file(client, photos):
    car, plane = photos["cars"], photos["planes"]
    files = [
        ("files", (car.name, car.read_bytes(), "image/jpeg")),
        ("files", ("notes.txt", b"not a photo", "text/plain")),
        ("files", (plane.name, plane.read_bytes(), "image/jpeg")),
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == "seed-cnn"
    assert answer["latency_ms"] > 0
    first, broken, last = answer["predictions"]
    assert (first["file"], first["label"], first["error"]) == (car.name, "cars", None)
    assert (last["file"], last["label"], last["error"]) == (plane.name, "planes", None)
    assert broken["file"] == "notes.txt"
    assert broken["label"] is None
    assert "not a JPEG" in broken["error"]


def test_health_and_model_describe_the_service(client, trained_run):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["model"] == "seed-cnn"
    info = client.get("/model").json()
    assert info["classes"] == ["cars", "planes"]
    assert info["engine"] == "torch"
    assert info["run"] == trained_run.run_dir.name
    preprocessing = dataclasses.asdict(trained_run.preprocessing)
    assert info["preprocessing"] == {k: list(v) if isinstance(v, tuple) else v for k, v in preprocessing.items()}
    assert info["limits"] == {"max_upload_bytes": 10 * 1024 * 1024, "max_batch_files": 16, "timeout_s": 10.0}


def test_the_page_loads_nothing_from_elsewhere_and_the_api_is_documented(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text
    assert "://" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/health", "/model"} <= set(paths)
    assert "multipart/form-data" in paths["/predict"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"name,label\nplane.jpg,planes\n", 415, "not a JPEG, PNG, BMP, GIF, WEBP, TIFF image"),
        (icon(), 415, "not a JPEG"),
        (png_header(10_000, 10_000), 400, "decompression bomb"),
        (png_header(20_000, 20_000), 400, "decompression bomb"),
    ],
    ids=["empty", "csv", "icon", "bomb-over-the-limit", "bomb-over-twice-the-limit"],
)
def test_unreadable_uploads_get_a_json_error(client, body, status, message):
    response = client.post("/predict", content=body, headers={"content-type": "application/octet-stream"})
    assert response.status_code == status
    assert message in response.json()["error"]


def test_an_image_over_the_pixel_limit_gets_413_before_it_is_decoded(client):
    # Under Pillow's limit of 89.5 million pixels; decoding it took 3.4 s and 0.93 GB.
    data = one_bit_png(9400)
    assert len(data) < 11_000
    response = client.post("/predict", content=data)
    assert response.status_code == 413
    error = response.json()["error"]
    assert "9400x9400 pixels, over the limit of 40000000 pixels" in error and "--max-pixels" in error
    # A header that promises the pixels, with none behind it: refused on the header alone, not found truncated.
    response = client.post("/explain", content=png_header(9400, 9400))
    assert response.status_code == 413 and "--max-pixels" in response.json()["error"]


def test_a_batch_answers_an_image_over_the_pixel_limit_with_an_error_and_the_others_with_labels(trained_run, photos):
    car = photos["cars"]
    with Image.open(car) as photo:
        pixels = photo.width * photo.height
    files = [("files", ("big.png", png_header(1000, 1000))), ("files", (car.name, car.read_bytes()))]
    with TestClient(create_app(trained_run, ServeOptions(max_pixels=pixels))) as client:
        response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    refused, answered = response.json()["predictions"]
    assert refused["label"] is None and f"over the limit of {pixels} pixels" in refused["error"]
    assert (answered["file"], answered["label"], answered["error"]) == (car.name, "cars", None)


def test_a_truncated_photo_gets_400(client, photos):
    data = photos["planes"].read_bytes()
    response = client.post("/predict", files={"file": ("cut.jpg", data[: len(data) // 2], "image/jpeg")})
    assert response.status_code == 400
    assert "corrupt or truncated" in response.json()["error"]


def test_requests_without_an_image_field_get_400(client, photos):
    response = client.post("/predict", files={"image": ("a.jpg", photos["cars"].read_bytes(), "image/jpeg")})
    assert response.status_code == 400
    assert "multipart field `file`" in response.json()["error"]
    response = client.post("/predict/batch", content=photos["cars"].read_bytes())
    assert response.status_code == 400
    assert "fields named `files`" in response.json()["error"]
    too_many = [("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(17)]
    response = client.post("/predict/batch", files=too_many)
    assert response.status_code == 400
    assert "Too many files" in response.json()["error"]


def test_the_default_limit_is_10_mb(client):
    response = client.post("/predict", content=bytes(10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert "10 MB" in response.json()["error"]


def test_uploads_over_the_limit_get_413_however_they_are_sent(small_limit_client, cars_planes, photos):
    big = cars_planes / "val_set" / "planes" / "klm.jpg"
    data = big.read_bytes()
    assert len(data) > SMALL_LIMIT
    by_length = small_limit_client.post("/predict", content=data)
    by_count = small_limit_client.post("/predict", content=iter([data[:50_000], data[50_000:]]))
    assert "content-length" not in by_count.request.headers
    by_form = small_limit_client.post("/predict", files={"file": (big.name, data, "image/jpeg")})
    for response in (by_length, by_count, by_form):
        assert response.status_code == 413
        assert "--max-upload-mb" in response.json()["error"]
    assert small_limit_client.post("/predict", content=photos["cars"].read_bytes()).status_code == 200


def test_a_batch_answers_an_image_over_the_limit_with_an_error_and_the_others_with_labels(
    small_limit_client, cars_planes, photos
):
    big = cars_planes / "val_set" / "planes" / "klm.jpg"
    car = photos["cars"]
    files = [("files", (big.name, big.read_bytes(), "image/jpeg")), ("files", (car.name, car.read_bytes()))]
    response = small_limit_client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    refused, answered = response.json()["predictions"]
    assert (refused["file"], refused["label"]) == ("klm.jpg", None)
    assert "larger than the limit" in refused["error"] and "--max-upload-mb" in refused["error"]
    assert (answered["file"], answered["label"], answered["error"]) == (car.name, "cars", None)


def test_a_batch_over_the_limit_of_a_whole_batch_gets_413(small_limit_client, cars_planes):
    data = (cars_planes / "val_set" / "planes" / "klm.jpg").read_bytes()
    assert 2 * len(data) > 16 * SMALL_LIMIT
    response = small_limit_client.post("/predict/batch", files=[("files", (f"{i}.jpg", data)) for i in range(2)])
    assert response.status_code == 413
    assert "16 images" in response.json()["error"] and "--max-upload-mb" in response.json()["error"]


def test_the_client_file_name_never_touches_the_file_system(client, photos, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    names = [str(tmp_path / "absolute.jpg"), "../relative.jpg"]
    data = photos["cars"].read_bytes()
    response = client.post("/predict/batch", files=[("files", (name, data, "image/jpeg")) for name in names])
    assert response.status_code == 200
    assert [p["file"] for p in response.json()["predictions"]] == names
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cwd"]


def test_unknown_endpoints_and_methods_get_json_errors(client):
    missing = client.get("/predictions")
    assert missing.status_code == 404
    assert "/docs" in missing.json()["error"]
    wrong_method = client.get("/predict")
    assert wrong_method.status_code == 405
    assert "GET is not allowed on /predict" in wrong_method.json()["error"]


def test_concurrent_requests_are_all_answered_right_in_shared_batches(trained_run, photos):
    slow = slowed(trained_run, 0.05)
    jobs = [("cars", "planes")[i % 2] for i in range(32)]
    with TestClient(create_app(slow)) as client:
        warm = client.get("/health").json()

        def ask(class_name: str) -> tuple[int, str]:
            response = client.post("/predict", content=photos[class_name].read_bytes())
            return response.status_code, response.json().get("label")

        with ThreadPoolExecutor(8) as clients:
            answers = list(clients.map(ask, jobs))
        health = client.get("/health").json()
    assert answers == [(200, class_name) for class_name in jobs]
    assert health["images"] - warm["images"] == 32
    # Eight clients against a model taking 50 ms a call: requests wait together and share calls.
    assert health["batches"] - warm["batches"] < 32


def test_a_request_over_the_timeout_gets_504_and_the_service_recovers(trained_run, photos):
    slow = slowed(trained_run, 0.6)
    with TestClient(create_app(slow, ServeOptions(timeout_s=0.2))) as client:
        response = client.post("/predict", content=photos["cars"].read_bytes())
        assert response.status_code == 504
        assert "timeout of 0.2 s" in response.json()["error"]
        assert client.get("/health").status_code == 200


def test_an_upload_slower_than_the_timeout_gets_408(trained_run, photos):
    app = create_app(trained_run, ServeOptions(timeout_s=0.2))
    data = photos["cars"].read_bytes()

    async def trickle():
        yield data[:100]
        await asyncio.sleep(1.0)
        yield data[100:]

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://imgclf") as client:
            return await client.post("/predict", content=trickle())

    response = asyncio.run(post())
    assert response.status_code == 408
    assert "did not arrive" in response.json()["error"]


def test_a_full_queue_answers_503_with_retry_after(trained_run, photos):
    run, entered, release = held(trained_run)
    options = ServeOptions(max_batch_size=1, max_batch_files=1, max_queue=1)
    with TestClient(create_app(run, options)) as client, ThreadPoolExecutor(4) as clients:

        def post() -> httpx.Response:
            return client.post("/predict", content=photos["cars"].read_bytes())

        first = clients.submit(post)
        assert entered.wait(30)
        # The model holds one image; of three more, one waits in the queue of one, the others are told to come back.
        others = [clients.submit(post) for _ in range(3)]
        refused = [future.result() for future in itertools.islice(as_completed(others, timeout=30), 2)]
        release.set()
        statuses = sorted(future.result().status_code for future in [first, *others])
    assert statuses == [200, 200, 503, 503]
    for busy in refused:
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "busy" in busy.json()["error"]


def test_a_failing_model_gets_500_and_the_service_stays_up(trained_run, photos, caplog):
    broken = copy.copy(trained_run)

    def predict_tensors(images):
        if images.float().mean() > 0:  # the warm-up batch is black and passes; real photos fail
            raise RuntimeError("out of memory")
        return trained_run.predict_tensors(images)

    broken.predict_tensors = predict_tensors
    with TestClient(create_app(broken)) as client:
        response = client.post("/predict", content=photos["cars"].read_bytes())
        assert response.status_code == 500
        assert "out of memory" in response.json()["error"]
        assert client.get("/health").status_code == 200
    assert "Inference failed" in caplog.text


def test_a_model_giving_probabilities_that_are_not_finite_gets_500(trained_run, photos, caplog):
    broken = copy.copy(trained_run)

    def predict_tensors(images):
        probabilities = trained_run.predict_tensors(images)
        if images.float().mean() > 0:  # the warm-up batch is black and passes; real photos get NaN
            probabilities[:] = float("nan")
        return probabilities

    broken.predict_tensors = predict_tensors
    with TestClient(create_app(broken)) as client:
        single = client.post("/predict", content=photos["cars"].read_bytes())
        batch = client.post("/predict/batch", files=[("files", ("car.jpg", photos["cars"].read_bytes()))])
        health = client.get("/health")
    for response in (single, batch):
        assert response.status_code == 500
        assert "not all finite numbers" in response.json()["error"]
    assert health.status_code == 200
    assert "not finite" in caplog.text


def test_options_are_checked():
    with pytest.raises(ConfigError, match="--timeout=0"):
        ServeOptions(timeout_s=0)
    with pytest.raises(ConfigError, match="max_queue=4"):
        ServeOptions(max_queue=4, max_batch_size=4)


def test_imgclf_serve_passes_its_options_and_binds_to_localhost(trained_run, monkeypatch):
    calls = []
    monkeypatch.setattr("imgclf.serve.serve", lambda *args: calls.append(args))
    given = ["--max-upload-mb", "2", "--timeout", "3", "--max-pixels", "1000000"]
    assert main(["serve", str(trained_run.run_dir), *given]) == 0
    run_dir, host, port, engine, options = calls[0]
    assert (run_dir, host, port, engine) == (str(trained_run.run_dir), "127.0.0.1", 8000, "auto")
    assert (options.max_upload_bytes, options.timeout_s, options.max_batch_size) == (2 * 1024 * 1024, 3.0, 8)
    assert options.max_pixels == 1_000_000


def test_imgclf_serve_reports_a_missing_run(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-upload-mb", "0"),
        ("--max-upload-mb", "-1"),
        ("--max-batch", "0"),
        ("--max-batch", "100"),
        ("--timeout", "0"),
        ("--max-pixels", "0"),
    ],
)
def test_imgclf_serve_names_the_option_and_the_value_typed(trained_run, option, value, capsys):
    assert main(["serve", str(trained_run.run_dir), option, value]) == 1
    error = capsys.readouterr().err
    assert f"{option} must be" in error and f"Received: {option}={value}." in error
    assert "_bytes" not in error and "_size" not in error and "timeout_s" not in error


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_imgclf_serve_refuses_a_port_out_of_range_in_one_line(trained_run, port, capsys):
    assert main(["serve", str(trained_run.run_dir), "--port", port]) == 1
    error = capsys.readouterr().err
    assert f"--port must be from 0 to 65535 (0: any free port). Received: --port={port}." in error
    assert error.count("\n") == 1


def test_imgclf_serve_reports_a_port_in_use_before_loading_the_model(trained_run, monkeypatch, capsys):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr("imgclf.serve.server.load", load)
    with socket.create_server(("127.0.0.1", 0)) as other_server:
        port = other_server.getsockname()[1]
        assert main(["serve", str(trained_run.run_dir), "--port", str(port)]) == 1
    error = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is already in use. Received: --port={port}." in error
    assert "another port with --port" in error and error.count("\n") == 1


def test_imgclf_serve_answers_on_the_port_it_reports_and_stops_on_ctrl_c(trained_run):
    command = [sys.executable, "-m", "imgclf", "serve", str(trained_run.run_dir), "--port", "0"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not (found := re.search(r"Listening on (http://127\.0\.0\.1:\d+/)", "".join(lines))):
            line = server.stderr.readline()
            assert line, f"imgclf serve exited with {server.wait()}:\n{''.join(lines)}"
            lines.append(line)
        health = httpx.get(found[1] + "health", timeout=60)
        assert health.status_code == 200 and health.json()["model"] == "seed-cnn"
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
        server.wait()


def test_a_multi_label_run_answers_with_its_label_set(multi_label_run):
    photo = sorted(Path(multi_label_run.config.train.data).glob("*.jpg"))[0]

    with TestClient(create_app(multi_label_run)) as client:
        answer = client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
        batch = client.post("/predict/batch", files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))])

    expected = multi_label_run.predict(photo)
    assert answer["labels"] == expected.labels and answer["label"] == ";".join(expected.labels)
    assert batch.json()["predictions"][0]["labels"] == expected.labels
