"""CLIP training: paired InfoNCE plus the MedCLIP-style label-aware loss on decoupled data.

    python -m train.train_clip --prepared out/data --out runs/clip [--init runs/stage3/model]

Every ``images.jsonl`` train image with labels or text is one item (never a test or excluded
image, so the Kermany / COVID radiography test parts are never seen). Two losses per batch:

- ``loss_pair``: InfoNCE (open_clip ``ClipLoss`` via :func:`crrg.clip_loss.info_nce_loss`) over
  the batch's images that have real text (COVID clinical notes; MIMIC reports when present),
  oversampled ``pair_repeat`` times per epoch since they are few.
- ``loss_label``: :func:`crrg.clip_loss.label_aware_loss` of the batch's images (label vectors
  over :data:`crrg.labels.FINDINGS`, see :func:`train.targets.label_vector`) against label
  prompts ("pneumonia", "no pneumonia", ...; the model's own positive / negative patterns) and
  ``sentences_per_image`` randomly drawn labelled train report sentences per image.

``image_tower_init``: ``"imagenet"`` starts the image tower from the offline ImageNet
EfficientNet-Lite0 weights (any non-resumed run, also with ``--init``, whose CLIP is untrained
after the other stages); ``"keep"`` fine-tunes the CLIP of ``--init`` as it is.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from crrg.clip import CXRClip
from crrg.clip_loss import info_nce_loss, label_aware_loss
from crrg.labels import FINDINGS
from crrg.model import CRRGModel
from train import common
from train.datasets import AugmentConfig, ImageDataset, ImageReader, PreparedData
from train.engine import RunConfig
from train.targets import label_vector, prompt_texts, sentence_label_vector

logger = logging.getLogger(__name__)

STAGE = "clip"
TOWER_INIT = ("imagenet", "keep")


@dataclass
class ClipRunConfig(RunConfig):
    batch_size: int = 32
    epochs: int = 10
    lr: float = 3e-4
    weight_decay: float = 0.1
    warmup_steps: int = 200
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_images: bool = False
    image_tower_init: str = "imagenet"
    pair_repeat: int = 4
    sentences_per_image: int = 1
    use_prompts: bool = True
    pair_loss_weight: float = 1.0
    label_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.image_tower_init not in TOWER_INIT:
            raise ValueError(f"image_tower_init must be one of {TOWER_INIT}, got {self.image_tower_init!r}")


def clip_dataset(records: list[dict[str, Any]], reader: ImageReader, augment_cfg: AugmentConfig | None,
                 sentences: list[tuple[str, Tensor]], sentences_per_image: int) -> ImageDataset:
    """Item: ``image`` [1, s, s], ``labels`` [K], ``text`` (paired text or None), ``sentences``
    (texts) and ``sentence_labels`` [n, K] drawn from the labelled sentence pool (the records
    are images.jsonl lines: no region boxes, so no detector target)."""
    per_image = sentences_per_image if sentences else 0

    def fields(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        drawn = [rng.choice(sentences) for _ in range(per_image)]
        return {"labels": label_vector(record.get("labels") or {}), "text": record.get("text"),
                "sentences": [t for t, _ in drawn],
                "sentence_labels": torch.stack([v for _, v in drawn]) if drawn else torch.zeros(0, len(FINDINGS))}

    return ImageDataset(records, reader, augment_cfg, fields=fields)


def collate_clip(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": torch.stack([it["image"] for it in items]),  # [B, 1, s, s]
        "labels": torch.stack([it["labels"] for it in items]),  # [B, K]
        "texts": [it["text"] for it in items],
        "sentences": [t for it in items for t in it["sentences"]],
        "sentence_labels": torch.cat([it["sentence_labels"] for it in items]),  # [B * n, K]
        "n": len(items),
    }


class ClipStage(nn.Module):
    """``{"loss", "loss_pair", "loss_label"}``."""

    def __init__(self, clip: CXRClip, cfg: ClipRunConfig) -> None:
        super().__init__()
        self.clip, self.cfg = clip, cfg
        texts, vectors = prompt_texts(clip.config.positive, clip.config.negative)
        self.prompts = texts if cfg.use_prompts else []
        self.register_buffer("prompt_labels", vectors if cfg.use_prompts else vectors[:0], persistent=False)

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        images = self.clip.encode_image(batch["images"])  # [B, E]
        scale = self.clip.logit_scale()
        out: dict[str, Tensor] = {}
        loss = images.sum() * 0.0
        paired = [i for i, t in enumerate(batch["texts"]) if t]
        if len(paired) >= 2 and self.cfg.pair_loss_weight > 0:
            texts = self.clip.encode_text([batch["texts"][i] for i in paired])  # [P, E]
            out["loss_pair"] = info_nce_loss(images[paired], texts, scale)
            loss = loss + self.cfg.pair_loss_weight * out["loss_pair"]
        label_texts = self.prompts + batch["sentences"]
        if label_texts and self.cfg.label_loss_weight > 0:
            text_labels = torch.cat([self.prompt_labels, batch["sentence_labels"]])  # [T, K]
            features = self.clip.encode_text(label_texts)  # [T, E]
            out["loss_label"] = label_aware_loss(images, features, scale, batch["labels"], text_labels)
            loss = loss + self.cfg.label_loss_weight * out["loss_label"]
        return {"loss": loss, **out}


def clip_records(prepared: PreparedData, split: str, pair_repeat: int) -> list[dict[str, Any]]:
    records = [r for r in prepared.images(split) if r.get("image") and (r.get("labels") or r.get("text"))]
    paired = [r for r in records if r.get("text")]
    return records + paired * max(0, pair_repeat - 1)


def labelled_sentences(prepared: PreparedData) -> list[tuple[str, Tensor]]:
    """Train report sentences with at least one finding (normal ones carry "no finding")."""
    pool = []
    for line in prepared.sentences("train"):
        vec = sentence_label_vector(line.get("findings", []))
        if vec.any():
            pool.append((line["text"], vec))
    return pool


def main(argv: list[str] | None = None) -> None:
    parser = common.build_parser("train_clip", __doc__.split("\n\n")[0], f"{STAGE}_default.json")
    args = common.parse_args(parser, argv)
    info = common.setup(args)
    try:
        state, cfg = common.resume_or_configure(args, STAGE, ClipRunConfig)
        model: CRRGModel = common.load_model(args, cfg.model_variant, state)
        if state is None and cfg.image_tower_init == "imagenet":
            model.clip.load_imagenet_image_tower()
        prepared = PreparedData(args.prepared, args.data)
        sentences = labelled_sentences(prepared)
        size = model.config.clip.image_size
        train_set = clip_dataset(clip_records(prepared, "train", cfg.pair_repeat),
                                 ImageReader(prepared, size, cfg.cache_images), cfg.augment, sentences,
                                 cfg.sentences_per_image)
        val_set = clip_dataset(clip_records(prepared, "val", 1), ImageReader(prepared, size), None, sentences,
                               cfg.sentences_per_image)
        logger.info("clip: %d training items (pairs x%d), %d labelled sentences, %d validation images",
                    len(train_set), cfg.pair_repeat, len(sentences), len(val_set))
        common.fit(args, info, state, stage=STAGE, model=model, module=ClipStage(model.clip, cfg),
                   dataset=train_set, collate=collate_clip, run=cfg, eval_dataset=val_set)
    finally:
        common.cleanup_distributed()


if __name__ == "__main__":
    main()
