"""`--preset balanced|best`: choose among the offline backbones on their cached features, within `--time-limit`.

imgclf train data/training_set --val data/val_set --preset balanced
imgclf train data/training_set --val-split 0.2 --preset best --time-limit 5m
imgclf.train("data/training_set", val="data/val_set", preset="best", time_limit="5m")

The recipe, each step logged and saved in `config.json` under `recipe`:
1. each backbone of the preset (`balanced`: EfficientNet-Lite0 and Lite1; `best`: Lite0, Lite1 and Lite2): the
   pooled features of every training image and of every validation image and its mirror, into the feature cache,
   each photo decoded once for all the backbones and mirrored from the decoded image (`features.extract_views`).
   With a time limit the cheapest backbone goes first, alone, and the others follow in one more pass when they are
   expected to fit at its pace;
2. a dense head fitted on them in one go for a few L2 strengths (`linear_heads.py`), scored on the validation set,
   or, when it has fewer than `SMALL_VALIDATION` images, also by k-fold cross-validation on the training set;
   the temperature of each backbone's logits fitted on the same held-out images;
3. every backbone alone, and the average of the calibrated probabilities of the best 2, 3, ... of them, each
   without and with flip test-time augmentation: the highest held-out accuracy wins (then the lower log-loss,
   then fewer backbones, then no flip). The preset's Lite0 alone is the default recipe's model (its head fitted in
   one go, not in epochs), so the winner never scores below that on these images;
4. with `best`, the winner's first backbone fine-tuned on cached activations of its last stage while the time limit
   allows, kept only if the whole model then scores higher on the validation images (`partial_finetune.py`);
5. the winner as one model (`models/ensemble.py`), finished as any run: calibrated, evaluated, reported.

Every backbone sees the photo decoded at the largest input size of the preset and resized inside the model to its
own, in training as in predict and export, so the features the heads learn from are the ones they are given later.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from imgclf.config import ConfigError, Preprocessing, RunConfig, TrainConfig
from imgclf.data.folders import FolderIndex, SkippedFile, warn_skipped
from imgclf.deploy.predictor import Run
from imgclf.devices import resolve_precision
from imgclf.evaluation import metrics
from imgclf.evaluation.calibration import fit_temperature
from imgclf.models import BuildOptions, create_model, get_spec, num_outputs, to_probabilities
from imgclf.models.ensemble import Ensemble, Member, averaged_logits, ensemble_name
from imgclf.runs import RunError
from imgclf.training.budget import Deadline
from imgclf.training.distributed import Processes
from imgclf.training.features import FeatureCache, View, backbone_key, cache_root, extract_views, file_digest
from imgclf.training.finish import finish_calibrated
from imgclf.training.linear_heads import FOLDS, Views, fit_dense, held_out_logits
from imgclf.training.options import index_data, library_versions, run_preprocessing
from imgclf.training.partial_finetune import Scoring, fine_tune_member
from imgclf.training.preset_choice import Candidate, Scored, candidate_record, combinations, scored_line, why_it_won
from imgclf.training.steps import calibration_of
from imgclf.training.writer import SKIPPED_FILE, RunWriter
from imgclf.wheels import weights_installed, weights_package

log = logging.getLogger(__name__)

SEARCHING_PRESETS = ("balanced", "best")
PRESET_BACKBONES = {
    "balanced": ("efficientnet_lite0", "efficientnet_lite1"),
    "best": ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
}
RELATIVE_COST = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 1.6, "efficientnet_lite2": 2.4}
"""Feature extraction time against Lite0's, from the multiply-adds at each one's input size (0.39, 0.60, 0.90 G)."""
GUESSED_SECONDS_PER_IMAGE = 0.02
"""Lite0's extraction time per image when every feature came from the cache: 2 busy CPU cores."""
CACHE_SAMPLE = 16
"""Images of each set checked for cached features when estimating how long a backbone takes."""
SMALL_VALIDATION = 100
"""Below this many validation images, choices are scored on k-fold cross-validation of the training set too."""


