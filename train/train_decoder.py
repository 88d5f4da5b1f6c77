"""Stage 3 (RGRG): the full model, the decoder writing one sentence per region feature.

    python -m train.train_decoder --prepared out/data --init runs/stage2/model \
        --decoder-from runs/lm/model --out runs/stage3

For every training image the detector gives the 29 region features; each detected region with a
target sentence (:mod:`train.targets`: with paired data the image's own sentences naming the
region; with the open data a real IU train sentence whose status and findings agree with the
image's labels, drawn anew each time the image is seen) contributes one teacher-forced sentence
to the LM loss. At most ``max_regions_per_image`` regions (random) per image per step.
By default the detector and the region heads are frozen (features detached: the open targets
are weak); ``train_detector`` / ``train_classifiers`` train them jointly, as RGRG does with
paired data. ``clip_fusion`` models add the CLIP image embedding to the features
(:mod:`crrg.fusion`; the fusion trains with the classifiers, CLIP never does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from crrg.fusion import fuse
from crrg.model import CRRGModel
from crrg.regions import NUM_REGIONS
from train import common
from train.datasets import ImageDataset, ImageReader, PreparedData, collate_images, merge_records
from train.targets import (
    SentenceMatcher,
    auto_pos_weight,
    common_regions,
    paired_region_sentences,
    paired_sentences,
    region_targets,
    note_sentences,
    sentence_pool,
)
from train.region_losses import RegionStageConfig, classifier_losses, mixed_batch_features

logger = logging.getLogger(__name__)

STAGE = "decoder"


@dataclass
class DecoderRunConfig(RegionStageConfig):
    """Stage-3 settings. ``open_matching``: images without their own report get matched IU
    sentences; ``sentence_sources``: sources of the sentence pool for matching
    (:func:`train.targets.sentence_pool`); ``require_primary``: an abnormal region's sentence
    must name one of the image's findings; ``standalone_only``: no "XXXX" or comparison wording
    (both :class:`train.targets.SentenceMatcher`). ``paired_notes``: an image's own clinical-note
    radiograph sentences are its paired text (:func:`train.targets.note_sentences`, ``paired``).
    ``cache_features``: keep each image's region features (fp16, ~15 KB per image) after its
    first pass and skip the detector afterwards; needs a frozen detector and no augmentation
    (the features are then the same every epoch); later epochs then cost only the LM (and
    image loading), roughly 2-3x faster on CPU than running the frozen detector every step."""

    batch_size: int = 8
    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    cache_images: bool = False
    cache_features: bool = False
    max_regions_per_image: int = 8
    open_matching: bool = True
    sentence_sources: tuple[str, ...] = ("iu_xray", "mimic_cxr", "clinical_notes")
    require_primary: bool = True
    standalone_only: bool = True
    train_detector: bool = False
    train_classifiers: bool = False
    lm_loss_weight: float = 1.0
    classifier_loss_weight: float = 1.0
    paired_notes: bool = True  # COVID images' own clinical-note radiograph sentences as paired text

    def __post_init__(self) -> None:
        if self.cache_features and (self.train_detector or self.augment.enabled):
            raise ValueError("cache_features needs train_detector=false and augment.enabled=false "
                             "(cached features must not change between epochs)")


def zero_with_graph(module: nn.Module) -> Tensor:
    """A 0 that depends on every trainable parameter (keeps backward valid on empty batches)."""
    return sum(p.sum() for p in module.parameters() if p.requires_grad) * 0.0


class DecoderStage(nn.Module):
    """``{"loss", "loss_lm"}`` (+ detector / classifier losses when those parts train)."""

    def __init__(self, model: CRRGModel, cfg: DecoderRunConfig,
                 pos_weights: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.detector, self.selection, self.abnormality = model.detector, model.selection, model.abnormality
        self.decoder, self.cfg = model.decoder, cfg
        self.clip, self.fusion = model.clip, model.fusion
        self._feature_cache: dict[str, tuple[Tensor, Tensor]] = {}
        self.register_buffer("pos_weights", torch.tensor(pos_weights, dtype=torch.float32), persistent=False)
        common.freeze(self.detector, not cfg.train_detector)
        common.freeze(self.selection, not cfg.train_classifiers)
        common.freeze(self.abnormality, not cfg.train_classifiers)
        common.freeze(self.clip, True)
        if self.fusion is not None:
            common.freeze(self.fusion, not cfg.train_classifiers)

    def train(self, mode: bool = True) -> DecoderStage:
        super().train(mode)
        self.clip.eval()
        if self.fusion is not None and not self.cfg.train_classifiers:
            self.fusion.eval()
        if not self.cfg.train_detector:
            self.detector.eval()
        if not self.cfg.train_classifiers:
            self.selection.eval()
            self.abnormality.eval()
        return self

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        cfg = self.cfg
        with_losses = self.training and cfg.train_detector and cfg.detector_loss_weight > 0
        if cfg.cache_features:
            features, detected, det_losses = self.cached_features(batch)
        else:
            features, detected, det_losses = mixed_batch_features(
                self.detector, batch["images"], batch["targets"], with_losses)  # [B, 29, D], [B, 29]
        if not cfg.train_detector:
            features = features.detach()  # [B, 29, D]
        features = fuse(self.fusion, self.clip, batch["images"], features)  # [B, 29, D]
        rows, cols, texts = self.pick_regions(batch["sentences"], detected)
        if texts:
            loss_lm = self.decoder(features[rows, cols], texts=texts)["loss_lm"]  # features [N, D]
        else:
            loss_lm = zero_with_graph(self.decoder)
        out = {"loss_lm": loss_lm}
        loss = cfg.lm_loss_weight * loss_lm
        if cfg.train_classifiers:
            heads = classifier_losses(self.selection, self.abnormality, features, detected, batch,
                                      self.pos_weights)
            out.update(heads)
            loss = loss + cfg.classifier_loss_weight * (heads["loss_selection"] + heads["loss_abnormality"])
        if det_losses:
            out.update(det_losses)
            loss = loss + cfg.detector_loss_weight * sum(det_losses.values())
        return {"loss": loss, **out}

    def cached_features(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Frozen-detector features [B, 29, D] and detected [B, 29], computed once per image."""
        refs, images = batch["ref"], batch["images"]
        missing = [i for i, ref in enumerate(refs) if ref not in self._feature_cache]
        if missing:
            features, detected, _ = mixed_batch_features(self.detector, images[missing], [None] * len(missing), False)
            for i, f, d in zip(missing, features, detected):
                self._feature_cache[refs[i]] = (f.to("cpu", torch.float16), d.cpu())
        cached = [self._feature_cache[ref] for ref in refs]
        features = torch.stack([f for f, _ in cached]).to(images.device, images.dtype)  # [B, 29, D]
        detected = torch.stack([d for _, d in cached]).to(images.device)  # [B, 29]
        return features, detected, {}

    def pick_regions(self, sentences: list[list[str | None]], detected: Tensor
                     ) -> tuple[Tensor, Tensor, list[str]]:
        """Detected regions with a target sentence, at most ``max_regions_per_image`` each."""
        rows, cols, texts = [], [], []
        cap = self.cfg.max_regions_per_image
        for b, per_region in enumerate(sentences):
            idx = [r for r in range(NUM_REGIONS) if per_region[r] and bool(detected[b, r])]
            if cap > 0 and len(idx) > cap:
                idx = sorted(idx[i] for i in torch.randperm(len(idx))[:cap].tolist())
            rows += [b] * len(idx)
            cols += idx
            texts += [per_region[r] for r in idx]
        device = detected.device
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
        return as_index(rows), as_index(cols), texts


