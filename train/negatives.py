"""Inputs that are not frontal chest radiographs, built from what this machine has, for the input
check (``train.train_input_check``). Every generator returns a grayscale or RGB PIL image and
its kind; :data:`KINDS` maps each kind to the checker class it should get.

- ``natural``: the photos and pictures matplotlib ships (Grace Hopper, logos), random crops of them;
- ``photo``: the colour photographs scikit-learn ships (``load_sample_images``), random crops;
- ``mri``: matplotlib's MRI brain slice (``s1045.ima.gz``) and its elevation maps (``topobathy``);
- ``noise``: uniform, Gaussian, salt-and-pepper noise; ``smooth``: blurred noise, gradients;
- ``pattern``: stripes, checkerboards, circles; ``text``: rendered text pages and charts;
- ``crop``: small crops of a radiograph's corners that hold no chest;
- ``rotated``: radiographs turned 90, 180 or 270 degrees; ``inverted``: radiographs with the grey
  scale flipped (how a mishandled MONOCHROME1 DICOM looks).

Positives come from real radiographs: :func:`resized` (longest side 224..2048 px) and
:func:`varied` (contrast, borders, burnt-in marks, ECG electrodes / wires / tubes (:func:`leads`),
tilt, crop, blur, JPEG: other hospitals' films).
"""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from train.source_augment import jpeg_round_trip

KINDS: dict[str, str] = {
    "natural": "not_radiograph", "photo": "not_radiograph", "mri": "not_radiograph", "noise": "not_radiograph",
    "smooth": "not_radiograph", "pattern": "not_radiograph", "text": "not_radiograph",
    "crop": "not_radiograph", "rotated": "rotated", "inverted": "inverted",
}
SYNTHETIC = ("natural", "photo", "mri", "noise", "smooth", "pattern", "text")
FROM_RADIOGRAPH = ("crop", "rotated", "inverted")


def _sample_dir() -> Path:
    import matplotlib.cbook as cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).parent


def _size(rng: random.Random) -> int:
    return rng.choice((224, 320, 512, 768, 1024))


def natural(rng: random.Random) -> Image.Image:
    folder = _sample_dir()
    name = rng.choice(["grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"])
    with Image.open(folder / name) as im:
        image = im.convert("RGB")
    w, h = image.size
    cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    return image.resize((_size(rng), _size(rng)))


def photo(rng: random.Random) -> Image.Image:
    """Colour photographs scikit-learn ships (``load_sample_images``: a temple, a flower), cropped."""
    from sklearn.datasets import load_sample_images

    pictures = load_sample_images().images
    data = pictures[rng.randrange(len(pictures))]
    h, w = data.shape[:2]
    ch, cw = int(h * rng.uniform(0.3, 1.0)), int(w * rng.uniform(0.3, 1.0))
    y, x = rng.randint(0, h - ch), rng.randint(0, w - cw)
    image = Image.fromarray(data[y:y + ch, x:x + cw])
    if rng.random() < 0.3:
        image = image.convert("L")
    return image.resize((_size(rng), _size(rng)))


def mri(rng: random.Random) -> Image.Image:
    folder = _sample_dir()
    if rng.random() < 0.5:
        with gzip.open(folder / "s1045.ima.gz") as f:
            data = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float32)
    else:
        with np.load(folder / rng.choice(["topobathy.npz", "jacksboro_fault_dem.npz"])) as z:
            data = np.asarray(z[z.files[0]], dtype=np.float32)
    data = (data - data.min()) / max(1e-6, float(np.ptp(data)))
    image = Image.fromarray((data * 255).astype(np.uint8))
    return image.rotate(rng.choice((0, 90, 180, 270)), expand=True).resize((_size(rng),) * 2)