def train_preset(config: TrainConfig, writer: RunWriter, processes: Processes, deadline: Deadline) -> Run:
    """Choose, build and finish the run of `--preset balanced|best` (see the module's docstring)."""
    if processes.distributed:
        raise ConfigError(
            f"--preset {config.preset} trains in one process. Received: --preset={config.preset} in "
            f"{processes.world_size} processes. Drop --nproc, or choose --preset fast."
        )
    started = time.perf_counter()
    indexes = index_data(config)
    if config.multi_label or indexes[0].multi_label:
        raise ConfigError(
            f"--preset {config.preset} chooses among single-label models. Received: --preset={config.preset} with "
            "multi-label data. Use --preset fast for multi-label data."
        )
    class_names = indexes[0].class_names
    backbones, left_out = _installed(PRESET_BACKBONES[config.preset])
    searched = ensemble_name(backbones, flip=True)
    preprocessing = run_preprocessing(config, get_spec(searched).preprocessing)  # a preset leaves image_size unset
    model = create_model(searched, len(class_names), None, BuildOptions(pretrained=True)).to(processes.device)
    search = _Search(config, preprocessing, processes, backbones, len(indexes[1].files) < SMALL_VALIDATION)
    log.info(
        "Preset %s tries %s; %s", config.preset, ", ".join(backbones), search.describe_scoring(len(indexes[1].files))
    )
    scored, unreadable = search.score_backbones(model.eval().members, indexes, deadline)
    candidates = combinations(scored)
    winner = min(candidates, key=Candidate.rank)
    why = why_it_won(winner, candidates, search.scored_on)
    log.info("Preset %s chose %s: %s", config.preset, winner.name, why)
    final = _final_model(model.cpu(), scored, winner, search, num_outputs(len(class_names)))
    fine_tuning = _fine_tuned(final, search, winner, deadline) if config.preset == "best" else None
    recipe = {
        "preset": config.preset,
        "time_limit": config.time_limit,
        "scored_on": search.scored_on,
        "backbones": [_backbone_record(item, search) for item in scored],
        "left_out": left_out + search.left_out,
        "tried": [candidate_record(candidate) for candidate in sorted(candidates, key=Candidate.rank)],
        "chosen": winner.name,
        "why": why,
        **({"fine_tuning": fine_tuning} if fine_tuning is not None else {}),
        "search_seconds": round(time.perf_counter() - started, 2),
    }
    train_config = dataclasses.replace(config, model=winner.name, image_size=preprocessing.image_size)
    readable = (search.readable[0], search.readable[1])
    hardware = {"device": processes.device.type, "processes": 1, "threads": torch.get_num_threads()}
    versions, dataset = library_versions(), _dataset(readable, unreadable)
    writer.write_config(RunConfig(train_config, class_names, preprocessing, versions, dataset, hardware, recipe))
    warn_skipped(unreadable, writer.run_dir / SKIPPED_FILE)
    writer.write_skipped(unreadable)
    writer.save_model(final)
    calibration = calibration_of(*_ensemble_logits(final, search, winner))
    log.info(
        "Temperature %.3f fitted on the validation images; run saved in %s", calibration["temperature"], writer.run_dir
    )
    return finish_calibrated(writer, calibration, indexes[1], train_config, processes.device)


def _installed(backbones: tuple[str, ...]) -> tuple[list[str], list[dict]]:
    """The backbones whose weights are installed (Lite0's always are), and why the others are left out."""
    installed, left_out = [], []
    for name in backbones:
        if not weights_installed(name):
            reason = f"its weights are not installed (pip install {weights_package(name)})"
            log.info("Preset leaves out %s: %s.", name, reason)
            left_out.append({"model": name, "reason": reason})
        else:
            installed.append(name)
    return installed, left_out


