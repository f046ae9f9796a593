"""Feature extraction on OpenVINO: used when it agrees with PyTorch, exported once, PyTorch otherwise."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import imgclf
from imgclf.data.folders import index_folder
from imgclf.data.images import load_tensor, normalize
from imgclf.models import BuildOptions, get_spec
from imgclf.runs import load_tensors
from imgclf.training import features, frozen
from imgclf.training.features import FeatureCache, extract_features

pytest.importorskip("openvino")  # installed by the dev extra; without it extraction is PyTorch's alone


@pytest.fixture
def extractor():
    model = imgclf.create_model("efficientnet_lite0", 2, 96, BuildOptions(pretrained=True))
    return model.backbone.eval()


def test_openvino_features_agree_with_pytorch_and_the_export_is_kept(extractor, small_photos, tmp_path, monkeypatch):
    files = index_folder(small_photos / "train").files
    monkeypatch.setattr(frozen, "WORTH_EXPORTING", 1)
    preprocessing = dataclasses.replace(get_spec("efficientnet_lite0").preprocessing, image_size=96)
    exports = []
    original = frozen.export_backbone
    monkeypatch.setattr(frozen, "export_backbone", lambda *args: exports.append(1) or original(*args))
    cache = FeatureCache(tmp_path / "features")
    fast, *_ = extract_features(extractor, files, preprocessing, cache)
    assert exports == [1] and (cache.folder / "backbone.onnx").is_file()
    assert any((cache.folder / "openvino").iterdir())  # OpenVINO's compilation, kept for the next run
    reference, *_ = extract_features(extractor, files, preprocessing, FeatureCache(tmp_path / "other"))
    assert exports == [1, 1]
    with monkeypatch.context() as patch:
        patch.setattr(features, "fastest_backbone", lambda *args: None)  # PyTorch alone
        slow, *_ = extract_features(extractor, files, preprocessing, FeatureCache(tmp_path / "pytorch"))
    similarity = torch.nn.functional.cosine_similarity(fast.flatten(1), slow.flatten(1))
    assert float(similarity.min()) > 0.999  # fp32 in both: the same features up to rounding
    torch.testing.assert_close(fast, reference)
    for path in (cache.folder).rglob("*.safetensors"):
        path.unlink()  # the features go; the export stays and is used again
    extract_features(extractor, files, preprocessing, cache)
    assert exports == [1, 1]


def test_an_engine_that_disagrees_is_not_used(extractor, tmp_path, monkeypatch):
    monkeypatch.setattr(frozen.OpenVinoBackbone, "__call__", lambda self, images: -torch.ones(len(images), 1280, 3, 3))
    check, path = torch.randn(2, 3, 96, 96), tmp_path / "backbone.onnx"
    assert frozen.fastest_backbone(extractor, check, path, fp32=True, images=10_000) is None
    assert frozen.fastest_backbone(extractor, check, path, fp32=True, images=1) is None  # the file stays
    monkeypatch.undo()
    assert frozen.fastest_backbone(extractor, check, path, fp32=True, images=1) is not None


def test_openvino_going_wrong_after_its_check_leaves_none_of_its_features_cached(
    extractor, small_photos, tmp_path, monkeypatch
):
    files = index_folder(small_photos / "train").files
    monkeypatch.setattr(frozen, "WORTH_EXPORTING", 1)
    monkeypatch.setattr(features, "CHUNK", 4)  # 16 photos: four chunks, one batch each
    preprocessing = dataclasses.replace(get_spec("efficientnet_lite0").preprocessing, image_size=96)
    calls = []
    original = frozen.OpenVinoBackbone.__call__

    def from_the_third_chunk_on_wrong(self, images):  # 1: the check batch, 2-3: two chunks right, then garbage
        calls.append(len(images))
        return original(self, images) * (1 if len(calls) <= 3 else -1)

    monkeypatch.setattr(frozen.OpenVinoBackbone, "__call__", from_the_third_chunk_on_wrong)
    cache = FeatureCache(tmp_path / "features")
    found, *_ = extract_features(extractor, files, preprocessing, cache)

    with torch.no_grad():
        expected = extractor(
            normalize(torch.stack([load_tensor(path, preprocessing) for path in files]), preprocessing)
        )
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4)
    assert len(list(cache.folder.rglob("*.safetensors"))) == len(files)
    for path, row in zip(files, expected):
        torch.testing.assert_close(cache.get(features.file_digest(path)), row, rtol=1e-4, atol=1e-4)
    assert calls == [2, 4, 4, 4]  # not used after the chunk it got wrong


def test_a_few_images_are_not_worth_an_export(extractor, tmp_path):
    check, path = torch.randn(2, 3, 96, 96), tmp_path / "backbone.onnx"
    assert frozen.fastest_backbone(extractor, check, path, fp32=True, images=frozen.WORTH_EXPORTING - 1) is None
    assert not path.exists()


def test_a_head_trained_on_augmented_images_runs_the_frozen_backbone_on_openvino(small_photos, tmp_path, monkeypatch):
    monkeypatch.setattr(frozen, "WORTH_EXPORTING", 1)
    calls = []
    original = frozen.OpenVinoBackbone.__call__
    monkeypatch.setattr(
        frozen.OpenVinoBackbone, "__call__", lambda self, images: calls.append(len(images)) or original(self, images)
    )
    run = imgclf.train(
        small_photos / "train",
        val=str(small_photos / "val"),
        image_size=96,
        batch_size=8,
        augment="default",
        epochs=2,
        out=str(tmp_path / "run"),
    )
    assert sum(calls) >= 2 * (16 + 6)  # every training and validation image of both epochs
    start = imgclf.create_model("efficientnet_lite0", 2, 96, BuildOptions(pretrained=True)).state_dict()
    trained = load_tensors(run.run_dir / "model.safetensors")
    assert all(torch.equal(trained[name], start[name]) for name in start if name.startswith("backbone."))
    assert any(not torch.equal(trained[name], start[name]) for name in start if name.startswith("head."))
    assert run.history[-1]["val_accuracy"] >= 0.5
