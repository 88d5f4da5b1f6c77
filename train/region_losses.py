"""Shared steps of the detector and decoder stages (``train.train_detector``,
``train.train_decoder``): their common run settings, per-region features of a mixed batch (boxed
images with detector losses, the rest without gradient) and the masked BCE of the selection /
abnormality heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from crrg.classifier import region_bce_loss
from crrg.detector import RegionDetector
from train.datasets import AugmentConfig
from train.engine import RunConfig


@dataclass
class RegionStageConfig(RunConfig):
    """Settings of both region stages. ``augment``: image augmentation; ``use_derived``: train
    on rule-derived (silver) boxes too; ``detector_loss_weight``: weight of the detector losses
    when the detector trains; ``common_threshold``: a region is commonly described (a selection
    target) when at least this share of training reports names it
    (:func:`train.targets.common_regions`)."""

    augment: AugmentConfig = field(default_factory=AugmentConfig)
    use_derived: bool = True
    detector_loss_weight: float = 1.0
    common_threshold: float = 0.3


def mixed_batch_features(detector: RegionDetector, images: Tensor, targets: list[dict[str, Tensor] | None],
                    with_losses: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Per-region features [B, 29, D] and detected [B, 29] for a mixed batch.

    ``with_losses``: images with boxes go through ``forward_with_features`` (training mode:
    detector losses, features keep their gradient); every other image is run in eval mode
    without gradient. Returns (features, detected, detector losses or {}).
    """
    batch = images.shape[0]
    boxed = [i for i, t in enumerate(targets) if t is not None] if with_losses else []
    rest = [i for i in range(batch) if i not in set(boxed)]
    parts: list[tuple[list[int], Tensor, Tensor]] = []
    losses: dict[str, Tensor] = {}
    if boxed:
        detector.train()
        losses, out = detector.forward_with_features(images[boxed], [targets[i] for i in boxed])
        parts.append((boxed, out.features, out.detected))
    if rest:
        was_training = detector.training
        detector.eval()
        with torch.no_grad():
            out = detector(images[rest])
        detector.train(was_training)
        parts.append((rest, out.features, out.detected))
    order = torch.tensor([i for idx, _, _ in parts for i in idx], device=images.device)
    features = torch.cat([f for _, f, _ in parts])[order.argsort()]  # [B, 29, D]
    detected = torch.cat([d for _, _, d in parts])[order.argsort()]  # [B, 29]
    return features, detected, losses


def classifier_losses(selection: nn.Module, abnormality: nn.Module, features: Tensor, detected: Tensor,
                      batch: dict[str, Any], pos_weights: Tensor) -> dict[str, Tensor]:
    """Masked BCE of both heads on features [B, 29, D]; undetected regions are masked out."""
    sel_logits = selection(features)  # [B, 29]
    abn_logits = abnormality(features)  # [B, 29]
    return {
        "loss_selection": region_bce_loss(sel_logits, batch["selection"], batch["selection_mask"] & detected,
                                          pos_weights[0]),
        "loss_abnormality": region_bce_loss(abn_logits, batch["abnormality"], batch["abnormality_mask"] & detected,
                                         pos_weights[1]),
    }
