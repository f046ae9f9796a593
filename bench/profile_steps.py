"""Where the time of a training step or of feature extraction goes, phase by phase, with one setting changed.

    .venv/bin/python bench/profile_steps.py seed-cnn                      # augment, forward, backward, optimiser (ms)
    .venv/bin/python bench/profile_steps.py seed-cnn --threads 1 --precision fp32 --table
    .venv/bin/python bench/profile_steps.py seed-vgg16 --steps 6
    .venv/bin/python bench/profile_steps.py lite0 --batch-size 8          # JPEG decode + resize against the model
    .venv/bin/python bench/profile_steps.py seed-cnn --compile default    # torch.compile: compile seconds, then steps

A training step is the body of `imgclf.train`'s loop written out, so each phase can be timed: the tutorial's
augmentation (`seed` for seed-cnn, `seed-vgg16` for seed-vgg16) on uint8 batches of 32, normalisation,
forward (under bf16 autocast with `--precision bf16`; `imgclf train`'s `auto` picks bf16 on CPUs with AVX512-BF16
or AMX), loss, backward, Adam (foreach). The images are random
(the time does not depend on the pixels) and seed-vgg16's VGG16 base is randomly initialised and frozen, as in
`bench/transfer.py`. `lite0` decodes the photos of `--data` with `images.load_tensor` and runs
EfficientNet-Lite0's pretrained extractor on them, one batch at a time, as `features.extract_features` does
(without the thread pool, so the two are timed apart). `--table` adds `torch.profiler`'s operator table.
Timings on a shared machine swing: compare settings in back-to-back runs, and note the load average printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from common import add_data_option
from torch import nn
from torch.profiler import ProfilerActivity, profile

from imgclf.config import AUGMENT_PRESETS
from imgclf.data.augment import augment
from imgclf.data.folders import index_folder
from imgclf.data.images import load_tensor, normalize
from imgclf.models import BuildOptions, create_model, get_spec
from imgclf.models.heads import fixed_prefix_length

BATCH_SIZE = 32
AUGMENTATION = {"seed-cnn": "seed", "seed-vgg16": "seed-vgg16"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=[*AUGMENTATION, "lite0"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps (batches for lite0)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", choices=["none", "default", "max-autotune-no-cudagraphs"], default="none")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--table", action="store_true", help="print torch.profiler's top operators")
    add_data_option(parser)
    return parser.parse_args()


class Phases:
    """Wall milliseconds per named phase, summed within a step, one list entry per step."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def new_step(self) -> None:
        self.steps.append({})

    def timed(self, name: str, work):
        started = time.perf_counter()
        result = work()
        self.steps[-1][name] = self.steps[-1].get(name, 0.0) + (time.perf_counter() - started) * 1000
        return result

    def report(self, unit: str) -> str:
        names = list(self.steps[0])
        totals = [sum(step.values()) for step in self.steps]
        lines = [f"{'phase':>12} | median ms/{unit} | min | max | share of median total"]
        for name in [*names, "total"]:
            values = totals if name == "total" else [step[name] for step in self.steps]
            median = statistics.median(values)
            lines.append(
                f"{name:>12} | {median:8.1f} | {min(values):7.1f} | {max(values):7.1f} | "
                f"{100 * median / statistics.median(totals):5.1f}%"
            )
        return "\n".join(lines)


def compiled(model: nn.Module, mode: str) -> nn.Module:
    """`model` itself, or wrapped by `torch.compile` (which compiles on the first call)."""
    return model if mode == "none" else torch.compile(model, mode=None if mode == "default" else mode)


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def training(args: argparse.Namespace, phases: Phases):
    """A function running one training step of `args.workload`, and the model it trains."""
    spec = get_spec(args.workload)
    size = spec.preprocessing.image_size
    torch.manual_seed(0)
    model = create_model(args.workload, 2, size, BuildOptions(pretrained=False))
    if spec.backbone:
        model.backbone.requires_grad_(False)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, foreach=True)
    runner = compiled(model, args.compile)
    config = AUGMENT_PRESETS[AUGMENTATION[args.workload]]
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (160, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 2, (160,), generator=generator).float()
    model.train()
    if spec.backbone:
        model.backbone.eval()

    def step() -> None:
        phases.new_step()
        rows = torch.randint(0, len(images), (args.batch_size,), generator=generator)
        inputs = phases.timed("augment", lambda: augment(images[rows], config, generator))
        inputs = phases.timed("normalize", lambda: normalize(inputs, spec.preprocessing))
        if args.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        def forward():
            with autocast(args.precision):
                return runner(inputs).float()

        logits = phases.timed("forward", forward)
        loss = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels[rows])
        optimizer.zero_grad(set_to_none=True)
        phases.timed("backward", loss.backward)
        phases.timed("optimizer", optimizer.step)
        loss.item()

    return step


def extraction(args: argparse.Namespace, phases: Phases):
    """A function decoding the next batch of photos and running Lite0's extractor on it."""
    spec = get_spec("efficientnet_lite0")
    model = create_model("efficientnet_lite0", 2, spec.preprocessing.image_size, BuildOptions(pretrained=True))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    extractor = nn.Sequential(model.backbone, *model.head[: fixed_prefix_length(model.head)]).eval()
    runner = compiled(extractor, args.compile)
    files = [*index_folder(args.data / "training_set").files, *index_folder(args.data / "val_set").files]
    position = 0

    def step() -> None:
        nonlocal position
        phases.new_step()
        paths = [files[(position + i) % len(files)] for i in range(args.batch_size)]
        position += args.batch_size
        batch = phases.timed("decode", lambda: torch.stack([load_tensor(path, spec.preprocessing) for path in paths]))

        def forward():
            with torch.inference_mode(), autocast(args.precision):
                inputs = normalize(batch, spec.preprocessing)
                if args.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                return runner(inputs).float()

        phases.timed("model", forward)

    return step


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    phases = Phases()
    step = extraction(args, phases) if args.workload == "lite0" else training(args, phases)
    started = time.perf_counter()
    for _ in range(2):  # warm-up: oneDNN primitives, allocator, and the compilation with --compile
        step()
    warm_up = time.perf_counter() - started
    phases.steps.clear()
    for _ in range(args.steps):
        step()
    unit = "batch" if args.workload == "lite0" else "step"
    units = "batches" if args.workload == "lite0" else "steps"
    print(
        f"{args.workload}: {args.threads} threads, {args.precision}, channels-last {args.channels_last}, "
        f"compile {args.compile}, batch {args.batch_size}; warm-up (2 {units}, any compiling included) "
        f"{warm_up:.1f} s; load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}",
        file=sys.stderr,
    )
    print(phases.report(unit))
    total = statistics.median(sum(s.values()) for s in phases.steps)
    print(f"{1000 * args.batch_size / total:.1f} img/s")
    if args.table:
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(min(args.steps, 10)):
                step()
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
