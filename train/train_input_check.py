"""Train the input check (:mod:`crrg.input_check`) on real radiographs and generated negatives.

    python -m train.train_input_check [--data ../shared/data | --prepared runs/prepared] \
        --weights assets/crrg-default --out runs/input_check [--per-source 400] [--features-only]

Positives: every real frontal radiograph of seven sources (Kermany and COVID-19 Radiography capped
at ``--per-source``, shared out over the splits), in patient-disjoint splits
(:func:`crrg.data.readers.read_source` + :func:`crrg.data.splits.assign_splits`; NIH ChestX-ray14 by
a hash of its patient id, TBX11K by a hash of its image name, 70 / 10 / 20: :data:`OWN_SPLITS`),
each resized to a random longest side in 224..2048 px (test: cycling through 224, 512, 1024,
2048), a third of them as RGB files; plus :func:`train.negatives.varied` copies (contrast,
borders, marks, ECG electrodes / wires / tubes, tilt, crop, JPEG). Negatives
(:mod:`train.negatives`): synthetic kinds, and crops / rotations / inversions of radiographs of
the same split. Features come from the frozen detector and CLIP of ``--weights`` (they stay frozen
in the released model, so the checker carries over). The classifier is trained with
class-balanced cross-entropy.

Thresholds, chosen on validation images (:class:`CalibrationRule`): P(radiograph) below
``threshold`` (twice the largest P(radiograph) of any validation negative, 0.05 .. 0.5) refuses;
below 0.5 warns (unsure: a real film there costs a note, not a re-run); the Mahalanobis distance
of the CLIP embedding to the training radiographs (Ledoit-Wolf Gaussian) warns beyond 1.1 x their
99.5th percentile and refuses beyond 1.5 x their largest; the layout rule (:func:`fit_layout`, a
Gaussian of the training radiographs' robust + orientation statistics, plus the eigen-radiograph
model of their 16 px thumbnails (:func:`fit_thumbs`), weighted to the same spread: is the image's
inverted or turned copy more typical of radiographs than the image?) refuses beyond the
validation radiographs' 99.5th percentile margin + 2.5 and warns beyond their 99.5th percentile
(not their largest + 1, as before the thumbnails: a few odd validation films set that, and it let
a quarter of the rotated films through when the rotated kind was left out). The layout rule is fitted
on radiographs only, so it also holds when the inverted or rotated kind is left out of training. Besides the
val / test rates, ``metrics.json`` holds: refusals and warnings of real radiographs per source,
per reason and per kind of input (RGB, size, covid_anatomy films with lines / tubes / electrodes,
films with electrodes drawn on), the same figures of the checker ``--weights`` ships with
(``shipped_checker``: before), two generalisation checks (each source left out of training: how
other hospitals' films may fare; each negative kind left out: how kinds of input nobody generated
may fare), and ``goal`` (the #18 targets in a few numbers).

Writes ``OUT/input_check.safetensors``, ``OUT/config.json``, ``OUT/metrics.json`` (and the
feature cache ``OUT/features.pt``: rows and pooled pixels per sample, reused for the same
samples and weights, saved every 256 rows so an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from crrg.input_check import (
    INPUT_CLASSES,
    LAYOUT_AT,
    N_LAYOUT,
    N_STATS,
    N_THUMB,
    THUMB_AT,
    TRANSFORMS_AT,
    InputCheckConfig,
    InputChecker,
    input_features,
    pixel_features,
    pooled,
    reason_key,
    save_checker,
    standardised,
    status,
)
from crrg.pipeline import load, prepare
from crrg.types import InputCheck
from train.negatives import FROM, FROM_RADIOGRAPH, GENERATORS, KINDS, SYNTHETIC, leads, resized, varied

LAYOUT_THRESHOLDS = ("layout_inverted_threshold", "layout_inverted_warn", "layout_rotated_threshold",
                     "layout_rotated_warn")
BASE_DIM = 256 + 29 + N_STATS  # embedding, region scores, plain statistics (then the robust ones)

logger = logging.getLogger("train.train_input_check")
SOURCES = ("jsrt_scr", "covid_lung_boxes", "covid_anatomy", "kermany_pneumonia", "covid_radiography",
           "nih_cxr14", "tbx11k")
TEST_SIDES = (224, 512, 1024, 2048)
COUNTS = {"train": 1.0, "val": 0.25, "test": 0.35}  # the splits (values: legacy shares, unused)
#: radiographs per source (all splits together) for the big sets; the others are used whole
CAPS = {"kermany_pneumonia": 400, "covid_radiography": 400}
#: negatives of each kind per split
N_NEGATIVES = {"train": 60, "val": 25, "test": 50}
#: sources split here, not by crrg.data.splits: (namespace, val share, test share), hashed by
#: patient id (NIH) or image name (TBX11K); their test part stays held out
OWN_SPLITS = {"nih_cxr14": ("nih_cxr14", 0.1, 0.2), "tbx11k": ("tbx11k", 0.1, 0.2)}
#: covid_anatomy mask classes that mark lines, tubes and ECG electrodes on the film
LINE_CLASSES = ("Monitoring Probes", "Tubings", "Endotracheal Tube", "Central Venous Line", "Nosogastric Tube")
Pools = dict[tuple[str, str], list[str]]  # (split, source) -> image paths relative to the data root


def own_split_pools(data: Path, source: str) -> Pools:
    """NIH ChestX-ray14 (``labels.csv``: image, patient_id) or TBX11K (``images/*.jpg``) per split."""
    import csv

    from crrg.data.splits import hash_fraction

    namespace, val, test = OWN_SPLITS[source]
    if source == "nih_cxr14":
        with open(data / source / "labels.csv", newline="") as f:
            keyed = [(row["image"], row["patient_id"]) for row in csv.DictReader(f)]
    else:
        keyed = [(f"images/{p.name}", p.stem) for p in sorted((data / source / "images").glob("*.jpg"))]
    pools: dict[tuple[str, str], list[str]] = defaultdict(list)
    for image, key in keyed:
        f = hash_fraction(namespace, key)
        split = "test" if f < test else "val" if f < test + val else "train"
        pools[(split, source)].append(f"{source}/{image}")
    return {k: sorted(v) for k, v in pools.items()}


def data_pools(data: Path, sources: tuple[str, ...] = SOURCES) -> Pools:
    """Frontal radiographs per (split, source) of the shared data, patient-disjoint splits."""
    from crrg.data.readers import read_source
    from crrg.data.splits import assign_splits

    data = data.resolve()
    pools: dict[tuple[str, str], set[str]] = defaultdict(set)
    for source in sources:
        if not (data / source).is_dir():
            logger.info("%s: not in %s, skipped", source, data)
            continue
        if source in OWN_SPLITS:
            for key, paths in own_split_pools(data, source).items():
                pools[key].update(paths)
            continue
        records = [r for r in read_source(source, data / source) if r.image is not None]
        splits = assign_splits(records)
        for record in records:
            if splits[record.key] in COUNTS and "lat" not in (record.view or "").lower():
                pools[(splits[record.key], source)].add(Path(record.image).resolve().relative_to(data).as_posix())
    return {k: sorted(v) for k, v in pools.items()}


def with_lines(data: Path) -> set[str]:
    """covid_anatomy images (paths as in the pools) with a line, tube or electrode mask."""
    import csv

    table = data / "covid_anatomy" / "structure.csv"
    if not table.is_file():
        return set()
    with open(table, newline="") as f:
        return {f"covid_anatomy/{row['Image']}" for row in csv.DictReader(f) if row["Template Name"] in LINE_CLASSES}


def prepared_pools(folder: Path) -> tuple[Pools, Path]:
    """The same from a ``train.prepare`` folder (its labelled images only), and its data root."""
    from train.datasets import PreparedData

    prepared = PreparedData(folder)
    pools: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in prepared.images(None):
        if row.get("image") and row["source"] in SOURCES and row.get("split") in COUNTS:
            pools[(row["split"], row["source"])].add(row["image"])
    return {k: sorted(v) for k, v in pools.items()}, prepared.data_root


def radiograph_items(pools: Pools, caps: dict[str, int], rng: random.Random) -> list[dict[str, Any]]:
    """Every radiograph of every source (at most ``caps[source]`` of a capped source, shared out
    over the splits), one item each: the longest side random in 224..2048 px (test: cycling
    through :data:`TEST_SIDES`), a third of them as RGB. Sources are interleaved, so the first
    rows of a partial feature cache already cover all of them."""
    per_source: list[list[dict[str, Any]]] = []
    for source in SOURCES:
        total = sum(len(pools.get((split, source), [])) for split in COUNTS)
        cap = caps.get(source)
        rows: list[dict[str, Any]] = []
        for split in COUNTS:
            pool = pools.get((split, source), [])
            n = len(pool) if cap is None or total <= cap else round(cap * len(pool) / total)
            for i, path in enumerate(sorted(rng.sample(pool, n))):
                side = TEST_SIDES[i % len(TEST_SIDES)] if split == "test" else rng.choice(range(224, 2049, 32))
                item = {"split": split, "kind": "radiograph", "source": source, "side": side, "path": path}
                if rng.random() < 1 / 3:
                    item["rgb"] = True
                rows.append(item)
        rng.shuffle(rows)  # splits mixed too
        per_source.append(rows)
    longest = max((len(r) for r in per_source), default=0)
    return [rows[i] for i in range(longest) for rows in per_source if i < len(rows)]


def samples(pools: Pools, caps: dict[str, int] | None = None, seed: int = 0,
            n_negatives: dict[str, int] | None = None, varied_share: float = 0.25) -> list[dict[str, Any]]:
    """[{split, kind, source?, side?, path?, seed?, variant?, rgb?}], deterministic for the same pools.

    The radiographs of :func:`radiograph_items`; per split, ``n_negatives[split]`` negatives of
    every kind (those made from radiographs from the same split's); and one
    :func:`train.negatives.varied` copy of a ``varied_share`` of the radiographs (``variant``: True)."""
    rng = random.Random(seed)
    caps = CAPS if caps is None else caps
    n_negatives = n_negatives or N_NEGATIVES
    positives = radiograph_items(pools, caps, rng)
    out: list[dict[str, Any]] = list(positives)
    for split in COUNTS:
        chosen = [s for s in positives if s["split"] == split]
        paths = sorted(s["path"] for s in chosen)
        n = n_negatives[split]
        for kind in SYNTHETIC:
            out += [{"split": split, "kind": kind, "seed": rng.randrange(2**31)} for _ in range(n)]
        for kind in FROM_RADIOGRAPH:
            if paths:
                out += [{"split": split, "kind": kind, "path": rng.choice(paths), "seed": rng.randrange(2**31),
                         "side": rng.choice(range(224, 1025, 32))} for _ in range(n)]
        out += [{"split": split, "kind": "radiograph", "source": s["source"], "path": s["path"], "variant": True,
                 "side": rng.choice(range(224, 2049, 32)), "seed": rng.randrange(2**31)}
                for s in chosen if rng.random() < varied_share]
    return out + drawn_leads(positives, random.Random(seed + 1))


def drawn_leads(positives: list[dict[str, Any]], rng: random.Random, per_source: int = 10) -> list[dict[str, Any]]:
    """Test films of every source at 1024 px with ECG electrodes, wires and tubes drawn on
    (``leads``: True; :func:`train.negatives.leads` three times): a probe of what made the
    shipped checker call films with leads inverted. Never trained on; a stream of their own."""
    out = []
    for source in SOURCES:
        films = [s for s in positives if s["split"] == "test" and s["source"] == source][:per_source]
        out += [{"split": "test", "kind": "radiograph", "source": source, "path": s["path"], "side": 1024,
                 "leads": True, "seed": rng.randrange(2**31)} for s in films]
    return out


def make_image(root: Path, sample: dict[str, Any]) -> Image.Image:
    rng = random.Random(sample.get("seed", 0))
    if sample["kind"] in GENERATORS:
        return GENERATORS[sample["kind"]](rng)
    with Image.open(root / sample["path"]) as im:
        image = resized(im, sample["side"])
    if sample["kind"] == "radiograph":
        image = varied(image, rng) if sample.get("variant") else image
        for _ in range(3 if sample.get("leads") else 0):
            image = leads(image, rng)
        return image.convert("RGB") if sample.get("rgb") else image
    return FROM[sample["kind"]](image, rng)


@torch.inference_mode()
def features(pipe: Any, root: Path, items: list[dict[str, Any]], batch: int = 8
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, F] :func:`crrg.input_check.input_features` of every sample, as the pipeline computes
    them, and [N, P, P] uint8 :func:`crrg.input_check.pooled` pixels (robust statistics can be
    recomputed from them without the images)."""
    model, out, small = pipe.model, [], []
    for start in range(0, len(items), batch):
        tensors = torch.stack([prepare(make_image(root, s), model.config.image_size).tensor
                               for s in items[start:start + batch]]).to(pipe.device)
        found = model.detector.infer(tensors, backbone_batch=2)
        out.append(input_features(model.clip.encode_image(tensors), found.scores, tensors).cpu())
        small.append((pooled(tensors) * 255).round().to(torch.uint8).cpu())
    return torch.cat(out), torch.cat(small)


def item_key(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True)


def cached_features(weights: str, device: str, root: Path, items: list[dict[str, Any]], cache: Path,
                    chunk: int = 256) -> torch.Tensor:
    """:func:`features` of ``items``, reusing the rows ``cache`` holds for the same weights (the
    cache maps :func:`item_key` to a row and to its pooled pixels). New rows are computed
    ``chunk`` at a time and saved after each chunk, so an interrupted run resumes."""
    stored: dict[str, Any] = torch.load(cache) if cache.is_file() else {}
    same = stored.get("weights") == str(weights)
    rows: dict[str, torch.Tensor] = stored.get("rows", {}) if same else {}
    small: dict[str, torch.Tensor] = stored.get("pooled", {}) if same else {}
    missing = [s for s in items if item_key(s) not in rows]
    logger.info("features: %d cached, %d to compute", len(items) - len(missing), len(missing))
    pipe = load(weights, device=device) if missing else None
    for start in range(0, len(missing), chunk):
        part = missing[start:start + chunk]
        x, px = features(pipe, root, part)
        rows.update({item_key(s): row for s, row in zip(part, x)})
        small.update({item_key(s): im for s, im in zip(part, px)})
        torch.save({"weights": str(weights), "rows": rows, "pooled": small}, cache)
        logger.info("features %d / %d", start + len(part), len(missing))
    x = torch.stack([rows[item_key(s)] for s in items])
    if all(item_key(s) in small for s in items):  # pixel statistics as the current code defines them
        px = torch.stack([small[item_key(s)] for s in items]).float() / 255
        x = torch.cat([x[:, :BASE_DIM], pixel_features(px)], dim=1)
    return x


@dataclass
class FitConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-3
    hidden_dim: int = 64
    seed: int = 0
    thumb_components: int = 20  # eigen-radiograph components of the thumbnail layout model (0: none)


def fit(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, cfg: FitConfig) -> InputChecker:
    """A checker trained by class-balanced cross-entropy on ``x[rows]`` (class indices ``y``), eval mode."""
    torch.manual_seed(cfg.seed)
    layout = x.shape[1] > TRANSFORMS_AT  # features with the transformed copies' statistics
    thumbs = cfg.thumb_components if x.shape[1] >= THUMB_AT + 2 * N_THUMB else 0
    checker = InputChecker(InputCheckConfig(feature_dim=min(x.shape[1], TRANSFORMS_AT), hidden_dim=cfg.hidden_dim,
                                            layout=layout, thumb_components=thumbs))
    opt = torch.optim.AdamW(checker.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    counts = torch.bincount(y[rows], minlength=len(INPUT_CLASSES)).float().clamp(min=1)
    weight = counts.sum() / (len(INPUT_CLASSES) * counts)
    checker.train()
    for _ in range(cfg.epochs):
        order = rows[torch.randperm(len(rows), generator=gen)]
        for start in range(0, len(order), cfg.batch_size):
            b = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(checker(x[b]), y[b], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return checker.eval()


@dataclass
class CalibrationRule:
    """How the thresholds are chosen on validation radiographs (plain and varied copies)."""

    #: refusal threshold on P(radiograph): this x the largest P(radiograph) of any validation
    #: negative (clipped to floor .. warn_threshold); inputs between it and warn_threshold are warned
    negative_factor: float = 2.0
    floor: float = 0.05  # the refusal threshold on P(radiograph) is never below this
    warn_threshold: float = 0.5  # P(radiograph) below this (and not refused): a warning
    ood_warn_quantile: float = 0.995  # distance warning: this quantile of their distances x 1.1
    ood_refuse_factor: float = 1.5  # distance refusal: their largest distance x this
    layout_warn_quantile: float = 0.995  # layout margin warning: this quantile of theirs
    layout_refuse_quantile: float = 0.995  # layout margin refusal: this quantile of theirs (1: largest) ...
    layout_refuse_slack: float = 2.5  # ... + this


def fit_layout(checker: InputChecker, train: torch.Tensor, val: torch.Tensor, rule: CalibrationRule) -> None:
    """The Gaussian of the training radiographs' layout statistics (standardised, Ledoit-Wolf), and
    the margins beyond which an image whose inverted / turned copy looks more like a radiograph is
    refused (the validation radiographs' largest margin + ``layout_refuse_slack``) or warned (their
    ``layout_warn_quantile``). Radiographs only: no inverted or rotated image is used."""
    from sklearn.covariance import LedoitWolf

    layout = train[:, LAYOUT_AT:LAYOUT_AT + N_LAYOUT].double()
    mean, scale = layout.mean(0), layout.std(0) + 1e-3
    lw = LedoitWolf().fit(((layout - mean) / scale).numpy())
    checker.layout_mean.copy_(mean.float())
    checker.layout_scale.copy_(scale.float())
    checker.layout_precision.copy_(torch.as_tensor(lw.precision_, dtype=torch.float32))
    cfg = checker.config
    if cfg.thumb_components:
        fit_thumbs(checker, train, val)
    with torch.no_grad():
        margins = checker.layout_margins(val).numpy()  # [N, 2]: inverted, rotated

    refuse = np.quantile(margins, rule.layout_refuse_quantile, axis=0) + rule.layout_refuse_slack
    warn = np.quantile(margins, rule.layout_warn_quantile, axis=0)
    cfg.layout_inverted_threshold, cfg.layout_rotated_threshold = (float(v) for v in refuse)
    cfg.layout_inverted_warn, cfg.layout_rotated_warn = (float(v) for v in warn)


def fit_ood(checker: InputChecker, train: torch.Tensor, val: torch.Tensor, rule: CalibrationRule) -> None:
    """A shrunk (Ledoit-Wolf) Gaussian of the training radiographs' embeddings, and the distance
    thresholds (warning, refusal) from the validation radiographs' distances."""
    from sklearn.covariance import LedoitWolf

    e = checker.config.embed_dim
    lw = LedoitWolf().fit(train[:, :e].numpy())
    checker.ood_mean.copy_(torch.as_tensor(lw.location_, dtype=torch.float32))
    checker.ood_precision.copy_(torch.as_tensor(lw.precision_, dtype=torch.float32))
    with torch.no_grad():
        d = checker.distance(val).numpy()
    checker.config.ood_warn_threshold = float(np.quantile(d, rule.ood_warn_quantile) * 1.1)
    checker.config.ood_threshold = float(d.max() * rule.ood_refuse_factor)


def fit_thumbs(checker: InputChecker, train: torch.Tensor, val: torch.Tensor) -> None:
    """The eigen-radiograph model of the training radiographs' standardised thumbnails (mean, the
    leading principal components and their variances, the mean residual variance off them), and
    the weights that give its validation margins the spread of the layout statistics' margins."""
    k = checker.config.thumb_components
    z = standardised(train[:, THUMB_AT:THUMB_AT + N_THUMB].double())
    mean = z.mean(0)
    _, s, v = torch.linalg.svd(z - mean, full_matrices=False)
    var = s ** 2 / (len(z) - 1)
    checker.thumb_mean.copy_(mean.float())
    checker.thumb_basis.copy_(v[:k].float())
    checker.thumb_var.copy_(var[:k].float())
    checker.thumb_residual.fill_(float(var[k:].sum() / (z.shape[1] - k)))
    checker.config.thumb_weights = (1.0, 1.0)
    with torch.no_grad():
        stats = checker.layout_margins(val[:, :THUMB_AT]).numpy()  # the layout statistics' margins alone
        thumbs = checker.thumb_margins(val).numpy()
    checker.config.thumb_weights = tuple(float(w) for w in stats.std(0) / (thumbs.std(0) + 1e-6))


def calibrate(checker: InputChecker, x: torch.Tensor, positive: np.ndarray, train: np.ndarray,
              val: np.ndarray, rule: CalibrationRule | None = None) -> list[InputCheck]:
    """Set the checker's thresholds and distance model from the train / val radiographs (boolean
    row masks); returns its checks (refused, warned or accepted) of every row of ``x``."""
    rule = rule or CalibrationRule()
    p = p_radiograph(checker, x)
    checker.config.threshold = refusal_threshold(p[val & ~positive], rule)
    checker.config.warn_threshold = max(rule.warn_threshold, checker.config.threshold)
    fit_ood(checker, x[torch.as_tensor(train & positive)], x[torch.as_tensor(val & positive)], rule)
    if checker.config.layout:
        fit_layout(checker, x[torch.as_tensor(train & positive)], x[torch.as_tensor(val & positive)], rule)
    return checker.check(x)


def p_radiograph(checker: InputChecker, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return checker(x).softmax(-1)[:, 0].numpy()


def refusal_threshold(p_negatives: np.ndarray, rule: CalibrationRule) -> float:
    """``rule.negative_factor`` x the largest P(radiograph) of the validation negatives, within
    ``rule.floor`` .. ``rule.warn_threshold``: every negative seen is refused with a margin, and a
    real film between this and the warning threshold gets a note instead of a refusal."""
    top = float(p_negatives.max()) if len(p_negatives) else rule.warn_threshold
    return float(np.clip(rule.negative_factor * top, rule.floor, rule.warn_threshold))


def _share(values: list[bool]) -> dict[str, Any]:
    return {"flagged": float(np.mean(values)) if values else None, "n": len(values)}


def rates(ok: np.ndarray, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Share flagged: of negatives overall and per kind; of radiographs overall, per source and per
    side (plain resized copies); of the varied copies per source."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_source: dict[str, list[bool]] = defaultdict(list)
    by_side: dict[int, list[bool]] = defaultdict(list)
    by_varied: dict[str, list[bool]] = defaultdict(list)
    for accepted, s in zip(ok.tolist(), items):
        if s["kind"] == "radiograph" and (s.get("variant") or s.get("leads")):
            by_varied[s["source"]].append(not accepted)
        elif s["kind"] == "radiograph":
            by_source[s["source"]].append(not accepted)
            by_side[s["side"]].append(not accepted)
        else:
            by_kind[s["kind"]].append(not accepted)
    neg = [v for k in by_kind.values() for v in k]
    pos = [v for k in by_source.values() for v in k]
    return {
        "negatives_flagged": _share(neg)["flagged"], "n_negatives": len(neg),
        "radiographs_flagged": _share(pos)["flagged"], "n_radiographs": len(pos),
        "negatives_flagged_by_kind": {k: _share(v) for k, v in sorted(by_kind.items())},
        "radiographs_flagged_by_source": {k: _share(v) for k, v in sorted(by_source.items())},
        "radiographs_flagged_by_side_px": {str(k): _share(v) for k, v in sorted(by_side.items())},
        # one train.negatives.varied copy per radiograph (contrast, borders, marks, leads, tilt, crop, JPEG)
        "varied_radiographs_flagged": _share([v for k in by_varied.values() for v in k])["flagged"],
        "varied_radiographs_flagged_by_source": {k: _share(v) for k, v in sorted(by_varied.items())},
    }


def _outcomes(checks: list[InputCheck]) -> dict[str, Any]:
    """n, share refused, share warned, and each per reason (:func:`crrg.input_check.reason_key`)."""
    n = len(checks)
    out: dict[str, Any] = {"n": n, "refused": None, "warned": None}
    if not n:
        return out
    states = [status(c) for c in checks]
    for state, name in (("reject", "refused"), ("warn", "warned")):
        out[name] = states.count(state) / n
        reasons = [reason_key(c) for c, s in zip(checks, states) if s == state]
        out[f"{name}_by_reason"] = {k: reasons.count(k) / n for k in sorted(set(reasons), key=str)}
    return out


def side_bin(side: int) -> str:
    return "224-511" if side < 512 else "512-1023" if side < 1024 else "1024-2047" if side < 2048 else "2048"


def real_rates(checks: list[InputCheck], items: list[dict[str, Any]], lines: set[str] | None = None
               ) -> dict[str, Any]:
    """Refused / warned shares (and per reason) of real radiographs (plain resized copies): all,
    per source, and per kind of input (grayscale or RGB file, longest side, covid_anatomy films
    with and without lines / tubes / electrodes)."""
    groups: dict[str, list[InputCheck]] = defaultdict(list)
    for check, s in zip(checks, items):
        if s["kind"] != "radiograph" or s.get("variant"):
            continue
        if s.get("leads"):  # drawn on: a group of their own, not in the real-film figures
            groups["drawn_leads"].append(check)
            continue
        keys = ["all", f"source:{s['source']}", "rgb" if s.get("rgb") else "grayscale", f"side:{side_bin(s['side'])}"]
        if s["source"] == "covid_anatomy":
            keys.append("covid_anatomy_with_lines" if s["path"] in (lines or set()) else "covid_anatomy_without_lines")
        for key in keys:
            groups[key].append(check)
    return {
        "all": _outcomes(groups.pop("all", [])),
        "by_source": {k.split(":", 1)[1]: _outcomes(v) for k, v in sorted(groups.items()) if k.startswith("source:")},
        "by_input": {k: _outcomes(v) for k, v in sorted(groups.items()) if not k.startswith("source:")},
    }


def held_out(x: torch.Tensor, y: torch.Tensor, items: list[dict[str, Any]], cfg: FitConfig,
             group: Callable[[dict[str, Any]], str | None]) -> dict[str, dict[str, Any]]:
    """Per group (``group(item)``: the item's group, or None): train the classifier and fit the
    distance model without the group's rows, choose the thresholds on val rows outside the group,
    and give the share refused (classifier and distance together, and the classifier alone) and
    warned of the group's test radiographs and of its test negatives."""
    names = sorted({g for g in map(group, items) if g is not None})
    split = np.array([s["split"] for s in items])
    groups = np.array([group(s) or "" for s in items])
    positive = (y == 0).numpy()
    out = {}
    for name in names:
        keep = groups != name
        checker = fit(x, y, torch.tensor(np.flatnonzero((split == "train") & keep)), cfg)
        checks = calibrate(checker, x, positive, (split == "train") & keep, (split == "val") & keep)
        accepted = np.array([c.ok for c in checks])
        warned = np.array([c.warning is not None for c in checks])
        by_classifier = p_radiograph(checker, x) >= checker.config.threshold
        row: dict[str, Any] = {"threshold": checker.config.threshold, "ood_threshold": checker.config.ood_threshold}
        for label, mask in (("radiographs", positive), ("negatives", ~positive)):
            test = (split == "test") & ~keep & mask
            if test.any():
                row[f"{label}_flagged"] = float(np.mean(~accepted[test]))
                row[f"{label}_warned"] = float(np.mean(warned[test]))
                row[f"{label}_flagged_classifier_only"] = float(np.mean(~by_classifier[test]))
                row[f"n_{label}"] = int(test.sum())
        out[name] = row
        logger.info("held out %s: %s", name, json.dumps(row))
    return out


def radiograph_source(item: dict[str, Any]) -> str | None:
    """A radiograph's source, and that of negatives made from it (left out together)."""
    if item["kind"] == "radiograph" or item["kind"] in FROM_RADIOGRAPH:
        return item["path"].split("/")[0]
    return None


def negative_kind(item: dict[str, Any]) -> str | None:
    return None if item["kind"] == "radiograph" else item["kind"]


def labels(items: list[dict[str, Any]]) -> torch.Tensor:
    return torch.tensor([INPUT_CLASSES.index(KINDS.get(s["kind"], "radiograph")) for s in items])


def train_and_measure(x: torch.Tensor, items: list[dict[str, Any]], cfg: FitConfig,
                      generalisation: bool = True, lines: set[str] | None = None
                      ) -> tuple[InputChecker, dict[str, Any]]:
    y = labels(items)
    split = np.array([s["split"] for s in items])
    rows = {k: np.flatnonzero(split == k) for k in COUNTS}
    checker = fit(x, y, torch.tensor(rows["train"]), cfg)
    positive = (y == 0).numpy()
    checks = calibrate(checker, x, positive, split == "train", split == "val")
    accepted = np.array([c.ok for c in checks])
    by_classifier = p_radiograph(checker, x) >= checker.config.threshold
    with torch.no_grad():
        near = checker.distance(x).numpy() <= checker.config.ood_threshold
    c = checker.config
    metrics: dict[str, Any] = {"threshold": c.threshold, "warn_threshold": c.warn_threshold,
                               "ood_threshold": c.ood_threshold, "ood_warn_threshold": c.ood_warn_threshold,
                               "layout": {k: getattr(c, k) for k in LAYOUT_THRESHOLDS},
                               "fit": vars(cfg), "calibration": vars(CalibrationRule()),
                               "counts": {k: int(len(v)) for k, v in rows.items()}}
    for name in ("val", "test"):
        part = [items[i] for i in rows[name]]
        metrics[name] = rates(accepted[rows[name]], part)
        metrics[name]["real_radiographs"] = real_rates([checks[i] for i in rows[name]], part, lines)
        metrics[name]["classifier_only"] = rates(by_classifier[rows[name]], part)
        metrics[name]["distance_only"] = rates(near[rows[name]], part)
    if generalisation:
        # a source's radiographs and the rotated / inverted / cropped images made from them
        metrics["held_out_source"] = held_out(x, y, items, cfg, radiograph_source)
        metrics["held_out_kind"] = held_out(x, y, items, cfg, negative_kind)
    return checker, metrics


def goal_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The #18 goal in a few numbers: test real radiographs refused (<= 0.3 %), and the smallest
    share refused of any held-out negative kind and of the test negatives of each class (>= 97 %)."""
    test = metrics["test"]
    kinds = metrics.get("held_out_kind", {})
    by_kind = test["negatives_flagged_by_kind"]
    return {
        "test_real_radiographs_refused": test["real_radiographs"]["all"]["refused"],
        "test_real_radiographs_warned": test["real_radiographs"]["all"]["warned"],
        "held_out_source_radiographs_refused": {k: v.get("radiographs_flagged") for k, v in
                                                metrics.get("held_out_source", {}).items()},
        "held_out_kind_refused_min": min((v["negatives_flagged"] for v in kinds.values()), default=None),
        "test_inverted_refused": by_kind.get("inverted", {}).get("flagged"),
        "test_rotated_refused": by_kind.get("rotated", {}).get("flagged"),
        "test_not_radiograph_refused": float(np.mean([v["flagged"] for k, v in by_kind.items()
                                                      if KINDS[k] == "not_radiograph"])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CRRG_DATA", "../shared/data")))
    parser.add_argument("--prepared", type=Path, default=None,
                        help="take the radiographs from this train.prepare folder instead of --data")
    parser.add_argument("--weights", default="assets/crrg-default")
    parser.add_argument("--out", type=Path, default=Path("runs/input_check"))
    parser.add_argument("--per-source", type=int, default=400,
                        help="radiographs (all splits) of each big source (Kermany, COVID radiography)")
    parser.add_argument("--features-only", action="store_true", help="fill the feature cache and stop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.prepared is not None:
        pools, root = prepared_pools(args.prepared)
    else:
        pools, root = data_pools(args.data), args.data.resolve()
    if not pools:
        raise SystemExit(f"no radiographs found in {args.prepared or args.data}")
    items = samples(pools, {k: args.per_source for k in CAPS})
    args.out.mkdir(parents=True, exist_ok=True)
    x = cached_features(args.weights, args.device, root, items, args.out / "features.pt")
    if args.features_only:
        return
    lines = with_lines(args.data.resolve())
    cfg = FitConfig()
    checker, metrics = train_and_measure(x, items, cfg, lines=lines)
    metrics["goal"] = goal_summary(metrics)
    metrics["shipped_checker"] = shipped_figures(args.weights, x, items, lines)
    metrics["source"] = {"radiographs": "prepared" if args.prepared else "data", "per_source": args.per_source,
                         "weights": str(args.weights)}
    save_checker(checker, args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("goal: %s", json.dumps(metrics["goal"]))


def shipped_figures(weights: str, x: torch.Tensor, items: list[dict[str, Any]], lines: set[str]) -> dict[str, Any]:
    """The checker ``weights`` ships with (before this one) on the same rows: real radiographs of
    every split (most of them it never saw) and of the test split, and the test negatives."""
    shipped = load(weights, device="cpu").model.input_check
    if shipped is None:
        return {}
    checks = shipped.check(x)
    test = [i for i, s in enumerate(items) if s["split"] == "test"]
    part = [items[i] for i in test]
    return {"config": {k: v for k, v in vars(shipped.config).items() if k != "classes"},
            "all_splits": real_rates(checks, items, lines),
            "test": real_rates([checks[i] for i in test], part, lines),
            "test_rates": rates(np.array([checks[i].ok for i in test]), part)}


if __name__ == "__main__":
    main()
