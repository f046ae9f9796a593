"""Grad-CAM: a heatmap of the parts of an image that pushed the model towards a class, drawn over the photo.

    imgclf explain runs/seed-cnn-20261125-101500 plane.jpg photos/ --out heatmaps/
    imgclf explain RUN car.jpg --class planes --out heatmaps/    # what speaks for "planes" in a car photo

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last convolutional feature map by the mean
gradient of the class's score with respect to it, sums the channels, keeps the positive part and scales it up to
the input. The score is the class's logit; for a two-class run (one logit) it is the logit for the second class
and its negative for the first, so the two classes' heatmaps light up opposite evidence. A multi-label run has
one logit (its own sigmoid) per label, and `explain_labels` explains each label it predicts.

The overlay is drawn on the photo as the user sees it: upright as its EXIF orientation says, at its own size
(shrunk to at most `max_side` pixels on its longer side), not on the square the model saw. The heatmap goes back
onto the part of the photo the model saw, as the run's `--resize` placed it (`images.placement`): squash, the
whole photo; crop, its centre square, with the cut-off sides darkened; pad, the whole photo, without the bars.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from imgclf.config import ImgclfError, Preprocessing
from imgclf.data.images import ImageError, decode_image, image_tensor, load_tensor, normalize, open_image, placement
from imgclf.deploy.predictor import Run
from imgclf.files import atomic_write_bytes
from imgclf.models import calibrated_probabilities, to_probabilities
from imgclf.models.backbones import BackboneClassifier
from imgclf.models.ensemble import Ensemble

OUTPUT_SUFFIX = "-gradcam.png"
DEFAULT_COLORMAP = "jet"
DEFAULT_MAX_SIDE = 1024
UNSEEN_DARKENING = 0.5
"""How much darker the overlay shows the parts of the photo the model did not see (crop's cut-off sides)."""


def find_target_layer(model: nn.Module) -> nn.Module:
    """The layer whose output is the model's last convolutional feature map, where Grad-CAM looks.

    - a backbone model (`efficientnet_lite0`, `vgg16`, `timm:` and `torchvision:` CNNs): the whole backbone,
      whose output is the feature map the head pools;
    - an ensemble (`--preset balanced|best`): its first, best-scoring member's feature map of the unflipped image;
    - `seed-cnn` and other `nn.Sequential` models: the layer just before the first `nn.Flatten`;
    - anything else: its last `nn.Conv2d`.

    Raises `ImgclfError` when the model has none of these.
    """
    if isinstance(model, BackboneClassifier):
        return model.backbone
    if isinstance(model, Ensemble):
        return model.gradcam_layer
    if isinstance(model, nn.Sequential):
        layers = list(model)
        flatten = next((i for i, layer in enumerate(layers) if isinstance(layer, nn.Flatten)), None)
        if flatten is not None and flatten > 0:
            return layers[flatten - 1]
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if convolutions:
        return convolutions[-1]
    raise ImgclfError(
        f"{type(model).__name__} has no convolutional layer, so Grad-CAM has no spatial feature map to weigh. "
        "Give target_layer=<a module whose output is (N, C, H, W)>, or explain a CNN."
    )


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module | None = None,
    class_index: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Grad-CAM heatmaps (N, H, W) in [0, 1], at the size of `images`, on the CPU.

    Args:
        model: a classifier returning logits (N, classes), or (N, 1) for two classes.
        images: the model's input, already normalised: a float batch (N, 3, H, W).
        target_layer: the module whose output is the feature map to explain (default: `find_target_layer`).
        class_index: the class to explain, one for all images or one per image (default: each image's
            predicted class).

    A heatmap is 1 where the evidence for the class is strongest and 0 where there is none; it is all zeros
    when nothing in the image speaks for the class. The model runs in eval mode with gradients on, even when
    called under `torch.inference_mode()`; its training mode is restored afterwards. Other threads may predict
    with the same model meanwhile (as the web service does).

    >>> model = imgclf.create_model("seed-cnn", num_classes=2)
    >>> grad_cam(model, torch.randn(4, 3, 64, 64)).shape
    torch.Size([4, 64, 64])
    """
    heatmaps, _, _ = _explain_batch(model, images, target_layer, class_index)
    return heatmaps


def _explain_batch(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module | None,
    class_index: int | Sequence[int] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grad-CAM heatmaps (N, H, W), the logits (N, outputs) and the class explained for each image (N,)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ImgclfError(
            f"Grad-CAM needs a batch of RGB images (N, 3, H, W). Received: images of shape {tuple(images.shape)}."
        )
    layer = target_layer if target_layer is not None else find_target_layer(model)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    captured: list[torch.Tensor] = []
    caller = threading.get_ident()

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        # Hooks see every forward pass of the layer; another thread predicting with the same model is not ours.
        if threading.get_ident() == caller:
            captured.append(output)

    handle = layer.register_forward_hook(keep)
    was_training = model.training
    try:
        # inference_mode(False) so that a caller inside torch.inference_mode() still gets a graph to differentiate.
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            # The input asks for gradients so a graph exists even when every weight is frozen.
            inputs = images.to(device=device, dtype=dtype).clone().requires_grad_(True)
            logits = model(inputs).float()
            activations = _check_activations(captured, layer, len(images))
            classes = _class_indices(logits, class_index)
            gradients = torch.autograd.grad(_class_scores(logits, classes).sum(), activations)
    finally:
        handle.remove()
        model.train(was_training)
    activation = torch.cat([a.detach().float() for a in activations])
    gradient = torch.cat([g.float() for g in gradients])
    channel_weights = gradient.mean(dim=(2, 3), keepdim=True)
    maps = torch.relu((channel_weights * activation).sum(dim=1, keepdim=True))
    maps = F.interpolate(maps, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0].cpu()
    low = maps.amin(dim=(1, 2), keepdim=True)
    spread = maps.amax(dim=(1, 2), keepdim=True) - low
    heatmaps = torch.where(spread > 0, (maps - low) / spread.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)
    return heatmaps, logits.detach().cpu(), classes


def _check_activations(captured: list, layer: nn.Module, batch_size: int) -> list[torch.Tensor]:
    """The target layer's outputs of one forward pass; more than one when the model runs it on slices of the batch."""
    name = type(layer).__name__
    if not captured:
        raise ImgclfError(f"The target layer {name} did not run in the model's forward pass; give one of its layers.")
    for output in captured:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ImgclfError(
                f"The target layer {name} gives {shape}, not a spatial feature map (N, C, H, W), so Grad-CAM "
                "cannot place the evidence in the image. Give a convolutional layer as target_layer."
            )
    if sum(len(output) for output in captured) != batch_size:
        raise ImgclfError(
            f"The target layer {name} saw {sum(len(output) for output in captured)} images in a forward pass of "
            f"{batch_size}; give a layer that runs once on each image."
        )
    return captured


def _class_indices(logits: torch.Tensor, class_index: int | Sequence[int] | None) -> torch.Tensor:
    """The class to explain for each image: the given ones, checked, or the predicted ones."""
    num_classes = max(logits.shape[1], 2)
    if class_index is None:
        return to_probabilities(logits.detach()).argmax(dim=1)
    indices = torch.as_tensor([class_index] * len(logits) if isinstance(class_index, int) else list(class_index))
    if indices.shape != (len(logits),):
        raise ImgclfError(
            f"class_index needs one class for all images or one per image ({len(logits)}). "
            f"Received: class_index={class_index!r}."
        )
    if indices.min() < 0 or indices.max() >= num_classes:
        raise ImgclfError(
            f"class_index must be between 0 and {num_classes - 1} for this {num_classes}-class model. "
            f"Received: class_index={class_index!r}."
        )
    return indices


def _class_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The logit of each image's class; a single logit (two classes) counts for class 1 and against class 0."""
    if logits.shape[1] == 1:
        return torch.where(classes == 1, logits[:, 0], -logits[:, 0])
    return logits.gather(1, classes.view(-1, 1))[:, 0]


def overlay(
    image: Image.Image,
    heatmap: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
) -> Image.Image:
    """`image` with `heatmap` (H, W) in [0, 1] drawn over it in a matplotlib colormap, as a new RGB image.

    The heatmap is stretched to the image's size; `alpha` is the weight of the colour (0: the photo only,
    1: the heatmap only). `image` is converted to RGB if needed and left unchanged. Only the colormap's lookup
    table is used, no figure, so no matplotlib backend is involved.

    >>> overlay(Image.open("plane.jpg"), grad_cam(model, batch)[0]).save("plane-gradcam.png")
    """
    _check_alpha(alpha)
    values = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if values.ndim != 2:
        raise ImgclfError(f"A heatmap has shape (H, W). Received: shape {values.shape}.")
    try:
        palette = matplotlib.colormaps[colormap]
    except KeyError:
        raise ImgclfError(f"Unknown matplotlib colormap. Received: colormap={colormap!r}.") from None
    photo = image.convert("RGB")
    stretched = Image.fromarray(values.astype(np.float32), mode="F").resize(photo.size, Image.Resampling.BILINEAR)
    colours = palette(np.clip(np.asarray(stretched), 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * np.asarray(photo, dtype=np.float32) + alpha * colours
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ImgclfError(f"alpha is the heatmap's weight over the photo, between 0 and 1. Received: alpha={alpha}.")


@dataclass
class Explanation:
    """Grad-CAM for one image: the class explained, the heatmap and the overlay, and what the run predicted."""

    label: str
    index: int
    probability: float
    """The class's probability: its share of the softmax, or for a multi-label run its own sigmoid."""
    predicted: str
    """The predicted class; for a multi-label run the predicted labels joined by `;` (empty when none)."""
    heatmap: torch.Tensor
    """(S, S) in [0, 1] over the model's whole input (pad's bars included)."""
    overlay: Image.Image
    """The upright photo at its own size (longer side at most `max_side`) with the heatmap over the part the
    model saw."""
    threshold: float | None = None
    """A multi-label run's threshold for the class (predicted at or above it); None for a single-label run."""


def explain_image(
    run: Run,
    image: str | Path | Image.Image,
    class_name: str | None = None,
    alpha: float = 0.5,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> Explanation:
    """Grad-CAM of `run`'s PyTorch model on one image (a path or a PIL image), explaining `class_name`.

    `class_name` defaults to the predicted class (a multi-label run's most probable label; `explain_labels`
    explains each label it predicts). The model sees the image exactly as `run.predict` does.
    Raises `ImageError` when the image cannot be read and `ImgclfError` for a class the run does not have.

    >>> explanation = imgclf.explain_image(imgclf.load("runs/seed-cnn"), "plane.jpg")
    >>> explanation.label, explanation.overlay.size
    ('planes', (510, 340))
    """
    index = class_index(run, class_name)
    photo, pixels = _read_image(run, image)
    return _explanations(run, photo, pixels, None if index is None else [index], alpha, max_side)[0]


def explain_labels(
    run: Run, image: str | Path | Image.Image, alpha: float = 0.5, max_side: int | None = DEFAULT_MAX_SIDE
) -> list[Explanation]:
    """Grad-CAM of each label a multi-label `run` predicts for one image, most probable first.

    When no label reaches its threshold, the most probable label is explained (its `probability` is below its
    `threshold`). A single-label run's list holds its predicted class alone. Raises `ImageError` when the image
    cannot be read.

    >>> [(e.label, round(e.probability, 2)) for e in imgclf.explain_labels(run, "shirt-and-hat.jpg")]
    [('hat', 0.97), ('shirt', 0.91)]
    """
    photo, pixels = _read_image(run, image)
    indices = None
    if run.thresholds is not None:
        labels = run.prediction_from(run.predict_tensors(pixels[None])[0]).labels
        indices = [run.class_names.index(label) for label in labels] or None
    return _explanations(run, photo, pixels, indices, alpha, max_side)


def _read_image(run: Run, image: str | Path | Image.Image) -> tuple[Image.Image, torch.Tensor]:
    """The upright photo and the model's input (uint8, (3, S, S)) made from it as `run.predict` makes it."""
    if isinstance(image, Image.Image):
        return decode_image(image), image_tensor(image, run.preprocessing)
    pixels = load_tensor(image, run.preprocessing)
    return open_image(image), pixels


def _explanations(
    run: Run,
    photo: Image.Image,
    pixels: torch.Tensor,
    class_indices: list[int] | None,
    alpha: float,
    max_side: int | None,
) -> list[Explanation]:
    """One `Explanation` of the image per class of `class_indices` (None: the most probable alone), all in one
    forward and backward pass."""
    prep = run.preprocessing
    batch = normalize(pixels[None], prep).expand(len(class_indices or [None]), -1, -1, -1)
    heatmaps, logits, classes = _explain_batch(run.model, batch, None, class_indices)
    probabilities = _probabilities(run, logits[:1])[0]
    top = run.class_names[int(probabilities.argmax())]
    predicted = top if run.thresholds is None else run.prediction_from(probabilities).label
    if max_side is not None and max(photo.size) > max_side:
        photo.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return [
        Explanation(
            label=run.class_names[int(index)],
            index=int(index),
            probability=float(probabilities[index]),
            predicted=predicted,
            heatmap=heatmap,
            overlay=_overlay_seen(photo, heatmap, prep, alpha),
            threshold=None if run.thresholds is None else run.thresholds[int(index)],
        )
        for heatmap, index in zip(heatmaps, classes)
    ]


def _probabilities(run: Run, logits: torch.Tensor) -> torch.Tensor:
    """The calibrated probabilities (N, classes) of the model's logits, as the run's engine gives them."""
    return calibrated_probabilities(logits, run.temperature, run.thresholds is not None)


def _overlay_seen(photo: Image.Image, heatmap: torch.Tensor, preprocessing: Preprocessing, alpha: float) -> Image.Image:
    """`overlay` of the heatmap's part that shows the photo onto the part of the photo the model saw; the rest
    of the photo (crop's cut-off sides) is darkened."""
    where = placement(photo.width, photo.height, preprocessing)
    left, top, right, bottom = where.filled
    seen = overlay(photo.crop(where.seen), heatmap[top:bottom, left:right], alpha)
    if where.seen == (0, 0, *photo.size):
        return seen
    shown = Image.blend(photo.convert("RGB"), Image.new("RGB", photo.size), UNSEEN_DARKENING)
    shown.paste(seen, where.seen[:2])
    return shown


def class_index(run: Run, class_name: str | None, option: str = "--class") -> int | None:
    """The index of `class_name` among `run`'s classes (None for None); `ImgclfError` naming `option`, how the
    user gave the class, when the run has no such class."""
    if class_name is None:
        return None
    if class_name not in run.class_names:
        raise ImgclfError(
            f"The run has no class {class_name!r}. Received: {option}={class_name!r}. Choose one of {run.class_names}."
        )
    return run.class_names.index(class_name)


@dataclass
class ExplainedFile:
    """One file's result from `explain_files`: where the overlay went, or why the image could not be read."""

    file: str
    output: Path | None
    label: str | None
    probability: float | None
    predicted: str | None
    error: str | None = None
    threshold: float | None = None
    """A multi-label run's threshold for `label`."""


def explain_files(
    run: Run,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    class_name: str | None = None,
    alpha: float = 0.5,
    max_side: int | None = DEFAULT_MAX_SIDE,
    progress: Callable[[int, int], None] | None = None,
) -> list[ExplainedFile]:
    """Write a Grad-CAM overlay `<name>-gradcam.png` into `out_dir` for each image file, in order.

    A multi-label run gets one overlay `<name>-<label>-gradcam.png` per label it predicts (see `explain_labels`),
    or for `class_name` alone, and one `ExplainedFile` per overlay. An unreadable image gets an `ExplainedFile`
    with `error` set (the `ImageError`'s reason) and no output. Two inputs with the same name get numbered
    outputs (`photo-gradcam.png`, `photo-2-gradcam.png`), and no output ever replaces an input. Files are
    written atomically; overlays of earlier calls are replaced.
    `progress(done, total)` is called after each file.

    >>> explain_files(imgclf.load("runs/seed-cnn"), ["car.jpg", "plane.jpg"], "heatmaps")[0].output
    PosixPath('heatmaps/car-gradcam.png')
    """
    class_index(run, class_name)  # both checked before any image is read
    _check_alpha(alpha)
    out_dir = Path(out_dir)
    taken = {Path(path).resolve() for path in paths}
    results = []
    for done, path in enumerate(paths, start=1):
        results.extend(_explain_file(run, Path(path), out_dir, taken, class_name, alpha, max_side))
        if progress is not None:
            progress(done, len(paths))
    return results


def _explain_file(
    run: Run, path: Path, out_dir: Path, taken: set[Path], class_name: str | None, alpha: float, max_side: int | None
) -> list[ExplainedFile]:
    """Explain one file and write its overlays to names not in `taken` (which they then join)."""
    try:
        if class_name is None:
            explanations = explain_labels(run, path, alpha, max_side)
        else:
            explanations = [explain_image(run, path, class_name, alpha, max_side)]
    except ImageError as error:
        return [ExplainedFile(str(path), None, None, None, None, error=error.reason)]
    results = []
    for explanation in explanations:
        stem = path.stem if run.thresholds is None else f"{path.stem}-{_file_safe(explanation.label)}"
        output = _output_path(out_dir, stem, taken)
        taken.add(output.resolve())
        buffer = io.BytesIO()
        explanation.overlay.save(buffer, format="PNG")
        atomic_write_bytes(output, buffer.getvalue())
        found = (explanation.label, explanation.probability, explanation.predicted)
        results.append(ExplainedFile(str(path), output, *found, threshold=explanation.threshold))
    return results


def _file_safe(label: str) -> str:
    """`label` as part of a file name: characters other than letters, digits, `.`, `_` and `-` become `_`."""
    return re.sub(r"[^\w.-]", "_", label, flags=re.ASCII)


def _output_path(out_dir: Path, stem: str, taken: set[Path]) -> Path:
    """`out_dir/<stem>-gradcam.png`, or the first free `<stem>-<n>-gradcam.png` when that one is taken."""
    candidate = out_dir / f"{stem}{OUTPUT_SUFFIX}"
    number = 2
    while candidate.resolve() in taken:
        candidate = out_dir / f"{stem}-{number}{OUTPUT_SUFFIX}"
        number += 1
    return candidate
