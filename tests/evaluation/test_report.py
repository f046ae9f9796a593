"""report.html: what training writes, a page that embeds everything, its confusion cells, the commands, rendering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import imgclf
from imgclf.cli import main
from imgclf.data.run_data import validation_index
from imgclf.evaluation.multi_label import evaluate_multi_label
from imgclf.evaluation.report import build_multi_label_report

REPO = Path(__file__).resolve().parents[2]


def test_training_writes_calibration_metrics_and_report(trained_run):
    run_dir = trained_run.run_dir
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["images"] == 40
    assert calibration["val_log_loss_after"] <= calibration["val_log_loss_before"] + 1e-9
    assert trained_run.temperature == pytest.approx(calibration["temperature"])
    values = json.loads((run_dir / "metrics.json").read_text())
    assert values["scored"] == 40 and 0 <= values["accuracy"] <= 1
    assert (run_dir / "report.html").stat().st_size > 10_000


def test_report_embeds_every_image_and_links_nothing_outside(trained_run):
    page = (trained_run.run_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) > 10 and all(s.startswith("data:image/") for s in sources)
    without_data = re.sub(r'"data:[^"]*"', '""', page)
    assert "http" not in without_data and "//" not in without_data and "url(" not in without_data
    assert "<link" not in page and "<script" not in page
    sections = ("Configuration", "Dataset", "Training curves", "Metrics", "Confusion matrix", "ROC and calibration")
    assert all(section in page for section in (*sections, "Grad-CAM"))


def test_each_confusion_cell_opens_its_images(trained_run):
    page = (trained_run.run_dir / "report.html").read_text()
    values = json.loads((trained_run.run_dir / "metrics.json").read_text())
    for i, row in enumerate(values["confusion_matrix"]):
        for j, count in enumerate(row):
            assert f'href="#cell-{i}-{j}">{count}<' in page
            panel = re.search(rf'<section class="cell" id="cell-{i}-{j}">(.*?)</section>', page).group(1)
            assert panel.count("<figure") == count
    wrong = values["misclassified"]
    if wrong:
        assert Path(wrong[0]["file"]).name in page


def test_evaluate_and_report_commands(trained_run, cars_planes, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    (run_dir / "report.html").unlink()
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(run_dir),
                str(cars_planes / "val_set"),
                "--out",
                str(out),
                "--engine",
                "torch",
                "--tta",
                "--min-confidence",
                "0.9",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "macro F1" in printed and "AUC" in printed and "Per class" in printed
    values = json.loads((out / "metrics.json").read_text())
    assert values["tta"] is True and values["min_confidence"] == 0.9 and (out / "report.html").is_file()
    assert main(["report", str(run_dir), "--engine", "torch"]) == 0
    assert (run_dir / "report.html").is_file()
    assert main(["predict", str(run_dir), str(cars_planes / "val_set"), "--min-confidence", "2"]) == 1


def test_the_render_script_sees_a_report_that_is_not_blank(trained_run, tmp_path):
    png = tmp_path / "report.png"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "render_report.py"),
            str(trained_run.run_dir / "report.html"),
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    image = Image.open(png)
    assert image.width >= 1000 and image.height > 2000  # the whole page, not one screen


def test_the_render_script_fails_on_a_blank_page(tmp_path):
    page = tmp_path / "blank.html"
    page.write_text("<html><body></body></html>")
    script = [sys.executable, str(REPO / "scripts" / "render_report.py"), str(page), str(tmp_path / "b.png")]
    result = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "blank" in result.stderr


def test_a_multi_label_report_explains_each_label_given_to_a_sample(multi_label_run):
    evaluation = evaluate_multi_label(multi_label_run, validation_index(multi_label_run.config.train))

    page = build_multi_label_report(multi_label_run, evaluation)

    gradcam = page[page.index("<h2>Grad-CAM</h2>") :]
    captions = re.findall(r"<figcaption>([^<]*): ([^<]*) \(([0-9.]+)\)</figcaption>", gradcam)
    files = {Path(p.file).name: p.file for p in evaluation.predictions}
    assert {name for name, _, _ in captions} == set(files)  # 6 images, fewer than the sample's 8: all of them
    for name, path in files.items():
        expected = [(e.label, f"{e.probability:.2f}") for e in imgclf.explain_labels(multi_label_run, path)]
        assert [(label, probability) for n, label, probability in captions if n == name] == expected
    assert "Grad-CAM" not in build_multi_label_report(multi_label_run, evaluation, explain=False)