def noise(rng: random.Random) -> Image.Image:
    s = _size(rng)
    g = np.random.default_rng(rng.randrange(2**31))
    kind = rng.choice(("uniform", "gaussian", "salt"))
    if kind == "uniform":
        data = g.uniform(0, 255, (s, s))
    elif kind == "gaussian":
        data = g.normal(rng.uniform(60, 190), rng.uniform(10, 70), (s, s))
    else:
        data = np.where(g.random((s, s)) < rng.uniform(0.05, 0.5), 255.0, 0.0)
    return Image.fromarray(np.clip(data, 0, 255).astype(np.uint8))


def smooth(rng: random.Random) -> Image.Image:
    s = _size(rng)
    if rng.random() < 0.5:
        return noise(rng).resize((s, s)).filter(ImageFilter.GaussianBlur(rng.uniform(4, 30)))
    y, x = np.mgrid[0:s, 0:s] / s
    a, b = rng.uniform(-1, 1), rng.uniform(-1, 1)
    data = a * x + b * y
    data = (data - data.min()) / max(1e-6, float(np.ptp(data)))
    return Image.fromarray((data * 255).astype(np.uint8))


def pattern(rng: random.Random) -> Image.Image:
    s = _size(rng)
    image = Image.new("L", (s, s), rng.randint(0, 255))
    draw = ImageDraw.Draw(image)
    kind = rng.choice(("stripes", "checker", "circles"))
    step = rng.randint(8, max(9, s // 6))
    if kind == "stripes":
        for i in range(0, 2 * s, step * 2):
            draw.line([(i, 0), (i - s * rng.uniform(0, 1), s)], fill=rng.randint(0, 255), width=step)
    elif kind == "checker":
        for y in range(0, s, step):
            for x in range(0, s, step):
                if (x // step + y // step) % 2:
                    draw.rectangle([x, y, x + step, y + step], fill=rng.randint(0, 255))
    else:
        for _ in range(rng.randint(3, 30)):
            cx, cy, r = rng.randint(0, s), rng.randint(0, s), rng.randint(5, s // 3)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rng.randint(0, 255))
    return image


WORDS = ("patient report chest radiograph findings impression normal lungs clear heart size "
         "invoice total amount date page figure table results method the of and to in is").split()


def text(rng: random.Random) -> Image.Image:
    s = _size(rng)
    if rng.random() < 0.3:
        return _chart(rng, s)
    image = Image.new("L", (s, s), rng.choice((255, 245, 230, 0, 30)))
    ink = 0 if image.getpixel((0, 0)) > 128 else 255
    draw = ImageDraw.Draw(image)
    y = rng.randint(4, 30)
    while y < s - 12:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        draw.text((rng.randint(4, 30), y), line, fill=ink)
        y += rng.randint(12, 24)
    return image


def _chart(rng: random.Random, s: int) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=max(56, s // 4))
    x = np.arange(20)
    (ax.bar if rng.random() < 0.5 else ax.plot)(x, np.random.default_rng(rng.randrange(999)).random(20))
    ax.set_title("results")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("L")


def crop(radiograph: Image.Image, rng: random.Random) -> Image.Image:
    """A corner crop (a fifth of the width) of a radiograph: border, shoulder or abdomen, no chest."""
    w, h = radiograph.size
    cw, ch = int(w * rng.uniform(0.12, 0.22)), int(h * rng.uniform(0.12, 0.22))
    x = rng.choice((0, w - cw))
    y = rng.choice((0, h - ch))
    return radiograph.crop((x, y, x + cw, y + ch)).resize((_size(rng),) * 2)


def rotated(radiograph: Image.Image, rng: random.Random) -> Image.Image:
    return radiograph.rotate(rng.choice((90, 180, 270)), expand=True)


def inverted(radiograph: Image.Image, rng: random.Random) -> Image.Image:
    return ImageOps.invert(radiograph.convert("L"))


GENERATORS: dict[str, Callable[[random.Random], Image.Image]] = {
    "natural": natural, "photo": photo, "mri": mri, "noise": noise, "smooth": smooth, "pattern": pattern, "text": text}
FROM: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "crop": crop, "rotated": rotated, "inverted": inverted}


def varied(radiograph: Image.Image, rng: random.Random) -> Image.Image:
    """A real radiograph as another hospital might send it (still a positive): gamma and contrast,
    black letterbox borders, a burnt-in side marker or text line, a small tilt, a tighter crop,
    blur, and JPEG re-encoding, each with some probability."""
    image = radiograph.convert("L")
    w, h = image.size
    if rng.random() < 0.5:  # tighter field of view
        f = rng.uniform(0.8, 0.95)
        x, y = rng.randint(0, int(w * (1 - f))), rng.randint(0, int(h * (1 - f)))
        image = image.crop((x, y, x + int(w * f), y + int(h * f)))
    if rng.random() < 0.6:  # gamma and contrast
        gamma, lo, hi = rng.uniform(0.6, 1.6), rng.uniform(0, 40), rng.uniform(215, 255)
        lut = [int(lo + (hi - lo) * (i / 255) ** gamma) for i in range(256)]
        image = image.point(lut)
    if rng.random() < 0.3:
        image = image.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, fillcolor=0)
    if rng.random() < 0.4:  # letterbox / pad borders
        w, h = image.size
        pad = [int(v * rng.uniform(0, 0.15)) for v in (w, h, w, h)]
        canvas = Image.new("L", (w + pad[0] + pad[2], h + pad[1] + pad[3]), rng.choice((0, 0, 20, 255)))
        canvas.paste(image, (pad[0], pad[1]))
        image = canvas
    if rng.random() < 0.4:
        image = leads(image, rng)
    if rng.random() < 0.5:  # burnt-in marks
        draw = ImageDraw.Draw(image)
        w, h = image.size
        for _ in range(rng.randint(1, 3)):
            mark = rng.choice(("L", "R", "PA", "AP", "PORTABLE", "SUPINE", "12:04", "ERECT"))
            draw.text((rng.randint(0, max(1, w - 60)), rng.randint(0, max(1, h - 20))), mark,
                      fill=rng.choice((0, 255)))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return jpeg_round_trip(image, rng.randint(40, 95))


def leads(radiograph: Image.Image, rng: random.Random) -> Image.Image:
    """The radiograph with bright ECG electrodes (discs, some with a dark centre), their wires,
    and sometimes a tube down the middle, as on films of monitored patients (still a positive)."""
    image = radiograph.convert("L").copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    bright = rng.randint(215, 255)
    for _ in range(rng.randint(2, 7)):
        r = max(2, int(min(w, h) * rng.uniform(0.012, 0.035)))
        cx, cy = int(w * rng.uniform(0.1, 0.9)), int(h * rng.uniform(0.1, 0.85))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=bright)
        if rng.random() < 0.5:
            draw.ellipse([cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2], fill=rng.randint(60, 160))
        if rng.random() < 0.7:  # a wire running off the electrode
            points = [(cx, cy)]
            for _ in range(rng.randint(2, 4)):
                x, y = points[-1]
                points.append((x + int(w * rng.uniform(-0.25, 0.25)), y + int(h * rng.uniform(-0.3, 0.3))))
            draw.line(points, fill=bright, width=max(1, r // 4))
    if rng.random() < 0.4:  # endotracheal / nasogastric tube
        x0 = int(w * rng.uniform(0.45, 0.55))
        draw.line([(x0, 0), (x0 + int(w * rng.uniform(-0.05, 0.05)), int(h * rng.uniform(0.3, 0.8)))],
                  fill=bright, width=max(1, w // 150))
    return image


def resized(radiograph: Image.Image, side: int) -> Image.Image:
    """The radiograph with its longest side ``side`` px (224 .. 2048), re-encoded as JPEG."""
    w, h = radiograph.size
    scale = side / max(w, h)
    image = radiograph.convert("L").resize((max(1, round(w * scale)), max(1, round(h * scale))))
    return jpeg_round_trip(image, 90)
