"""Image files and MNIST-style preprocessing: any grayscale image or image file becomes the 28x28
input MNIST nets expect. No Qt here: the app and scripts both build on it.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MNIST_SIZE = 28
FIT_BOX = 20  # MNIST digits were scaled to fit 20x20, then placed in 28x28
# Where MNIST puts a digit's centre of mass, in pixel indices: the test set's mean is
# (13.99, 14.01) with a spread of 0.29, i.e. integer shifts towards (14, 14).
CENTRE_OF_MASS = 14.0
INK_THRESHOLD = 0.1  # fraction of full intensity that counts as ink for the bounding box
MAX_IMAGE_BYTES = 50_000_000
MAX_IMAGE_PIXELS = 16_000_000  # a 16-megapixel photo; the header is checked before decoding
WORK_PIXELS = 1_000_000  # larger images are box-reduced to about this before any float copy
# Raster formats only, decoded by Pillow itself. Never EPS/PS/PDF: Pillow hands PostScript to
# Ghostscript, which runs the file as a program (writes files, loops forever), whatever its name.
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM", "TGA", "ICO", "PCX", "SGI", "QOI")


class EmptyImageError(ValueError):
    """The image has no ink: there is no digit to recognise."""


class ImageFileError(ValueError):
    """An image file that cannot be used (missing, unreadable, truncated, too large)."""


def shown(path: str | os.PathLike) -> str:
    """A path as one printable line: a newline or other control character in a file name is
    written as its escape (``\\n``), so that a message about the file stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def image_suffixes() -> set[str]:
    """The file name endings of ``RASTER_FORMATS``, as Pillow registers them (``.png``, ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in RASTER_FORMATS}


# --------------------------------------------------------------------------------------------
# Preprocessing


def to_unit_float(image) -> np.ndarray:
    """A 2-D grayscale image as float32 in [0, 1].

    Integer images are divided by their type's maximum (uint8: 255). Float images are taken to be
    in [0, 1], unless their maximum exceeds 1: then they are read as 0..255.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    elif np.issubdtype(array.dtype, np.floating):
        array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if array.size and array.max() > 1.0:
            array = array / 255.0
    else:
        raise TypeError(f"expected a numeric image, got dtype {array.dtype}")
    return np.clip(array, 0.0, 1.0)


