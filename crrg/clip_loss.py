"""Contrastive losses for :class:`crrg.clip.CXRClip`.

- :func:`info_nce_loss`: paired image-text InfoNCE, open_clip's ``ClipLoss`` (image i belongs to
  text i; symmetric cross-entropy over the ``logit_scale`` x cosine logits).
- :func:`label_aware_loss`: MedCLIP-style semantic matching for unpaired data (images with label
  vectors, texts with label vectors, e.g. prompts or labelled report sentences): the soft target
  of image i for text j is the cosine similarity of their multi-hot label vectors (negatives
  clipped to 0, two empty vectors count as a match), row-normalised; cross-entropy of the logits
  against these targets in both directions (image -> texts, text -> images), averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import Tensor


def info_nce_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of B paired features [B, E] (L2-normalised) and ``exp(logit_scale)``."""
    if image_features.shape != text_features.shape:
        raise ValueError(f"paired features must have equal shapes, got {tuple(image_features.shape)} "
                         f"and {tuple(text_features.shape)}")
    return ClipLoss()(image_features, text_features, logit_scale)


def label_similarity(image_labels: Tensor, text_labels: Tensor) -> Tensor:
    """Label agreement [B, T] in [0, 1]: cosine of label vectors [B, K] and [T, K].

    Negative cosines are clipped to 0; two all-zero vectors (e.g. "no finding" without its own
    label) agree with 1, an all-zero vector and a non-zero one with 0.
    """
    if image_labels.ndim != 2 or text_labels.ndim != 2 or image_labels.shape[1] != text_labels.shape[1]:
        raise ValueError(f"expected label vectors [B, K] and [T, K], got {tuple(image_labels.shape)} "
                         f"and {tuple(text_labels.shape)}")
    a = image_labels.float()
    b = text_labels.float()
    sim = (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).clamp(min=0)  # [B, T]
    both_empty = (a.abs().sum(1) == 0)[:, None] & (b.abs().sum(1) == 0)[None, :]  # [B, T]
    return torch.where(both_empty, torch.ones_like(sim), sim)


def _soft_cross_entropy(logits: Tensor, weights: Tensor) -> Tensor:
    """Cross-entropy of logits [N, M] against row-normalised weights; rows with no match skipped."""
    total = weights.sum(dim=1)  # [N]
    keep = total > 0
    if not keep.any():
        return logits.sum() * 0.0
    targets = weights[keep] / total[keep, None]  # [N', M]
    return F.cross_entropy(logits[keep], targets)


def label_aware_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                     image_labels: Tensor, text_labels: Tensor) -> Tensor:
    """MedCLIP-style loss of image features [B, E] and text features [T, E] (L2-normalised).

    ``image_labels`` [B, K], ``text_labels`` [T, K]: multi-hot (or soft) label vectors over the
    same K findings. Returns the mean of the image->text and text->image soft cross-entropies.
    """
    if image_labels.shape[0] != image_features.shape[0] or text_labels.shape[0] != text_features.shape[0]:
        raise ValueError(f"one label vector per feature expected: images {tuple(image_features.shape)} "
                         f"vs labels {tuple(image_labels.shape)}, texts {tuple(text_features.shape)} "
                         f"vs labels {tuple(text_labels.shape)}")
    targets = label_similarity(image_labels, text_labels).to(image_features.dtype)  # [B, T]
    logits = logit_scale * image_features @ text_features.T  # [B, T]
    return (_soft_cross_entropy(logits, targets) + _soft_cross_entropy(logits.T, targets.T)) / 2
