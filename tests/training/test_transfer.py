from __future__ import annotations

import functools

import pytest
import torch
from PIL import Image

import imgclf
from imgclf.data.folders import index_folder
from imgclf.data.images import normalize
from imgclf.data.loading import decode_images
from imgclf.runs import load_tensors
from imgclf.training.features import FeatureCache
from imgclf.training.steps import compute_loss

# Lite0 at 96 px keeps these tests quick; the weights and the code path are the real ones.
train_lite0 = functools.partial(imgclf.train, model="efficientnet_lite0", image_size=96, batch_size=8, seed=0)


def count_computed_features(monkeypatch) -> list[str]:
    """Record every image whose features the backbone computes (each one then goes into the cache)."""
    computed: list[str] = []
    original = FeatureCache.put

    def recording(self, digest, features):
        computed.append(digest)
        return original(self, digest, features)

    monkeypatch.setattr(FeatureCache, "put", recording)
    return computed


def test_frozen_backbone_does_not_change_while_the_head_trains(small_photos, tmp_path):
    run = train_lite0(
        small_photos / "train", val=str(small_photos / "val"), augment="default", epochs=2, out=str(tmp_path / "run")
    )
    start = imgclf.create_model("efficientnet_lite0", 2, 96, imgclf.models.BuildOptions(pretrained=True))
    trained = load_tensors(run.run_dir / "model.safetensors")
    for name, tensor in start.state_dict().items():
        if name.startswith("backbone."):
            assert torch.equal(trained[name], tensor), name  # weights and BatchNorm statistics alike
    head_names = [name for name in trained if name.startswith("head.") and name.endswith("weight")]
    assert any(not torch.equal(trained[name], start.state_dict()[name]) for name in head_names)
    frozen = sum(p.numel() for p in start.backbone.parameters())
    assert f"Non-trainable params: {frozen:,}" in (run.run_dir / "summary.txt").read_text()


def test_feature_cache_is_reused_and_follows_file_changes(small_photos, tmp_path, monkeypatch):
    seen = count_computed_features(monkeypatch)
    options = {"val": str(small_photos / "val"), "epochs": 3}
    first = train_lite0(small_photos / "train", out=str(tmp_path / "first"), **options)
    assert len(seen) == 16 + 6  # every image once, for three epochs
    seen.clear()
    train_lite0(small_photos / "train", out=str(tmp_path / "second"), **options)
    assert len(seen) == 0
    photo = sorted((small_photos / "train" / "cars").iterdir())[0]
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)
    train_lite0(small_photos / "train", out=str(tmp_path / "third"), **options)
    assert len(seen) == 1
    assert first.history[-1]["val_accuracy"] >= 0.5


def test_fine_tuning_changes_only_the_unfrozen_blocks(small_photos, tmp_path):
    run = train_lite0(
        small_photos / "train",
        val=str(small_photos / "val"),
        epochs=1,
        fine_tune="2",
        fine_tune_epochs=1,
        out=str(tmp_path / "run"),
    )
    assert [int(r["epoch"]) for r in run.history] == [1, 2]
    start = imgclf.create_model("efficientnet_lite0", 2, 96, imgclf.models.BuildOptions(pretrained=True))
    trained = run.model
    changed = [
        index
        for index, (before, after) in enumerate(zip(start.blocks, trained.blocks))
        if any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))
    ]
    assert changed == [len(start.blocks) - 2, len(start.blocks) - 1]
    for (name, before), after in zip(start.backbone.named_buffers(), trained.backbone.buffers()):
        assert torch.equal(before, after), name  # BatchNorm statistics stay as pretrained


def test_lite0_default_model_learns_cars_and_planes(small_photos, tmp_path):
    run = imgclf.train(
        small_photos / "train", val=str(small_photos / "val"), epochs=5, seed=0, out=str(tmp_path / "run")
    )
    assert run.config.train.model == "efficientnet_lite0"
    assert run.config.preprocessing.mean == (0.5, 0.5, 0.5)
    assert run.history[-1]["val_accuracy"] == 1.0


def test_a_run_interrupted_while_fine_tuning_resumes_to_the_same_weights(small_photos, tmp_path):
    """Epoch checkpoints of a backbone run hold only what the phase changes; resuming must rebuild the rest."""
    options = {"val": str(small_photos / "val"), "epochs": 1, "fine_tune": "1", "fine_tune_epochs": 2}
    straight = train_lite0(small_photos / "train", out=str(tmp_path / "straight"), **options)

    def interrupt_in_epoch_3(epoch: int, step: int, steps: int) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(imgclf.TrainingInterrupted):
        train_lite0(small_photos / "train", out=str(tmp_path / "resumed"), progress=interrupt_in_epoch_3, **options)
    last = load_tensors(tmp_path / "resumed" / "checkpoint" / "last.safetensors")
    everything = load_tensors(straight.run_dir / "model.safetensors")
    assert set(last) < set(everything)  # the frozen part of the backbone is not saved every epoch
    assert not any(name.startswith("backbone.") and name.endswith("running_mean") for name in last)
    resumed = imgclf.train(resume=tmp_path / "resumed")
    assert [int(r["epoch"]) for r in resumed.history] == [1, 2, 3]
    expected = load_tensors(straight.run_dir / "checkpoint" / "last.safetensors")
    got = load_tensors(resumed.run_dir / "checkpoint" / "last.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0, msg=name)


def val_loss_of(run: imgclf.Run, folder) -> float:
    """The loss of the run's saved PyTorch model on every image of `folder`, as training's validation computes it."""
    val = decode_images(index_folder(folder), run.preprocessing)
    with torch.inference_mode():
        logits = run.model(normalize(val.images, run.preprocessing))
    return float(compute_loss(logits, val.labels, None))


def test_a_backbone_run_saves_its_best_epoch_whole(small_photos, tmp_path):
    """Best epochs of a backbone phase are kept as their changes only; the run must still end with the whole
    model of its best epoch, whichever phase it was in."""
    run = train_lite0(
        small_photos / "train",
        val=str(small_photos / "val"),
        epochs=3,
        fine_tune="1",
        fine_tune_epochs=2,
        precision="fp32",  # as `val_loss_of` computes
        out=str(tmp_path / "run"),
    )
    assert not (run.run_dir / "checkpoint" / "best.safetensors").exists()
    assert len(load_tensors(run.run_dir / "model.safetensors")) == len(run.model.state_dict())
    best = min(record["val_loss"] for record in run.history)
    assert val_loss_of(run, small_photos / "val") == pytest.approx(best, abs=1e-4)


def test_resuming_a_finished_run_says_how_to_go_on(small_photos, tmp_path):
    train_lite0(small_photos / "train", val=str(small_photos / "val"), epochs=1, out=str(tmp_path / "run"))
    with pytest.raises(imgclf.ImgclfError, match="already trained 1 epoch. Received: --epochs=1. Give more epochs"):
        imgclf.train(resume=tmp_path / "run")
