"""Fine-tune CLIP's text tower (and logit scale) on the frozen image embeddings of a finished model.

    python -m train.train_text_tower --prepared runs/prepared --weights assets/crrg-default --out runs/text

Everything the pipeline computes from the image stays bit-identical (regions, heads, reports,
the input check): only the zero-shot prompts change. Steps:

1. **Embeddings**: the pipeline's own CLIP image embedding (:meth:`crrg.pipeline.Pipeline.embed`,
   images decoded by :func:`crrg.batch.loader`) of every train and validation image with labels or
   paired text, cached in resumable shards under ``OUT/embeddings``.
2. **Training** (full text tower + logit scale, AdamW), two losses per step:
   - ``loss_label``: CheXzero's decision, "{label}" vs "no {label}" with the model's own prompt
     patterns, as a binary cross-entropy per (image, label) whose truth is known
     (:func:`train.tasks.zero_shot_target`: present, or absent / a "No Finding" study) on the
     images of the sources that assess the label (:func:`assessed`: NIH's findings are learned
     within NIH, not against other hospitals' normals), averaged per label so that rare findings
     weigh as much as common ones; the labels are
     :data:`crrg.labels.FINDINGS` and :data:`crrg.labels.UNREPORTED` (NIH ChestX-ray14's findings
     included);
   - ``loss_pair``: InfoNCE of the images that come with real text (COVID clinical notes, MIMIC
     reports when present) against that text, so free-text prompts keep their meaning.
3. **Selection on validation** every ``eval_every`` steps: the mean zero-shot AUC over the NIH
   findings of :data:`train.tasks.NIH_ZERO_SHOT` on NIH validation images; a step is admissible
   only if no task of :data:`train.tasks.ZERO_SHOT_TASKS` (pneumonia on Kermany, COVID-19, JSRT
   nodule) falls by more than ``max_task_drop`` below the starting tower. Step 0 (the tower as it
   was) is always a candidate.
4. The kept tower's zero-shot temperature is refitted on the validation tasks (as
   ``train.train_heads`` does) and ``OUT/model`` is written (the base folder's card, licence and
   metrics carried over), with ``OUT/metrics.json`` (every evaluation, the choice, ECE).

``OUT/checkpoint.pt`` (written at every evaluation) resumes an interrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crrg.calibration import apply, expected_calibration_error, fit_temperature_scaling
from crrg.clip import CXRClip
from crrg.clip_loss import info_nce_loss
from crrg.model import CRRGModel
from train.common import clip_run_parser, parse_overrides, save_with_card
from train.datasets import PreparedData
from train.label_decisions import (
    RunState,
    TRAIN_LABELS,
    EmbeddingSet,
    admissible,
    decision_logits,
    embedding_rows,
    label_loss,
    validation_scores,
)
from train.tasks import ZERO_SHOT_TASKS

logger = logging.getLogger("train.train_text_tower")
SHARD = 512  # images per embedding shard


@dataclass(frozen=True)
class TextTowerConfig:
    steps: int = 600
    lr: float = 5e-5
    weight_decay: float = 0.01
    images_per_step: int = 1024  # label-loss images drawn per step (embeddings are cached)
    pairs_per_step: int = 32  # image-text pairs drawn per step for InfoNCE
    pair_weight: float = 0.5
    eval_every: int = 50
    max_task_drop: float = 0.02
    seed: int = 0
    within_source: bool = True  # label truth only from the sources that assess the label (:func:`assessed`)


# ----------------------------------------------------------------------------- embeddings


def cache_embeddings(weights: str | Path, prepared: PreparedData, rows: Sequence[dict[str, Any]], out: Path,
                     batch_size: int = 16, workers: int = 2) -> dict[str, torch.Tensor]:
    """{image key: embedding [E]} of ``rows`` through :meth:`crrg.pipeline.Pipeline.embed`, in
    shards of :data:`SHARD` images under ``out`` (a finished shard is read, not recomputed).
    Unreadable images are left out."""
    from crrg.batch import loader
    from crrg.pipeline import load

    out.mkdir(parents=True, exist_ok=True)
    pipe = None
    found: dict[str, torch.Tensor] = {}
    for start in range(0, len(rows), SHARD):
        shard = out / f"emb-{start // SHARD:04d}.pt"
        keys = [r["image"] for r in rows[start:start + SHARD]]
        if shard.is_file():
            found.update(torch.load(shard))
            continue
        pipe = pipe or load(str(weights), device="cpu")
        part: dict[str, torch.Tensor] = {}
        paths = {str(prepared.path(k)): k for k in keys}
        for items in loader(list(paths), pipe.config.image_size, batch_size, workers):
            ok = [it for it in items if it.prepared is not None]
            if ok:
                embedding, _ = pipe.embed(pipe.stack([it.prepared for it in ok]))
                part.update({paths[it.path]: e.float().clone() for it, e in zip(ok, embedding)})
        torch.save(part, shard)
        found.update(part)
        logger.info("embeddings %d-%d of %d", start, start + len(keys), len(rows))
    return found


# ----------------------------------------------------------------------------- losses and scores


# ----------------------------------------------------------------------------- training
def text_parameters(clip: CXRClip) -> dict[str, torch.nn.Parameter]:
    """The text tower and the logit scale (everything but ``visual.``); the image tower is frozen."""
    out = {}
    for name, p in clip.model.named_parameters():
        p.requires_grad_(not name.startswith("visual."))
        if p.requires_grad:
            out[name] = p
    return out


def text_state(clip: CXRClip) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in clip.model.state_dict().items() if not k.startswith("visual.")}


def train_text_tower(clip: CXRClip, train: EmbeddingSet, val: EmbeddingSet, cfg: TextTowerConfig,
                     checkpoint: Path | None = None) -> tuple[dict[str, torch.Tensor], RunState]:
    """Train ``clip``'s text tower (see the module docstring); returns the kept text state and the
    run's record. Resumes from ``checkpoint`` when it exists; writes it at every evaluation."""
    params = text_parameters(clip)
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state, best = RunState(), text_state(clip)
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        clip.model.load_state_dict({**clip.model.state_dict(), **saved["text"]})
        optimizer.load_state_dict(saved["optimizer"])
        state, best = RunState(**saved["state"]), saved["best"]
        logger.info("resumed at step %d", state.step)
    rng = random.Random(cfg.seed + state.step)
    labelled = [i for i in range(len(train.rows)) if bool(train.known[i].any())]
    pairs = [i for i, r in enumerate(train.rows) if r.get("text")]
    start = state.history[0] if state.history else None
    while state.step <= cfg.steps:
        evaluated = bool(state.history) and state.history[-1]["step"] == state.step  # resumed at an evaluation
        if (state.step % cfg.eval_every == 0 or state.step == cfg.steps) and not evaluated:
            clip.eval()
            scores = {"step": state.step, **validation_scores(clip, val)}
            start = start or scores
            ok = admissible(scores, start, cfg.max_task_drop)
            if ok and scores["nih_mean_auc"] > state.best_score:
                state.best_step, state.best_score, best = state.step, scores["nih_mean_auc"], text_state(clip)
            state.history.append({**scores, "admissible": ok})
            logger.info("step %d: NIH val mean AUC %.3f, tasks %s%s", state.step, scores["nih_mean_auc"],
                        {k: round(v, 3) for k, v in scores["tasks"].items()}, "" if ok else " (not admissible)")
            if checkpoint is not None:
                torch.save({"text": text_state(clip), "optimizer": optimizer.state_dict(),
                            "state": asdict(state), "best": best, "config": asdict(cfg)}, checkpoint)
        if state.step == cfg.steps:
            break
        clip.train()
        batch = train.subset(rng.sample(labelled, min(cfg.images_per_step, len(labelled))))
        loss = label_loss(decision_logits(clip, batch.embedding, train.labels), batch.target, batch.known)
        if len(pairs) >= 2 and cfg.pair_weight > 0:
            chosen = rng.sample(pairs, min(cfg.pairs_per_step, len(pairs)))
            text = clip.encode_text([train.rows[i]["text"] for i in chosen])
            loss = loss + cfg.pair_weight * info_nce_loss(train.embedding[chosen], text, clip.logit_scale())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.losses.append(float(loss.detach()))
        state.step += 1
    clip.eval()
    return best, state


