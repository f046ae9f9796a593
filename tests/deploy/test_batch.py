"""Predicting into a CSV file: rows on disk batch by batch, resumed after an interruption, shares merged in order."""

from __future__ import annotations

import shutil

import pytest

from imgclf.data.folders import list_images
from imgclf.deploy.batch import (
    PredictionInterrupted,
    PredictionsFileError,
    Tally,
    UnreadableImagesError,
    part_path,
    predict_to_csv,
    share,
)


@pytest.fixture
def photos(cars_planes, tmp_path) -> list[str]:
    """The 40 validation photos with two unreadable files among them."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a photo")
    files = list_images([cars_planes / "val_set"])
    return [*files[:5], str(tmp_path / "empty.jpg"), *files[5:30], str(tmp_path / "text.jpg"), *files[30:]]


def interrupt_after(rows: int):
    """A progress callback that presses Ctrl-C once `rows` rows are written."""

    def progress(done: int, total: int) -> None:
        if done >= rows:
            raise KeyboardInterrupt

    return progress


def test_an_interrupted_run_resumed_writes_the_csv_of_an_uninterrupted_one(trained_run, photos, tmp_path):
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"
    tally = predict_to_csv(trained_run, photos, whole, batch_size=8)
    assert (tally.images, tally.unreadable) == (42, 2)
    with pytest.raises(PredictionInterrupted, match="holds the first 16 of its 42 rows.*--resume"):
        predict_to_csv(trained_run, photos, resumed, batch_size=8, progress=interrupt_after(16))
    assert len(resumed.read_text().splitlines()) == 1 + 16  # every finished batch is on disk
    with resumed.open("a") as file:
        file.write(resumed.read_text().splitlines()[1][:30])  # a row cut short, as by a crash mid-write
    done = []
    tally = predict_to_csv(
        trained_run, photos, resumed, batch_size=8, resume=True, progress=lambda d, t: done.append(d)
    )
    assert resumed.read_bytes() == whole.read_bytes()
    assert done[0] == 16 and done[-1] == 42
    assert (tally.images, tally.unreadable, tally.first_unreadable[0]) == (42, 2, photos[5])
    assert predict_to_csv(trained_run, photos, resumed, batch_size=8, resume=True).images == 42  # nothing left to do
    assert resumed.read_bytes() == whole.read_bytes()


def test_rows_reach_the_file_before_the_next_batch_is_predicted(trained_run, photos, tmp_path, monkeypatch):
    path = tmp_path / "predictions.csv"
    predict_iter = type(trained_run).predict_iter
    lines_seen = []

    def watched(run, files, batch_size=32, tta=False):
        for number, prediction in enumerate(predict_iter(run, files, batch_size, tta)):
            if number % batch_size == 0:
                lines_seen.append(len(path.read_text().splitlines()))
            yield prediction

    monkeypatch.setattr(type(trained_run), "predict_iter", watched)
    predict_to_csv(trained_run, photos, path, batch_size=10)
    assert lines_seen == [1, 11, 21, 31, 41]


def test_resume_refuses_a_file_of_other_inputs_or_another_run(trained_run, photos, tmp_path):
    path = tmp_path / "predictions.csv"
    predict_to_csv(trained_run, photos[:10], path, batch_size=8)
    with pytest.raises(PredictionsFileError, match=r"its row 6 is '.*empty.jpg' where the inputs have '.*\.jpg'"):
        predict_to_csv(trained_run, photos[:5] + photos[6:], path, resume=True)
    path.write_text("file,label,index,probability,p_trucks,error\n")
    with pytest.raises(PredictionsFileError, match=r"not a predictions CSV of this run.*p_trucks"):
        predict_to_csv(trained_run, photos, path, resume=True)


class TakeTurns:
    """Two processes simulated one after the other: gather hands each the other's tally, as all_gather would."""

    def __init__(self, rank: int, other: list[Tally]):
        self.rank, self.world_size, self.other = rank, 2, other

    def gather(self, items: list) -> list:
        self.other.append(items[0])
        return self.other if self.rank == 1 else [items[0], self.other[0]]


def test_two_shares_merged_in_input_order_give_the_rows_of_one_process(trained_run, photos, tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    predict_to_csv(trained_run, photos, one, batch_size=8)
    tallies: list[Tally] = []
    predict_to_csv(trained_run, photos, two, batch_size=8, group=TakeTurns(1, tallies))
    assert not two.exists() and part_path(two, 1, 2).is_file()
    total = predict_to_csv(trained_run, photos, two, batch_size=8, group=TakeTurns(0, tallies))
    assert two.read_bytes() == one.read_bytes()
    assert not part_path(two, 0, 2).exists() and not part_path(two, 1, 2).exists()
    assert (total.images, total.unreadable) == (42, 2)


def test_shares_are_whole_batches_in_order_and_cover_every_input():
    assert [share(100, 32, rank, 2) for rank in range(2)] == [range(0, 64), range(64, 100)]
    assert [share(10, 8, rank, 3) for rank in range(3)] == [range(0, 0), range(0, 8), range(8, 10)]
    for count, batch_size, world_size in [(1, 1, 4), (101, 7, 3), (64, 32, 2), (0, 8, 2)]:
        shares = [share(count, batch_size, rank, world_size) for rank in range(world_size)]
        assert [i for part in shares for i in part] == list(range(count))
        assert all(part.start % batch_size == 0 for part in shares if part)


@pytest.mark.parametrize(
    ("images", "unreadable", "strict", "message"),
    [
        (1, 1, False, r"^a\.jpg could not be read: empty file\.$"),
        (3, 3, False, r"^None of the 3 images could be read; the first, a\.jpg, could not be read: empty file\.$"),
        (3, 1, True, r"^1 of 3 images could not be read, and --strict fails on any; the first, a\.jpg"),
        (3, 1, False, None),
        (3, 0, True, None),
    ],
)
def test_a_tally_fails_when_no_image_could_be_read_or_strict_and_any_could_not(images, unreadable, strict, message):
    tally = Tally()
    for number in range(images):
        tally.count("a.jpg" if number == 0 else f"{number}.jpg", "empty file" if number < unreadable else None)
    if message is None:
        tally.check(strict)
    else:
        with pytest.raises(UnreadableImagesError, match=message):
            tally.check(strict)


def test_names_a_spreadsheet_would_run_are_inert_and_still_resume(trained_run, cars_planes, tmp_path, monkeypatch):
    """Relative names starting with = or - are written with a leading ' (CSV injection), and --resume reads them."""
    monkeypatch.chdir(tmp_path)
    source = sorted((cars_planes / "val_set" / "cars").glob("*.jpg"))
    names = ["=HYPERLINK(1).jpg", "-1+1.jpg", "@x.jpg", "plain.jpg"]
    for name, photo in zip(names, source):
        shutil.copy(photo, name)
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"
    predict_to_csv(trained_run, names, whole, batch_size=1)
    assert [line.split(",")[0] for line in whole.read_text().splitlines()[1:]] == [
        "'=HYPERLINK(1).jpg",
        "'-1+1.jpg",
        "'@x.jpg",
        "plain.jpg",
    ]
    with pytest.raises(PredictionInterrupted):
        predict_to_csv(trained_run, names, resumed, batch_size=1, progress=interrupt_after(2))
    predict_to_csv(trained_run, names, resumed, batch_size=1, resume=True)
    assert resumed.read_bytes() == whole.read_bytes()
