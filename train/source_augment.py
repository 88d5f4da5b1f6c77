"""Augmentations that erase what tells one source from another (scanner resolution, compression,
sharpness, grey-level curve, borders, burnt-in marks) while keeping the lungs, after DeGrave et
al. 2021. Applied to a decoded grayscale PIL image before preprocessing; used to cache augmented
training features (``train.cache_features --augment``) and measured leave-one-source-out in
``train.train_heads``.

Each call applies a random subset: down- and up-sampling, JPEG re-encoding, Gaussian blur,
gamma / contrast / histogram equalisation (PIL's global equalisation, in place of CLAHE, which
would need OpenCV), a random crop, a pad or letterbox border, and text-like marks in a corner.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps


def _resample(image: Image.Image, rng: random.Random) -> Image.Image:
    w, h = image.size
    side = rng.choice((192, 224, 256, 384, 512))
    scale = side / max(w, h)
    small = image.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.BILINEAR)
    return small.resize((w, h), rng.choice((Image.BILINEAR, Image.BICUBIC, Image.NEAREST)))


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    """The image saved as a JPEG of this quality and read back (grayscale)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("L")


def _jpeg(image: Image.Image, rng: random.Random) -> Image.Image:
    return jpeg_round_trip(image, rng.randint(20, 85))


def _blur(image: Image.Image, rng: random.Random) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5) * max(image.size) / 512))


def _tone(image: Image.Image, rng: random.Random) -> Image.Image:
    if rng.random() < 0.3:
        return ImageOps.equalize(image)
    x = np.asarray(image, dtype=np.float32) / 255
    x = np.clip(x ** rng.uniform(0.6, 1.6), 0, 1)
    mean = x.mean()
    x = np.clip((x - mean) * rng.uniform(0.7, 1.3) + mean, 0, 1)
    return Image.fromarray((x * 255).astype(np.uint8))


def _crop(image: Image.Image, rng: random.Random) -> Image.Image:
    w, h = image.size
    f = rng.uniform(0.85, 1.0)
    cw, ch = int(w * f), int(h * f)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return image.crop((x, y, x + cw, y + ch))


def _border(image: Image.Image, rng: random.Random) -> Image.Image:
    w, h = image.size
    fill = rng.choice((0, 0, 255, rng.randint(0, 255)))
    if rng.random() < 0.5:  # letterbox to a square
        side = max(w, h)
        canvas = Image.new("L", (side, side), fill)
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas
    pad = [int(rng.uniform(0, 0.08) * s) for s in (w, h, w, h)]
    return ImageOps.expand(image, border=tuple(pad), fill=fill)


def _marks(image: Image.Image, rng: random.Random) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for _ in range(rng.randint(1, 3)):
        x = rng.choice((rng.randint(0, w // 6), rng.randint(4 * w // 6, max(4 * w // 6, w - 40))))
        y = rng.choice((rng.randint(0, h // 8), rng.randint(7 * h // 8 - 10, max(7 * h // 8 - 10, h - 14))))
        text = rng.choice(("L", "R", "AP", "PA", "PORTABLE", "ERECT", "SUPINE", f"{rng.randint(1, 99):02d}"))
        draw.text((x, y), text, fill=rng.choice((255, 230, 0)))
    return image


STEPS = (_resample, _jpeg, _blur, _tone, _crop, _border, _marks)


def erase_source_cues(image: Image.Image, rng: random.Random, p: float = 0.5) -> Image.Image:
    """A random subset (each with probability ``p``) of :data:`STEPS`, in a fixed order."""
    image = image.convert("L")
    for step in STEPS:
        if rng.random() < p:
            image = step(image, rng)
    return image
