"""Train the input check (:mod:`crrg.input_check`) on real radiographs and generated negatives.

    python -m train.train_input_check [--data ../shared/data | --prepared runs/prepared] \
        --weights assets/crrg-default --out runs/input_check [--per-source 120]

Positives: real frontal radiographs of every source, in the project's patient-disjoint splits
(:func:`crrg.data.readers.read_source` + :func:`crrg.data.splits.assign_splits`; or the images of a
``train.prepare`` folder), each resized to a random longest side in 224..2048 px (test: every one
of 224, 512, 1024, 2048). Negatives (:mod:`train.negatives`): synthetic kinds, and crops /
rotations / inversions of radiographs of the same split. Features come from the frozen detector
and CLIP of ``--weights`` (they stay frozen in the released model, so the checker carries over).
The threshold on P(radiograph) is the largest in [0.1, 0.5] whose validation positives are
flagged <= 1 % of the time; an accepted input is still flagged when its CLIP embedding is
farther (Mahalanobis, Ledoit-Wolf Gaussian of the training radiographs) than 1.1 x the 99.5th
percentile of the validation radiographs' distances. Besides the test rates, ``metrics.json`` holds two generalisation
checks on the cached features, with both parts of the check: each source left out of training
(its test radiographs flagged: how other hospitals' films may fare), and each negative kind left
out of training (its test images flagged: how kinds of input nobody generated may fare).

Writes ``OUT/input_check.safetensors``, ``OUT/config.json``, ``OUT/metrics.json`` (and the
feature cache ``OUT/features.pt``: rows per sample, reused for the same samples and weights).
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

from crrg.input_check import INPUT_CLASSES, InputCheckConfig, InputChecker, input_features, save_checker
from crrg.pipeline import load, prepare
from train.negatives import FROM, FROM_RADIOGRAPH, GENERATORS, KINDS, SYNTHETIC, resized, varied

logger = logging.getLogger("train.train_input_check")
SOURCES = ("jsrt_scr", "covid_lung_boxes", "covid_anatomy", "kermany_pneumonia", "covid_radiography")
TEST_SIDES = (224, 512, 1024, 2048)
COUNTS = {"train": 1.0, "val": 0.25, "test": 0.35}  # share of --per-source radiographs per split
Pools = dict[tuple[str, str], list[str]]  # (split, source) -> image paths relative to the data root


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
        records = [r for r in read_source(source, data / source) if r.image is not None]
        splits = assign_splits(records)
        for record in records:
            if splits[record.key] in COUNTS and "lat" not in (record.view or "").lower():
                pools[(splits[record.key], source)].add(Path(record.image).resolve().relative_to(data).as_posix())
    return {k: sorted(v) for k, v in pools.items()}


def prepared_pools(folder: Path) -> tuple[Pools, Path]:
    """The same from a ``train.prepare`` folder (its labelled images only), and its data root."""
    from train.datasets import PreparedData

    prepared = PreparedData(folder)
    pools: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in prepared.images(None):
        if row.get("image") and row["source"] in SOURCES and row.get("split") in COUNTS:
            pools[(row["split"], row["source"])].add(row["image"])
    return {k: sorted(v) for k, v in pools.items()}, prepared.data_root


CORE_KINDS = ("natural", "mri", "noise", "smooth", "pattern", "text")  # the first pass's synthetic kinds


def samples(pools: Pools, per_source: int, seed: int = 0) -> list[dict[str, Any]]:
    """[{split, kind, source?, side?, path?, seed?, variant?}], deterministic for the same pools.

    Per split: ``per_source * COUNTS[split]`` radiographs of each source (test: at each of
    :data:`TEST_SIDES`), then negatives of every kind; then, from a second random stream (so the
    first pass, and its cached features, stay the same), one :func:`train.negatives.varied` copy
    of every chosen radiograph (``variant``: True) and the extra synthetic kinds."""
    rng, extra = random.Random(seed), random.Random(seed + 1)
    out: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    for split, share in COUNTS.items():
        n = max(4, int(per_source * share))
        chosen: list[tuple[str, str]] = []
        for source in SOURCES:
            pool = pools.get((split, source), [])
            picks = rng.sample(pool, min(n, len(pool)))
            chosen += [(source, p) for p in picks]
            for path in picks:
                sides = TEST_SIDES if split == "test" else (rng.choice(range(224, 2049, 32)),)
                for side in sides:
                    out.append({"split": split, "kind": "radiograph", "source": source, "side": side,
                                "path": path})
        paths = [p for _, p in chosen]
        n_neg = max(8, int(len(chosen) / (len(CORE_KINDS) + len(FROM_RADIOGRAPH))) * 2)
        for kind in CORE_KINDS:
            out += [{"split": split, "kind": kind, "seed": rng.randrange(2**31)} for _ in range(n_neg)]
        for kind in FROM_RADIOGRAPH:
            if paths:
                out += [{"split": split, "kind": kind, "path": rng.choice(paths), "seed": rng.randrange(2**31),
                         "side": rng.choice(range(224, 1025, 32))} for _ in range(n_neg)]
        later += [{"split": split, "kind": "radiograph", "source": source, "path": path, "variant": True,
                   "side": extra.choice(range(224, 2049, 32)), "seed": extra.randrange(2**31)}
                  for source, path in chosen]
        for kind in (k for k in SYNTHETIC if k not in CORE_KINDS):
            later += [{"split": split, "kind": kind, "seed": extra.randrange(2**31)} for _ in range(n_neg)]
    return out + later


def make_image(root: Path, sample: dict[str, Any]) -> Image.Image:
    rng = random.Random(sample.get("seed", 0))
    if sample["kind"] in GENERATORS:
        return GENERATORS[sample["kind"]](rng)
    with Image.open(root / sample["path"]) as im:
        image = resized(im, sample["side"])
    if sample["kind"] == "radiograph":
        return varied(image, rng) if sample.get("variant") else image
    return FROM[sample["kind"]](image, rng)


@torch.inference_mode()
def features(pipe: Any, root: Path, items: list[dict[str, Any]], batch: int = 8) -> torch.Tensor:
    """[N, F] :func:`crrg.input_check.input_features` of every sample, as the pipeline computes them."""
    model, out = pipe.model, []
    for start in range(0, len(items), batch):
        tensors = torch.stack([prepare(make_image(root, s), model.config.image_size).tensor
                               for s in items[start:start + batch]]).to(pipe.device)
        found = model.detector.infer(tensors, backbone_batch=2)
        out.append(input_features(model.clip.encode_image(tensors), found.scores, tensors).cpu())
        if start % 200 == 0:
            logger.info("features %d / %d", start, len(items))
    return torch.cat(out)


def item_key(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True)


def cached_features(weights: str, device: str, root: Path, items: list[dict[str, Any]], cache: Path
                    ) -> torch.Tensor:
    """:func:`features` of ``items``, reusing the rows ``cache`` holds for the same weights (the
    cache maps :func:`item_key` to a row; new rows are added to it)."""
    stored: dict[str, Any] = torch.load(cache) if cache.is_file() else {}
    rows: dict[str, torch.Tensor] = stored.get("rows", {}) if stored.get("weights") == str(weights) else {}
    missing = [s for s in items if item_key(s) not in rows]
    logger.info("features: %d cached, %d to compute", len(items) - len(missing), len(missing))
    if missing:
        x = features(load(weights, device=device), root, missing)
        rows.update({item_key(s): row for s, row in zip(missing, x)})
        torch.save({"weights": str(weights), "rows": rows}, cache)
    return torch.stack([rows[item_key(s)] for s in items])


@dataclass
class FitConfig:
    epochs: int = 80
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-3
    hidden_dim: int = 64
    seed: int = 0


def fit(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, cfg: FitConfig) -> InputChecker:
    """A checker trained by cross-entropy on ``x[rows]`` (class indices ``y``), eval mode."""
    torch.manual_seed(cfg.seed)
    checker = InputChecker(InputCheckConfig(feature_dim=x.shape[1], hidden_dim=cfg.hidden_dim))
    opt = torch.optim.AdamW(checker.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    checker.train()
    for _ in range(cfg.epochs):
        order = rows[torch.randperm(len(rows), generator=gen)]
        for start in range(0, len(order), cfg.batch_size):
            b = order[start:start + cfg.batch_size]
            loss = F.cross_entropy(checker(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return checker.eval()


def fit_ood(checker: InputChecker, train: torch.Tensor, val: torch.Tensor, quantile: float = 0.995) -> None:
    """A shrunk (Ledoit-Wolf) Gaussian of the training radiographs' embeddings; the distance
    threshold is the ``quantile`` of the validation radiographs' distances, times 1.1."""
    from sklearn.covariance import LedoitWolf

    e = checker.config.embed_dim
    lw = LedoitWolf().fit(train[:, :e].numpy())
    checker.ood_mean.copy_(torch.as_tensor(lw.location_, dtype=torch.float32))
    checker.ood_precision.copy_(torch.as_tensor(lw.precision_, dtype=torch.float32))
    with torch.no_grad():
        d = checker.distance(val).numpy()
    checker.config.ood_threshold = float(np.quantile(d, quantile) * 1.1)


