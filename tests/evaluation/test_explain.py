from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import CARS_PLANES, write_rows
from torch import nn

import imgclf
from imgclf.cli import main
from imgclf.config import ImgclfError, Preprocessing
from imgclf.data.images import ImageError, image_tensor, image_to_tensor, load_tensor, normalize, open_image, placement
from imgclf.evaluation import explain
from imgclf.evaluation.explain import (
    explain_files,
    explain_image,
    explain_labels,
    find_target_layer,
    grad_cam,
    overlay,
)
from imgclf.models import BuildOptions, create_model, get_spec
from imgclf.models.backbones import efficientnet_lite_imagenet

FLOWERS12 = CARS_PLANES.parent / "flowers12"
CANVAS = 224
OBJECT_SIDE = 104
LEFT, RIGHT = 4, CANVAS - 4 - OBJECT_SIDE


def centre_of_mass_x(heatmap: torch.Tensor) -> float:
    columns = heatmap.sum(dim=0)
    return float((columns * torch.arange(len(columns))).sum() / columns.sum())


def pasted_on_grey(photo: Path, x: int) -> torch.Tensor:
    """The photo shrunk to OBJECT_SIDE on its longer side, pasted at column x of a grey square canvas."""
    thing = open_image(photo)
    thing.thumbnail((OBJECT_SIDE, OBJECT_SIDE))
    canvas = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
    canvas.paste(thing, (x, (CANVAS - thing.height) // 2))
    return image_to_tensor(canvas)


@pytest.fixture(scope="module")
def lite0_imagenet() -> nn.Module:
    """The registry's efficientnet_lite0 (backbone + linear head) with the ImageNet classifier as its head."""
    model = create_model("efficientnet_lite0", 1000, options=BuildOptions(pretrained=True))
    model.head[-1].load_state_dict(efficientnet_lite_imagenet(0).classifier.state_dict())
    return model


def test_lite0_heatmap_follows_a_car_and_a_plane_across_the_canvas(lite0_imagenet, cars_planes):
    car = cars_planes / "val_set" / "cars" / "continental-1209261__340.jpg"
    plane = cars_planes / "val_set" / "planes" / "plane-302047__340.jpg"
    canvases = [pasted_on_grey(photo, x) for photo in (car, plane) for x in (LEFT, RIGHT)]
    heatmaps = grad_cam(lite0_imagenet, normalize(torch.stack(canvases), get_spec("efficientnet_lite0").preprocessing))

    assert heatmaps.shape == (4, CANVAS, CANVAS)
    assert heatmaps.amin(dim=(1, 2)).tolist() == [0.0] * 4
    assert heatmaps.amax(dim=(1, 2)).tolist() == [1.0] * 4
    for left, right in (heatmaps[:2], heatmaps[2:]):
        assert LEFT < centre_of_mass_x(left) < LEFT + OBJECT_SIDE
        assert RIGHT < centre_of_mass_x(right) < RIGHT + OBJECT_SIDE


def real_batch(cars_planes: Path, size: int) -> torch.Tensor:
    """A car and a plane at `size`², scaled to [0, 1] (randomly initialised models need no particular normalisation)."""
    preprocessing = Preprocessing(size)
    photos = [
        cars_planes / "val_set" / "cars" / "corvette-171422__340.jpg",
        cars_planes / "val_set" / "planes" / "klm.jpg",
    ]
    return normalize(torch.stack([load_tensor(photo, preprocessing) for photo in photos]), preprocessing)


@pytest.mark.parametrize(
    ("name", "num_classes", "size"),
    [
        ("seed-cnn", 2, 64),
        ("vgg16", 3, 64),
        ("efficientnet_lite0", 2, 96),
        ("timm:resnet18", 5, 64),
        ("torchvision:mobilenet_v3_small", 4, 64),
    ],
)
def test_every_cnn_family_gives_image_sized_varying_heatmaps_for_each_class(cars_planes, name, num_classes, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes, size)
    images = real_batch(cars_planes, size)
    predicted = grad_cam(model, images)
    assert predicted.shape == (2, size, size)
    assert float(predicted.amin()) >= 0.0 and float(predicted.amax()) <= 1.0
    assert all(float(heatmap.std()) > 0.05 for heatmap in predicted)
    one_image = images[:1].expand(num_classes, -1, -1, -1)
    per_class = grad_cam(model, one_image, class_index=list(range(num_classes)))
    assert all(not torch.equal(per_class[0], other) for other in per_class[1:])


def test_seed_cnn_run_heatmaps_for_its_two_classes_light_up_opposite_regions(trained_run, cars_planes):
    images = real_batch(cars_planes, 64)
    cars, planes = (grad_cam(trained_run.model, images, class_index=index) for index in (0, 1))
    assert cars.shape == planes.shape == (2, 64, 64)
    # One logit: its gradient counts for "planes" and against "cars", so where one map is hot the other is cold.
    assert float(torch.minimum(cars, planes).mean()) < 0.1
    assert float((cars + planes).amax(dim=(1, 2)).min()) > 0.9


def test_target_layer_is_the_last_feature_map_before_the_classifier():
    seed = create_model("seed-cnn", 2)
    assert find_target_layer(seed) is seed[5]  # the ReLU after the second conv and pool, just before flatten
    resnet = create_model("timm:resnet18", 2, 64)
    assert find_target_layer(resnet) is resnet.backbone  # its output is the map the head pools

    class TwoConvs(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second, self.dense = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 2)

        def forward(self, images):
            return self.dense(self.second(self.first(images)).mean(dim=(2, 3)))

    other = TwoConvs()
    assert find_target_layer(other) is other.second
    assert grad_cam(other, torch.rand(1, 3, 20, 20)).shape == (1, 20, 20)


def test_models_without_a_spatial_feature_map_are_clear_errors():
    dense = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ImgclfError, match="no convolutional layer"):
        find_target_layer(dense)
    seed = create_model("seed-cnn", 2)
    with pytest.raises(ImgclfError, match=r"Linear gives \(1, 128\), not a spatial feature map"):
        grad_cam(seed, torch.rand(1, 3, 64, 64), target_layer=seed[7])
    with pytest.raises(ImgclfError, match="between 0 and 1"):
        grad_cam(seed, torch.rand(1, 3, 64, 64), class_index=2)


def test_grad_cam_works_under_inference_mode_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = create_model("seed-cnn", 3).train()
    images = torch.rand(2, 3, 64, 64)
    expected = grad_cam(model, images)
    with torch.inference_mode():
        assert torch.equal(grad_cam(model, images), expected)
    assert model.training
    assert all(parameter.grad is None for parameter in model.parameters())


def test_overlay_colours_the_hot_half_and_keeps_the_photo_size():
    photo = Image.new("RGB", (300, 200), (128, 128, 128))
    heatmap = torch.zeros(64, 64)
    heatmap[:, :32] = 1.0
    drawn = np.asarray(overlay(photo, heatmap), dtype=int)
    assert drawn.shape == (200, 300, 3)
    red, blue = drawn[..., 0], drawn[..., 2]
    assert (red[:, :100] > blue[:, :100] + 40).all()  # hot: the red end of the colormap
    assert (blue[:, -100:] > red[:, -100:] + 40).all()  # cold: the blue end
    assert np.asarray(overlay(photo, heatmap, alpha=0.0)).tolist() == np.asarray(photo).tolist()
    assert photo.getpixel((0, 0)) == (128, 128, 128)


def test_explain_image_takes_a_pil_image_and_a_class_name(trained_run, cars_planes):
    photo = Image.open(cars_planes / "val_set" / "planes" / "klm.jpg")
    predicted = explain_image(trained_run, photo)
    assert predicted.label == predicted.predicted == trained_run.predict(photo).label
    other = next(name for name in trained_run.class_names if name != predicted.label)
    asked = explain_image(trained_run, photo, class_name=other)
    assert (asked.label, asked.predicted) == (other, predicted.label)
    assert asked.probability == pytest.approx(1 - predicted.probability, abs=1e-6)
    assert photo.size == (3264, 1836) and asked.overlay.size == (1024, 576)  # upright, longer side at most 1024
    assert asked.heatmap.shape == (64, 64)
    with pytest.raises(ImgclfError, match=r"no class 'trucks'.*\['cars', 'planes'\]"):
        explain_image(trained_run, photo, class_name="trucks")


def test_explain_files_writes_upright_overlays_and_reports_unreadable_images(trained_run, cars_planes, tmp_path):
    source = cars_planes / "val_set" / "cars" / "corvette-171422__340.jpg"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(source, tmp_path / "a" / "car.jpg")
    rotated = Image.open(source)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise
    rotated.save(tmp_path / "b" / "car.jpg", exif=exif)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    inputs = [tmp_path / "a" / "car.jpg", tmp_path / "b" / "car.jpg", tmp_path / "broken.jpg"]
    before = [path.read_bytes() for path in inputs]

    results = explain_files(trained_run, inputs, tmp_path / "out")

    assert [r.output for r in results] == [
        tmp_path / "out" / "car-gradcam.png",
        tmp_path / "out" / "car-2-gradcam.png",
        None,
    ]
    width, height = rotated.size
    assert Image.open(results[0].output).size == (width, height)
    assert Image.open(results[1].output).size == (height, width)  # as the EXIF says it is seen
    with pytest.raises(ImageError) as unreadable:
        open_image(inputs[2])
    assert results[2].error == unreadable.value.reason
    assert results[0].label == trained_run.predict(inputs[0]).label
    assert [path.read_bytes() for path in inputs] == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["car-2-gradcam.png", "car-gradcam.png"]


def test_explain_files_never_overwrites_an_input(trained_run, cars_planes, tmp_path):
    photo = tmp_path / "car-gradcam.png"
    open_image(cars_planes / "val_set" / "cars" / "corvette-171422__340.jpg").save(tmp_path / "car.png")
    shutil.copy(tmp_path / "car.png", photo)
    before = photo.read_bytes()
    results = explain_files(trained_run, [tmp_path / "car.png", photo], tmp_path)
    assert [r.output.name for r in results] == ["car-2-gradcam.png", "car-gradcam-gradcam.png"]
    assert photo.read_bytes() == before


def test_cli_explain_a_folder_with_an_unreadable_image(trained_run, cars_planes, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(cars_planes / "val_set" / "planes" / "plane-302047__340.jpg", photos / "plane.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    run, out = str(trained_run.run_dir), str(tmp_path / "heatmaps")

    assert main(["explain", run, str(photos), "--class", "cars", "--out", out]) == 0
    assert sorted(p.name for p in (tmp_path / "heatmaps").iterdir()) == ["plane-gradcam.png"]
    assert "1 of 2 images could not be read" in capsys.readouterr().err

    assert main(["explain", run, str(photos / "plane.jpg"), "--class", "boats", "--out", out]) == 1
    assert "Choose one of ['cars', 'planes']" in capsys.readouterr().err


def resized(run, resize: str):
    """A copy of `run` that brings images to its input as `resize` says."""
    changed = copy.copy(run)
    preprocessing = dataclasses.replace(run.preprocessing, resize=resize, pad_color=(0, 0, 0))
    changed.config = dataclasses.replace(run.config, preprocessing=preprocessing)
    return changed


def explained_with(run, photo: Image.Image, heatmap: torch.Tensor, monkeypatch) -> np.ndarray:
    """The overlay `explain_image` draws for `photo` when Grad-CAM finds `heatmap`; checks the model saw the
    photo brought to its input as the run's resize says."""

    def fixed(model, images, target_layer, class_index):
        expected = normalize(image_tensor(photo, run.preprocessing)[None], run.preprocessing)
        assert torch.equal(images, expected)
        return heatmap[None], torch.zeros(1, 1), torch.tensor([1])

    monkeypatch.setattr(explain, "_explain_batch", fixed)
    return np.asarray(explain_image(run, photo).overlay, dtype=int)


def test_a_pad_runs_heatmap_goes_onto_the_whole_photo_and_its_bars_are_left_out(trained_run, monkeypatch):
    run = resized(trained_run, "pad")
    photo = Image.new("RGB", (300, 100), (128, 128, 128))
    left, top, right, bottom = placement(300, 100, run.preprocessing).filled
    heatmap = torch.ones(64, 64)  # hot bars: on a squashed mapping they would cover the photo's top and bottom
    heatmap[top:bottom, (left + right) // 2 : right] = 0.0
    drawn = explained_with(run, photo, heatmap, monkeypatch)
    assert drawn.shape == (100, 300, 3)
    red, blue = drawn[..., 0], drawn[..., 2]
    assert (red[:, :140] > blue[:, :140] + 40).all()  # the photo's left half: hot
    assert (blue[:, -140:] > red[:, -140:] + 40).all()  # its right half: cold, top and bottom rows too


def test_a_crop_runs_heatmap_goes_onto_the_centre_square_and_the_sides_are_darkened(trained_run, monkeypatch):
    run = resized(trained_run, "crop")
    photo = Image.new("RGB", (300, 100), (200, 200, 200))
    heatmap = torch.zeros(64, 64)
    heatmap[:, :32] = 1.0  # the left half of what the model saw: columns 100 to 150 of the photo
    drawn = explained_with(run, photo, heatmap, monkeypatch)
    assert drawn.shape == (100, 300, 3)
    assert (drawn[:, :100] == 100).all() and (drawn[:, 200:] == 100).all()  # unseen: the photo, darkened
    red, blue = drawn[..., 0], drawn[..., 2]
    assert (red[:, 100:145] > blue[:, 100:145] + 40).all()
    assert (blue[:, 155:200] > red[:, 155:200] + 40).all()


def every_label_predicted(run):
    """A copy of the multi-label `run` whose thresholds are all 0, so that it predicts every label."""
    changed = copy.copy(run)
    changed.thresholds = [0.0] * len(run.class_names)
    return changed


def test_a_multi_label_run_explains_each_label_it_predicts_with_its_sigmoid(multi_label_run):
    photo = next(Path(multi_label_run.config.train.data).glob("plane_*.jpg"))
    run = every_label_predicted(multi_label_run)
    prediction = run.predict(photo)

    explanations = explain_labels(run, photo)

    assert [e.label for e in explanations] == prediction.labels and len(prediction.labels) == 3
    for explanation in explanations:
        assert explanation.probability == pytest.approx(prediction.probabilities[explanation.label], abs=1e-5)
        assert explanation.threshold == 0.0 and explanation.predicted == prediction.label
    assert all(not torch.equal(explanations[0].heatmap, other.heatmap) for other in explanations[1:])
    asked = explain_image(multi_label_run, photo, class_name="wide")
    assert asked.label == "wide" and asked.threshold == multi_label_run.thresholds[2]
    assert asked.probability == pytest.approx(multi_label_run.predict(photo).probabilities["wide"], abs=1e-5)


def test_a_multi_label_image_without_labels_explains_its_most_probable_one(multi_label_run):
    photo = next(Path(multi_label_run.config.train.data).glob("car_*.jpg"))
    run = copy.copy(multi_label_run)
    run.thresholds = [1.0] * len(run.class_names)  # no sigmoid reaches 1: no label predicted

    [explanation] = explain_labels(run, photo)

    probabilities = run.predict(photo).probabilities
    assert explanation.label == max(probabilities, key=probabilities.get) and explanation.predicted == ""
    assert explanation.probability < explanation.threshold == 1.0


def test_cli_explain_a_multi_label_run_writes_one_overlay_per_label(multi_label_run, tmp_path, capsys, monkeypatch):
    photo = next(Path(multi_label_run.config.train.data).glob("plane_*.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    monkeypatch.setattr("imgclf.deploy.predictor.read_thresholds", lambda run_dir, class_names: [0.0] * 3)
    out = tmp_path / "heatmaps"

    assert (
        main(["explain", str(multi_label_run.run_dir), str(photo), str(tmp_path / "broken.jpg"), "--out", str(out)])
        == 0
    )

    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{photo.stem}-{label}-gradcam.png" for label in ("cars", "planes", "wide")]
    captured = capsys.readouterr()
    assert "threshold" in captured.out and "1 of 2 images could not be read" in captured.err
    assert main(["explain", str(multi_label_run.run_dir), str(photo), "--class", "wide", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == names  # the label's overlay again, replaced


MOSAIC_CLASSES = ("bluebell", "daisy", "sunflower")
HALF = 112


def write_mosaic(left: Path, right: Path, path: Path) -> Path:
    """Two real photos side by side, each squashed to HALF² (the mosaics of bench/multi_label_mosaics.py)."""
    mosaic = Image.new("RGB", (2 * HALF, HALF))
    for column, photo in enumerate((left, right)):
        mosaic.paste(open_image(photo).resize((HALF, HALF)), (column * HALF, 0))
    mosaic.save(path, quality=92)
    return path


def mosaic_rows(folder: Path, split: str, count: int) -> list[tuple[str, str, str]]:
    """`count` mosaics of each pair of MOSAIC_CLASSES from flowers12's `split`, sides alternating; their CSV rows."""
    photos = {name: sorted((FLOWERS12 / split / name).iterdir())[:count] for name in MOSAIC_CLASSES}
    rows = []
    for i in range(count):
        for k, first in enumerate(MOSAIC_CLASSES):
            second = MOSAIC_CLASSES[(k + 1) % len(MOSAIC_CLASSES)]
            left, right = (first, second) if i % 2 == 0 else (second, first)
            name = f"{split}-{i}-{left}-{right}.jpg"
            write_mosaic(photos[left][i], photos[right][(i + 1) % count], folder / name)
            rows.append((name, f"{left};{right}", split))
    return rows


@pytest.fixture(scope="module")
def mosaic_run(tmp_path_factory: pytest.TempPathFactory):
    """The frozen default backbone trained on 24 mosaics of two flowers12 photos (18 more to validate)."""
    folder = tmp_path_factory.mktemp("mosaics")
    rows = mosaic_rows(folder, "train", 8) + mosaic_rows(folder, "val", 6)
    labels = write_rows(folder / "labels.csv", [("file", "label", "split"), *rows])
    return imgclf.train(labels=labels, epochs=30, lr=0.005, seed=0, out=str(folder / "run"), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize(("left", "right"), [("daisy", "sunflower"), ("sunflower", "bluebell"), ("bluebell", "daisy")])
def test_each_labels_heatmap_lies_on_its_own_photo_of_a_mosaic(mosaic_run, tmp_path, left, right):
    val = FLOWERS12 / "val"
    mosaic = write_mosaic(sorted((val / left).iterdir())[10], sorted((val / right).iterdir())[11], tmp_path / "m.jpg")

    explanations = explain_labels(mosaic_run, mosaic)

    assert sorted(e.label for e in explanations) == sorted((left, right))
    for explanation in explanations:
        heatmap = explanation.heatmap
        on_the_left = float(heatmap[:, : heatmap.shape[1] // 2].sum() / heatmap.sum())
        assert on_the_left > 0.5 if explanation.label == left else on_the_left < 0.5, explanation.label