# ------------------------------------------------------------------------------ data
class SentenceFields:
    """``fields`` of stage 3: ``sentences`` [29] per image (+ stage-2 targets if requested)."""

    def __init__(self, prepared: PreparedData, cfg: DecoderRunConfig) -> None:
        every = prepared.sentences(None)
        if cfg.paired_notes:  # an image's own note sentences are its paired text
            every = every + note_sentences(prepared.images(None), paired=True)
        self.paired = paired_sentences(every)
        pool = [s for s in sentence_pool(prepared, "train", cfg.sentence_sources) if not s.get("image")]
        self.matcher = SentenceMatcher(pool, cfg.require_primary, cfg.standalone_only) if cfg.open_matching else None
        self.with_targets = cfg.train_classifiers
        self.common = common_regions(prepared.sentences("train"), cfg.common_threshold)

    def usable(self, record: dict[str, Any]) -> bool:
        if record["image"] in self.paired:
            return any(paired_region_sentences(self.paired[record["image"]]))
        return self.matcher is not None and self.matcher.has_any(record)

    def targets(self, record: dict[str, Any]) -> dict[str, Tensor]:
        return region_targets(record, self.common, self.paired.get(record["image"]))

    def __call__(self, record: dict[str, Any], rng: Any) -> dict[str, Any]:
        lines = self.paired.get(record["image"])
        if lines:
            sentences = paired_region_sentences(lines)
        else:
            sentences = self.matcher.sample(record, rng) if self.matcher else [None] * NUM_REGIONS
        out: dict[str, Any] = {"sentences": sentences}
        if self.with_targets:
            out.update(self.targets(record))
        return out


