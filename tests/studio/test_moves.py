"""Moving real photos to another class or to the quarantine, and undoing it, through the journal of `imgclf fix`."""

from __future__ import annotations

import shutil

from tests.studio.conftest import tree


def move(client, images, to):
    return client.post("/api/projects/photos/moves", json={"images": images, "to": to})


def test_moves_and_quarantine_are_undone_last_first_to_the_same_files(client, photos):
    original = tree(photos.data_dir)
    cars = [image for image in original if image.startswith("cars/")]

    relabelled = move(client, cars[:2], "planes")
    assert relabelled.status_code == 200
    assert [m["to"] for m in relabelled.json()["moved"]] == [f"planes/{c.split('/')[1]}" for c in cars[:2]]
    removed = move(client, [cars[2]], "quarantine").json()
    assert removed["moved"] == [{"from": cars[2], "to": f"quarantine/{cars[2]}"}]
    assert (photos.quarantine_dir / cars[2]).is_file() and not (photos.data_dir / cars[2]).exists()
    assert client.get("/api/projects/photos").json()["classes"] == [
        {"name": "cars", "count": 1},
        {"name": "planes", "count": 6},
    ]

    assert client.post("/api/projects/photos/undo", json={}).json() == {"restored": [cars[2]]}
    assert client.post("/api/projects/photos/undo").json() == {"restored": [cars[1], cars[0]]}
    assert tree(photos.data_dir) == original
    assert not photos.quarantine_dir.exists() or tree(photos.quarantine_dir) == {}
    nothing = client.post("/api/projects/photos/undo")
    assert nothing.status_code == 400 and "Nothing to undo" in nothing.json()["error"]


def test_a_named_change_is_undone_even_when_it_is_not_the_last(client, photos):
    original = tree(photos.data_dir)
    car = next(image for image in original if image.startswith("cars/"))
    plane = next(image for image in original if image.startswith("planes/"))
    first = move(client, [car], "planes").json()
    move(client, [plane], "quarantine")
    response = client.post("/api/projects/photos/undo", json={"journal": first["journal"]})
    assert response.json() == {"restored": [car]}
    client.post("/api/projects/photos/undo")
    assert tree(photos.data_dir) == original


def test_a_taken_name_gets_a_free_one_and_nothing_is_overwritten(client, photos):
    car = sorted(photos.data_dir.joinpath("cars").iterdir())[0]
    shutil.copy(sorted(photos.data_dir.joinpath("planes").iterdir())[0], photos.data_dir / "planes" / car.name)
    before = tree(photos.data_dir)
    moved = move(client, [f"cars/{car.name}"], "planes").json()["moved"]
    assert moved == [{"from": f"cars/{car.name}", "to": f"planes/{car.stem}-1{car.suffix}"}]
    after = tree(photos.data_dir)
    assert after[f"planes/{car.name}"] == before[f"planes/{car.name}"]
    assert after[f"planes/{car.stem}-1{car.suffix}"] == before[f"cars/{car.name}"]


def test_every_image_is_checked_before_any_moves(client, photos):
    original = tree(photos.data_dir)
    car = next(image for image in original if image.startswith("cars/"))
    plane = next(image for image in original if image.startswith("planes/"))
    missing = move(client, [car, "cars/nope.jpg"], "planes")
    assert missing.status_code == 404 and "nope.jpg" in missing.json()["error"]
    same = move(client, [car, plane], "planes")
    assert same.status_code == 400 and "already" in same.json()["error"]
    assert move(client, [car], "boats").status_code == 404
    assert move(client, [f"planes/../{car}"], "planes").status_code == 400
    assert move(client, [car.split("/")[1]], "planes").status_code == 400
    assert move(client, [], "planes").status_code == 400
    assert tree(photos.data_dir) == original
    assert not photos.journals_dir.exists() or list(photos.journals_dir.iterdir()) == []


def test_an_undo_that_would_overwrite_is_refused_before_anything_moves(client, photos):
    car, other = sorted(photos.data_dir.joinpath("cars").iterdir())[:2]
    move(client, [f"cars/{car.name}", f"cars/{other.name}"], "planes")
    shutil.copy(photos.data_dir / "planes" / other.name, car)  # another file now sits where one must go back
    response = client.post("/api/projects/photos/undo")
    assert response.status_code == 409 and "nothing is overwritten" in response.json()["error"]
    assert (photos.data_dir / "planes" / car.name).is_file() and (photos.data_dir / "planes" / other.name).is_file()
