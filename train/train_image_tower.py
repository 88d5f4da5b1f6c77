"""Fine-tune CLIP's image tower (with its text tower) on within-source image labels, and measure
what it buys over the frozen tower.

    python -m train.train_image_tower --prepared runs/prepared --weights assets/crrg-default --out runs/tower

The frozen tower was trained on sources whose label is the source (every adult abnormal image
from a COVID collection). NIH ChestX-ray14 and TBX11K break that; this run lets the tower learn
from them. Steps:

1. **Images**: the pipeline's own tower input (:func:`crrg.batch.loader` at the model's image
   size, then :meth:`crrg.clip.CXRClip._tower_input`) of every train image of the sources that
   assess a finding beside normal (NIH, TBX11K, JSRT, the note pairs) and at most ``cap`` per
   (source, label) of the large pneumonia sources, plus the validation images; cached once as
   fp16 in ``OUT/images.pt``.
2. **Training** (image tower, text tower, logit scale; AdamW): the loss of
   :mod:`train.label_decisions` (CheXzero's "{label}" vs "no {label}" decision as a BCE over
   within-source truth, averaged per label, plus InfoNCE of the note pairs), now through the image
   tower, with a small random affine per image.
3. **Selection on validation** every ``eval_every`` steps, as the text tower's: NIH mean zero-shot
   AUC, admissible only if no zero-shot task falls by more than ``max_task_drop``.
4. **What fine-tuning buys**: a logistic-regression probe per NIH finding on NIH train embeddings,
   scored on NIH validation, for the frozen and the kept tower (``OUT/metrics.json``).

``OUT/checkpoint.pt`` (every evaluation) resumes an interrupted run. ``OUT/model`` is the base
model with the kept CLIP (only the CLIP changes: the heads, fusion and decoder downstream of the
embedding must be retrained on it before it can ship).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from crrg.clip import CXRClip
from crrg.clip_loss import info_nce_loss
from crrg.model import CRRGModel
from train.common import clip_run_parser, parse_overrides, save_with_card
from train.datasets import PreparedData, capped_sample
from train.tasks import NIH_ZERO_SHOT
from train.label_decisions import (
    TRAIN_LABELS,
    EmbeddingSet,
    RunState,
    admissible,
    decision_logits,
    embedding_rows,
    label_loss,
    validation_scores,
)

logger = logging.getLogger("train.train_image_tower")
CAPPED_SOURCES = ("kermany_pneumonia", "covid_radiography")


@dataclass(frozen=True)
class ImageTowerConfig:
    steps: int = 240
    batch_size: int = 32
    lr: float = 1e-4
    text_lr: float = 3e-5
    weight_decay: float = 0.01
    pairs_per_step: int = 8
    pair_weight: float = 0.5
    eval_every: int = 40
    max_task_drop: float = 0.02
    cap: int = 400  # train images per (source, label) of CAPPED_SOURCES
    affine: float = 0.05  # random scale / shift range of the training affine
    seed: int = 0


def tower_rows(prepared: PreparedData, cap: int, seed: int = 0) -> list[dict[str, Any]]:
    """Train and validation images with labels or text; the capped sources' train images at most
    ``cap`` per (source, sorted label set), drawn with a fixed seed."""
    def group(row: dict[str, Any]) -> tuple[str, str] | None:
        if row["split"] != "train" or row["source"] not in CAPPED_SOURCES:
            return None
        return row["source"], ",".join(sorted(k for k, v in (row.get("labels") or {}).items() if v == 1))

    return capped_sample(embedding_rows(prepared), group, cap, seed)


def cache_images(weights: str | Path, prepared: PreparedData, rows: Sequence[dict[str, Any]], path: Path,
                 batch_size: int = 16, workers: int = 2) -> dict[str, torch.Tensor]:
    """{image key: tower input [1, s, s] fp16}, exactly what the pipeline's tower sees; read from
    ``path`` when it holds them all."""
    if path.is_file():
        found = torch.load(path)
        if all(r["image"] in found for r in rows):
            return found
    from crrg.batch import loader
    from crrg.pipeline import load

    pipe = load(str(weights), device="cpu")
    found = {}
    paths = {str(prepared.path(r["image"])): r["image"] for r in rows}
    for items in loader(list(paths), pipe.config.image_size, batch_size, workers):
        ok = [it for it in items if it.prepared is not None]
        if ok:
            tower = pipe.model.clip._tower_input(pipe.stack([it.prepared for it in ok]).float())
            found.update({paths[it.path]: t.half().clone() for it, t in zip(ok, tower)})
        if len(found) % 512 < batch_size:
            logger.info("images %d of %d", len(found), len(paths))
    torch.save(found, path)
    return found


def augment(images: torch.Tensor, strength: float, rng: torch.Generator) -> torch.Tensor:
    """A random scale and shift per image (no flip: sides matter), zero padded. [B, 1, s, s]."""
    b = images.shape[0]
    scale = 1 + (torch.rand(b, generator=rng) * 2 - 1) * strength
    shift = (torch.rand(b, 2, generator=rng) * 2 - 1) * strength
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def embed(clip: CXRClip, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """L2-normalised embeddings [N, E] of tower inputs [N, 1, s, s] (eval mode, no gradient)."""
    clip.eval()
    with torch.no_grad():
        return torch.cat([F.normalize(clip.model.encode_image(x.float()), dim=-1) for x in images.split(batch)])


def embedding_set(clip: CXRClip, rows: Sequence[dict[str, Any]], images: dict[str, torch.Tensor]) -> EmbeddingSet:
    rows = [r for r in rows if r["image"] in images]
    stacked = torch.stack([images[r["image"]] for r in rows])
    found = dict(zip((r["image"] for r in rows), embed(clip, stacked)))
    return EmbeddingSet.build(rows, found, TRAIN_LABELS)


def probe_aucs(train: EmbeddingSet, val: EmbeddingSet, labels: Sequence[str] = NIH_ZERO_SHOT) -> dict[str, float]:
    """Validation AUC of a logistic-regression probe per label on the embeddings, trained and
    scored within NIH (what an image-level head on this tower can reach)."""
    out = {}
    tr, va = train.where(source="nih_cxr14"), val.where(source="nih_cxr14")
    for label in labels:
        j = train.labels.index(label)
        ktr, kva = tr.known[:, j].numpy(), va.known[:, j].numpy()
        ytr, yva = tr.target[ktr, j].numpy(), va.target[kva, j].numpy()
        if not (0 < ytr.sum() < len(ytr) and 0 < yva.sum() < len(yva)):
            continue
        probe = LogisticRegression(C=0.5, max_iter=2000, class_weight="balanced")
        probe.fit(tr.embedding[ktr].numpy(), ytr)
        out[label] = float(roc_auc_score(yva, probe.decision_function(va.embedding[kva].numpy())))
    return out


def train_image_tower(clip: CXRClip, rows: Sequence[dict[str, Any]], images: dict[str, torch.Tensor],
                      cfg: ImageTowerConfig, checkpoint: Path | None = None
                      ) -> tuple[dict[str, torch.Tensor], RunState]:
    """Train ``clip`` (both towers) on the train ``rows``; choose the step on the validation
    ``rows``. Returns the kept CLIP state and the run's record."""
    train_rows = [r for r in rows if r["split"] == "train" and r["image"] in images]
    val_rows = [r for r in rows if r["split"] == "val"]
    visual = [p for n, p in clip.model.named_parameters() if n.startswith("visual.")]
    text = [p for n, p in clip.model.named_parameters() if not n.startswith("visual.")]
    for p in visual + text:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW([{"params": visual, "lr": cfg.lr}, {"params": text, "lr": cfg.text_lr}],
                                  weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    state = RunState()
    best = {k: v.detach().clone() for k, v in clip.model.state_dict().items()}
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        clip.model.load_state_dict(saved["clip"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state, best = RunState(**saved["state"]), saved["best"]
        logger.info("resumed at step %d", state.step)
    truth = EmbeddingSet.build(train_rows, {r["image"]: torch.zeros(1) for r in train_rows}, TRAIN_LABELS)
    labelled = [i for i in range(len(truth.rows)) if bool(truth.known[i].any())]
    pairs = [i for i, r in enumerate(truth.rows) if r.get("text")]
    rng = random.Random(cfg.seed + state.step)
    gen = torch.Generator().manual_seed(cfg.seed + state.step)
    start = state.history[0] if state.history else None
    while state.step <= cfg.steps:
        evaluated = bool(state.history) and state.history[-1]["step"] == state.step  # resumed at an evaluation
        if (state.step % cfg.eval_every == 0 or state.step == cfg.steps) and not evaluated:
            val = embedding_set(clip, val_rows, images)
            scores = {"step": state.step, **validation_scores(clip, val)}
            start = start or scores
            ok = admissible(scores, start, cfg.max_task_drop)
            if ok and scores["nih_mean_auc"] > state.best_score:
                state.best_step, state.best_score = state.step, scores["nih_mean_auc"]
                best = {k: v.detach().clone() for k, v in clip.model.state_dict().items()}
            state.history.append({**scores, "admissible": ok})
            logger.info("step %d: NIH val zero-shot mean AUC %.3f, tasks %s%s", state.step, scores["nih_mean_auc"],
                        {k: round(v, 3) for k, v in scores["tasks"].items()}, "" if ok else " (not admissible)")
            if checkpoint is not None:
                torch.save({"clip": clip.model.state_dict(), "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(), "state": asdict(state), "best": best,
                            "config": asdict(cfg)}, checkpoint)
        if state.step == cfg.steps:
            break
        clip.train()
        chosen = rng.sample(labelled, min(cfg.batch_size, len(labelled)))
        if pairs and cfg.pair_weight > 0:
            chosen += [i for i in rng.sample(pairs, min(cfg.pairs_per_step, len(pairs))) if i not in chosen]
        batch = torch.stack([images[truth.rows[i]["image"]] for i in chosen]).float()
        embedding = F.normalize(clip.model.encode_image(augment(batch, cfg.affine, gen)), dim=-1)
        idx = torch.as_tensor(chosen)
        loss = label_loss(decision_logits(clip, embedding, TRAIN_LABELS), truth.target[idx], truth.known[idx])
        paired = [k for k, i in enumerate(chosen) if truth.rows[i].get("text")]
        if len(paired) >= 2 and cfg.pair_weight > 0:
            texts = clip.encode_text([truth.rows[chosen[k]]["text"] for k in paired])
            loss = loss + cfg.pair_weight * info_nce_loss(embedding[paired], texts, clip.logit_scale())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        state.losses.append(float(loss.detach()))
        state.step += 1
        if state.step % 10 == 0:
            logger.info("step %d loss %.4f", state.step, state.losses[-1])
    clip.eval()
    return best, state


def main(argv: list[str] | None = None) -> None:
    args = clip_run_parser(__doc__, "ImageTowerConfig", "steps=100").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = ImageTowerConfig(**parse_overrides(args.set))
    prepared = PreparedData(args.prepared, args.data)
    rows = tower_rows(prepared, cfg.cap, cfg.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    images = cache_images(args.weights, prepared, rows, args.out / "images.pt")
    logger.info("%d train / %d val images", sum(r["split"] == "train" for r in rows),
                sum(r["split"] == "val" for r in rows))
    model = CRRGModel.from_pretrained(str(args.weights))
    clip = model.clip.float()
    nih = [r for r in rows if r["source"] == "nih_cxr14"]
    frozen_probe = probe_aucs(embedding_set(clip, [r for r in nih if r["split"] == "train"], images),
                              embedding_set(clip, [r for r in nih if r["split"] == "val"], images))
    best, state = train_image_tower(clip, rows, images, cfg, args.out / "checkpoint.pt")
    clip.model.load_state_dict(best)
    tuned_probe = probe_aucs(embedding_set(clip, [r for r in nih if r["split"] == "train"], images),
                             embedding_set(clip, [r for r in nih if r["split"] == "val"], images))
    save_with_card(model, args.weights, args.out / "model")
    chosen = next(h for h in state.history if h["step"] == state.best_step)
    mean = lambda d: float(np.mean(list(d.values()))) if d else math.nan  # noqa: E731
    (args.out / "metrics.json").write_text(json.dumps(
        {"config": asdict(cfg), "chosen_step": state.best_step, "chosen": chosen, "start": state.history[0],
         "history": state.history, "probe": {"frozen": frozen_probe, "tuned": tuned_probe,
                                             "frozen_mean": mean(frozen_probe), "tuned_mean": mean(tuned_probe)},
         "losses": state.losses, "train_images": sum(r["split"] == "train" for r in rows)}, indent=2) + "\n")
    logger.info("kept step %d: NIH val zero-shot %.3f (was %.3f); NIH val probe mean %.3f (frozen %.3f)",
                state.best_step, chosen["nih_mean_auc"], state.history[0]["nih_mean_auc"],
                mean(tuned_probe), mean(frozen_probe))


if __name__ == "__main__":
    main()
