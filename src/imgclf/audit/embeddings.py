"""What a pretrained backbone sees in the audited pictures: embedding near-duplicates and outliers.

Each readable picture goes through the backbone once, by `training.features.extract_features`, into the on-disk
feature cache (keyed by model, ImageNet weights, preprocessing, precision and the audit's extractor), so a second
audit does not run the backbone on those pictures again. The extractor (`stage_features.StageFeatures`) gives
the final features, which find near-duplicates and outliers, and beside them the pooled outputs of the stages
before, which the label-issue heads learn from too. The final features also go into the cache `imgclf train`
reads, so training on the audited folders does not run the backbone on those pictures again either.

Embedding near-duplicates are pictures whose features point the same way (cosine similarity at least
`--similarity`, 0.90 by default): mirrored or slightly cropped copies, or an edited one, which pHash misses.
Lite0 puts a mirrored photo at 0.92 or more of its original, a photo cropped by 15% and mirrored at 0.91 to
0.92, and different photos of the same car shoot at about 0.94; different airliners against the sky reach 0.90.
Outliers are pictures far from all others, by cleanlab's `OutOfDistribution` on the features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imgclf.audit.duplicates import DuplicateGroup, group_order
from imgclf.audit.inspection import AuditedFile
from imgclf.audit.options import DEFAULT_MODEL
from imgclf.config import ConfigError
from imgclf.data.groups import connected_groups
from imgclf.wheels import weights_installed

if TYPE_CHECKING:
    from torch import nn

    from imgclf.audit.stage_features import StageFeatures
    from imgclf.training.features import FeatureCache

log = logging.getLogger(__name__)

FEATURE_CHUNK = 1024
"""Files per feature extraction call; progress is reported after each."""
OUTLIER_NEIGHBOURS = 10
"""Neighbours whose mean distance makes a picture's outlier score (cleanlab's default)."""
OUTLIER_FENCE = 1 / 0.37037 - 1
"""Outliers sit further from their neighbours than the upper quartile plus this many interquartile ranges (about
1.7: the threshold cleanlab's Datalab uses on features)."""


@dataclass
class Embeddings:
    """The backbone features of the readable audited files: `features[i]` (unit length) belongs to `files[i]`."""

    model: str
    files: list[AuditedFile]
    features: np.ndarray
    label_features: np.ndarray | None = None
    """The features beside the pooled outputs of earlier stages, for the label-issue heads (None: `features`)."""


@dataclass
class Outlier:
    """A picture far from all the others; `score` is cleanlab's (0 to 1, lower: more unusual)."""

    file: AuditedFile
    score: float


def default_model() -> str | None:
    """`DEFAULT_MODEL` when its pretrained weights are installed (they come in a wheel, no download), else None."""
    return DEFAULT_MODEL if weights_installed(DEFAULT_MODEL) else None


def check_model(model: str) -> None:
    """Raise `ConfigError` unless `model` names a pretrained backbone (its features are what the audit compares)."""
    from imgclf.models import get_spec

    if not get_spec(model).backbone:
        raise ConfigError(
            f"The audit compares pictures by a pretrained backbone's features; {model} is trained from scratch. "
            f"Received: --model={model}. Use {DEFAULT_MODEL} (the default), another backbone, or --no-model."
        )


def embed_files(
    files: Sequence[AuditedFile], model: str, progress: Callable[[int, int], None] | None = None
) -> Embeddings:
    """The features of the readable `files` by the backbone `model` with its ImageNet weights, through the cache.

    `progress(done, total)` is called after each `FEATURE_CHUNK` files. Files that cannot be decoded now are
    left out.
    """
    from imgclf.audit.stage_features import split_parts
    from imgclf.devices import resolve_device, resolve_precision
    from imgclf.models import get_spec
    from imgclf.training.features import FeatureCache, backbone_key, cache_root, extract_features

    preprocessing = get_spec(model).preprocessing
    extractor, training_extractor = _extractors(model, preprocessing.image_size)
    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    cache = FeatureCache(cache_root() / backbone_key(model, "pretrained", preprocessing, extractor, precision))
    training_cache = FeatureCache(
        cache_root() / backbone_key(model, "pretrained", preprocessing, training_extractor, precision)
    )
    extractor.to(device)
    readable = [file for file in files if file.readable]
    kept, rows = [], []
    for start in range(0, len(readable), FEATURE_CHUNK):
        chunk = readable[start : start + FEATURE_CHUNK]
        features, positions, _, _ = extract_features(
            extractor, [file.path for file in chunk], preprocessing, cache, device=device, autocast_dtype=precision
        )
        kept += [chunk[position] for position in positions]
        rows.append(features.flatten(1).float().numpy())
        if progress is not None:
            progress(start + len(chunk), len(readable))
    stacked = np.concatenate(rows) if kept else np.zeros((0, sum(extractor.part_sizes)), dtype=np.float32)
    _share_with_training(training_cache, [file.path for file in kept], stacked[:, : extractor.part_sizes[0]])
    features, label_features = split_parts(stacked, extractor.part_sizes)
    return Embeddings(model, kept, features.astype(np.float32), label_features.astype(np.float32))


def _extractors(model: str, image_size: int) -> tuple[StageFeatures, nn.Module]:
    """The audit's extractor for `model`, and the one `imgclf train` caches: the backbone and the parameter-free
    start of its head. The audit's gives that, then its earlier stages' pooled outputs when its stages run in turn
    give its features (else nothing more)."""
    from torch import nn

    from imgclf.audit.stage_features import StageFeatures, runs_like
    from imgclf.models import BuildOptions, create_model
    from imgclf.models.heads import fixed_prefix_length

    network = create_model(model, 2, options=BuildOptions(pretrained=True))
    prefix = nn.Sequential(*network.head[: fixed_prefix_length(network.head)])
    blocks = network.blocks if runs_like(network.backbone, network.blocks, image_size) else [network.backbone]
    return StageFeatures(blocks, prefix, image_size).eval(), nn.Sequential(network.backbone, *prefix).eval()


def _share_with_training(cache: FeatureCache, paths: list[str], final: np.ndarray) -> None:
    """Store the final features of `paths` that `cache` (the one `imgclf train` reads) lacks, so training on the
    audited folders does not run the backbone on those pictures again."""
    import torch

    from imgclf.training.features import file_digest

    for path, row in zip(paths, final):
        try:
            digest = file_digest(path)
        except OSError:
            continue  # gone since it was read: training will say so
        if not cache.has(digest):
            cache.put(digest, torch.from_numpy(row.copy()))


def similar_pairs(features: np.ndarray, threshold: float, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j), i < j, of the rows of unit-length `features` whose cosine similarity is at least
    `threshold`, compared `chunk` rows at a time so memory stays at chunk × N."""
    firsts, seconds = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for start in range(0, len(features), chunk):
        rows, columns = np.nonzero(features[start : start + chunk] @ features[start:].T >= threshold)
        keep = columns > rows  # both offsets are `start`: each pair once, no self-pairs
        firsts.append(rows[keep] + start)
        seconds.append(columns[keep] + start)
    return np.concatenate(firsts), np.concatenate(seconds)


def find_embedding_duplicates(
    embeddings: Embeddings, groups: Sequence[DuplicateGroup], threshold: float
) -> list[DuplicateGroup]:
    """Groups of pictures whose features' cosine similarity reaches `threshold`, joined by pairs that no exact or
    pHash group already holds together. Identical copies count once, as in `duplicates.find_duplicates`."""
    contents: dict[str, list[int]] = {}
    for row, file in enumerate(embeddings.files):
        contents.setdefault(file.facts.content_hash, []).append(row)
    hashes, firsts_of = list(contents), [rows[0] for rows in contents.values()]
    # Exact groups hold one content each; a content sits in at most one near group.
    near_group_of = {
        file.facts.content_hash: number
        for number, group in enumerate(groups)
        if group.kind == "near"
        for file in group.files
    }
    features = embeddings.features[firsts_of]
    firsts, seconds = similar_pairs(features, threshold)
    in_near_group = [near_group_of.get(hashes[first], -1) for first in firsts]
    new = np.array(
        [group < 0 or group != near_group_of.get(hashes[second]) for group, second in zip(in_near_group, seconds)],
        dtype=bool,
    )
    found = []
    for members in connected_groups(len(hashes), firsts[new], seconds[new]):
        similarity = float((features[members] @ features[members].T).min())
        files = [embeddings.files[firsts_of[member]] for member in members]
        copies = [embeddings.files[row] for member in members for row in contents[hashes[member]][1:]]
        found.append(DuplicateGroup("embedding", files, copies=copies, similarity=round(similarity, 4)))
    return sorted(found, key=group_order)


def find_outliers(embeddings: Embeddings) -> list[Outlier]:
    """The pictures whose mean distance to their nearest neighbours is unusually large, most unusual first.

    Scores are cleanlab's `OutOfDistribution` on the features; the fence is its Datalab's: past the upper
    quartile by `OUTLIER_FENCE` interquartile ranges of the mean neighbour distances.
    """
    if len(embeddings.files) <= 2:
        return []
    from cleanlab.outlier import OutOfDistribution

    neighbours = min(OUTLIER_NEIGHBOURS, len(embeddings.files) - 1)
    scores = OutOfDistribution(params={"k": neighbours}).fit_score(features=embeddings.features, verbose=False)
    # cleanlab's score is exp(-distance / median distance): its logarithm gives back the distances' shape.
    distances = -np.log(np.maximum(scores, np.finfo(np.float64).tiny))
    lower, upper = np.percentile(distances, [25, 75])
    outlying = np.flatnonzero(distances > upper + OUTLIER_FENCE * (upper - lower))
    return [Outlier(embeddings.files[i], round(float(scores[i]), 4)) for i in outlying[np.argsort(scores[outlying])]]
