"""Things that are not digits, made by the project itself, for the novelty detector's checks
(tests, ``benchmarks/novelty.py``, the choice of detector when one is fitted). No Qt.

Every image goes through the app's preprocessing (``images.preprocess``) from a 280x280 canvas
with bright ink on black, as a drawing does, except the inverted digits, which are MNIST test
digits turned negative in the net's input space (preprocessing would crop them back to digits).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cnn_lightning.images import EmptyImageError, preprocess

CANVAS = 280
LETTERS = "AEHKMRWXkm"
SYMBOLS = "#@%&?"
FONT_DIRS = (Path("/usr/share/fonts"),)
KINDS = ("letter", "symbol", "strokes", "noise", "dot", "inverted")


@dataclass(frozen=True)
class NonDigits:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1]
    kinds: tuple[str, ...]  # one of KINDS per image
    names: tuple[str, ...]  # what each image is: "A in DejaVuSans", "noise 3", ...


def fonts(limit: int = 12) -> list[tuple[str, ImageFont.ImageFont]]:
    """Up to ``limit`` fonts Pillow can load: its default font, then TrueType files found under
    /usr/share/fonts (sorted, so the set is the same on every run)."""
    found: list[tuple[str, ImageFont.ImageFont]] = []
    with contextlib.suppress(OSError, TypeError, ValueError):  # an old Pillow or one without FreeType
        found.append(("Pillow default", ImageFont.load_default(size=200)))
    paths = sorted(p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*.ttf"))
    for path in paths:
        if len(found) >= limit:
            break
        try:
            found.append((path.stem, ImageFont.truetype(str(path), 200)))
        except OSError:
            continue
    return found


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (CANVAS, CANVAS), 0)
    return image, ImageDraw.Draw(image)


def render_glyph(char: str, font: ImageFont.ImageFont) -> np.ndarray:
    """``char`` in white, centred on a black 280x280 canvas, as uint8."""
    image, draw = _canvas()
    draw.text((CANVAS / 2, CANVAS / 2), char, fill=255, font=font, anchor="mm")
    return np.asarray(image)


def random_strokes(rng: np.random.Generator) -> np.ndarray:
    """Two to four random pen strokes, each a polyline of a few points, 12 to 28 pixels wide."""
    image, draw = _canvas()
    for _ in range(int(rng.integers(2, 5))):
        points = [tuple(float(v) for v in rng.uniform(20, CANVAS - 20, 2)) for _ in range(int(rng.integers(2, 5)))]
        draw.line(points, fill=255, width=int(rng.integers(12, 29)), joint="curve")
    return np.asarray(image)


def noise(rng: np.random.Generator) -> np.ndarray:
    """Uniform noise over a random rectangle of the canvas."""
    image = np.zeros((CANVAS, CANVAS), np.uint8)
    top, left = (int(v) for v in rng.integers(0, CANVAS // 3, 2))
    bottom, right = (int(v) for v in rng.integers(2 * CANVAS // 3, CANVAS, 2))
    image[top:bottom, left:right] = rng.integers(0, 256, (bottom - top, right - left))
    return image


def dot(rng: np.random.Generator) -> np.ndarray:
    """A blank canvas but for one round dot, 10 to 40 pixels across."""
    image, draw = _canvas()
    x, y = rng.uniform(40, CANVAS - 40, 2)
    r = float(rng.uniform(5, 20))
    draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(image)


def make_nondigits(seed: int = 0, per_kind: int = 40, font_limit: int = 12,
                   digits: np.ndarray | None = None) -> NonDigits:
    """Rendered letters (``LETTERS``) and symbols (``SYMBOLS``) in each of ``fonts(font_limit)``;
    ``per_kind`` random strokes, noise fields and dots (``seed``); and, given ``digits`` (uint8 or
    [0, 1] (N, 28, 28) MNIST images), up to ``per_kind`` of them inverted."""
    rng = np.random.default_rng(seed)
    images: list[torch.Tensor] = []
    kinds: list[str] = []
    names: list[str] = []

    def add(array: np.ndarray, kind: str, name: str) -> None:
        try:
            images.append(preprocess(array))
        except EmptyImageError:  # a glyph the font lacks (rendered as nothing)
            return
        kinds.append(kind)
        names.append(name)

    for font_name, font in fonts(font_limit):
        for kind, chars in (("letter", LETTERS), ("symbol", SYMBOLS)):
            for char in chars:
                add(render_glyph(char, font), kind, f"{char} in {font_name}")
    for kind, make in (("strokes", random_strokes), ("noise", noise), ("dot", dot)):
        for i in range(per_kind):
            add(make(rng), kind, f"{kind} {i}")
    if digits is not None:
        chosen = np.asarray(digits)[:per_kind].astype(np.float32)
        if chosen.max(initial=0) > 1:
            chosen = chosen / 255.0
        for i, digit in enumerate(chosen):
            images.append(torch.from_numpy(1.0 - digit)[None])
            kinds.append("inverted")
            names.append(f"inverted digit {i}")
    return NonDigits(torch.stack(images).float(), tuple(kinds), tuple(names))
