"""Feature extraction in chunks: every readable file gets its own features, in place, and bad files are listed."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from imgclf.config import RESIZE_MODES, Preprocessing
from imgclf.data.folders import index_folder
from imgclf.data.images import load_tensor, normalize
from imgclf.models.ensemble import Mirrored
from imgclf.training import features
from imgclf.training.features import FeatureCache, View, backbone_key, extract_features, extract_views


def test_chunks_keep_every_file_in_its_place_and_list_the_unreadable(small_photos, tmp_path, monkeypatch):
    monkeypatch.setattr(features, "CHUNK", 3)  # 16 photos and a bad file: six chunks, the last one short
    files = index_folder(small_photos / "train").files
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(files[0]).read_bytes()[:200])
    files = files[:5] + [str(broken)] + files[5:]
    preprocessing = Preprocessing(image_size=32)
    extractor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()

    found, kept, skipped, computed = extract_features(extractor, files, preprocessing, FeatureCache(tmp_path / "c"))

    assert kept == [i for i in range(len(files)) if i != 5]
    assert [item.path for item in skipped] == [str(broken)]
    assert computed == len(files)
    with torch.no_grad():
        images = torch.stack([load_tensor(files[i], preprocessing) for i in kept])
        expected = extractor(normalize(images, preprocessing))
    torch.testing.assert_close(found, expected)


def test_a_broken_link_is_listed_as_unreadable_not_raised(small_photos, tmp_path):
    files = index_folder(small_photos / "train").files[:3]
    link = tmp_path / "broken_link.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    extractor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    cache = FeatureCache(tmp_path / "c")

    found, kept, skipped, _ = extract_features(extractor, [*files, str(link)], Preprocessing(image_size=32), cache)

    assert kept == [0, 1, 2] and len(found) == 3
    assert [(item.path, item.reason) for item in skipped] == [(str(link), "no such file")]


def test_a_cache_that_cannot_be_written_is_warned_about_once(small_photos, tmp_path, caplog):
    files = index_folder(small_photos / "train").files[:4]
    (tmp_path / "not-a-folder").write_text("a file where the cache folder should be")
    cache = FeatureCache(tmp_path / "not-a-folder")
    extractor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()

    found, kept, skipped, computed = extract_features(extractor, files, Preprocessing(image_size=32), cache)

    assert found.shape == (4, 4) and kept == [0, 1, 2, 3] and not skipped and computed == 4
    warnings = [record for record in caplog.records if "Cannot write the feature cache" in record.message]
    assert len(warnings) == 1 and "not-a-folder" in warnings[0].message


def test_features_of_an_engine_that_goes_wrong_on_the_photos_never_stay_in_the_cache(
    small_photos, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(features, "CHUNK", 3)  # 16 photos: six chunks, two of them right before the engine goes wrong
    files = index_folder(small_photos / "train").files
    preprocessing = Preprocessing(image_size=32)
    extractor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    calls = []

    def engine(batch: torch.Tensor) -> torch.Tensor:  # passed its check batch; from the third batch on, a broken kernel
        calls.append(len(batch))
        return extractor(batch) if len(calls) < 3 else -extractor(batch)

    monkeypatch.setattr(features, "fastest_backbone", lambda *args: engine)
    cache = FeatureCache(tmp_path / "c")

    found, kept, skipped, computed = extract_features(extractor, files, preprocessing, cache)

    with torch.no_grad():
        expected = extractor(
            normalize(torch.stack([load_tensor(path, preprocessing) for path in files]), preprocessing)
        )
    cached = {path.stem for path in cache.folder.rglob("*.safetensors")}
    assert cached == {features.file_digest(path) for path in files}
    for path, row in zip(files, expected):
        torch.testing.assert_close(cache.get(features.file_digest(path)), row)  # PyTorch's, the first two chunks too
    torch.testing.assert_close(found, expected)
    assert kept == list(range(len(files))) and not skipped and computed == len(files)
    assert calls == [3, 3, 3]  # not used after the chunk it got wrong
    assert any("differ from PyTorch's" in record.message for record in caplog.records)


def test_a_crop_run_and_a_squash_run_never_share_cached_features():
    extractor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def key(**preprocessing) -> str:
        return backbone_key("seed-vgg16", "imagenet", Preprocessing(image_size=64, **preprocessing), extractor, None)

    keys = {key(resize=resize) for resize in RESIZE_MODES} | {key(resize="pad", pad_color=(124, 116, 104))}
    assert len(keys) == 4


def test_one_decoding_feeds_several_backbones_and_mirrors_as_separate_extractions_would(
    small_photos, tmp_path, monkeypatch
):
    monkeypatch.setattr(features, "CHUNK", 5)  # 16 photos: four chunks
    files = index_folder(small_photos / "train").files
    preprocessing = Preprocessing(image_size=32)
    first = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    second = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    decoded = []
    load_or_skip = features.load_or_skip
    monkeypatch.setattr(features, "load_or_skip", lambda path, *args: decoded.append(path) or load_or_skip(path, *args))
    caches = [FeatureCache(tmp_path / name) for name in ("first", "first-mirrored", "second")]
    first_views = [View(caches[0], range(16)), View(caches[1], range(10, 16), mirrored=True)]
    second_views = [View(caches[2], range(16))]

    skipped, computed = extract_views([(first, first_views), (second, second_views)], files, preprocessing)

    assert sorted(decoded) == sorted(files)  # each photo decoded once for the three views
    assert not skipped and computed == [22, 16]
    monkeypatch.undo()
    mirrored_first = nn.Sequential(Mirrored(), *first)
    for view, extractor, rows in [
        (first_views[0], first, range(16)),
        (first_views[1], mirrored_first, range(10, 16)),
        (second_views[0], second, range(16)),
    ]:
        alone, kept, _, _ = extract_features(
            extractor, [files[i] for i in rows], preprocessing, FeatureCache(tmp_path / "x")
        )
        assert sorted(view.features) == list(rows) and kept == list(range(len(rows)))
        torch.testing.assert_close(torch.stack([view.features[i] for i in rows]), alone)
        # The features are stored under each view's own cache, where a later extraction finds them all.
        again, _, _, recomputed = extract_features(extractor, [files[i] for i in rows], preprocessing, view.cache)
        assert recomputed == 0
        torch.testing.assert_close(again, alone)
        shutil.rmtree(tmp_path / "x")


def test_an_unreadable_photo_is_listed_once_however_many_backbones_miss_it(small_photos, tmp_path):
    files = index_folder(small_photos / "train").files[:4]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(files[0]).read_bytes()[:200])
    files = [*files[:2], str(broken), *files[2:]]
    extractors = [
        (nn.Sequential(nn.Conv2d(3, channels, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval(), [view, mirrored])
        for channels, view, mirrored in [
            (4, View(FeatureCache(tmp_path / "a"), range(5)), View(FeatureCache(tmp_path / "am"), range(5), True)),
            (5, View(FeatureCache(tmp_path / "b"), range(5)), View(FeatureCache(tmp_path / "bm"), range(2, 5), True)),
        ]
    ]

    skipped, computed = extract_views(extractors, files, Preprocessing(image_size=32))

    assert [item.path for item in skipped] == [str(broken)] and computed == [10, 8]
    # Every view holds the features of the readable photos it asked for, and no other.
    assert [sorted(view.features) for _, views in extractors for view in views] == [[0, 1, 3, 4]] * 3 + [[3, 4]]


def test_one_backbones_engine_going_wrong_leaves_the_others_features_alone(small_photos, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(features, "CHUNK", 4)  # 16 photos: four chunks; the second backbone's engine fails the third
    files = index_folder(small_photos / "train").files
    preprocessing = Preprocessing(image_size=32)
    good = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    bad = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    calls = {good: 0, bad: 0}

    def engine_of(extractor, *args):
        def engine(batch: torch.Tensor) -> torch.Tensor:
            calls[extractor] += 1
            return -extractor(batch) if extractor is bad and calls[bad] >= 3 else extractor(batch)

        return engine

    monkeypatch.setattr(features, "fastest_backbone", engine_of)
    views = {extractor: View(FeatureCache(tmp_path / name), range(16)) for extractor, name in [(good, "g"), (bad, "b")]}

    skipped, computed = extract_views([(good, [views[good]]), (bad, [views[bad]])], files, preprocessing)

    assert not skipped and computed == [16, 16]
    assert calls == {good: 4, bad: 3}  # the good engine ran every chunk; the bad one not after the chunk it got wrong
    with torch.no_grad():
        images = normalize(torch.stack([load_tensor(path, preprocessing) for path in files]), preprocessing)
    for extractor, view in views.items():
        expected = extractor(images).detach()
        torch.testing.assert_close(torch.stack([view.features[i] for i in range(16)]), expected)
        for path, row in zip(files, expected):
            torch.testing.assert_close(view.cache.get(features.file_digest(path)), row)
    assert sum("differ from PyTorch's" in record.message for record in caplog.records) == 1
