"""Stages 1 and 2 (RGRG): the region detector, then detector + selection / abnormality heads.

    python -m train.train_detector --stage 1 --prepared out/data --out runs/stage1
    python -m train.train_detector --stage 2 --prepared out/data --init runs/stage1/model --out runs/stage2

Stage 1 trains the Faster R-CNN on ``regions.jsonl`` (train split; ``annotated`` passed so a
region without a box is never background). Stage 2 adds the two region classifiers: their BCE
losses (``pos_weight`` against imbalance) on the features of the top box per region, with the
targets of :mod:`train.targets`. Images with boxes also keep the detector losses (and, with
``train_detector``, the classifier gradient reaches the detector, as RGRG); images without boxes
(Kermany, COVID radiography) train only the heads, on features of the detector in eval mode.
For ``clip_fusion`` models (:mod:`crrg.fusion`) stage 2 also trains the fusion MLP; the CLIP
tower stays frozen (train it first with ``train.train_clip`` and start from a model holding it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from crrg.detector import RegionDetector
from crrg.fusion import fuse
from crrg.model import CRRGModel
from crrg.regions import NUM_REGIONS
from train import common
from train.datasets import ImageDataset, ImageReader, PreparedData, collate_images, merge_records
from train.region_losses import RegionStageConfig, classifier_losses, mixed_batch_features
from train.targets import auto_pos_weight, common_regions, paired_sentences, region_targets

logger = logging.getLogger(__name__)

STAGES = {1: "detector", 2: "region_heads"}


@dataclass
class DetectorRunConfig(RegionStageConfig):
    """Stage 1 / 2 run settings (see the module docstring).

    ``pretrained_backbone``: fresh models start from the offline ImageNet EfficientNet-Lite0.
    ``cache_images``: keep decoded, resized images in memory (uint8, ~S*S bytes each). Stage 2:
    ``train_detector`` (classifier gradients reach the detector; boxed images keep the detector
    losses), ``unboxed_images`` (also use labelled images without boxes), ``pos_weight_*``
    (``None``: negatives / positives of the training targets). The rest:
    :class:`train.region_losses.RegionStageConfig`.
    """

    lr: float = 3e-4
    batch_size: int = 4
    epochs: int = 20
    pretrained_backbone: bool = True
    cache_images: bool = True
    train_detector: bool = True
    unboxed_images: bool = True
    selection_loss_weight: float = 1.0
    abnormality_loss_weight: float = 1.0
    pos_weight_selection: float | None = None
    pos_weight_abnormality: float | None = None


@contextlib.contextmanager
def losses_mode(detector: nn.Module) -> Iterator[None]:
    """Training-mode forward (so losses are computed) with BatchNorm statistics frozen."""
    was_training = detector.training
    detector.train()
    for m in detector.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        yield
    finally:
        detector.train(was_training)


def detector_targets(targets: list[dict[str, Tensor] | None], device: torch.device) -> list[dict[str, Tensor]]:
    """``None`` (no box left) -> an empty target whose regions are all unannotated."""
    empty = {"boxes": torch.zeros(0, 4, device=device),
             "labels": torch.zeros(0, dtype=torch.int64, device=device),
             "annotated": torch.zeros(NUM_REGIONS, dtype=torch.bool, device=device)}
    return [t if t is not None else empty for t in targets]


class DetectorStage(nn.Module):
    """Stage 1: ``{"loss", "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}``."""

    def __init__(self, detector: RegionDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        images = batch["images"]  # [B, 1, S, S]
        if all(t is None for t in batch["targets"]):  # every box augmented out of view
            zero = sum(p.sum() for p in self.detector.parameters() if p.requires_grad) * 0.0
            return {"loss": zero}
        targets = detector_targets(batch["targets"], images.device)
        if self.training:
            losses = self.detector(images, targets)
        else:
            with losses_mode(self.detector):
                losses = self.detector(images, targets)
        return {"loss": sum(losses.values()), **losses}


class RegionHeadsStage(nn.Module):
    """Stage 2: detector losses (boxed images) + selection / abnormality BCE on region features."""

    def __init__(self, model: CRRGModel, cfg: DetectorRunConfig, pos_weights: tuple[float, float]) -> None:
        super().__init__()
        self.detector, self.selection, self.abnormality = model.detector, model.selection, model.abnormality
        self.clip, self.fusion = model.clip, model.fusion  # fusion (clip_fusion models) trains here
        self.cfg = cfg
        self.register_buffer("pos_weights", torch.tensor(pos_weights, dtype=torch.float32), persistent=False)
        common.freeze(self.detector, not cfg.train_detector)
        common.freeze(self.clip, True)  # CLIP has its own objective (train.train_clip)

    def train(self, mode: bool = True) -> RegionHeadsStage:
        super().train(mode)
        self.clip.eval()
        if not self.cfg.train_detector:
            self.detector.eval()
        return self

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        images = batch["images"]  # [B, 1, S, S]
        with_losses = self.training and self.cfg.train_detector and self.cfg.detector_loss_weight > 0
        features, detected, det_losses = mixed_batch_features(self.detector, images, batch["targets"], with_losses)
        if not self.cfg.train_detector:
            features = features.detach()
        features = fuse(self.fusion, self.clip, images, features)  # [B, 29, D]
        out = classifier_losses(self.selection, self.abnormality, features, detected, batch, self.pos_weights)
        cfg = self.cfg
        loss = cfg.selection_loss_weight * out["loss_selection"] + cfg.abnormality_loss_weight * out["loss_abnormality"]
        if det_losses:
            out.update(det_losses)
            loss = loss + self.cfg.detector_loss_weight * sum(det_losses.values())
        return {"loss": loss, **out}


# ------------------------------------------------------------------------------ data
def stage1_records(prepared: PreparedData, split: str) -> list[dict[str, Any]]:
    return [r for r in prepared.regions(split) if r.get("boxes")]


def stage2_records(prepared: PreparedData, cfg: DetectorRunConfig, split: str) -> list[dict[str, Any]]:
    records = merge_records(prepared.regions(split), prepared.images(split))
    if not cfg.unboxed_images:
        records = [r for r in records if r.get("boxes")]
    return records


def region_target_fields(prepared: PreparedData, cfg: DetectorRunConfig):
    """``fields`` function adding the stage-2 targets (precomputed per image)."""
    train_sentences = prepared.sentences("train")
    common_set = common_regions(train_sentences, cfg.common_threshold)
    logger.info("commonly described regions (>= %.2f of train reports): %s", cfg.common_threshold,
                ", ".join(f"{r} {s:.2f}" for r, s in common_set.items()))
    paired = paired_sentences(prepared.sentences(None))
    cache: dict[str, dict[str, Tensor]] = {}

    def fields(record: dict[str, Any], rng: Any = None) -> dict[str, Tensor]:
        key = record["image"]
        if key not in cache:
            cache[key] = region_targets(record, common_set, paired.get(key))
        return cache[key]

    return fields


def pos_weights(cfg: DetectorRunConfig, records: list[dict[str, Any]], fields: Any) -> tuple[float, float]:
    targets = [fields(r) for r in records]
    sel = cfg.pos_weight_selection
    abn = cfg.pos_weight_abnormality
    sel = sel if sel is not None else auto_pos_weight((t["selection"], t["selection_mask"]) for t in targets)
    abn = abn if abn is not None else auto_pos_weight((t["abnormality"], t["abnormality_mask"]) for t in targets)
    logger.info("pos_weight: selection %.2f, abnormality %.2f", sel, abn)
    return sel, abn


def build(stage: int, cfg: DetectorRunConfig, model: CRRGModel, prepared: PreparedData
          ) -> tuple[nn.Module, ImageDataset, ImageDataset | None]:
    size = model.config.image_size
    reader = ImageReader(prepared, size, cache=cfg.cache_images)
    val_reader = ImageReader(prepared, size, cache=False)
    if stage == 1:
        train_set = ImageDataset(stage1_records(prepared, "train"), reader, cfg.augment,
                                 use_derived=cfg.use_derived)
        val_set = ImageDataset(stage1_records(prepared, "val"), val_reader, None, use_derived=cfg.use_derived)
        return DetectorStage(model.detector), train_set, val_set
    fields = region_target_fields(prepared, cfg)
    records = stage2_records(prepared, cfg, "train")
    weights = pos_weights(cfg, records, fields)
    train_set = ImageDataset(records, reader, cfg.augment, fields, use_derived=cfg.use_derived)
    val_set = ImageDataset(stage2_records(prepared, cfg, "val"), val_reader, None, fields,
                           use_derived=cfg.use_derived)
    return RegionHeadsStage(model, cfg, weights), train_set, val_set


def init_backbone(model: CRRGModel) -> None:
    """Fresh model: detector backbone from the offline ImageNet EfficientNet-Lite0 weights."""
    pretrained = RegionDetector(model.config.detector, pretrained_backbone=True)
    model.detector.backbone.load_state_dict(pretrained.backbone.state_dict(), strict=True)
    logger.info("detector backbone initialised from ImageNet weights")


def main(argv: list[str] | None = None) -> None:
    parser = common.build_parser("train_detector", __doc__.split("\n\n")[0],
                                "detector_default.json (--stage 1), region_heads_default.json (--stage 2)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1, help="1: detector; 2: + region heads")
    args = common.parse_args(parser, argv)
    name = STAGES[args.stage]
    info = common.setup(args)
    try:
        state, cfg = common.resume_or_configure(args, name, DetectorRunConfig)
        model = common.load_model(args, cfg.model_variant, state)
        fresh = state is None and args.init is None
        if fresh and cfg.pretrained_backbone and model.config.detector.backbone == "efficientnet_lite0":
            init_backbone(model)
        prepared = PreparedData(args.prepared, args.data)
        module, train_set, val_set = build(args.stage, cfg, model, prepared)
        logger.info("%s: %d training images, %d validation images", name, len(train_set), len(val_set or []))
        common.fit(args, info, state, stage=name, model=model, module=module, dataset=train_set,
                   collate=collate_images, run=cfg, eval_dataset=val_set, find_unused_parameters=args.stage == 2)
    finally:
        common.cleanup_distributed()


if __name__ == "__main__":
    main()