def calibrate(checker: InputChecker, x: torch.Tensor, positive: np.ndarray, train: np.ndarray,
              val: np.ndarray) -> np.ndarray:
    """Set the checker's threshold and distance model from the train / val radiographs (boolean
    row masks); returns its accept decisions (classifier and distance) for every row of ``x``."""
    p = p_radiograph(checker, x)
    checker.config.threshold = choose_threshold(p[val & positive])
    fit_ood(checker, x[torch.as_tensor(train & positive)], x[torch.as_tensor(val & positive)])
    with torch.no_grad():
        return np.array([c.ok for c in checker.check(x)])


def p_radiograph(checker: InputChecker, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return checker(x).softmax(-1)[:, 0].numpy()


def choose_threshold(p: np.ndarray, max_flagged: float = 0.01, floor: float = 0.1) -> float:
    """The largest threshold (at most 0.5) that flags at most ``max_flagged`` of the positives
    ``p``, never below ``floor`` (one odd validation image must not switch the check off)."""
    scores = np.sort(p)
    k = int(np.floor(max_flagged * len(scores)))
    return float(np.clip(scores[k], floor, 0.5)) if len(scores) else 0.5


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
        if s["kind"] == "radiograph" and s.get("variant"):
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
        # one train.negatives.varied copy per radiograph (contrast, borders, marks, tilt, crop, JPEG)
        "varied_radiographs_flagged": _share([v for k in by_varied.values() for v in k])["flagged"],
        "varied_radiographs_flagged_by_source": {k: _share(v) for k, v in sorted(by_varied.items())},
    }


