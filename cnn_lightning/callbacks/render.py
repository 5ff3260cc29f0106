"""Pictures for TensorBoard and the evaluation report: captioned digit grids, the confusion
matrix, and the small tensor/image helpers they share. Pure functions, no Lightning.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


@functools.cache
def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font when Pillow has FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def to_hwc(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) to (N, C, size, size), nearest: small maps stay crisp pixels, not blur."""
    return F.interpolate(images.float(), size=(size, size), mode="nearest")


def minmax(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    low = x.amin(dim=dims, keepdim=True)
    high = x.amax(dim=dims, keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-8)


def caption_grid(images: torch.Tensor, lines: list[tuple[str, str]], scale: int = 3, ncol: int = 8) -> Image.Image:
    """Grey digits (N, 1, 28, 28) in [0, 1], upscaled, each with two caption lines below."""
    size = images.shape[-1] * scale
    cell_w, cell_h, pad = size, size + 30, 4
    ncol = max(1, min(ncol, len(images)))
    nrow = max(1, math.ceil(len(images) / ncol))
    canvas = Image.new("RGB", (ncol * (cell_w + pad) + pad, nrow * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (upscale(images, size)[:, 0] * 255).round().clamp(0, 255).byte().cpu().numpy()
    for i, (digit, (top, bottom)) in enumerate(zip(pixels, lines, strict=True)):
        x = pad + (i % ncol) * (cell_w + pad)
        y = pad + (i // ncol) * (cell_h + pad)
        canvas.paste(Image.fromarray(digit, "L"), (x, y))
        draw.text((x + 2, y + size + 1), top, fill=(0, 0, 0), font=font(12))
        draw.text((x + 2, y + size + 15), bottom, fill=(180, 0, 0), font=font(12))
    return canvas


def render_confusion(matrix: torch.Tensor, cell: int = 44) -> Image.Image:
    """The confusion matrix (rows: label, columns: prediction) with every count printed.

    The diagonal is blue by recall; off-diagonal cells are red relative to the largest error,
    so the common confusions stand out even when they are a fraction of a percent.
    """
    m = matrix.cpu().long()
    n = m.shape[0]
    left, top, bottom = 56, 52, 34
    width, height = left + n * cell + 8, top + n * cell + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    small, big = font(13), font(14)
    row_sum = m.sum(1).clamp_min(1)
    max_error = max(int((m - torch.diag(torch.diag(m))).max()), 1)
    for i in range(n):
        for j in range(n):
            count = int(m[i, j])
            x, y = left + j * cell, top + i * cell
            if i == j:
                level = count / int(row_sum[i])
                fill = (int(255 - 200 * level), int(255 - 140 * level), 255)
            else:
                level = count / max_error
                fill = (255, int(255 - 200 * level), int(255 - 200 * level))
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(210, 210, 210))
            text_color = (255, 255, 255) if level > 0.6 else (0, 0, 0)
            draw.text((x + cell / 2, y + cell / 2), str(count), fill=text_color, font=small, anchor="mm")
        draw.text((left + i * cell + cell / 2, top - 10), str(i), fill=(0, 0, 0), font=big, anchor="mm")
        draw.text((left - 12, top + i * cell + cell / 2), str(i), fill=(0, 0, 0), font=big, anchor="mm")
    draw.text((left + n * cell / 2, 14), "predicted", fill=(0, 0, 0), font=big, anchor="mm")
    draw.text((4, top - 30), "label", fill=(0, 0, 0), font=big)
    total = int(m.sum())
    accuracy = int(torch.diag(m).sum()) / max(total, 1)
    draw.text((left, top + n * cell + 10), f"{total} images, accuracy {accuracy:.2%}", fill=(0, 0, 0), font=big)
    return image
