"""CheXzero-style label decisions on CLIP image embeddings: which images tell the truth of which
label (within the sources that assess it), the "{label}" vs "no {label}" logits, their loss and
validation scores. Shared by ``train.train_text_tower`` (text tower on frozen embeddings) and
``train.train_image_tower`` (both towers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from crrg.clip import CXRClip
from crrg.labels import FINDINGS, UNREPORTED
from train.datasets import PreparedData
from train.tasks import NIH_ZERO_SHOT, ZERO_SHOT_TASKS, zero_shot_target


TRAIN_LABELS: tuple[str, ...] = tuple(f for f in FINDINGS if f != "no finding") + UNREPORTED

def embedding_rows(prepared: PreparedData, splits: Sequence[str] = ("train", "val")) -> list[dict[str, Any]]:
    """The images of ``splits`` with labels or paired text, in a stable order."""
    rows = [r for r in prepared.images(list(splits)) if r.get("image") and (r.get("labels") or r.get("text"))]
    return sorted(rows, key=lambda r: r["image"])

def assessed(rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """(source, label) pairs where the source labels some image positive: the labels a source
    assesses. A source's normals say "no cardiomegaly" only if the source could have said
    "cardiomegaly" (Kermany and COVID-19 Radiography normals carry every CheXpert label as 0)."""
    return {(r["source"], label) for r in rows for label, value in (r.get("labels") or {}).items() if value == 1}

@dataclass
class EmbeddingSet:
    """Cached embeddings with their label truth (``target`` 0/1, ``known``) over ``labels``."""

    rows: list[dict[str, Any]]
    embedding: torch.Tensor  # [N, E]
    target: torch.Tensor  # [N, L]
    known: torch.Tensor  # [N, L] bool
    labels: tuple[str, ...]

    @classmethod
    def build(cls, rows: Sequence[dict[str, Any]], embeddings: dict[str, torch.Tensor],
              labels: Sequence[str], within_source: bool = True) -> EmbeddingSet:
        """``within_source``: a label's truth is known only on the images of the sources that
        assess it (:func:`assessed`), so that a label learned from one hospital's positives is
        not told apart from other hospitals' normals by the hospital."""
        rows = [r for r in rows if r["image"] in embeddings]
        keep = assessed(rows) if within_source else None
        truth = [[zero_shot_target(r.get("labels") or {}, label)
                  if keep is None or (r["source"], label) in keep else None for label in labels] for r in rows]
        return cls(rows, torch.stack([embeddings[r["image"]] for r in rows]),
                   torch.tensor([[float(t or 0) for t in row] for row in truth]),
                   torch.tensor([[t is not None for t in row] for row in truth], dtype=torch.bool),
                   tuple(labels))

    def subset(self, keep: Sequence[int]) -> EmbeddingSet:
        idx = torch.as_tensor(list(keep), dtype=torch.long)
        return EmbeddingSet([self.rows[i] for i in idx.tolist()], self.embedding[idx], self.target[idx],
                            self.known[idx], self.labels)

    def where(self, split: str | None = None, source: str | None = None) -> EmbeddingSet:
        return self.subset([i for i, r in enumerate(self.rows) if (split is None or r["split"] == split)
                            and (source is None or r["source"] == source)])

def decision_logits(clip: CXRClip, embedding: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
    """[N, L] "{label}" minus "no {label}" logits (the logit of CheXzero's softmax), differentiable
    in the text tower; the same numbers :meth:`CXRClip.zero_shot` turns into probabilities."""
    config = clip.config
    text = clip.prompt_features(list(labels), [config.positive, config.negative])  # [2, L, E]
    logits = clip.logit_scale() * torch.einsum("ne,ple->nlp", embedding, text)  # [N, L, 2]
    return logits[..., 0] - logits[..., 1]

def label_loss(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the known (image, label) pairs, averaged per label, then over
    the labels with any known pair."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known
    count = known.sum(0)
    per_label = bce.sum(0)[count > 0] / count[count > 0]
    return per_label.mean() if len(per_label) else logits.sum() * 0.0

def aucs(clip: CXRClip, data: EmbeddingSet, labels: Sequence[str]) -> dict[str, float]:
    """Zero-shot AUC per label over the images of ``data`` whose truth is known (labels with a
    single class left out)."""
    with torch.no_grad():
        z = decision_logits(clip, data.embedding, labels).numpy()
    out = {}
    for j, label in enumerate(labels):
        i = data.labels.index(label)
        known = data.known[:, i].numpy()
        y = data.target[known, i].numpy()
        if 0 < y.sum() < len(y):
            out[label] = float(roc_auc_score(y, z[known, j]))
    return out

def validation_scores(clip: CXRClip, val: EmbeddingSet) -> dict[str, Any]:
    """NIH mean AUC over :data:`NIH_ZERO_SHOT` and each :data:`ZERO_SHOT_TASKS` task's AUC on its
    own source, on validation images."""
    nih = aucs(clip, val.where(source="nih_cxr14"), NIH_ZERO_SHOT)
    tasks = {}
    for task in ZERO_SHOT_TASKS:
        scored = aucs(clip, val.where(source=task.source), [task.label])
        if task.label in scored:
            tasks[task.name] = scored[task.label]
    return {"nih_mean_auc": float(np.mean(list(nih.values()))) if nih else math.nan, "nih": nih, "tasks": tasks}

def admissible(scores: dict[str, Any], start: dict[str, Any], max_drop: float) -> bool:
    return all(scores["tasks"].get(name, -1.0) >= auc - max_drop for name, auc in start["tasks"].items())


@dataclass
class RunState:
    """A CLIP run's progress (checkpointed): the step, the kept step and its score, every
    validation evaluation, and the training loss per step."""

    step: int = 0
    best_step: int = 0
    best_score: float = -math.inf
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
