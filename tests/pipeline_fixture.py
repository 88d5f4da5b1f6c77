"""A tiny random CRRG model whose detector finds regions (for pipeline / CLI / demo tests)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crrg.detector import DetectorConfig
from crrg.model import CRRGModel, get_config, replace


def tiny_model(seed: int = 0, detect_all: bool = True) -> CRRGModel:
    """The tiny variant; with ``detect_all`` background never wins, so several regions are found."""
    torch.manual_seed(seed)
    config = replace(get_config("tiny"), detector__detect_score_thresh=0.0)
    model = CRRGModel(config).eval()
    if detect_all:
        with torch.no_grad():
            model.detector.roi_heads.box_predictor.cls_score.bias[0] = -30.0
    return model


def tiny_detector_config(**overrides: object) -> DetectorConfig:
    """A small, fast detector configuration (128 px, 32-dim features)."""
    base = DetectorConfig(
        image_size=128, feature_dim=32, fpn_channels=32,
        anchor_sizes=((16, 24, 32), (48, 64, 96), (128, 160, 192)),
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=64, rpn_batch_size_per_image=64,
    )
    return dataclasses.replace(base, **overrides)


def chest_like_png(path: Path, size: tuple[int, int] = (300, 240), seed: int = 0) -> Path:
    """A grayscale image with two darker 'lungs' (width x height = ``size``)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w), 190.0)
    for cx in (0.3 * w, 0.7 * w):
        img[((xx - cx) / (0.17 * w)) ** 2 + ((yy - h / 2) / (0.33 * h)) ** 2 < 1] = 70
    img += np.random.default_rng(seed).normal(0, 8, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster, and far faster on a shared, oversubscribed CPU. Use it
    with ``pytestmark = pytest.mark.usefixtures("one_thread")`` after importing it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def labelled_films(root: Path, films: list[tuple[str, str, dict]]) -> tuple[Path, Path]:
    """A prepared folder of chest-like films and tiny weights under ``root``: ``films`` are
    (source, split, labels), one generated PNG each (``SOURCE/imgK.png``), no regions or
    sentences. Returns (prepared folder, weights folder)."""
    import json

    data, prep, weights = root / "data", root / "prepared", root / "weights"
    prep.mkdir(parents=True)
    lines = []
    for k, (source, split, labels) in enumerate(films):
        ref = f"{source}/img{k}.png"
        (data / source).mkdir(parents=True, exist_ok=True)
        chest_like_png(data / ref, size=(200, 180), seed=k)
        lines.append({"image": ref, "source": source, "split": split, "labels": labels, "patient": str(k)})
    (prep / "images.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for name in ("regions", "sentences"):
        (prep / f"{name}.jsonl").write_text("")
    (prep / "meta.json").write_text(json.dumps({"data_root": str(data)}))
    tiny_model(seed=0).save_pretrained(weights)
    return prep, weights
