"""Does fine-tuning the last stages of an EfficientNet-Lite on cached activations beat a dense head on its pooled
features? The probe behind `--preset best`'s fine-tuning (issue 17), on trashnet (`--val-split 0.2 --seed 0`,
split as `imgclf train` splits it) and flowers12 (train / val).

    PYTHONPATH=src .venv/bin/python bench/finetune_probe.py --datasets trashnet flowers12 --stages 1 2
    PYTHONPATH=src .venv/bin/python bench/finetune_probe.py --datasets trashnet --others efficientnet_lite1

For each backbone it fits the preset's dense head on the pooled features (L2 chosen on the validation images, as
`--preset best` does) and then runs `training/partial_finetune.py` on the activations entering its last `--stages`
stages, with and without flip test-time augmentation, printing each epoch's validation accuracy against the
dense head's, and with `--others` the same against the average with those backbones' calibrated probabilities.
Images decode at the preset's input size (260) and are resized inside the model, as `--preset best` does; the
features and activations go through the feature cache (`IMGCLF_CACHE`), so a second run skips the extraction.
The 1-minute load average is printed beside each time: the machine is shared.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

from imgclf.config import TrainConfig
from imgclf.devices import resolve_precision
from imgclf.evaluation import metrics
from imgclf.evaluation.calibration import fit_temperature
from imgclf.models import BuildOptions, create_model, get_spec, num_outputs, to_probabilities
from imgclf.models.ensemble import ensemble_name
from imgclf.training.budget import Deadline
from imgclf.training.features import FeatureCache, backbone_key, cache_root, extract_features
from imgclf.training.linear_heads import Views, fit_dense, held_out_logits
from imgclf.training.options import index_data, run_preprocessing
from imgclf.training.partial_finetune import (
    FineTuning,
    Scoring,
    fine_tune_member,
    member_activations,
    pooled_features,
    split_stages,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATA = {
    "trashnet": TrainConfig(str(DATASETS / "trashnet"), val_split=0.2, seed=0, preset="best"),
    "flowers12": TrainConfig(
        str(DATASETS / "flowers12" / "train"), val=str(DATASETS / "flowers12" / "val"), preset="best"
    ),
}
BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def pooled_views(member, name, indexes, preprocessing, precision) -> tuple[Views, Views]:
    """The member's pooled features of the training images, and of the validation images and their mirrors."""
    found = []
    for index, flipped in ((indexes[0], False), (indexes[1], False), (indexes[1], True)):
        extractor = member.extractor(flipped)
        cache = FeatureCache(cache_root() / backbone_key(name, "pretrained", preprocessing, extractor, precision))
        found.append(
            extract_features(extractor, index.files, preprocessing, cache, 32, torch.device("cpu"), precision)[0]
        )
    labels = [torch.tensor(index.labels, dtype=torch.long) for index in indexes]
    return Views(found[0], None, labels[0]), Views(found[1], found[2], labels[1])


def frozen_views(member, name, stages, indexes, preprocessing, precision) -> tuple[Views, Views]:
    """The frozen member's pooled features, from the activations fine-tuning starts from (cached for it)."""
    frozen, tuned, _ = split_stages(member, stages)
    train, val = member_activations(member, name, frozen, indexes, preprocessing, precision)
    views = [pooled_features(tuned, member, maps) for maps in (train.plain, val.plain, val.mirrored)]
    return Views(views[0], None, train.labels), Views(views[1], views[2], val.labels)


def dense_head(member, train: Views, val: Views, outputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fits the member's dense head as the preset does; its calibrated validation probabilities (plain, flip)."""
    held = held_out_logits(train, val, outputs, False, 0)
    temperature = fit_temperature(held.plain, held.labels)
    dense = fit_dense(train.plain, train.labels, outputs, held.l2)
    with torch.no_grad():
        member.dense.weight.copy_(dense.weight)
        member.dense.bias.copy_(dense.bias)
        member.temperature.fill_(temperature)
    plain = to_probabilities(held.plain / temperature)
    return plain, (plain + to_probabilities(held.mirrored / temperature)) / 2


def accuracy(labels: torch.Tensor, probabilities: list[torch.Tensor]) -> float:
    return metrics.accuracy(labels.numpy(), torch.stack(probabilities).mean(dim=0).argmax(dim=1).numpy())


def probe(name: str, args) -> None:
    config = DATA[name]
    indexes = index_data(config)
    preprocessing = run_preprocessing(config, get_spec(ensemble_name(BACKBONES, True)).preprocessing)
    precision = resolve_precision("auto", torch.device("cpu"))
    outputs = num_outputs(len(indexes[0].class_names))
    model = create_model(
        ensemble_name(BACKBONES, True), len(indexes[0].class_names), None, BuildOptions(pretrained=True)
    ).eval()
    others = {}
    for other in args.others:
        started = time.perf_counter()
        member = model.members[BACKBONES.index(other)]
        others[other] = dense_head(member, *pooled_views(member, other, indexes, preprocessing, precision), outputs)
        print(f"{name} {other}: features and head in {time.perf_counter() - started:.0f} s, {load()}", flush=True)
    for backbone in args.backbones:
        for stages in args.stages:
            member = model.members[BACKBONES.index(backbone)]
            started = time.perf_counter()
            train, val = frozen_views(member, backbone, stages, indexes, preprocessing, precision)
            frozen = dense_head(member, train, val, outputs)
            print(f"{name} {backbone}: activations and head in {time.perf_counter() - started:.0f} s, {load()}")
            for flip in args.flip:
                flip = bool(flip)
                extra = [probabilities[flip] for probabilities in others.values()]
                baseline = accuracy(val.labels, [frozen[flip], *extra])
                scoring = Scoring(extra, flip, val.labels, baseline)
                state = {key: value.clone() for key, value in member.state_dict().items()}
                settings = FineTuning(stages=stages, epochs=args.epochs, lr=args.lr, head_lr=args.head_lr)
                outcome = fine_tune_member(
                    member, backbone, indexes, preprocessing, precision, scoring, Deadline(None), 0, settings
                )
                member.load_state_dict(state)
                report(name, backbone, stages, flip, list(others), outcome.record)


def report(name: str, backbone: str, stages: int, flip: bool, others: list[str], record: dict) -> None:
    what = f"{name} {backbone}{' + ' + ' + '.join(others) if others else ''}{' +flip' if flip else ''}"
    print(
        f"{what}, last {stages} stages: dense head {record['baseline_accuracy']:.4f}; activations "
        f"{record['activation_seconds']:.0f} s, {load()}",
        flush=True,
    )
    for epoch in record["epochs"]:
        gain = epoch["accuracy"] - record["baseline_accuracy"]
        print(f"  epoch {epoch['epoch']}: {epoch['accuracy']:.4f} ({gain:+.4f}), {epoch['seconds']:.0f} s, {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATA), default=list(DATA))
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=["efficientnet_lite0"])
    parser.add_argument("--others", nargs="*", choices=BACKBONES, default=[], help="backbones averaged with it")
    parser.add_argument("--stages", nargs="+", type=int, default=[1], help="how many last stages train")
    parser.add_argument("--flip", nargs="+", type=int, choices=[0, 1], default=[1], help="flip TTA off (0), on (1)")
    parser.add_argument("--epochs", type=int, default=FineTuning.epochs)
    parser.add_argument("--lr", type=float, default=FineTuning.lr)
    parser.add_argument("--head-lr", type=float, default=FineTuning.head_lr)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in args.datasets:
        probe(name, args)


if __name__ == "__main__":
    main()