class _Search:
    """The features, held-out logits and temperatures of each backbone, in order, while the time limit lasts."""

    def __init__(
        self,
        config: TrainConfig,
        preprocessing: Preprocessing,
        processes: Processes,
        names: list[str],
        cross_validate: bool,
    ):
        self.config = config
        self.names = names
        self.preprocessing = preprocessing
        self.device = processes.device
        self.precision = resolve_precision(config.precision, processes.device)
        self.cross_validate = cross_validate
        self.readable: list[FolderIndex | None] = [None, None]
        self.left_out: list[dict] = []
        self.seconds_per_image: float | None = None
        self.computed: dict[str, int] = {}
        self.scored_on = ""
        self.views: dict[str, tuple[Views, Views]] = {}

    def describe_scoring(self, val_images: int) -> str:
        """Says, and keeps in `scored_on`, which held-out images the choices are scored on."""
        if self.cross_validate:
            self.scored_on = (
                f"the {val_images} validation images and {FOLDS}-fold cross-validation on the training images "
                f"(the validation set has fewer than {SMALL_VALIDATION} images)"
            )
        else:
            self.scored_on = f"the {val_images} validation images"
        return f"choices are scored on {self.scored_on}."

    def score_backbones(
        self, members: list[Member], indexes: tuple[FolderIndex, FolderIndex], deadline: Deadline
    ) -> tuple[list[Scored], list[SkippedFile]]:
        """Each backbone's `Scored`, cheapest first (its training and validation `Views` in `self.views`), and the
        unreadable images. Without a time limit, one pass over the photos gives every backbone its features;
        with one, the first backbone's come alone, then the others' that are expected to fit, in one more pass."""
        pairs = list(zip(members, self.names))
        first = pairs if deadline.seconds is None else pairs[:1]
        scored, unreadable = self._score(first, indexes)
        others = self._fitting(pairs[len(first) :], deadline)
        if others:
            scored += self._score(others, indexes)[0]
        return scored, unreadable

    def _score(
        self, pairs: list[tuple[Member, str]], indexes: tuple[FolderIndex, FolderIndex]
    ) -> tuple[list[Scored], list[SkippedFile]]:
        """The `Scored` of each of `pairs` from one pass over the photos, and the unreadable images. A backbone's
        time is its share of the pass (by images computed times `RELATIVE_COST`) and its heads'."""
        started = time.perf_counter()
        views, unreadable = self._views(pairs, indexes)
        extraction = time.perf_counter() - started
        work = {name: self.computed[name] * RELATIVE_COST.get(name, 3.0) for _, name in pairs}
        if self.seconds_per_image is None and sum(work.values()):
            self.seconds_per_image = extraction / sum(work.values())
        scored = []
        for member, name in pairs:
            started = time.perf_counter()
            train, val = self.views[name] = views[name]
            held = held_out_logits(train, val, member.dense.out_features, self.cross_validate, self.config.seed)
            temperature = fit_temperature(held.plain, held.labels)
            share = extraction * work[name] / sum(work.values()) if sum(work.values()) else 0.0
            scored.append(Scored(name, held, temperature, round(share + time.perf_counter() - started, 2)))
            log.info(scored_line(scored[-1]))
        return scored, unreadable

    def _fitting(self, pairs: list[tuple[Member, str]], deadline: Deadline) -> list[tuple[Member, str]]:
        """The backbones of `pairs` whose features, one after another, are expected to be ready before the
        deadline; says of the others why they are left out, and keeps it."""
        fitting, planned = [], 0.0
        for member, name in pairs:
            expected = self._expected_seconds(member, name)
            if deadline.fits(planned + expected):
                fitting.append((member, name))
                planned += expected
                continue
            reason = (
                f"its features would take about {expected:.0f} s; {max(deadline.left() - planned, 0):.0f} s are left"
            )
            log.info("Time limit: leaving out %s (%s).", name, reason)
            self.left_out.append({"model": name, "reason": reason})
        return fitting

    def _expected_seconds(self, member: Member, name: str) -> float:
        """About how long `name`'s features take: the readable images not in the cache (judged on a sample), at
        the first pass's measured pace (or a guess) times `RELATIVE_COST`."""
        train, val = self.readable
        images = len(train.files) * (2 if self.cross_validate else 1) + 2 * len(val.files)
        cache = self._cache(member.extractor(False), name)
        sample = [
            *train.files[:: max(1, len(train.files) // CACHE_SAMPLE)],
            *val.files[:: max(1, len(val.files) // CACHE_SAMPLE)],
        ]
        missing = sum(not cache.has(file_digest(file)) for file in sample) / len(sample)
        pace = self.seconds_per_image or GUESSED_SECONDS_PER_IMAGE
        return pace * RELATIVE_COST.get(name, 3.0) * images * missing

    def _views(
        self, pairs: list[tuple[Member, str]], indexes: tuple[FolderIndex, FolderIndex]
    ) -> tuple[dict[str, tuple[Views, Views]], list[SkippedFile]]:
        """Each member's features of the training images (mirrored too when cross-validating) and of the
        validation images and their mirrors, every photo decoded once for all of them (`extract_views`); the
        first pass also finds the unreadable images, which later passes then pass over."""
        train, val = (self.readable[position] or index for position, index in enumerate(indexes))
        files, split = [*train.files, *val.files], len(train.files)
        mirrored = range(0 if self.cross_validate else split, len(files))
        extractors = []
        for member, name in pairs:
            extractor = member.extractor(False)
            flipped = View(self._cache(member.extractor(True), name), mirrored, mirrored=True)
            extractors.append((extractor, [View(self._cache(extractor, name), range(len(files))), flipped]))
        unreadable, computed = extract_views(
            extractors, files, self.preprocessing, self.config.batch_size, self.device, self.precision
        )
        self.computed.update({name: count for (_, name), count in zip(pairs, computed)})
        every_view = [view for _, views in extractors for view in views]
        kept = [i for i in range(len(files)) if all(i in view.features for view in every_view if i in view.rows)]
        rows = ([i for i in kept if i < split], [i for i in kept if i >= split])
        if self.readable[0] is None:
            self.readable = [train.subset(rows[0]), val.subset([i - split for i in rows[1]])]
        elif len(kept) != len(files):
            raise RunError(f"{unreadable[0].path} became unreadable during training ({unreadable[0].reason}).")
        views = {
            name: (
                _views_of(member_views, rows[0], self.readable[0]),
                _views_of(member_views, rows[1], self.readable[1]),
            )
            for (_, name), (_, member_views) in zip(pairs, extractors)
        }
        return views, unreadable

    def _cache(self, extractor: torch.nn.Module, name: str) -> FeatureCache:
        """The feature cache of `extractor`, one of backbone `name`'s."""
        key = backbone_key(name, "pretrained", self.preprocessing, extractor, self.precision)
        return FeatureCache(cache_root() / key)


def _views_of(member_views: list[View], rows: list[int], index: FolderIndex) -> Views:
    """The `Views` of the images at `rows` from a member's plain and mirrored `View`s (mirrored where it has them),
    with `index`'s labels."""
    plain, mirrored = member_views
    flipped = all(i in mirrored.rows for i in rows)
    return Views(
        _stacked(plain, rows),
        _stacked(mirrored, rows) if flipped else None,
        torch.tensor(index.labels, dtype=torch.long),
    )


def _stacked(view: View, rows: list[int]) -> torch.Tensor:
    return torch.stack([view.features[i] for i in rows]) if rows else torch.empty(0)


def _final_model(model: Ensemble, scored: list[Scored], winner: Candidate, search: _Search, outputs: int) -> Ensemble:
    """The winner's members, each with a head fitted on all the training features at its chosen L2 and its
    temperature, as one `Ensemble`."""
    by_name = {item.name: item for item in scored}
    members = {name: member for name, member in zip(search.names, model.members)}
    chosen = []
    for name in winner.members:
        train, _ = search.views[name]
        dense = fit_dense(train.plain, train.labels, outputs, by_name[name].held.l2)
        member = members[name]
        with torch.no_grad():
            member.dense.weight.copy_(dense.weight)
            member.dense.bias.copy_(dense.bias)
            member.temperature.fill_(by_name[name].temperature)
        chosen.append(member)
    return Ensemble(chosen, winner.flip).eval()


def _member_probabilities(model: Ensemble, search: _Search, winner: Candidate) -> list[torch.Tensor]:
    """Each member's calibrated probabilities of the validation images, from their cached features."""
    probabilities = []
    with torch.no_grad():
        for name, member in zip(winner.members, model.members):
            _, val = search.views[name]
            dense, temperature = member.dense.cpu(), float(member.temperature)
            plain = to_probabilities(dense(val.plain) / temperature)
            mirrored = to_probabilities(dense(val.mirrored) / temperature)
            probabilities.append((plain + mirrored) / 2 if model.flip else plain)
    return probabilities


def _ensemble_logits(model: Ensemble, search: _Search, winner: Candidate) -> tuple[torch.Tensor, torch.Tensor]:
    """The finished model's logits of the validation images, from their cached features, and their labels."""
    probabilities = _member_probabilities(model, search, winner)
    return averaged_logits(torch.stack(probabilities).mean(dim=0)), search.views[winner.members[0]][1].labels


def _fine_tuned(model: Ensemble, search: _Search, winner: Candidate, deadline: Deadline) -> dict:
    """Fine-tunes the winner's first (best) member's last stages while `deadline` allows, kept only if the whole
    model then scores higher on the validation images (`partial_finetune.py`); what was done, for the recipe."""
    name, member = winner.members[0], model.members[0]
    train, val = search.readable
    probabilities = _member_probabilities(model, search, winner)
    labels = search.views[name][1].labels
    baseline = metrics.accuracy(labels.numpy(), torch.stack(probabilities).mean(dim=0).argmax(dim=1).numpy())
    scoring = Scoring(probabilities[1:], model.flip, labels, baseline)
    pace = (search.seconds_per_image or GUESSED_SECONDS_PER_IMAGE) * RELATIVE_COST.get(name, 3.0)
    expected = pace * (len(train.files) + 2 * len(val.files))
    outcome = fine_tune_member(
        member, name, (train, val), search.preprocessing, search.precision, scoring, deadline, expected
    )
    if outcome.val is not None:
        search.views[name] = (search.views[name][0], outcome.val)
    return outcome.record


def _backbone_record(scored: Scored, search: _Search) -> dict:
    return {
        "model": scored.name,
        "image_size": get_spec(scored.name).preprocessing.image_size,
        "l2": scored.held.l2,
        "temperature": round(scored.temperature, 4),
        "features_computed": search.computed.get(scored.name, 0),
        "seconds": scored.seconds,
    }


def _dataset(indexes: tuple[FolderIndex, FolderIndex], skipped: list[SkippedFile]) -> dict:
    train, val = indexes
    return {
        "train_root": train.root,
        "val_root": val.root,
        "train_count": len(train.files),
        "val_count": len(val.files),
        "train_class_counts": train.class_counts(),
        "val_class_counts": val.class_counts(),
        "skipped": len(skipped),
        "in_memory": True,
        "features_cached": True,
    }
