"""A run's pages, read from its files: they say what the run's own files say."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.studio.conftest import ProjectRun

from imgclf.studio import inspection
from imgclf.studio.inspection import ValidationImage
from imgclf.studio.workspace import NotFound, StudioError, Workspace


def predictions_rows(run_dir: Path) -> list[dict[str, object]]:
    """predictions.csv read here on its own: each row's file, true class, most probable class and its probability."""
    with (run_dir / "predictions.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    classes = [column[2:] for column in rows[0] if column.startswith("p_")]
    answer = []
    for row in rows:
        probabilities = [float(row[f"p_{name}"]) for name in classes]
        top = int(np.argmax(probabilities))
        answer.append({"file": row["file"], "true": row["true_label"], "predicted": classes[top]})
        answer[-1]["confidence"] = probabilities[top]
    return answer


def test_run_detail_says_what_the_runs_files_say(project_run: ProjectRun) -> None:
    detail = inspection.run_detail(project_run.project, project_run.run_name)
    saved = json.loads((project_run.run_dir / "metrics.json").read_text())
    calibration = json.loads((project_run.run_dir / "calibration.json").read_text())
    for key in ("accuracy", "macro_f1", "log_loss", "per_class", "images", "unsure"):
        assert detail["metrics"][key] == saved[key]
    assert detail["metrics"]["auc"] == saved["roc"]["auc"]
    assert detail["confusion"] == saved["confusion_matrix"]
    assert detail["classes"] == ["cars", "planes"]
    assert detail["calibration"]["temperature"] == calibration["temperature"]
    assert detail["calibration"]["bins"] == saved["calibration"]["bins"]
    with (project_run.run_dir / "history.csv").open(newline="") as file:
        history = list(csv.DictReader(file))
    assert [row["epoch"] for row in detail["history"]] == [1, 2, 3]
    assert [row["val_loss"] for row in detail["history"]] == [float(row["val_loss"]) for row in history]
    assert detail["config"]["model"] == "seed-cnn"
    assert detail["config"]["validation_images"] == saved["images"]
    assert detail["min_confidence"] is None


def test_coverage_curve_rises_to_every_image_at_the_lowest_threshold(project_run: ProjectRun) -> None:
    curve = inspection.run_detail(project_run.project, project_run.run_name)["coverage"]
    rows = predictions_rows(project_run.run_dir)
    coverages = [point["coverage"] for point in curve]
    assert [point["threshold"] for point in curve] == sorted({row["confidence"] for row in rows}, reverse=True)
    assert coverages == sorted(coverages) and coverages[-1] == 1.0
    accuracy = json.loads((project_run.run_dir / "metrics.json").read_text())["accuracy"]
    assert curve[-1]["accuracy"] == pytest.approx(accuracy)
    for point in curve:
        kept = [row for row in rows if row["confidence"] >= point["threshold"]]
        assert point["coverage"] == pytest.approx(len(kept) / len(rows))
        assert point["accuracy"] == pytest.approx(np.mean([row["true"] == row["predicted"] for row in kept]))


def test_coverage_curve_of_many_images_keeps_a_slider_s_worth_of_points() -> None:
    confidences = np.random.default_rng(0).uniform(0.5, 1.0, 1000)
    images = [ValidationImage(f"{i}.jpg", None, i % 2, 0, (c, 1 - c)) for i, c in enumerate(confidences)]
    curve = inspection.coverage_curve(images)
    assert 50 <= len(curve) <= inspection.COVERAGE_POINTS
    assert curve[0]["threshold"] == confidences.max() and curve[-1]["threshold"] == confidences.min()
    assert curve[-1]["coverage"] == 1.0 and curve[-1]["accuracy"] == 0.5


def test_a_confusion_cell_lists_exactly_the_predictions_of_that_cell(project_run: ProjectRun) -> None:
    rows = predictions_rows(project_run.run_dir)
    confusion = inspection.run_detail(project_run.project, project_run.run_name)["confusion"]
    assert confusion[1][0] > 0, "the fixture's run should classify some planes as cars"
    for t, true in enumerate(["cars", "planes"]):
        for p, predicted in enumerate(["cars", "planes"]):
            cell = inspection.cell_images(project_run.project, project_run.run_name, true, predicted)
            expected = sorted(row["file"] for row in rows if row["true"] == true and row["predicted"] == predicted)
            assert sorted(image["file"] for image in cell) == expected
            assert len(cell) == confusion[t][p]
            assert [image["confidence"] for image in cell] == sorted((i["confidence"] for i in cell), reverse=True)
            for image in cell:
                assert image["id"] == f"{true}/{Path(image['file']).name}"
                assert inspection.data_image(project_run.project, image["id"]) == Path(image["file"]).resolve()


def test_most_wrong_are_the_wrong_ones_most_confident_first(project_run: ProjectRun) -> None:
    rows = predictions_rows(project_run.run_dir)
    wrong = sorted((row for row in rows if row["true"] != row["predicted"]), key=lambda row: -row["confidence"])
    listed = inspection.most_wrong(project_run.project, project_run.run_name, 100)
    assert [(image["file"], image["confidence"]) for image in listed] == [(r["file"], r["confidence"]) for r in wrong]
    assert len(inspection.most_wrong(project_run.project, project_run.run_name, 1)) == 1


def test_a_class_the_run_does_not_have_is_refused(project_run: ProjectRun) -> None:
    with pytest.raises(StudioError, match="no class 'trucks'.*Choose one of"):
        inspection.cell_images(project_run.project, project_run.run_name, "trucks", "cars")


@pytest.mark.parametrize("name", ["../x", "..", "../../etc", "a/b", ""])
def test_a_run_name_that_leaves_the_runs_folder_is_refused(project_run: ProjectRun, name: str) -> None:
    with pytest.raises(StudioError, match="run"):
        inspection.run_folder(project_run.project, name)


def test_an_image_id_outside_the_data_folder_is_refused(project_run: ProjectRun) -> None:
    with pytest.raises(NotFound):
        inspection.data_image(project_run.project, "../project.json")
    with pytest.raises(StudioError, match="leaves the project"):
        inspection.data_image(project_run.project, "../../../etc/passwd")


def test_runs_table_lists_finished_and_unfinished_runs(project_run: ProjectRun, tmp_path: Path) -> None:
    project = Workspace(tmp_path).create_project("p")
    assert inspection.list_project_runs(project) == []
    shutil.copytree(project_run.run_dir, project.runs_dir / "done")
    stopped = project.runs_dir / "stopped"
    stopped.mkdir()
    for name in ("config.json", "history.csv"):
        shutil.copy(project_run.run_dir / name, stopped / name)
    table = {row["name"]: row for row in inspection.list_project_runs(project)}
    accuracy = json.loads((project_run.run_dir / "metrics.json").read_text())["accuracy"]
    assert table["done"]["state"] == "finished" and table["done"]["accuracy"] == accuracy
    assert table["done"]["model"] == "seed-cnn" and table["done"]["epochs"] == 3
    assert table["stopped"]["state"] == "unfinished"
    detail = inspection.run_detail(project, "stopped")
    assert detail["metrics"] == {} and detail["confusion"] is None and detail["coverage"] == []
