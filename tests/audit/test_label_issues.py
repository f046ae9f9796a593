"""Label issues: photos moved to the wrong class are found by out-of-fold heads and cleanlab, and written out."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import copy_photos

from imgclf.audit.embeddings import Embeddings
from imgclf.audit.inspection import AuditedFile, FileFacts
from imgclf.audit.labels import NeighbourVote, find_label_issues, out_of_fold_probabilities, suspected_label_errors
from imgclf.cli import main

PER_CLASS = 20
MOVED_PER_CLASS = 2  # 10% of the photos


@pytest.fixture
def moved_photos(tmp_path: Path, cars_planes: Path) -> tuple[Path, dict[str, str]]:
    """20 real cars and 20 real planes, 2 of each moved (seeded) into the other class: (folder, moved path → class
    it came from)."""
    data = copy_photos(cars_planes / "training_set", tmp_path / "train", PER_CLASS)
    rng = np.random.default_rng(0)
    moved = {}
    for source, target in (("cars", "planes"), ("planes", "cars")):
        photos = sorted((data / source).iterdir())
        for index in rng.choice(len(photos), MOVED_PER_CLASS, replace=False):
            destination = data / target / photos[index].name
            shutil.move(photos[index], destination)
            moved[str(destination)] = source
    return data, moved


def test_moved_photos_are_flagged_with_their_class_and_the_command_exits_3(moved_photos, tmp_path, capsys):
    data, moved = moved_photos
    out = tmp_path / "out"

    assert main(["audit", str(data), "--out", str(out), "--fail-on", "label-issues", "--workers", "1"]) == 3

    assert "label-issues (" in capsys.readouterr().err
    issues = json.loads((out / "audit.json").read_text())["label_issues"]
    flagged = {issue["path"]: issue for issue in issues}
    found = [path for path in moved if path in flagged]
    assert len(found) >= 3, issues  # most of the 4 moved photos
    assert all(flagged[path]["suggested"] == moved[path] for path in found)
    assert len(flagged) - len(found) <= 2, issues  # and few of the 36 others
    assert [issue["score"] for issue in issues] == sorted(issue["score"] for issue in issues)

    with (out / "label-issues.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["file", "given", "suggested", "score", "action"]
    assert [row[0] for row in rows[1:]] == [issue["path"] for issue in issues]
    assert {row[4] for row in rows[1:]} == {"keep"}
    assert all(row[1] != moved[row[0]] for row in rows[1:] if row[0] in moved)  # given: the folder it sits in
    page = (out / "audit.html").read_text()
    assert "Label issues" in page and "planes → cars" in page.replace("&gt;", ">")


def test_no_model_skips_the_backbone_and_its_checks(moved_photos, tmp_path, feature_cache_in_tmp):
    data, _ = moved_photos
    out = tmp_path / "out"

    assert main(["audit", str(data), "--out", str(out), "--no-model", "--fail-on", "label-issues,outliers"]) == 0

    saved = json.loads((out / "audit.json").read_text())
    assert saved["settings"]["model"] is None and saved["label_issues"] == [] and saved["outliers"] == []
    assert not (out / "label-issues.csv").exists()
    assert not (feature_cache_in_tmp / "features").exists()  # no features extracted, none cached
    assert "not looked for (no model)" in (out / "audit.html").read_text()


def test_a_model_trained_from_scratch_is_refused(cars_planes, tmp_path, capsys):
    copy_photos(cars_planes / "val_set", tmp_path / "val", 1)
    assert main(["audit", str(tmp_path / "val"), "--model", "seed-cnn", "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "--model=seed-cnn" in error and "--no-model" in error


def test_model_and_no_model_together_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "data", "--model", "efficientnet_lite0", "--no-model"])
    assert exit_info.value.code == 2


def clusters(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length features around one direction per class, with labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16)
    labels = np.repeat(np.arange(3), per_class)
    features = centres[labels] + rng.normal(0, 0.15, (len(labels), 16))
    return features / np.linalg.norm(features, axis=1, keepdims=True), labels


def test_out_of_fold_probabilities_never_come_from_a_head_that_saw_the_picture():
    features, labels = clusters(10)
    labels[0] = 2  # a class-0 picture labelled 2: a head that saw it would vouch for 2 (its own nearest neighbour)
    probabilities = out_of_fold_probabilities(features, labels)
    assert probabilities.shape == (30, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities[0].argmax() == 0 and probabilities[0, 2] < 0.5


def audited(class_name: str, number: int) -> AuditedFile:
    """A readable file of the train split, for tests that bring their own features."""
    name = f"{class_name}/{number}.jpg"
    return AuditedFile("train", class_name, name, FileFacts(name, 1, content_hash=name))


def test_flipped_labels_of_clustered_features_are_found_and_a_lone_class_is_left_out():
    features, labels = clusters(12)
    labels[[0, 13]] = [1, 2]
    names = ["a", "b", "c"]
    files = [audited(names[label], row) for row, label in enumerate(labels)] + [audited("lonely", 99)]
    embeddings = Embeddings("test", files, np.vstack([features, np.eye(1, 16, 5)]))

    issues, warnings = find_label_issues(embeddings)

    assert {(issue.file.name, issue.given, issue.suggested) for issue in issues} == {
        ("b/0.jpg", "b", "a"),
        ("c/13.jpg", "c", "b"),
    }
    assert all(0 <= issue.score < 0.5 for issue in issues)
    assert len(warnings) == 1 and "lonely" in warnings[0]


def test_with_fewer_than_two_classes_to_judge_nothing_is_looked_for():
    features, _ = clusters(4)
    files = [audited("a", row) for row in range(4)] + [audited("b", 4)]
    issues, warnings = find_label_issues(Embeddings("test", files, features[:5]))
    assert issues == [] and any("none were looked for" in warning for warning in warnings)


def test_the_audits_csv_drives_imgclf_fix_and_undo_from_another_folder(moved_photos, tmp_path, monkeypatch, capsys):
    """audit (data named relative to the working folder) → edit actions → fix → every moved photo is home → undo."""
    data, moved = moved_photos
    monkeypatch.chdir(data.parent)
    assert main(["audit", data.name, "--out", "out", "--workers", "1"]) == 0
    csv_path = data.parent / "out" / "label-issues.csv"
    with csv_path.open(newline="") as file:
        rows = list(csv.reader(file))
    edited = [rows[0]] + [[*row[:4], "relabel" if row[0] in moved else "keep"] for row in rows[1:]]
    with csv_path.open("w", newline="") as file:
        csv.writer(file).writerows(edited)
    before = sorted(str(path.relative_to(data)) for path in data.rglob("*.jpg"))

    monkeypatch.chdir(tmp_path.parent)  # fix runs from elsewhere, naming DATA another way
    assert main(["fix", str(csv_path), "--data", str(data)]) == 0
    relabelled = [row[0] for row in edited[1:] if row[4] == "relabel"]
    assert relabelled and all((data / moved[path] / Path(path).name).is_file() for path in relabelled)

    journal = next(csv_path.parent.glob("label-issues.fix-*.jsonl"))
    assert main(["fix", "--undo", str(journal)]) == 0
    assert sorted(str(path.relative_to(data)) for path in data.rglob("*.jpg")) == before


def test_the_flagged_pictures_are_the_least_probable_as_many_as_confident_learning_counts():
    """cleanlab's pruning by noise rate keeps some rows whose given class is more probable than rows it passes over."""
    from cleanlab.filter import find_label_issues as confident_learning

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), 30)
    logits = rng.normal(0, 1.5, (90, 3))
    logits[np.arange(90), labels] += 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    given = probabilities[np.arange(90), labels]

    flagged = suspected_label_errors(labels, probabilities)

    pruned = confident_learning(labels, probabilities, filter_by="prune_by_noise_rate")
    assert len(flagged) == pruned.sum() == 6
    assert given[flagged].max() < np.delete(given, flagged).min() < given[pruned].max()


def test_the_neighbour_vote_from_neighbours_found_once_is_scikit_learns_vote_of_each_fold():
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    features, labels = clusters(20)
    features[1] = features[0]  # an identical pair: the twin, at distance 0, votes alone
    vote = NeighbourVote.among(features, labels)
    for train, held_out in StratifiedKFold(5, shuffle=True, random_state=0).split(features, labels):
        expected = KNeighborsClassifier(5, metric="cosine", weights="distance").fit(features[train], labels[train])
        np.testing.assert_allclose(vote.probabilities(train, held_out), expected.predict_proba(features[held_out]))


def test_a_picture_with_no_training_row_among_its_pooled_neighbours_gets_no_vote():
    features, labels = clusters(5)
    vote = NeighbourVote.among(features, labels)
    held_out = np.arange(len(labels))
    np.testing.assert_allclose(vote.probabilities(np.array([], dtype=int), held_out), 1 / 3)
