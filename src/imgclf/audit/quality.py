"""Image quality, the flags CleanVision users expect: too dark, too bright, blurry, low information, odd aspect
ratio, grayscale among colour.

`measure_looks` runs on the small picture the audit already decodes for the perceptual hash (64×64, squashed),
so the checks cost well under a millisecond per file. The thresholds were set on the tutorial's cars and planes
(200 photos), TrashNet (2,527) and 12 flower classes (960), and on blurred copies of them: none of those photos
is called dark, bright, low in information or oddly shaped; 8 TrashNet photos are called blurry (out of focus,
shaken, or a blank sheet on a blank table), and 7 black-and-white cars and planes grayscale among colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from imgclf.audit.inspection import AuditedFile

TOO_DARK = 0.37
"""Pictures whose brightest 1% of pixels are below this brightness (0 black, 1 white) are too dark."""
TOO_BRIGHT = 0.95
"""Pictures whose darkest 5% of pixels are above this brightness are too bright."""
LOW_INFORMATION = 2.0
"""Pictures whose grey levels carry fewer bits (entropy, at most 8) hold little: blank, one colour, a few tones.
A black car on a black background measures 2.8, a typical photo 6 to 7.5."""
BLURRY = 0.13
"""Pictures whose fine detail (the Laplacian's spread) is below this share of their contrast are blurry. Sharp
photos measure 0.25 to 1.5; the same photos blurred by 2% of their width, 0.04 to 0.3."""
SHARPNESS_MIN_SIDE = 64
"""Pictures with a side below the audit's 64-pixel decode are stretched by it, which blurs them: their sharpness
is not judged (they are listed as tiny below 32 pixels)."""
ODD_ASPECT_RATIO = 0.35
"""Pictures whose short side is below this share of their long side (a banner, a strip) have an odd shape."""
GREY_LEVELS = 2.0
"""Pictures whose channels nowhere differ by more than this many levels (of 255) are grayscale."""

# Perceived brightness (the HSP colour model, as CleanVision measures it): green counts most, blue least.
_BRIGHTNESS_WEIGHTS = np.array([0.241, 0.691, 0.068], dtype=np.float32)


@dataclass(frozen=True)
class Looks:
    """How a picture looks, measured on the audit's small decode; `quality_problems` turns it into flags."""

    brightest: float
    """Brightness (0 to 1) of the brightest 1% of pixels."""
    darkest: float
    """Brightness (0 to 1) of the darkest 5% of pixels."""
    information: float
    """Entropy of the 256 grey levels, in bits: 0 for one flat colour, 8 at most."""
    sharpness: float
    """Spread of the Laplacian (fine detail) over the spread of the grey levels (contrast)."""
    colour: float
    """How far, in levels, the channels of the 1% most colourful pixels stray from their mean: 0 for grey."""


def measure_looks(picture: Image.Image) -> Looks:
    """Brightness, information, sharpness and colour of an RGB `picture` (small: every pixel is looked at)."""
    pixels = np.asarray(picture, dtype=np.float32)
    grey = np.sqrt((pixels**2) @ _BRIGHTNESS_WEIGHTS)
    laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    levels = np.bincount(np.clip(grey, 0, 255).astype(np.uint8).ravel(), minlength=256) / grey.size
    levels = levels[levels > 0]
    spread = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2)
    darkest, brightest = np.percentile(grey, [5, 99]) / 255
    return Looks(
        brightest=round(float(brightest), 4),
        darkest=round(float(darkest), 4),
        information=round(float(-(levels * np.log2(levels)).sum()), 3),
        sharpness=round(float(laplacian.std() / max(float(grey.std()), 1e-3)), 4),
        colour=round(float(np.percentile(spread, 99)), 2),
    )


def quality_problems(looks: Looks, width: int, height: int, colour_dataset: bool) -> list[str]:
    """The quality flags of one picture; `colour_dataset`: most pictures around it are in colour."""
    large_enough = min(width, height) >= SHARPNESS_MIN_SIDE
    # A blank picture has no detail or colour to lose: it is low in information, not also blurry or grey.
    blank = looks.information < LOW_INFORMATION
    checks = (
        ("too dark", looks.brightest < TOO_DARK),
        ("too bright", looks.darkest > TOO_BRIGHT),
        ("low information", blank),
        ("blurry", looks.sharpness < BLURRY and not blank and large_enough),
        ("odd aspect ratio", min(width, height) < ODD_ASPECT_RATIO * max(width, height)),
        ("grayscale among colour", colour_dataset and looks.colour <= GREY_LEVELS and not blank),
    )
    return [name for name, found in checks if found]


@dataclass
class QualityIssue:
    """A readable image with one or more quality flags (`problems`, such as "too dark")."""

    file: AuditedFile
    problems: list[str]


def find_quality_issues(files: Sequence[AuditedFile]) -> list[QualityIssue]:
    """The readable `files` with quality flags, in the order given.

    Grayscale pictures are flagged only when most of the readable pictures are in colour.
    """
    measured = [file for file in files if file.readable and file.facts.looks is not None]
    in_colour = sum(file.facts.looks.colour > GREY_LEVELS for file in measured)
    colour_dataset = in_colour * 2 > len(measured)
    found = []
    for file in measured:
        problems = quality_problems(file.facts.looks, file.facts.width, file.facts.height, colour_dataset)
        if problems:
            found.append(QualityIssue(file, problems))
    return found