def held_out(x: torch.Tensor, y: torch.Tensor, items: list[dict[str, Any]], cfg: FitConfig,
             group: Callable[[dict[str, Any]], str | None]) -> dict[str, dict[str, Any]]:
    """Per group (``group(item)``: the item's group, or None): train the classifier and fit the
    distance model without the group's rows, choose both thresholds on val rows outside the group,
    and give the share flagged (classifier and distance together, and the classifier alone) of
    the group's test radiographs and of its test negatives."""
    names = sorted({g for g in map(group, items) if g is not None})
    split = np.array([s["split"] for s in items])
    groups = np.array([group(s) or "" for s in items])
    positive = (y == 0).numpy()
    out = {}
    for name in names:
        keep = groups != name
        checker = fit(x, y, torch.tensor(np.flatnonzero((split == "train") & keep)), cfg)
        accepted = calibrate(checker, x, positive, (split == "train") & keep, (split == "val") & keep)
        by_classifier = p_radiograph(checker, x) >= checker.config.threshold
        row: dict[str, Any] = {"threshold": checker.config.threshold, "ood_threshold": checker.config.ood_threshold}
        for label, mask in (("radiographs", positive), ("negatives", ~positive)):
            test = (split == "test") & ~keep & mask
            if test.any():
                row[f"{label}_flagged"] = float(np.mean(~accepted[test]))
                row[f"{label}_flagged_classifier_only"] = float(np.mean(~by_classifier[test]))
                row[f"n_{label}"] = int(test.sum())
        out[name] = row
    return out


