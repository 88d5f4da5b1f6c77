"""A tiny generated ``train.prepare`` folder and a tiny model for the training tests.

Images are drawn here (no real data): a dark background with a few bright rectangles at the
positions of seven regions (jittered); "pneumonia" images get bright blobs inside both lungs.
The jsonl files follow :mod:`train.preparation`'s formats. ``paired=True`` adds report sentences that
belong to the images (``image`` set, regions given), as MIMIC-CXR + Chest ImaGenome would.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from crrg.classifier import ClassifierConfig
from crrg.clip import get_clip_config
from crrg.decoder import DecoderConfig
from crrg.model import CRRGConfig, CRRGModel
from crrg.regions import LUNG_REGIONS, REGIONS
from pipeline_fixture import tiny_detector_config

# region -> (x1, y1, x2, y2) as fractions of the image, and the drawn intensity
LAYOUT: dict[str, tuple[tuple[float, float, float, float], float]] = {
    "right lung": ((0.08, 0.15, 0.42, 0.85), 0.55),
    "left lung": ((0.58, 0.15, 0.92, 0.85), 0.55),
    "spine": ((0.45, 0.04, 0.55, 0.96), 0.95),
    "cardiac silhouette": ((0.40, 0.50, 0.75, 0.82), 0.8),
    "mediastinum": ((0.38, 0.18, 0.62, 0.82), 0.7),
    "right costophrenic angle": ((0.08, 0.72, 0.22, 0.85), 0.35),
    "left costophrenic angle": ((0.78, 0.72, 0.92, 0.85), 0.35),
}

SENTENCES: list[tuple[str, list[str], bool, list[str]]] = [
    ("The lungs are clear.", ["right lung", "left lung"], False, ["no finding"]),
    ("No focal consolidation.", ["right lung", "left lung"], False, ["no finding"]),
    ("There is a right lung opacity.", ["right lung"], True, ["lung opacity"]),
    ("Focal consolidation in the left lung.", ["left lung"], True, ["consolidation"]),
    ("Bilateral airspace opacities.", ["right lung", "left lung"], True, ["lung opacity"]),
    ("The heart size is normal.", ["cardiac silhouette"], False, ["no finding"]),
    ("The heart is enlarged.", ["cardiac silhouette"], True, ["cardiomegaly"]),
    ("No pleural effusion.", ["right costophrenic angle", "left costophrenic angle"], False, ["no finding"]),
    ("The mediastinum is unremarkable.", ["mediastinum"], False, ["no finding"]),
    ("Degenerative changes of the spine.", ["spine"], True, []),
    ("The spine is intact.", ["spine"], False, ["no finding"]),
    ("Pacemaker in place.", ["cardiac silhouette"], False, ["no finding", "support devices"]),
    ("Right lung airspace disease consistent with pneumonia.", ["right lung"], True,
     ["lung opacity", "pneumonia"]),
]


def _draw(size: tuple[int, int], abnormal: bool, rng: random.Random) -> tuple[np.ndarray, dict]:
    w, h = size
    pixels = np.full((h, w), 0.08, dtype=np.float32)
    pixels += np.random.default_rng(rng.randrange(2**31)).normal(0, 0.02, (h, w)).astype(np.float32)
    boxes = {}
    for name, ((x1, y1, x2, y2), value) in LAYOUT.items():
        jx, jy = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
        box = [max(0.0, (x1 + jx) * w), max(0.0, (y1 + jy) * h), min(w, (x2 + jx) * w), min(h, (y2 + jy) * h)]
        box = [round(v, 2) for v in box]
        pixels[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = value
        boxes[name] = box
    if abnormal:
        for name in ("right lung", "left lung"):
            x1, y1, x2, y2 = boxes[name]
            cx, cy = rng.uniform(x1 + 5, x2 - 5), rng.uniform(y1 + 5, y2 - 5)
            yy, xx = np.mgrid[0:h, 0:w]
            pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < (0.12 * w) ** 2] = 1.0
    return np.clip(pixels, 0, 1), boxes


def _status(abnormal: bool) -> dict[str, str]:
    if not abnormal:
        return dict.fromkeys(REGIONS, "normal")
    status = dict.fromkeys(REGIONS, "unknown")
    status.update(dict.fromkeys(LUNG_REGIONS, "abnormal"))
    return status


def _labels(abnormal: bool) -> dict[str, int]:
    return {"pneumonia": 1, "no finding": 0} if abnormal else {"pneumonia": 0, "no finding": 1}


def make_prepared(root: Path, paired: bool = False, boxed: int = 8, unboxed: int = 6, seed: int = 0) -> Path:
    """Write images under ``root/data`` and the jsonl files under ``root/prepared``."""
    rng = random.Random(seed)
    data, out = root / "data", root / "prepared"
    (data / "imgs").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    regions, images, sentences = [], [], []
    specs = [("boxed", i, "val" if i >= boxed else "train") for i in range(boxed + 2)]
    specs += [("unboxed", i, "test" if i >= unboxed else "train") for i in range(unboxed + 1)]
    for kind, i, split in specs:
        abnormal = i % 2 == 1
        size = ((160, 128) if i % 3 else (128, 160)) if kind == "boxed" else (100, 100)
        pixels, boxes = _draw(size, abnormal, rng)
        ref = f"imgs/{kind}_{i}.png"
        Image.fromarray((pixels * 255).astype(np.uint8)).save(data / ref)
        base = {"image": ref, "source": "jsrt_scr" if kind == "boxed" else "kermany_pneumonia",
                "width": size[0], "height": size[1], "split": split, "labels": _labels(abnormal),
                "patient": f"{kind}{i}"}
        if kind == "boxed":
            names = list(LAYOUT) if i % 4 else ["right lung", "left lung"]  # some partial
            regions.append({**base, "boxes": {n: boxes[n] for n in names}, "annotated": names,
                            "derived": names[2:3]})
        line = {**base, "abnormal": abnormal, "region_status": _status(abnormal), "licence": "generated"}
        if i % 2 == 0 or kind == "unboxed":
            line.update({"text": "fever and cough, pneumonia" if abnormal else "routine check, healthy",
                         "text_kind": "clinical_notes"})
        images.append(line)
        if paired:
            chosen = [s for s in SENTENCES if (s[2] == abnormal or s[0].startswith("The heart size"))][:4]
            for k, (text, regs, abn, findings) in enumerate(chosen):
                sentences.append({"report": f"P{kind}{i}", "source": "mimic_cxr", "split": split, "image": ref,
                                  "index": k, "text": text, "regions": regs, "abnormal": abn,
                                  "findings": findings})
    for r in range(24):
        chosen = rng.sample(SENTENCES, 4)
        for k, (text, regs, abn, findings) in enumerate(chosen):
            sentences.append({"report": f"CXR{r}", "source": "iu_xray", "split": "val" if r >= 20 else "train",
                              "image": None, "index": k, "text": text, "regions": regs, "abnormal": abn,
                              "findings": findings})
    for name, lines in (("regions", regions), ("images", images), ("sentences", sentences)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "meta.json").write_text(json.dumps({"data_root": str(data)}))
    return out


def tiny_config() -> CRRGConfig:
    """A small CRRGConfig for tests (128 px, 32-dim features, 1-layer decoder, tiny CLIP)."""
    return CRRGConfig(
        detector=tiny_detector_config(),
        selection=ClassifierConfig(feature_dim=32, hidden_dim=16),
        abnormality=ClassifierConfig(feature_dim=32, hidden_dim=16),
        decoder=DecoderConfig(feature_dim=32, n_layer=1, n_embd=32, n_head=2, n_positions=32,
                              max_new_tokens=16, dropout=0.0,
                              token_ids=list(range(0, 50257, 97))),
        clip=get_clip_config("tiny"),
        image_size=128,
        variant="tiny-test",
    )


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    CRRGModel(tiny_config()).save_pretrained(folder)
    return folder
