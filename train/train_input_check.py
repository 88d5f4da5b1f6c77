"""Train the input check (:mod:`crrg.input_check`) on real radiographs and generated negatives.

    python -m train.train_input_check --prepared runs/prepared --weights assets/crrg-default \
        --out runs/input_check [--per-source 120]

Positives: real radiographs of every source (patient-disjoint splits of ``train.prepare``), each
resized to a random longest side in 224..2048 px (test: every one of 224, 512, 1024, 2048).
Negatives (:mod:`train.negatives`): synthetic kinds, and crops / rotations / inversions of
radiographs of the same split. Features come from the frozen detector and CLIP of ``--weights``
(they stay frozen in the released model, so the checker carries over). The threshold on
P(radiograph) is the largest whose validation positives are flagged <= 1 % of the time.
Writes ``OUT/input_check.safetensors``, ``OUT/config.json``, ``OUT/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from crrg.input_check import INPUT_CLASSES, InputCheckConfig, InputChecker, input_features
from crrg.pipeline import load, prepare
from train.datasets import Prepared
from train.negatives import FROM, FROM_RADIOGRAPH, GENERATORS, KINDS, SYNTHETIC, resized

logger = logging.getLogger("train.train_input_check")
SOURCES = ("jsrt_scr", "covid_lung_boxes", "covid_anatomy", "kermany_pneumonia", "covid_radiography")
TEST_SIDES = (224, 512, 1024, 2048)
COUNTS = {"train": 1.0, "val": 0.25, "test": 0.35}


def samples(prepared: Prepared, per_source: int, seed: int = 0) -> list[dict[str, Any]]:
    """[{split, kind, source, side, make()}] deterministic."""
    rng = random.Random(seed)
    by: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in prepared.images(None):
        if row.get("image") and row["source"] in SOURCES and row.get("split") in COUNTS:
            by[(row["split"], row["source"])].append(row["image"])
    out: list[dict[str, Any]] = []
    for split, share in COUNTS.items():
        n = max(4, int(per_source * share))
        chosen: list[str] = []
        for source in SOURCES:
            pool = sorted(by[(split, source)])
            picks = rng.sample(pool, min(n, len(pool)))
            chosen += picks
            for path in picks:
                sides = TEST_SIDES if split == "test" else (rng.choice(range(224, 2049, 32)),)
                for side in sides:
                    out.append({"split": split, "kind": "radiograph", "source": source, "side": side,
                                "path": path})
        n_neg = max(8, int(len(chosen) / (len(SYNTHETIC) + len(FROM_RADIOGRAPH))) * 2)
        for kind in SYNTHETIC:
            out += [{"split": split, "kind": kind, "seed": rng.randrange(2**31)} for _ in range(n_neg)]
        for kind in FROM_RADIOGRAPH:
            out += [{"split": split, "kind": kind, "path": rng.choice(chosen), "seed": rng.randrange(2**31),
                     "side": rng.choice(range(224, 1025, 32))} for _ in range(n_neg)]
    return out


def make_image(prepared: Prepared, sample: dict[str, Any]) -> Image.Image:
    rng = random.Random(sample.get("seed", 0))
    if sample["kind"] in GENERATORS:
        return GENERATORS[sample["kind"]](rng)
    with Image.open(prepared.path(sample["path"])) as im:
        image = resized(im, sample["side"])
    return image if sample["kind"] == "radiograph" else FROM[sample["kind"]](image, rng)


@torch.inference_mode()
def features(pipe: Any, prepared: Prepared, items: list[dict[str, Any]], batch: int = 8) -> torch.Tensor:
    model, out = pipe.model, []
    for start in range(0, len(items), batch):
        tensors = torch.stack([prepare(make_image(prepared, s), model.config.image_size).tensor
                               for s in items[start:start + batch]])
        found = model.detector.infer(tensors, backbone_batch=2)
        out.append(input_features(model.clip.encode_image(tensors), found.scores, tensors))
        if start % 200 == 0:
            logger.info("features %d / %d", start, len(items))
    return torch.cat(out)


def choose_threshold(p_radiograph: np.ndarray, positive: np.ndarray, max_flagged: float = 0.01) -> float:
    """The largest threshold that flags at most ``max_flagged`` of the positives."""
    scores = np.sort(p_radiograph[positive])
    k = int(np.floor(max_flagged * len(scores)))
    return float(min(0.5, scores[k])) if len(scores) else 0.5


def rates(checks_ok: np.ndarray, items: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_source: dict[str, list[bool]] = defaultdict(list)
    by_side: dict[str, list[bool]] = defaultdict(list)
    for ok, s in zip(checks_ok.tolist(), items):
        if s["kind"] == "radiograph":
            by_source[s["source"]].append(not ok)
            by_side[str(s["side"])].append(not ok)
        else:
            by_kind[s["kind"]].append(not ok)
    neg = [v for k in by_kind.values() for v in k]
    pos = [v for k in by_source.values() for v in k]
    return {
        "negatives_flagged": float(np.mean(neg)), "n_negatives": len(neg),
        "radiographs_flagged": float(np.mean(pos)), "n_radiographs": len(pos),
        "negatives_flagged_by_kind": {k: {"flagged": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_kind.items())},
        "radiographs_flagged_by_source": {k: {"flagged": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_source.items())},
        "radiographs_flagged_by_side_px": {k: {"flagged": float(np.mean(v)), "n": len(v)}
                                           for k, v in sorted(by_side.items(), key=lambda kv: int(kv[0]))},
    }


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


def _train(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, config: InputCheckConfig,
           epochs: int = 80) -> tuple[InputChecker, list[float]]:
    checker = InputChecker(config)
    target = torch.nn.functional.one_hot(y, len(INPUT_CLASSES)).float()
    opt = torch.optim.AdamW(checker.parameters(), lr=3e-3, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(epochs):
        checker.train()
        order = rows[torch.randperm(len(rows), generator=gen)]
        for start in range(0, len(order), 64):
            b = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(checker(x[b]), target[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
    return checker.eval(), losses


def leave_one_kind_out(x: torch.Tensor, y: torch.Tensor, items: list[dict[str, Any]],
                       idx: dict[str, torch.Tensor], config: InputCheckConfig) -> dict[str, Any]:
    """How well kinds of input the checker never saw are flagged: for each negative kind, train
    without it (same threshold rule), flag its test images. The distance check is included."""
    kinds = np.array([s["kind"] for s in items])
    out = {}
    for kind in sorted(set(kinds) - {"radiograph"}):
        rows = idx["train"][torch.as_tensor(kinds[idx["train"].numpy()] != kind)]
        cfg = InputCheckConfig(**{**asdict(config), "ood_threshold": None})
        checker, _ = _train(x, y, rows, cfg, epochs=40)
        positive = (y == 0).numpy()
        val = idx["val"].numpy()
        with torch.no_grad():
            p = checker(x).softmax(-1).numpy()[:, 0]
        cfg.threshold = choose_threshold(p[val], positive[val])
        fit_ood(checker, x[idx["train"][positive[idx["train"].numpy()]]], x[val[positive[val]]])
        test = idx["test"].numpy()
        test = test[kinds[test] == kind]
        with torch.no_grad():
            ok = [c.ok for c in checker.check(x[test])]
        out[kind] = {"flagged": float(1 - np.mean(ok)), "n": int(len(test))}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--weights", default="assets/crrg-default")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-source", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    prepared = Prepared(args.prepared)
    pipe = load(args.weights, device="cpu")
    items = samples(prepared, args.per_source)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "features.pt"
    x = torch.load(cache) if cache.is_file() else features(pipe, prepared, items)
    torch.save(x, cache)
    y = torch.tensor([INPUT_CLASSES.index(KINDS.get(s["kind"], "radiograph")) for s in items])
    split = np.array([s["split"] for s in items])
    idx = {k: torch.tensor(np.flatnonzero(split == k)) for k in COUNTS}
    config = InputCheckConfig(feature_dim=x.shape[1])
    checker, losses = _train(x, y, idx["train"], config)
    checker.eval()
    with torch.no_grad():
        probs = checker(x).softmax(-1).numpy()
    positive = (y == 0).numpy()
    val = idx["val"].numpy()
    config.threshold = choose_threshold(probs[val, 0], positive[val])
    fit_ood(checker, x[idx["train"][positive[idx["train"].numpy()]]], x[val[positive[val]]])
    checker.config = config
    with torch.no_grad():
        accepted = np.array([c.ok for c in checker.check(x)])
        distance = checker.distance(x).numpy()
    metrics = {"threshold": config.threshold, "ood_threshold": config.ood_threshold,
               "train_loss_first_last": [losses[0], losses[-1]],
               "counts": {k: int(len(v)) for k, v in idx.items()}}
    for name in ("val", "test"):
        part = idx[name].numpy()
        metrics[name] = rates(accepted[part], [items[i] for i in part])
        metrics[name]["classifier_only"] = rates(probs[part, 0] >= config.threshold, [items[i] for i in part])
        metrics[name]["distance_only"] = rates(distance[part] <= config.ood_threshold, [items[i] for i in part])
    metrics["leave_one_kind_out"] = leave_one_kind_out(x, y, items, idx, config)
    save_file({k: v.contiguous() for k, v in checker.state_dict().items()}, str(args.out / "input_check.safetensors"))
    (args.out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info("threshold %.3f; test: negatives flagged %.3f, radiographs flagged %.3f", config.threshold,
                metrics["test"]["negatives_flagged"], metrics["test"]["radiographs_flagged"])


if __name__ == "__main__":
    main()