def radiograph_source(item: dict[str, Any]) -> str | None:
    """A radiograph's source, and that of negatives made from it (left out together)."""
    if item["kind"] == "radiograph" or item["kind"] in FROM_RADIOGRAPH:
        return item["path"].split("/")[0]
    return None


def negative_kind(item: dict[str, Any]) -> str | None:
    return None if item["kind"] == "radiograph" else item["kind"]


def train_and_measure(x: torch.Tensor, items: list[dict[str, Any]], cfg: FitConfig,
                      generalisation: bool = True) -> tuple[InputChecker, dict[str, Any]]:
    y = torch.tensor([INPUT_CLASSES.index(KINDS.get(s["kind"], "radiograph")) for s in items])
    split = np.array([s["split"] for s in items])
    rows = {k: np.flatnonzero(split == k) for k in COUNTS}
    checker = fit(x, y, torch.tensor(rows["train"]), cfg)
    positive = (y == 0).numpy()
    accepted = calibrate(checker, x, positive, split == "train", split == "val")
    by_classifier = p_radiograph(checker, x) >= checker.config.threshold
    with torch.no_grad():
        near = checker.distance(x).numpy() <= checker.config.ood_threshold
    metrics: dict[str, Any] = {"threshold": checker.config.threshold,
                               "ood_threshold": checker.config.ood_threshold, "fit": vars(cfg),
                               "counts": {k: int(len(v)) for k, v in rows.items()}}
    for name in ("val", "test"):
        part = [items[i] for i in rows[name]]
        metrics[name] = rates(accepted[rows[name]], part)
        metrics[name]["classifier_only"] = rates(by_classifier[rows[name]], part)
        metrics[name]["distance_only"] = rates(near[rows[name]], part)
    if generalisation:
        # a source's radiographs and the rotated / inverted / cropped images made from them
        metrics["held_out_source"] = held_out(x, y, items, cfg, radiograph_source)
        metrics["held_out_kind"] = held_out(x, y, items, cfg, negative_kind)
    return checker, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CRRG_DATA", "../shared/data")))
    parser.add_argument("--prepared", type=Path, default=None,
                        help="take the radiographs from this train.prepare folder instead of --data")
    parser.add_argument("--weights", default="assets/crrg-default")
    parser.add_argument("--out", type=Path, default=Path("runs/input_check"))
    parser.add_argument("--per-source", type=int, default=120, help="train radiographs per source")
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
    items = samples(pools, args.per_source)
    args.out.mkdir(parents=True, exist_ok=True)
    x = cached_features(args.weights, args.device, root, items, args.out / "features.pt")
    cfg = FitConfig()
    checker, metrics = train_and_measure(x, items, cfg)
    metrics["source"] = {"radiographs": "prepared" if args.prepared else "data", "per_source": args.per_source,
                         "weights": str(args.weights)}
    save_checker(checker, args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    test = metrics["test"]
    logger.info("threshold %.3f; test: negatives flagged %.3f, radiographs flagged %.3f", checker.config.threshold,
                test["negatives_flagged"], test["radiographs_flagged"])
    for name in ("held_out_source", "held_out_kind"):
        logger.info("%s: %s", name, json.dumps(metrics[name]))


if __name__ == "__main__":
    main()