def fit_zero_shot_temperature(clip: CXRClip, val: EmbeddingSet) -> tuple[Any, dict[str, Any]]:
    """One temperature for every prompt, fitted on the validation images of each
    :data:`ZERO_SHOT_TASKS` task (as ``train.train_heads``), with the ECE before and after."""
    z, y = [], []
    for task in ZERO_SHOT_TASKS:
        part = val.where(source=task.source)
        j = part.labels.index(task.label)
        with torch.no_grad():
            logits = decision_logits(clip, part.embedding, [task.label])[:, 0].numpy()
        known = part.known[:, j].numpy()
        z.append(logits[known])
        y.append(part.target[known, j].numpy())
    z_all, y_all = np.concatenate(z), np.concatenate(y)
    scaling = fit_temperature_scaling(z_all, y_all)
    return scaling, {"params": scaling.to_json(), "n_val": int(len(y_all)),
                     "ece_before": expected_calibration_error(apply(None, z_all), y_all).ece,
                     "ece_after": expected_calibration_error(apply(scaling, z_all), y_all).ece}


def write_model(model: CRRGModel, base: Path, out: Path, temperature: Any) -> None:
    """``model`` with its zero-shot temperature as a model folder (base's card, licence, metrics)."""
    model.config = dataclasses.replace(model.config, calibration=dataclasses.replace(
        model.config.calibration, zero_shot=temperature))
    save_with_card(model, base, out)


def main(argv: list[str] | None = None) -> None:
    args = clip_run_parser(__doc__, "TextTowerConfig", "steps=300").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = TextTowerConfig(**parse_overrides(args.set))
    prepared = PreparedData(args.prepared, args.data)
    rows = embedding_rows(prepared)
    embeddings = cache_embeddings(args.weights, prepared, rows, args.out / "embeddings")
    data = EmbeddingSet.build(rows, embeddings, TRAIN_LABELS, cfg.within_source)
    train, val = data.where("train"), data.where("val")
    logger.info("%d train / %d val embeddings, %d paired texts", len(train.rows), len(val.rows),
                sum(1 for r in train.rows if r.get("text")))
    model = CRRGModel.from_pretrained(str(args.weights))
    clip = model.clip.float()
    best, state = train_text_tower(clip, train, val, cfg, args.out / "checkpoint.pt")
    clip.model.load_state_dict({**clip.model.state_dict(), **best})
    temperature, ece = fit_zero_shot_temperature(clip, val)
    write_model(model, args.weights, args.out / "model", temperature)
    chosen = next(h for h in state.history if h["step"] == state.best_step)
    (args.out / "metrics.json").write_text(json.dumps(
        {"config": asdict(cfg), "chosen_step": state.best_step, "chosen": chosen, "start": state.history[0],
         "history": state.history, "zero_shot_temperature": ece, "train_images": len(train.rows),
         "val_images": len(val.rows), "labels": list(TRAIN_LABELS)}, indent=2) + "\n")
    logger.info("kept step %d (NIH val mean AUC %.3f, was %.3f); wrote %s", state.best_step,
                chosen["nih_mean_auc"], state.history[0]["nih_mean_auc"], args.out / "model")


if __name__ == "__main__":
    main()
