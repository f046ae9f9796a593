"""Make the small copy of the cars-planes photos that ships inside the package for `imgclf demo`.

    .venv/bin/python scripts/make_demo_data.py
    .venv/bin/python scripts/make_demo_data.py --source ../shared/datasets/cars-planes --force

Every photo of `training_set/<class>/` and `val_set/<class>/` under --source is turned upright as its EXIF
orientation says, converted to RGB, shrunk so that its longer side is at most --max-side pixels (never
enlarged) and saved as a JPEG without metadata, at the same relative path with a lower-case `.jpg` extension.
The copy is built in a sibling folder of --dest and renamed into place only once every photo is written, so
--dest is either the old copy or the complete new one. The source folder is only read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from imgclf.config import ImgclfError
from imgclf.data.folders import DatasetError, check_same_classes, index_folder
from imgclf.data.images import open_image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = Path("../shared/datasets/cars-planes")
DEFAULT_DEST = Path("src/imgclf/demo_data/cars-planes")
SPLITS = ("training_set", "val_set")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the options; the default folders are taken relative to the repository root."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=REPO_ROOT / DEFAULT_SOURCE,
        help=f"dataset folder holding {' and '.join(SPLITS)} (default: {DEFAULT_SOURCE}, from the repo root)",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=REPO_ROOT / DEFAULT_DEST,
        help=f"folder to create (default: {DEFAULT_DEST}, from the repo root)",
    )
    parser.add_argument("--max-side", type=int, default=256, help="longest side in pixels (default: 256)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality, 1 to 95 (default: 90)")
    parser.add_argument("--force", action="store_true", help="replace --dest if it already exists")
    args = parser.parse_args(argv)

    if args.max_side < 1:
        parser.error(f"--max-side must be a positive number of pixels. Received: --max-side={args.max_side}")
    if not 1 <= args.quality <= 95:
        parser.error(f"--quality must be between 1 and 95. Received: --quality={args.quality}")
    source, dest = args.source.resolve(), args.dest.resolve()
    if source.is_relative_to(dest) or dest.is_relative_to(source):
        parser.error(f"--dest must lie outside --source, which is only read. Received: --dest={args.dest}")
    if dest.exists() and not args.force:
        parser.error(f"{args.dest} already exists; pass --force to replace it.")
    return args


def plan_copies(source: Path) -> dict[Path, Path]:
    """Map each source photo to its output path relative to the dataset root, in sorted order.

    Raises `DatasetError` when the splits hold different classes or two photos would get the same output name.
    """
    indexes = [index_folder(source / split) for split in SPLITS]
    check_same_classes(indexes[0], indexes[1])
    for index in indexes:
        skipped = index.skipped_hidden + index.skipped_not_image + index.loose_files
        if skipped:
            print(f"note: {skipped} hidden, non-image or loose file(s) in {index.root} are not copied")

    copies: dict[Path, Path] = {}
    claimed: dict[str, Path] = {}
    for file_name in (name for index in indexes for name in index.files):
        photo = Path(file_name)
        relative = photo.relative_to(source).with_suffix(".jpg")
        # Compare case-insensitively: `a.JPG` and `a.jpg` collide on macOS and Windows checkouts too.
        key = relative.as_posix().casefold()
        if key in claimed:
            raise DatasetError(
                f"{claimed[key]} and {photo} would both be saved as {relative}; "
                "rename one of them (in a copy of the source folder)."
            )
        claimed[key] = photo
        copies[photo] = relative
    return copies


def shrink_photo(photo: Path, target: Path, max_side: int, quality: int) -> None:
    """Save `photo` upright, in RGB, with its longer side at most `max_side`, as a JPEG without metadata."""
    image = open_image(photo)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Pillow writes a JPEG comment found in `info` back out; the demo photos carry no metadata at all.
    image.info = {}
    image.save(target, "JPEG", quality=quality, optimize=True)


def move_into_place(built: Path, dest: Path, force: bool) -> None:
    """Rename the finished folder `built` to `dest`; an existing `dest` is replaced only with `force`."""
    if not dest.exists():
        built.rename(dest)
        return
    if not force:
        raise DatasetError(f"{dest} appeared while the photos were written; pass --force to replace it.")
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    dest.rename(old)
    try:
        built.rename(dest)
    except OSError:
        old.rename(dest)
        raise
    shutil.rmtree(old)


def folder_size(folder: Path) -> int:
    """Total bytes of the files under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    source, dest = args.source.resolve(), args.dest.resolve()
    try:
        copies = plan_copies(source)
    except ImgclfError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    dest.parent.mkdir(parents=True, exist_ok=True)
    # A sibling of dest, so the final rename stays on one file system; mkdir fails loudly on a leftover.
    built = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    built.mkdir()
    try:
        for photo, relative in copies.items():
            target = built / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shrink_photo(photo, target, args.max_side, args.quality)
        move_into_place(built, dest, args.force)
    except ImgclfError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if built.exists():
            shutil.rmtree(built)

    counts = Counter("/".join(relative.parts[:2]) for relative in copies.values())
    for folder, count in sorted(counts.items()):
        print(f"{folder:<24} {count:>4} images")
    print(f"{'total':<24} {len(copies):>4} images, {folder_size(dest) / 1e6:.2f} MB in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
