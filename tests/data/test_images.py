"""Opening one image: every mode to RGB, EXIF orientation, draft decode, errors, tensors; squash, crop and pad."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, JpegImagePlugin
from tests.conftest import CARS_PLANES

from imgclf.config import INTERPOLATIONS, RESIZE_MODES, Preprocessing
from imgclf.data.images import (
    ImageError,
    Placement,
    TooManyPixelsError,
    decode_image,
    decode_tensor,
    image_tensor,
    image_to_tensor,
    load_tensor,
    normalize,
    open_image,
    open_image_bytes,
    placement,
)

A_REAL_JPEG = CARS_PLANES / "training_set" / "cars" / "audi-1151768__340.jpg"
ORIENTATION = 0x0112

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image)[y, x])


def assert_close_colour(found: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> None:
    assert all(abs(f - e) <= tolerance for f, e in zip(found, expected, strict=True)), (found, expected)


# Each maker saves one image of a given mode and returns its path and the RGB a viewer shows at some pixels.


def make_bilevel(folder: Path) -> tuple[Path, dict, int]:
    image = Image.new("1", (2, 1))
    image.putpixel((1, 0), 1)
    image.save(folder / "bilevel.png")
    return folder / "bilevel.png", {(0, 0): BLACK, (1, 0): WHITE}, 0


def make_grey(folder: Path) -> tuple[Path, dict, int]:
    Image.fromarray(np.array([[77, 200]], dtype=np.uint8)).save(folder / "grey.png")
    return folder / "grey.png", {(0, 0): (77, 77, 77), (1, 0): (200, 200, 200)}, 0


def make_grey_alpha(folder: Path) -> tuple[Path, dict, int]:
    image = Image.new("LA", (3, 1))
    for x, value in enumerate([(100, 255), (100, 0), (0, 128)]):
        image.putpixel((x, 0), value)
    image.save(folder / "grey-alpha.png")
    return folder / "grey-alpha.png", {(0, 0): (100, 100, 100), (1, 0): WHITE, (2, 0): (127, 127, 127)}, 1


def _palette_image() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    return image


def make_palette(folder: Path) -> tuple[Path, dict, int]:
    _palette_image().save(folder / "palette.png")
    return folder / "palette.png", {(0, 0): RED, (1, 0): BLUE}, 0


def make_palette_transparent(folder: Path) -> tuple[Path, dict, int]:
    _palette_image().save(folder / "palette-transparent.png", transparency=0)
    return folder / "palette-transparent.png", {(0, 0): WHITE, (1, 0): BLUE}, 0


def make_rgba(folder: Path) -> tuple[Path, dict, int]:
    image = Image.new("RGBA", (3, 1))
    for x, value in enumerate([(255, 0, 0, 255), (0, 0, 255, 0), (0, 0, 0, 128)]):
        image.putpixel((x, 0), value)
    image.save(folder / "rgba.png")
    # Composited on white: transparent blue disappears, half-transparent black is mid-grey.
    return folder / "rgba.png", {(0, 0): RED, (1, 0): WHITE, (2, 0): (127, 127, 127)}, 1


def _cmyk_blocks() -> Image.Image:
    # 16-pixel blocks so JPEG's chroma subsampling leaves each block's centre its own colour.
    image = Image.new("CMYK", (48, 16))
    for block, ink in enumerate([(0, 255, 255, 0), (0, 0, 0, 0), (0, 0, 0, 255)]):
        image.paste(ink, (16 * block, 0, 16 * block + 16, 16))
    return image


CMYK_EXPECTED = {(8, 8): RED, (24, 8): WHITE, (40, 8): BLACK}


def make_cmyk_jpeg(folder: Path) -> tuple[Path, dict, int]:
    _cmyk_blocks().save(folder / "cmyk.jpg", quality=95)
    return folder / "cmyk.jpg", CMYK_EXPECTED, 8


def make_cmyk_tiff(folder: Path) -> tuple[Path, dict, int]:
    _cmyk_blocks().save(folder / "cmyk.tif")
    return folder / "cmyk.tif", CMYK_EXPECTED, 0


def make_sixteen_bit(folder: Path) -> tuple[Path, dict, int]:
    Image.fromarray(np.array([[65535, 32896, 0]], dtype=np.uint16)).save(folder / "sixteen-bit.png")
    # Scaled onto 0..255, not clipped: half of the 16-bit range is mid-grey, not white.
    return folder / "sixteen-bit.png", {(0, 0): WHITE, (1, 0): (128, 128, 128), (2, 0): BLACK}, 0


@pytest.mark.parametrize(
    ("make", "mode"),
    [
        (make_bilevel, "1"),
        (make_grey, "L"),
        (make_grey_alpha, "LA"),
        (make_palette, "P"),
        (make_palette_transparent, "P"),
        (make_rgba, "RGBA"),
        (make_cmyk_jpeg, "CMYK"),
        (make_cmyk_tiff, "CMYK"),
        (make_sixteen_bit, "I;16"),
    ],
    ids=["1", "L", "LA", "P", "P-transparent", "RGBA", "CMYK-jpeg", "CMYK-tiff", "I;16"],
)
def test_every_mode_opens_as_rgb_with_the_colours_a_viewer_shows(tmp_path, make, mode):
    path, expected, tolerance = make(tmp_path)
    with Image.open(path) as original:
        assert original.mode == mode  # the file really holds the mode under test
    image = open_image(path)
    assert image.mode == "RGB"
    for (x, y), colour in expected.items():
        assert_close_colour(pixel(image, x, y), colour, tolerance)


def test_a_dark_sixteen_bit_image_stays_dark(tmp_path):
    # Every value fits in 8 bits, but a 16-bit file still means 65535 is white: 255/65535 is nearly black.
    Image.fromarray(np.array([[255, 0]], dtype=np.uint16)).save(tmp_path / "dark.png")
    image = open_image(tmp_path / "dark.png")
    assert pixel(image, 0, 0) == (1, 1, 1)
    assert pixel(image, 1, 0) == BLACK


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 65535, 32896]], dtype=np.int32), [0, 255, 128]),
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),
    ],
    ids=["I", "F"],
)
def test_integer_and_float_images_decode_to_grey(values, expected):
    image = decode_image(Image.fromarray(values))
    assert image.mode == "RGB"
    assert np.asarray(image)[0].tolist() == [[v, v, v] for v in expected]


def quadrants(width: int, height: int) -> Image.Image:
    """Top-left red, top-right blue, bottom-left green, bottom-right white."""
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    image.paste(RED, (0, 0, half_w, half_h))
    image.paste(BLUE, (half_w, 0, width, half_h))
    image.paste(GREEN, (0, half_h, half_w, height))
    image.paste(WHITE, (half_w, half_h, width, height))
    return image


def save_with_orientation(image: Image.Image, path: Path, orientation: int) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif, quality=95)
    return path


def corner_colours(image: Image.Image) -> tuple[tuple[int, ...], ...]:
    width, height = image.size
    xs, ys = (width // 4, 3 * width // 4), (height // 4, 3 * height // 4)
    return tuple(pixel(image, x, y) for y in ys for x in xs)


# The colours a viewer shows at (top-left, top-right, bottom-left, bottom-right) for each EXIF orientation
# of the stored quadrants image above, and whether width and height swap.
SHOWN = {
    1: ((RED, BLUE, GREEN, WHITE), False),
    2: ((BLUE, RED, WHITE, GREEN), False),  # mirrored left-right
    3: ((WHITE, GREEN, BLUE, RED), False),  # turned 180°
    4: ((GREEN, WHITE, RED, BLUE), False),  # mirrored top-bottom
    5: ((RED, GREEN, BLUE, WHITE), True),  # mirrored across the main diagonal
    6: ((GREEN, RED, WHITE, BLUE), True),  # turned 90° clockwise
    7: ((WHITE, BLUE, GREEN, RED), True),  # mirrored across the other diagonal
    8: ((BLUE, WHITE, RED, GREEN), True),  # turned 90° counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(SHOWN))
def test_exif_orientation_shows_the_photo_upright(tmp_path, orientation):
    path = save_with_orientation(quadrants(40, 20), tmp_path / "photo.jpg", orientation)
    image = open_image(path)
    colours, swapped = SHOWN[orientation]
    assert image.size == ((20, 40) if swapped else (40, 20))
    for found, expected in zip(corner_colours(image), colours, strict=True):
        assert_close_colour(found, expected, 40)


def test_exif_orientation_is_applied_in_draft_decode(tmp_path):
    path = save_with_orientation(quadrants(800, 400), tmp_path / "photo.jpg", 6)
    image = open_image(path, size=64)
    assert image.size == (64, 64)
    for found, expected in zip(corner_colours(image), SHOWN[6][0], strict=True):
        assert_close_colour(found, expected, 40)


def test_real_rotated_photo_decodes_like_exif_transpose_at_full_size():
    path = CARS_PLANES / "val_set" / "planes" / "united arab emirates 9.jpg"
    with Image.open(path) as original:
        assert original.getexif().get(ORIENTATION) not in (None, 1)
        expected = np.asarray(ImageOps.exif_transpose(original).convert("RGB"))
        stored_size = original.size
    decoded = open_image(path)
    assert decoded.size == stored_size[::-1]
    np.testing.assert_array_equal(np.asarray(decoded), expected)


def smooth_photo(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = 128 + 100 * np.sin(x / 150) * np.cos(y / 120)
    pixels = np.stack([255 * x / width, 255 * y / height, waves], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def spy_on_drafts(monkeypatch) -> list[tuple[tuple[int, int] | None, tuple[int, int]]]:
    """The (size requested, size decoded) of every JPEG draft from now on."""
    drafted: list[tuple[tuple[int, int] | None, tuple[int, int]]] = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original_draft(self, mode, size)
        drafted.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return drafted


def test_large_jpeg_is_drafted_to_about_the_needed_size(tmp_path, monkeypatch):
    path = tmp_path / "large.jpg"
    smooth_photo(2000, 1500).save(path, quality=90)
    drafted = spy_on_drafts(monkeypatch)
    image = open_image(path, size=64)

    assert image.size == (64, 64)
    assert image.mode == "RGB"
    [(requested, decoded_size)] = drafted
    assert requested == (64, 64)
    assert min(decoded_size) >= 64
    assert decoded_size[0] < 2000 and decoded_size[1] < 1500  # decoded smaller than stored
    with Image.open(path) as full:
        reference = full.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    difference = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert difference.mean() < 3


def test_upper_case_extension_with_a_space_opens():
    path = CARS_PLANES / "training_set" / "planes" / "netherlands 3.JPG"
    image = open_image(path, size=64)
    assert image.size == (64, 64)
    assert image.mode == "RGB"
    assert np.asarray(image).std() > 10  # a photo, not a blank


def write_empty(folder: Path) -> Path:
    (folder / "empty.jpg").write_bytes(b"")
    return folder / "empty.jpg"


def write_text_named_jpg(folder: Path) -> Path:
    (folder / "notes.jpg").write_text("these are notes, not a photo\n")
    return folder / "notes.jpg"


def write_truncated_jpeg(folder: Path) -> Path:
    data = A_REAL_JPEG.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return folder / "truncated.jpg"


def missing_file(folder: Path) -> Path:
    return folder / "missing.jpg"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (write_empty, "empty"),
        (write_text_named_jpg, "not an image"),
        (write_truncated_jpeg, "truncated"),
        (missing_file, "no such file"),
    ],
    ids=["empty", "text", "truncated", "missing"],
)
@pytest.mark.parametrize("size", [None, 64])
def test_unreadable_files_raise_image_error_naming_file_and_reason(tmp_path, make, reason, size):
    path = make(tmp_path)
    with pytest.raises(ImageError) as caught:
        open_image(path, size=size)
    message = str(caught.value)
    assert str(path) in message
    assert reason in message
    assert caught.value.path == str(path)


@pytest.mark.parametrize("limit", [1000, 6000], ids=["over-twice-the-limit", "over-the-limit"])
def test_decompression_bomb_raises_image_error(tmp_path, monkeypatch, limit):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageError, match="decompression bomb") as caught:
        open_image(path)
    assert str(path) in str(caught.value)


def test_a_bomb_is_refused_even_when_another_thread_reset_the_warnings_filter(tmp_path, monkeypatch):
    """`catch_warnings` is process-wide; a thread leaving it can undo the filter while another one decodes."""
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10,000 pixels: Pillow only warns below twice this
    monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        with pytest.raises(ImageError, match="decompression bomb"):
            open_image(path)
        with Image.open(path) as upload, pytest.raises(ImageError, match="decompression bomb"):
            decode_image(upload)


def test_max_pixels_refuses_an_image_from_its_header_before_decoding_it():
    buffer = io.BytesIO()
    Image.new("L", (300, 200)).save(buffer, format="PNG")
    header_only = buffer.getvalue()[:100]  # the size is in the first 33 bytes; the pixels are cut off
    with pytest.raises(TooManyPixelsError, match="upload.png: 300x200 pixels, over the limit of 59999 pixels"):
        open_image_bytes(header_only, name="upload.png", max_pixels=59_999)
    with pytest.raises(ImageError, match="truncated"):
        open_image_bytes(header_only, name="upload.png", max_pixels=60_000)
    assert open_image_bytes(buffer.getvalue(), max_pixels=60_000).size == (300, 200)


def test_max_pixels_counts_a_jpeg_at_the_size_it_is_drafted_to():
    buffer = io.BytesIO()
    smooth_photo(2000, 1500).save(buffer, format="JPEG", quality=90)
    assert open_image_bytes(buffer.getvalue(), size=64, max_pixels=100_000).size == (64, 64)
    with pytest.raises(TooManyPixelsError, match="2000x1500 pixels"):
        open_image_bytes(buffer.getvalue(), max_pixels=100_000)


def test_decode_image_raises_image_error_for_a_truncated_upload(tmp_path):
    path = write_truncated_jpeg(tmp_path)
    with Image.open(path) as upload, pytest.raises(ImageError, match="truncated"):
        decode_image(upload, size=64)


def test_image_to_tensor_is_channels_first_uint8():
    image = Image.new("RGB", (5, 3))
    image.putpixel((4, 1), (10, 20, 30))
    tensor = image_to_tensor(image)
    assert tensor.dtype == torch.uint8
    assert tensor.shape == (3, 3, 5)
    assert tensor[:, 1, 4].tolist() == [10, 20, 30]
    assert int(tensor.sum()) == 60


def test_load_tensor_gives_uint8_at_the_model_size():
    preprocessing = Preprocessing(image_size=32)
    tensor = load_tensor(A_REAL_JPEG, preprocessing)
    assert tensor.dtype == torch.uint8
    assert tensor.shape == (3, 32, 32)
    expected = np.asarray(open_image(A_REAL_JPEG, 32)).transpose(2, 0, 1)
    np.testing.assert_array_equal(tensor.numpy(), expected)


def test_normalize_applies_mean_and_std_per_channel():
    preprocessing = Preprocessing(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    batch = torch.tensor([[[[0, 255]], [[51, 102]], [[255, 0]]]], dtype=torch.uint8)  # (1, 3, 1, 2)
    expected = torch.tensor([[[[-1.0, 1.0]], [[-0.2, 0.6]], [[0.5, 0.0]]]])
    torch.testing.assert_close(normalize(batch, preprocessing), expected)
    # A float batch is already in [0, 1] and is not divided by 255 again.
    torch.testing.assert_close(normalize(batch.float() / 255, preprocessing), expected)


def pillow_squashed(path: Path, size: int, resampling: Image.Resampling) -> np.ndarray:
    """`path` squashed by Pillow alone, from the same draft decode `open_image` starts from."""
    with Image.open(path) as photo:
        photo.draft("RGB", (size, size))
        return np.asarray(photo.convert("RGB").resize((size, size), resampling), dtype=np.int16)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [32, 224, 700])  # down from a draft, down from a 619×340 photo, up
def test_squashing_gives_pillows_antialiased_pixels(interpolation, size):
    reference = pillow_squashed(A_REAL_JPEG, size, getattr(Image.Resampling, interpolation.upper()))
    image = open_image(A_REAL_JPEG, size, interpolation)
    difference = np.abs(np.asarray(image, dtype=np.int16) - reference)
    assert image.size == (size, size)
    assert difference.mean() < 0.05  # PyTorch resizes: within a level almost everywhere
    assert np.quantile(difference, 0.999) <= 1


def test_nearest_squashing_is_pillows():
    reference = pillow_squashed(A_REAL_JPEG, 48, Image.Resampling.NEAREST)
    np.testing.assert_array_equal(np.asarray(open_image(A_REAL_JPEG, 48, "nearest")), reference)


# --resize: squash (above), crop and pad.


def thirds(width: int, height: int) -> Image.Image:
    """Red, green and blue thirds along the longer side."""
    image = Image.new("RGB", (width, height), RED)
    if width >= height:
        image.paste(GREEN, (width // 3, 0, 2 * width // 3, height))
        image.paste(BLUE, (2 * width // 3, 0, width, height))
    else:
        image.paste(GREEN, (0, height // 3, width, 2 * height // 3))
        image.paste(BLUE, (0, 2 * height // 3, width, height))
    return image


def test_placement_of_each_mode_for_a_wide_and_a_tall_image():
    def where(resize: str, width: int, height: int) -> Placement:
        return placement(width, height, Preprocessing(image_size=60, resize=resize))

    assert where("squash", 600, 400) == Placement((0, 0, 600, 400), (0, 0, 60, 60))
    assert where("crop", 600, 400) == Placement((100, 0, 500, 400), (0, 0, 60, 60))
    assert where("crop", 400, 600) == Placement((0, 100, 400, 500), (0, 0, 60, 60))
    assert where("pad", 600, 400) == Placement((0, 0, 600, 400), (0, 10, 60, 50))
    assert where("pad", 400, 600) == Placement((0, 0, 400, 600), (10, 0, 50, 60))


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize(("width", "height"), [(300, 100), (100, 300)], ids=["wide", "tall"])
def test_crop_keeps_the_centre_of_the_image_and_squash_keeps_its_sides(interpolation, width, height):
    cropped = np.asarray(decode_image(thirds(width, height), 30, interpolation, resize="crop"))
    assert cropped.shape == (30, 30, 3)
    assert (cropped == GREEN).all()  # the centre third, and nothing of the red and blue sides
    squashed = decode_image(thirds(width, height), 30, interpolation)
    assert pixel(squashed, 0, 0) == RED and pixel(squashed, 29, 29) == BLUE


@pytest.mark.parametrize(
    ("width", "height", "filled"),
    [(300, 100, (0, 10, 30, 20)), (100, 300, (10, 0, 20, 30)), (300, 130, (0, 8, 30, 21))],
    ids=["wide", "tall", "odd-bars"],
)
def test_pad_fills_bars_of_the_right_size_with_the_pad_colour(width, height, filled):
    padded = np.asarray(decode_image(Image.new("RGB", (width, height), WHITE), 30, resize="pad", pad_color=(9, 8, 7)))
    left, top, right, bottom = filled
    inside = np.zeros((30, 30), dtype=bool)
    inside[top:bottom, left:right] = True
    assert (padded[inside] == WHITE).all()
    assert (padded[~inside] == (9, 8, 7)).all()


def test_crop_of_a_real_photo_is_its_centre_square_resized():
    image = open_image(A_REAL_JPEG, 64, resize="crop")
    with Image.open(A_REAL_JPEG) as full:
        width, height = full.size  # 619 x 340
        left = (width - height) // 2
        reference = full.convert("RGB").resize(
            (64, 64), Image.Resampling.BILINEAR, box=(left, 0, left + height, height)
        )
    difference = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert image.size == (64, 64)
    assert difference.mean() < 3  # the draft decode's own small differences


def test_pad_of_a_real_photo_is_the_whole_photo_between_two_bars():
    image = np.asarray(open_image(A_REAL_JPEG, 64, resize="pad", pad_color=(124, 116, 104)))
    with Image.open(A_REAL_JPEG) as photo:
        photo.draft("RGB", (64, 36))  # 619 x 340 is 64 x 35.2 at 64 px wide; the same draft as `open_image`'s
        reference = np.asarray(photo.convert("RGB").resize((64, 35), Image.Resampling.BILINEAR), dtype=np.int16)
    top = (64 - 35) // 2
    assert (image[:top] == (124, 116, 104)).all() and (image[top + 35 :] == (124, 116, 104)).all()
    difference = np.abs(image[top : top + 35].astype(np.int16) - reference)
    assert difference.mean() < 0.05 and difference.max() <= 1


@pytest.mark.parametrize(("resize", "requested"), [("squash", (64, 64)), ("crop", (86, 64)), ("pad", (64, 48))])
def test_a_large_jpeg_is_drafted_to_what_each_resize_needs(tmp_path, monkeypatch, resize, requested):
    """Crop needs the short side at the input size (so the long one at 2000/1500 of it); pad only the long one."""
    path = tmp_path / "large.jpg"
    smooth_photo(2000, 1500).save(path, quality=90)
    drafted = spy_on_drafts(monkeypatch)
    image = open_image(path, 64, resize=resize)
    [(asked, decoded_size)] = drafted
    assert image.size == (64, 64)
    assert asked == requested
    assert decoded_size[0] >= requested[0] and decoded_size[1] >= requested[1]
    assert decoded_size[0] < 2000


def test_crop_and_pad_place_the_photo_upright_as_its_exif_says(tmp_path):
    path = save_with_orientation(quadrants(800, 400), tmp_path / "photo.jpg", 6)  # upright: 400 wide, 800 high
    padded = open_image(path, 64, resize="pad")
    bars = np.asarray(padded)[:, list(range(16)) + list(range(48, 64))]
    assert (bars == BLACK).all()  # bars left and right of the upright photo, not above and below
    cropped = open_image(path, 64, resize="crop")  # the middle of the tall photo: all four quadrants
    for image in (padded.crop((16, 0, 48, 64)), cropped):
        for found, expected in zip(corner_colours(image), SHOWN[6][0], strict=True):
            assert_close_colour(found, expected, 40)


@pytest.mark.parametrize("resize", RESIZE_MODES)
@pytest.mark.parametrize("photo", [A_REAL_JPEG, CARS_PLANES / "training_set" / "planes" / "netherlands 3.JPG"])
def test_every_way_in_gives_the_same_pixels(resize, photo):
    """A file, its bytes and an opened PIL image: what training, serving and `Run.predict` decode."""
    preprocessing = Preprocessing(image_size=48, resize=resize, pad_color=(1, 2, 3))
    from_file = load_tensor(photo, preprocessing)
    assert from_file.shape == (3, 48, 48)
    assert torch.equal(decode_tensor(photo.read_bytes(), preprocessing, str(photo)), from_file)
    with Image.open(photo) as opened:
        assert torch.equal(image_tensor(opened, preprocessing), from_file)
