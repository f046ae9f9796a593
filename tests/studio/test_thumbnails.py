"""Thumbnails: made once per version of a photo, kept in the workspace, revalidated by the browser with an ETag."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from imgclf.data.images import ImageError
from imgclf.studio import thumbnails
from imgclf.studio.thumbnails import THUMBNAIL_SIZE, thumbnail, thumbnail_folder


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The names of the photos decoded for a thumbnail, in order."""
    decoded = []
    real = thumbnails.open_image_bytes

    def counting(data, *args, name, **kwargs):
        decoded.append(name)
        return real(data, *args, name=name, **kwargs)

    monkeypatch.setattr(thumbnails, "open_image_bytes", counting)
    return decoded


def test_a_thumbnail_is_decoded_once_and_kept_in_the_workspace(photos, workspace, decodes):
    photo = sorted(photos.data_dir.joinpath("cars").iterdir())[0]
    folder = thumbnail_folder(workspace.root)
    first, key = thumbnail(photo, folder, 40_000_000, "cars/a.jpg")
    again, same_key = thumbnail(photo, folder, 40_000_000, "cars/a.jpg")
    assert decodes == ["cars/a.jpg"] and again == first and same_key == key
    assert Image.open(io.BytesIO(first)).size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    assert [p.read_bytes() for p in folder.rglob("*.jpg")] == [first]
    assert folder.is_relative_to(workspace.root)


def test_a_changed_photo_gets_a_new_thumbnail(photos, workspace, decodes):
    photo = sorted(photos.data_dir.joinpath("cars").iterdir())[0]
    folder = thumbnail_folder(workspace.root)
    before, key = thumbnail(photo, folder, 40_000_000, "car")
    Image.new("RGB", (300, 200), (250, 250, 0)).save(photo, format="JPEG")
    stat = os.stat(photo)
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after, new_key = thumbnail(photo, folder, 40_000_000, "car")
    assert decodes == ["car", "car"] and new_key != key and after != before
    assert Image.open(io.BytesIO(after)).getpixel((96, 96))[2] < 60  # yellow now


def test_an_unreadable_photo_raises_an_image_error(photos, workspace):
    broken = photos.data_dir / "cars" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="cars/broken.jpg"):
        thumbnail(broken, thumbnail_folder(workspace.root), 40_000_000, "cars/broken.jpg")


def test_the_endpoint_answers_a_jpeg_then_304_for_the_same_etag(client, photos, decodes):
    image = client.get("/api/projects/photos/images").json()["images"][0]["id"]
    url = f"/api/projects/photos/thumbnails/{image}"
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-cache"
    again = client.get(url, headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert decodes == [image]


def test_the_endpoint_answers_json_errors(client, photos):
    (photos.data_dir / "cars" / "broken.jpg").write_bytes(b"not a jpeg")
    unreadable = client.get("/api/projects/photos/thumbnails/cars/broken.jpg")
    assert unreadable.status_code == 415 and "cars/broken.jpg" in unreadable.json()["error"]
    assert client.get("/api/projects/photos/thumbnails/cars/missing.jpg").status_code == 404
    assert client.get("/api/projects/photos/thumbnails/../../project.json").status_code in (400, 404)
