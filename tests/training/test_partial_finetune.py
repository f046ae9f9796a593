"""`--preset best`'s fine-tuning of the last stages on cached activations: kept only when it scores higher."""

from __future__ import annotations

import pytest
import torch

from imgclf.data.folders import index_folder
from imgclf.data.images import load_tensor, normalize
from imgclf.models import BuildOptions, create_model, get_spec
from imgclf.models.ensemble import ensemble_name
from imgclf.training.budget import Deadline
from imgclf.training.partial_finetune import FineTuning, Scoring, fine_tune_member

QUICK = FineTuning(stages=1, epochs=2, batch_size=8)


def lite0_member(small_photos):
    name = ensemble_name(["efficientnet_lite0"], flip=False)
    model = create_model(name, 2, None, BuildOptions(pretrained=True)).eval()
    indexes = (index_folder(small_photos / "train"), index_folder(small_photos / "val"))
    return model.members[0], indexes, get_spec(name).preprocessing


def fine_tune(small_photos, baseline: float, deadline: Deadline | None = None, expected_seconds: float = 0.0):
    member, indexes, preprocessing = lite0_member(small_photos)
    before = {key: value.clone() for key, value in member.state_dict().items()}
    labels = torch.tensor(indexes[1].labels)
    scoring = Scoring([], False, labels, baseline)
    outcome = fine_tune_member(
        member,
        "efficientnet_lite0",
        indexes,
        preprocessing,
        None,
        scoring,
        deadline or Deadline(None),
        expected_seconds,
        QUICK,
    )
    changed = {key for key, value in member.state_dict().items() if not torch.equal(value, before[key])}
    return outcome, member, indexes, preprocessing, changed


def test_the_best_epoch_is_kept_when_it_beats_the_frozen_model(small_photos):
    outcome, member, indexes, preprocessing, changed = fine_tune(small_photos, baseline=-1.0)
    record = outcome.record
    assert record["kept"] and record["trained"] == ["blocks.6", "conv_head", "bn2"]
    assert [epoch["epoch"] for epoch in record["epochs"]] == [1, 2]
    best = max(record["epochs"], key=lambda epoch: epoch["accuracy"])
    assert record["best_epoch"] == best["epoch"] and float(member.temperature) == pytest.approx(
        best["temperature"], abs=1e-4
    )
    # Only the last stage, the last convolution, its BatchNorm and the head trained, in the member itself.
    network = "unflipped.backbone.network."
    assert changed and all(key.startswith((network + "blocks.6.", network + "conv_head", network + "bn2", "head.",
                                            "temperature")) for key in changed)  # fmt: skip
    assert any(key.startswith(network + "blocks.6.") for key in changed)
    # The pooled validation features it returns are the fine-tuned member's own (from bf16 activations).
    image = normalize(load_tensor(indexes[1].files[0], preprocessing)[None], preprocessing)
    with torch.no_grad():
        expected = member.extractor(False).eval()(image)[0]
    assert torch.nn.functional.cosine_similarity(outcome.val.plain[0], expected, dim=0) > 0.99


def test_the_frozen_model_stays_when_no_epoch_beats_it(small_photos):
    outcome, member, _, _, changed = fine_tune(small_photos, baseline=1.0)
    assert not outcome.record["kept"] and outcome.val is None
    assert outcome.record["why"] == "no epoch raised the validation accuracy"
    assert len(outcome.record["epochs"]) == 2 and all(epoch["accuracy"] <= 1.0 for epoch in outcome.record["epochs"])
    assert not changed and not member.training


def test_an_epoch_that_only_equals_the_frozen_model_is_not_kept(small_photos, monkeypatch):
    """An epoch's accuracy is recorded rounded: 108/109 rounded was above 108/109 itself, and the epoch was kept."""
    monkeypatch.setattr(Scoring, "score", lambda self, plain, mirrored: (108 / 109, 1.0))
    outcome, _, _, _, changed = fine_tune(small_photos, baseline=108 / 109)
    assert not outcome.record["kept"] and not changed


def test_no_fine_tuning_when_the_time_left_is_too_short(small_photos):
    outcome, _, _, _, changed = fine_tune(
        small_photos, baseline=0.0, deadline=Deadline(10, lambda: 0.0), expected_seconds=100
    )
    assert not outcome.record["kept"] and outcome.record["epochs"] == [] and not changed
    assert outcome.record["why"].startswith("the activations and an epoch would take about 150 s; 10 s are left")


def test_the_time_limit_stops_the_epochs(small_photos):
    # The clock reads 0 at the start, before the activations and before the first epoch, then a day later.
    now = iter([0.0, 0.0, 0.0, *[86400.0] * 10])
    outcome, _, _, _, _ = fine_tune(small_photos, baseline=-1.0, deadline=Deadline(3600, lambda: next(now)))
    assert [epoch["epoch"] for epoch in outcome.record["epochs"]] == [1] and outcome.record["kept"]
