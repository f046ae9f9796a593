"""`--preset balanced|best` and `--time-limit`: what a preset run tries and keeps, and the limit on its time."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import label_wide_photos, make_synthetic_classes, read_history

import imgclf
from imgclf.cli import main
from imgclf.config import ConfigError
from imgclf.data.folders import index_folder
from imgclf.deploy.export import export_onnx
from imgclf.devices import CPU, resolve_precision
from imgclf.evaluation.explain import explain_files
from imgclf.models import BuildOptions, create_model
from imgclf.models.ensemble import ensemble_name
from imgclf.runs import load_tensors
from imgclf.training import checkpoints, partial_finetune
from imgclf.training.budget import Deadline, parse_duration
from imgclf.training.features import FeatureCache, backbone_key, cache_root, extract_features
from imgclf.training.frozen import AGREEMENT, agreement


def late_clock(seconds_per_call: float):
    """A clock that moves on `seconds_per_call` each time it is read, from 0."""
    now = [-seconds_per_call]

    def clock() -> float:
        now[0] += seconds_per_call
        return now[0]

    return clock


def test_a_preset_run_keeps_its_choices_and_is_one_run(small_photos, tmp_path):
    run = imgclf.train(
        small_photos / "train", val=str(small_photos / "val"), preset="balanced", out=str(tmp_path / "run")
    )
    config = json.loads((run.run_dir / "config.json").read_text())
    recipe = config["recipe"]
    assert recipe["preset"] == "balanced" and config["model"] == recipe["chosen"] == run.config.train.model
    assert [item["model"] for item in recipe["backbones"]] == ["efficientnet_lite0", "efficientnet_lite1"]
    assert all(item["temperature"] > 0 and item["l2"] > 0 for item in recipe["backbones"])
    # 6 validation images: scored on k-fold cross-validation of the training set too.
    assert "5-fold cross-validation" in recipe["scored_on"]
    tried = {item["model"]: item for item in recipe["tried"]}
    # Each backbone alone and both together (the better one first), each without and with flip TTA.
    assert len(tried) == 6 and sum(name.count("efficientnet_lite") == 2 for name in tried) == 2
    assert all(0 <= item["accuracy"] <= 1 and item["log_loss"] >= 0 for item in tried.values())
    assert recipe["chosen"] == recipe["tried"][0]["model"] and recipe["why"].startswith("highest accuracy")
    # One run: loaded, predicting, explained and exported (one ONNX graph, parity checked) as any other.
    loaded = imgclf.load(run.run_dir)
    photo = sorted((small_photos / "val" / "planes").glob("*.jpg"))[0]
    assert loaded.predict(photo).probabilities == pytest.approx(run.predict(photo).probabilities, abs=1e-6)
    assert loaded.metrics["accuracy"] >= 0.5
    assert export_onnx(loaded, tmp_path / "export").parity.passed
    explained = explain_files(loaded, [photo], tmp_path / "cams")[0]
    assert explained.error is None and explained.output.is_file()


def test_the_time_limit_leaves_out_the_backbones_that_would_not_fit(small_photos, tmp_path, monkeypatch):
    monkeypatch.setattr(Deadline, "of", classmethod(lambda cls, config: cls(60, late_clock(100))))
    run = imgclf.train(
        small_photos / "train",
        val=str(small_photos / "val"),
        preset="best",
        time_limit="1m",
        out=str(tmp_path / "run"),
    )
    recipe = run.config.recipe
    assert [item["model"] for item in recipe["backbones"]] == ["efficientnet_lite0"]
    assert [item["model"] for item in recipe["left_out"]] == ["efficientnet_lite1", "efficientnet_lite2"]
    assert all("s are left" in item["reason"] for item in recipe["left_out"])
    assert recipe["time_limit"] == "1m" and run.config.train.model.startswith("ensemble:efficientnet_lite0")
    assert not recipe["fine_tuning"]["kept"] and recipe["fine_tuning"]["epochs"] == []
    assert recipe["fine_tuning"]["why"].endswith("s are left")


def test_best_keeps_a_fine_tuned_member_in_the_run(small_photos, tmp_path, monkeypatch):
    # Every epoch scores above the frozen model here, so the fine-tuned member is kept: the run must save, load,
    # predict and export its fine-tuned backbone.
    score = partial_finetune.Scoring.score
    monkeypatch.setattr(partial_finetune.Scoring, "score", lambda self, *logits: (2.0, score(self, *logits)[1]))
    run = imgclf.train(small_photos / "train", val=str(small_photos / "val"), preset="best", out=str(tmp_path / "run"))
    tuning = run.config.recipe["fine_tuning"]
    chosen = run.config.recipe["chosen"].removeprefix("ensemble:").split("+")[0]
    assert tuning["kept"] and tuning["model"] == chosen and tuning["trained"][-2:] == ["conv_head", "bn2"]
    pretrained = create_model(chosen, 2, None, BuildOptions(pretrained=True)).state_dict()
    saved = load_tensors(run.run_dir / "model.safetensors")
    stage = tuning["trained"][0]
    key = next(key for key in pretrained if key.startswith(f"backbone.network.{stage}.") and key.endswith("weight"))
    assert not torch.equal(saved["members.0.unflipped." + key], pretrained[key])
    loaded = imgclf.load(run.run_dir)
    photo = sorted((small_photos / "val" / "planes").glob("*.jpg"))[0]
    assert loaded.predict(photo).probabilities == pytest.approx(run.predict(photo).probabilities, abs=1e-6)
    assert export_onnx(loaded, tmp_path / "export").parity.passed


def test_the_time_limit_stops_the_epochs_and_keeps_the_best_so_far(tmp_path, monkeypatch):
    data = make_synthetic_classes(tmp_path / "data", {"red": 12, "green": 12})
    monkeypatch.setattr(Deadline, "of", classmethod(lambda cls, config: cls(90, late_clock(25))))
    saved_best = []
    save_best = checkpoints.save_best

    def keep_a_copy(run_dir, model, phase):
        saved_best.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
        save_best(run_dir, model, phase)

    monkeypatch.setattr(checkpoints, "save_best", keep_a_copy)
    run = imgclf.train(
        data, model="seed-cnn", val_split=0.25, epochs=30, batch_size=8, lr=5.0, optimizer="sgd", image_size=24,
        precision="fp32", time_limit="90s", out=str(tmp_path / "run"),
    )  # fmt: skip
    history = read_history(run.run_dir)
    # The clock reads 25 s more at each look: after epoch 4 it says 100 s, past the 90 s limit.
    assert len(history) == 4
    kept = load_tensors(run.run_dir / "model.safetensors")
    assert saved_best and all(torch.equal(kept[name], tensor) for name, tensor in saved_best[-1].items())
    best_epoch = min(history, key=lambda row: float(row["val_loss"]))
    state = json.loads((run.run_dir / "checkpoint" / "state.json").read_text())
    assert state["best_val_loss"] == float(best_epoch["val_loss"])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"preset": "quick"}, "Invalid option --preset. Received: --preset='quick'. Choose one of"),
        ({"time_limit": "10 minutes"}, "Invalid option --time-limit. Received: --time-limit='10 minutes'. Give a"),
        ({"time_limit": "0s"}, "Invalid option --time-limit. Received: --time-limit='0s'."),
        ({"preset": "best", "model": "vgg16"}, "--preset best chooses the model and how it trains itself."),
        ({"model": "ensemble:efficientnet_lite0"}, "An ensemble is what --preset balanced or best chooses"),
    ],
)
def test_bad_preset_options_are_one_line_errors(small_photos, options, expected):
    with pytest.raises(ConfigError) as error:
        imgclf.train(small_photos / "train", **options)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_the_command_line_names_a_bad_time_limit(small_photos, capsys):
    assert main(["train", str(small_photos / "train"), "--time-limit", "soon"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: Invalid option --time-limit. Received: --time-limit='soon'. Give a duration such as 90s, 10m, 1h "
        "or 1h30m."
    ]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2.5m", 150), ("45", None)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_python_gives_the_time_limit_in_seconds(small_photos, tmp_path):
    from imgclf.training.options import make_train_config

    assert make_train_config(small_photos / "train", time_limit=90).time_limit == "90s"


def test_a_searching_preset_refuses_multi_label_data(flat_photos):
    labels = label_wide_photos(flat_photos)
    with pytest.raises(ConfigError, match="single-label models.*--preset fast"):
        imgclf.train(labels=labels, preset="balanced", progress=False, out=str(flat_photos.parent / "run"))
    assert not (flat_photos.parent / "run" / "config.json").exists()


def test_a_preset_keeps_each_backbones_features_where_a_later_run_finds_them(small_photos, tmp_path):
    run = imgclf.train(
        small_photos / "train", val=str(small_photos / "val"), preset="balanced", out=str(tmp_path / "run")
    )
    names = ["efficientnet_lite0", "efficientnet_lite1"]
    # 16 training and 6 validation photos, each as decoded and mirrored (it cross-validates): 44 features a backbone.
    assert [item["features_computed"] for item in run.config.recipe["backbones"]] == [44, 44]
    preprocessing, precision = run.config.preprocessing, resolve_precision(run.config.train.precision, CPU)
    model = create_model(ensemble_name(names, flip=True), 2, None, BuildOptions(pretrained=True)).eval()
    files = [*index_folder(small_photos / "train").files, *index_folder(small_photos / "val").files]
    for name, member in zip(names, model.members):
        for flipped in (False, True):  # the mirrors came from the decoded photo; this extractor flips by itself
            extractor = member.extractor(flipped)
            key = backbone_key(name, "pretrained", preprocessing, extractor, precision)
            cached, kept, _, computed = extract_features(
                extractor, files, preprocessing, FeatureCache(cache_root() / key), 8, CPU, precision
            )
            assert computed == 0 and kept == list(range(len(files)))
            fresh = extract_features(extractor, files, preprocessing, FeatureCache(tmp_path / key), 8, CPU, precision)
            assert agreement(fresh[0], cached) >= AGREEMENT