def ink_bounding_box(image: np.ndarray, threshold: float = INK_THRESHOLD) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), exclusive bottom/right, of the pixels brighter than ``threshold``."""
    mask = image > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise EmptyImageError("the image has no ink: draw a digit")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre, in pixel indices."""
    image = np.asarray(image, dtype=np.float64)
    total = image.sum()
    if total <= 0:
        raise EmptyImageError("the image has no ink: draw a digit")
    rows = (image.sum(axis=1) * np.arange(image.shape[0])).sum() / total
    cols = (image.sum(axis=0) * np.arange(image.shape[1])).sum() / total
    return float(rows), float(cols)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample float32 ``image`` to ``size`` (rows, columns), anti-aliased.

    Shrinking averages the source area under each output pixel (a box filter, as a scanner's
    sensor integrates), which keeps strokes' mass and sharpness; enlarging is bilinear.
    """
    shrinking = size[0] <= image.shape[0] and size[1] <= image.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = Image.fromarray(image.astype(np.float32)).resize((size[1], size[0]), resample)  # mode "F"
    return np.asarray(resized, dtype=np.float32)


def preprocess(image, threshold: float = INK_THRESHOLD) -> torch.Tensor:
    """The procedure MNIST was made with, on any 2-D grayscale image (ink bright on dark).

    Crop to the ink's bounding box, scale (anti-aliased) so that the longer side is 20 pixels
    keeping the aspect ratio, and paste into a 28x28 field so that the centre of mass lands on
    pixel (14, 14) as in MNIST (an integer shift, as MNIST used; clamped so that no ink leaves
    the field). Returns float32 (1, 28, 28) in [0, 1]. Raises ``EmptyImageError`` when no pixel
    is brighter than ``threshold``.
    """
    array = to_unit_float(image)
    top, left, bottom, right = ink_bounding_box(array, threshold)
    crop = np.ascontiguousarray(array[top:bottom, left:right])
    height, width = crop.shape
    scale = FIT_BOX / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    fitted = np.clip(_resize(crop, size), 0.0, 1.0)
    row, col = centre_of_mass(fitted)
    top = min(max(round(CENTRE_OF_MASS - row), 0), MNIST_SIZE - size[0])
    left = min(max(round(CENTRE_OF_MASS - col), 0), MNIST_SIZE - size[1])
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    out[top : top + size[0], left : left + size[1]] = fitted
    return torch.from_numpy(out)[None]


# --------------------------------------------------------------------------------------------
# Image files


def load_image_file(
    path: str | os.PathLike, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """An image file as a float32 2-D array in [0, 1], ink bright on a dark background.

    Raster formats only (``RASTER_FORMATS``: never PostScript, whatever the file's name); colour
    becomes luminance; transparency is laid on the background that contrasts with the ink; a light
    background (judged by the median of the border pixels) is inverted, so a scan of dark ink on
    paper works like a drawing. The background level is then subtracted and the contrast stretched
    to full scale. A large image is reduced to about ``WORK_PIXELS`` before any float copy, so that
    memory stays bounded. Raises ``ImageFileError`` with the reason for a missing, unreadable,
    truncated or too large file.
    """
    path = Path(path)
    name = shown(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageFileError(f"{name}: cannot read it ({err.strerror or err})") from err
    if not path.is_file():
        raise ImageFileError(f"{name}: not a file")
    if size > max_bytes:
        raise ImageFileError(f"{name}: {size / 1e6:.0f} MB is too large for a digit (limit {max_bytes / 1e6:.0f} MB)")
    try:
        with warnings.catch_warnings(), Image.open(path, formats=RASTER_FORMATS) as img:
            warnings.simplefilter("ignore")  # a damaged file's metadata warnings: it reads, or its error says why
            width, height = img.size
            if width * height > max_pixels:  # checked from the header, before decoding
                raise ImageFileError(f"{name}: {width}x{height} pixels is too large for a digit "
                                     f"(limit {max_pixels / 1e6:.0f} megapixels)")
            img.load()  # decodes now: a truncated or corrupt file fails here
            gray = _luminance(_reduced(_upright(img)))
    except ImageFileError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"{name}: not an image this program reads "
                             f"(raster formats only: {', '.join(RASTER_FORMATS)})") from err
    except MemoryError as err:
        raise ImageFileError(f"{name}: too large to decode in memory") from err
    except Exception as err:  # noqa: BLE001 - any decoder's failure on a hostile file is this file's problem
        raise ImageFileError(f"{name}: unreadable or truncated image ({_one_line(err)})") from err
    if gray.size == 0:
        raise ImageFileError(f"{name}: the image is empty (0 pixels)")
    return _ink_on_dark(gray)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return shown(text[:200])


def _upright(img):
    """The image turned as its EXIF orientation says; a damaged EXIF block is ignored."""
    with contextlib.suppress(Exception):  # a fuzzed EXIF block (struct.error, ...) only loses the turn
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of a large image
    return img


# Modes Image.reduce cannot take, and the mode each is read in instead.
_REDUCIBLE = {"1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}


def _reduced(img):
    """``img`` in a mode that keeps its luminance, box-reduced to at most ~``WORK_PIXELS``."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("LAB", "HSV"):  # lightness / value is the luminance
        img = img.getchannel(0)
    elif img.mode in _REDUCIBLE:
        img = img.convert(_REDUCIBLE[img.mode])
    pixels = img.width * img.height
    if pixels > WORK_PIXELS:
        img = img.reduce(math.ceil(math.sqrt(pixels / WORK_PIXELS)))
    return img


def _luminance(img) -> np.ndarray:
    """Grayscale float32 in [0, 1] from any Pillow mode."""
    if img.mode in ("I", "F"):  # 32-bit integer or float: scale by the range used
        array = np.asarray(img, dtype=np.float64)  # float64: a range near float32's limit stays finite
        finite = np.isfinite(array)
        if not finite.all():  # a NaN or infinite pixel takes the level of the rest
            array = np.where(finite, array, np.median(array[finite]) if finite.any() else 0.0)
        low, high = float(array.min()), float(array.max())
        return ((array - low) / (high - low)).astype(np.float32) if high > low else np.zeros(array.shape, np.float32)
    if "A" in img.getbands():
        la = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        lum, alpha = la[..., 0], la[..., 1]
        opaque = alpha > 0.5
        light_ink = bool(opaque.any()) and float(lum[opaque].mean()) > 0.5
        background = 0.0 if light_ink else 1.0
        return lum * alpha + background * (1.0 - alpha)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def _ink_on_dark(gray: np.ndarray) -> np.ndarray:
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:
        gray, background = 1.0 - gray, 1.0 - background
    ink = np.clip(gray - background, 0.0, None)
    peak = float(ink.max())
    return (ink / peak).astype(np.float32) if peak > 0 else np.zeros_like(gray, dtype=np.float32)
