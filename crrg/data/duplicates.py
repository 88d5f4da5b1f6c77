"""The same film in two sources: found by pixels, so splits can keep patients apart across sources.

NIH ChestX-ray14 and COVID-19 Radiography share an origin: the latter's "Normal" class holds RSNA
Pneumonia Challenge images, which are NIH ChestX-ray14 films (resized to 224 px). Neither
publishes the other's ids, so a film in both is found by its pixels: each image shrunk to a
``THUMB`` x ``THUMB`` grey thumbnail, standardised, and compared by correlation; a pair at
``SAME_FILM`` or above is the same film. On the shared data the NIH-vs-COVID-radiography
correlations fall in two groups: 12 pairs at >= 0.9999, then nothing between 0.97 and 0.999
(different films of different patients reach about 0.96; the median nearest other NIH film is 0.89).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from crrg.data.records import Record

THUMB = 32
SAME_FILM = 0.99
#: sources whose films may reappear in other sources (source -> the sources to search)
SHARED_ORIGIN: dict[str, tuple[str, ...]] = {"nih_cxr14": ("covid_radiography",)}


def thumbnail(path: Path) -> np.ndarray:
    """[THUMB * THUMB] float32: the grey thumbnail, zero mean, unit norm."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.BILINEAR), dtype=np.float32)
    flat = pixels.ravel() - pixels.mean()
    return flat / (np.linalg.norm(flat) + 1e-6)


def _stack(records: Sequence[Record]) -> np.ndarray:
    """[N, THUMB * THUMB] thumbnails of records that have an image."""
    return np.stack([thumbnail(r.image) for r in records if r.image is not None])


def same_films(records: Sequence[Record], threshold: float = SAME_FILM) -> dict[str, list[str]]:
    """{key of a record of a :data:`SHARED_ORIGIN` source: keys of the same film in the sources
    searched for it} (records with an image only; sources absent from ``records`` are skipped)."""
    out: dict[str, list[str]] = {}
    for source, others in SHARED_ORIGIN.items():
        mine = [r for r in records if r.source == source and r.image is not None]
        theirs = [r for r in records if r.source in others and r.image is not None]
        if not mine or not theirs:
            continue
        corr = _stack(mine) @ _stack(theirs).T  # [M, T]
        for i, j in zip(*np.nonzero(corr >= threshold)):
            out.setdefault(mine[i].key, []).append(theirs[j].key)
    return out