def stage3_records(prepared: PreparedData, fields: SentenceFields, split: str) -> list[dict[str, Any]]:
    records = merge_records(prepared.regions(split), prepared.images(split))
    return [r for r in records if fields.usable(r)]


def load_decoder_from(model: CRRGModel, folder: Path) -> None:
    """Take the decoder (config with its vocabulary, and weights) from another saved model."""
    import dataclasses

    source = common.load_saved(folder)
    if source.config.decoder.feature_dim != model.config.decoder.feature_dim:
        raise ValueError(f"--decoder-from {folder}: decoder feature_dim {source.config.decoder.feature_dim} "
                         f"!= this model's {model.config.decoder.feature_dim}")
    model.config = dataclasses.replace(model.config, decoder=source.config.decoder)
    model.decoder = source.decoder.float()
    logger.info("decoder (and its vocabulary) taken from %s", folder)


def main(argv: list[str] | None = None) -> None:
    parser = common.build_parser("train_decoder", __doc__.split("\n\n")[0], f"{STAGE}_default.json")
    parser.add_argument("--decoder-from", type=Path, default=None,
                        help="take the decoder from this saved model or checkpoint.pt (e.g. the LM "
                             "pretraining's OUT/model)")
    args = common.parse_args(parser, argv)
    info = common.setup(args)
    try:
        state, cfg = common.resume_or_configure(args, STAGE, DecoderRunConfig)
        model = common.load_model(args, cfg.model_variant, state)
        if state is None and args.decoder_from is not None:
            load_decoder_from(model, args.decoder_from)
        if model.config.decoder.token_ids is None:
            logger.warning("the decoder uses the full 50,257-token vocabulary: run train.pretrain_lm first "
                           "(compact vocabulary, much faster) and pass --decoder-from / --init")
        prepared = PreparedData(args.prepared, args.data)
        fields = SentenceFields(prepared, cfg)
        records = stage3_records(prepared, fields, "train")
        weights = (1.0, 1.0)
        if cfg.train_classifiers:
            targets = [fields.targets(r) for r in records]
            weights = (auto_pos_weight((t["selection"], t["selection_mask"]) for t in targets),
                       auto_pos_weight((t["abnormality"], t["abnormality_mask"]) for t in targets))
        size = model.config.image_size
        train_set = ImageDataset(records, ImageReader(prepared, size, cfg.cache_images), cfg.augment, fields,
                                 use_derived=cfg.use_derived)
        val_set = ImageDataset(stage3_records(prepared, fields, "val"), ImageReader(prepared, size), None, fields,
                               use_derived=cfg.use_derived)
        paired = sum(r["image"] in fields.paired for r in records)
        logger.info("decoder: %d training images (%d with their own report), %d validation images",
                    len(train_set), paired, len(val_set))
        common.fit(args, info, state, stage=STAGE, model=model, module=DecoderStage(model, cfg, weights),
                   dataset=train_set, collate=collate_images, run=cfg, eval_dataset=val_set)
    finally:
        common.cleanup_distributed()


if __name__ == "__main__":
    main()
