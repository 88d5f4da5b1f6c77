"""Anatomical region detector: torchvision Faster R-CNN parts, one box and feature per region.

The detector has 30 classes (0 background, ``i + 1`` = ``crrg.regions.REGIONS[i]``). Inputs are
already preprocessed ``[B, 1, S, S]`` tensors (``crrg.images``), so torchvision's
``GeneralizedRCNNTransform`` is bypassed: no resizing, no re-normalisation, and every box (targets
and outputs) is in pixels of the input tensor.

Inference follows RGRG (Tanida et al. 2023): every proposal votes for its argmax region class
(background excluded after the softmax); a region is ``detected`` when it wins at least one
proposal (and its score reaches ``detect_score_thresh``); its box is the class-specific regressed
box of its best winning proposal, clipped to the image (``box_vote_iou`` > 0: the score-weighted
mean of the region's boxes that overlap that best box, see ``_vote_boxes``). Region features are the box-head output
(``feature_dim``) RoI-aligned on that final box, so ``box_features`` on a user-drawn box gives the
same kind of feature. Undetected regions get zero box, score and feature.

Partial annotation: ``target["annotated"]`` ([29] bool) marks the regions annotated in an image.
For an image with any region unannotated, RPN anchors and RoI proposals that match no annotated box
are ignored rather than trained as background; only positives train. Fully annotated images (or
targets without ``"annotated"``) train as standard Faster R-CNN.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import clip_boxes_to_image

from crrg.backbones import BACKBONES, build_backbone
from crrg.pooling import RegionRoIAlign
from crrg.regions import NUM_REGIONS

NUM_CLASSES = NUM_REGIONS + 1  # background + 29 regions


@dataclass
class DetectorConfig:
    """Region detector settings (JSON-friendly; see ``crrg.config``).

    ``feature_strides``: backbone maps used (ascending); with ``fpn_channels > 0`` an FPN maps them
    to ``fpn_channels`` and adds a max-pooled level, so ``anchor_sizes`` needs one tuple per stride
    plus one; with ``fpn_channels == 0`` exactly one stride and one tuple (single level, as RGRG).
    ``anchor_sizes`` are in input pixels, ``aspect_ratios`` are height / width.
    """

    backbone: str = "efficientnet_lite0"
    image_size: int = 512
    feature_dim: int = 256
    fpn_channels: int = 128
    feature_strides: tuple[int, ...] = (16, 32)
    frozen_bn: bool = False
    anchor_sizes: tuple[tuple[int, ...], ...] = ((20, 32, 48), (64, 96, 128), (192, 256, 320))
    aspect_ratios: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 128
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 600
    rpn_post_nms_top_n_test: int = 300
    rpn_nms_thresh: float = 0.7
    box_roi_size: int = 7
    box_sampling_ratio: int = 2
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 128
    box_positive_fraction: float = 0.25
    detect_score_thresh: float = 0.05
    box_vote_iou: float = 0.0  # > 0: box voting (see _vote_boxes); 0: RGRG's single best box

    def __post_init__(self) -> None:
        if not 0.0 <= self.box_vote_iou < 1.0:
            raise ValueError(f"box_vote_iou must be in [0, 1), got {self.box_vote_iou}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; valid options: {BACKBONES}")
        levels = len(self.feature_strides) + (1 if self.fpn_channels > 0 else 0)
        if len(self.anchor_sizes) != levels:
            raise ValueError(
                f"anchor_sizes needs one tuple per feature level ({levels}: strides "
                f"{list(self.feature_strides)}{' + pool' if self.fpn_channels > 0 else ''}), "
                f"got {len(self.anchor_sizes)}"
            )
        if len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError(f"all anchor_sizes tuples need one length, got {self.anchor_sizes}")


@dataclass
class DetectorOutput:
    """Per-region detections; regions axis in ``crrg.regions.REGIONS`` order.

    boxes: [B, 29, 4] xyxy input pixels (zeros where not detected); scores: [B, 29] softmax
    probability of the region class at its box (0 where not detected); detected: [B, 29] bool;
    features: [B, 29, D] box-head features (zeros where not detected); feature_maps: the backbone
    maps, for ``RegionDetector.box_features``; image_size: (H, W) of the input.
    """

    boxes: Tensor
    scores: Tensor
    detected: Tensor
    features: Tensor
    feature_maps: OrderedDict[str, Tensor]
    image_size: tuple[int, int]


def _is_partial(target: dict[str, Tensor]) -> bool:
    annotated = target.get("annotated")
    return annotated is not None and not bool(annotated.all())


class PartialRPN(RegionProposalNetwork):
    """RPN whose negatives are ignored (label -1) in images with unannotated regions."""

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        for labels_per_image, target in zip(labels, targets):
            if _is_partial(target):
                labels_per_image[labels_per_image == 0] = -1.0  # [A] no background
        return labels, matched_gt_boxes


class PartialRoIHeads(RoIHeads):
    """RoI heads whose background proposals are ignored in images with unannotated regions."""

    def select_training_samples(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]] | None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        if targets is None:
            raise ValueError("training the RoI heads needs targets")
        self.check_targets(targets)
        dtype, device = proposals[0].dtype, proposals[0].device
        gt_boxes = [t["boxes"].to(dtype) for t in targets]
        gt_labels = [t["labels"] for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)
        matched_idxs, labels = self.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        for labels_per_image, target in zip(labels, targets):
            if _is_partial(target):
                labels_per_image[labels_per_image == 0] = -1  # [P] ignored, never sampled
        sampled = self.subsample(labels)
        matched_gt_boxes = []
        for i, inds in enumerate(sampled):
            proposals[i], labels[i], matched_idxs[i] = (
                proposals[i][inds], labels[i][inds], matched_idxs[i][inds]
            )
            boxes = gt_boxes[i] if gt_boxes[i].numel() else torch.zeros((1, 4), dtype=dtype)
            matched_gt_boxes.append(boxes.to(device)[matched_idxs[i]])
        regression_targets = self.box_coder.encode(matched_gt_boxes, proposals)
        return proposals, matched_idxs, labels, regression_targets


def _top_box_per_region(
    scores: Tensor, boxes: Tensor, thresh: float, vote_iou: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """RGRG selection for one image: scores [P, 29], boxes [P, 29, 4] -> [29, 4], [29], [29]."""
    num_regions = scores.shape[1]
    if scores.shape[0] == 0:
        zeros = scores.new_zeros(num_regions)
        return scores.new_zeros(num_regions, 4), zeros, zeros.bool()
    won = F.one_hot(scores.argmax(dim=1), num_regions).bool()  # [P, 29]
    top, idx = torch.where(won, scores, -1.0).max(dim=0)  # [29], [29]
    detected = won.any(dim=0) & (top >= thresh)  # [29]
    top_boxes = boxes[idx, torch.arange(num_regions, device=boxes.device)]  # [29, 4]
    if vote_iou > 0:
        top_boxes = _vote_boxes(scores, boxes, top_boxes, vote_iou)
    top_boxes = torch.where(detected[:, None], top_boxes, torch.zeros_like(top_boxes))  # [29, 4]
    return top_boxes, torch.where(detected, top, torch.zeros_like(top)), detected


def _vote_boxes(scores: Tensor, boxes: Tensor, top_boxes: Tensor, vote_iou: float) -> Tensor:
    """Box voting (Gidaris & Komodakis 2015; the averaging step of weighted box fusion): each
    region's box becomes the score-weighted mean of its class-specific boxes, over every proposal
    whose box for that region overlaps the best one by IoU >= ``vote_iou``.
    scores [P, 29], boxes [P, 29, 4], top_boxes [29, 4] -> [29, 4]."""
    lt = torch.maximum(boxes[..., :2], top_boxes[None, :, :2])  # [P, 29, 2]
    rb = torch.minimum(boxes[..., 2:], top_boxes[None, :, 2:])  # [P, 29, 2]
    inter = (rb - lt).clamp(min=0).prod(dim=-1)  # [P, 29]
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(dim=-1)  # [P, 29]
    top_area = (top_boxes[:, 2:] - top_boxes[:, :2]).clamp(min=0).prod(dim=-1)  # [29]
    iou = inter / (area + top_area[None] - inter).clamp(min=1e-6)  # [P, 29]
    weight = torch.where(iou >= vote_iou, scores, torch.zeros_like(scores))  # [P, 29]
    total = weight.sum(dim=0)  # [29]
    voted = (weight[..., None] * boxes).sum(dim=0) / total.clamp(min=1e-12)[:, None]  # [29, 4]
    return torch.where(total[:, None] > 0, voted, top_boxes)


class RegionDetector(nn.Module):
    """Faster R-CNN for the 29 anatomical regions with per-region features.

    ``forward(images, targets)`` in training mode returns the loss dict (``loss_objectness``,
    ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``); in eval mode a
    :class:`DetectorOutput`. ``forward_with_features`` (training mode) returns both, for stages
    that train region heads on detector features.
    """

    def __init__(
        self, config: DetectorConfig | None = None, pretrained_backbone: bool = False
    ) -> None:
        super().__init__()
        self.config = config = config or DetectorConfig()
        self.backbone = build_backbone(
            config.backbone, feature_strides=config.feature_strides,
            fpn_channels=config.fpn_channels, pretrained=pretrained_backbone,
            frozen_bn=config.frozen_bn,
        )
        channels = self.backbone.out_channels
        ratios = (tuple(config.aspect_ratios),) * len(config.anchor_sizes)
        sizes = tuple(tuple(s) for s in config.anchor_sizes)
        anchors = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
        self.rpn = PartialRPN(
            anchors, RPNHead(channels, anchors.num_anchors_per_location()[0]),
            config.rpn_fg_iou_thresh, config.rpn_bg_iou_thresh, config.rpn_batch_size_per_image,
            config.rpn_positive_fraction,
            dict(training=config.rpn_pre_nms_top_n_train, testing=config.rpn_pre_nms_top_n_test),
            dict(training=config.rpn_post_nms_top_n_train, testing=config.rpn_post_nms_top_n_test),
            config.rpn_nms_thresh,
        )
        size = config.box_roi_size
        self.roi_heads = PartialRoIHeads(
            RegionRoIAlign([str(i) for i in range(len(config.feature_strides))], size, config.box_sampling_ratio),
            TwoMLPHead(channels * size * size, config.feature_dim),
            FastRCNNPredictor(config.feature_dim, NUM_CLASSES),
            config.box_fg_iou_thresh, config.box_bg_iou_thresh, config.box_batch_size_per_image,
            config.box_positive_fraction, None,
            score_thresh=0.0, nms_thresh=1.0, detections_per_img=NUM_REGIONS,
        )

    # ----------------------------------------------------------------- inputs
    @staticmethod
    def _check_images(images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected preprocessed images [B, 1, S, S], got {list(images.shape)}")

    @staticmethod
    def _check_targets(targets: list[dict[str, Tensor]] | None, batch: int) -> None:
        if targets is None or len(targets) != batch:
            raise ValueError(f"training needs one target dict per image ({batch}), got "
                             f"{None if targets is None else len(targets)}")
        for i, t in enumerate(targets):
            boxes, labels = t["boxes"], t["labels"]
            if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
                raise ValueError(f"target {i}: expected boxes [K, 4] and labels [K], got "
                                 f"{tuple(boxes.shape)} and {tuple(labels.shape)}")
            if labels.numel() and (labels.min() < 1 or labels.max() > NUM_REGIONS):
                raise ValueError(f"target {i}: labels must be in 1..{NUM_REGIONS}")
            if boxes.numel() and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                raise ValueError(f"target {i}: boxes must be xyxy with positive width and height")
            annotated = t.get("annotated")
            if annotated is not None:
                if annotated.shape != (NUM_REGIONS,) or annotated.dtype != torch.bool:
                    raise ValueError(f"target {i}: 'annotated' must be [{NUM_REGIONS}] bool")
                if labels.numel() and not bool(annotated[labels - 1].all()):
                    raise ValueError(f"target {i}: a box's region is marked as not annotated")
        if sum(t["boxes"].shape[0] for t in targets) == 0:
            raise ValueError("training needs at least one region box in the batch")

    def _backbone(self, images: Tensor, chunk: int | None = None, body: nn.Module | None = None
                  ) -> tuple[ImageList, OrderedDict[str, Tensor]]:
        """Backbone maps of a batch, ``chunk`` images per pass (``None``: all at once); ``body``
        replaces the backbone's body (see :class:`crrg.backbones.FeatureBackbone`)."""
        self._check_images(images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if chunk is None or chunk >= images.shape[0]:
            maps = self.backbone(images, body)
        else:
            parts = [self.backbone(part, body) for part in images.split(max(1, chunk))]
            maps = OrderedDict((k, torch.cat([p[k] for p in parts])) for k in parts[0])
        return ImageList(images, [size] * images.shape[0]), maps

    # ---------------------------------------------------------------- forward
    def forward(
        self, images: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | DetectorOutput:
        """Training: dict of ``loss_*``; eval: :class:`DetectorOutput` (targets ignored)."""
        if self.training:
            losses, _, _ = self._train_losses(images, targets)
            return losses
        return self.infer(images)

    def infer(self, images: Tensor, backbone_batch: int | None = None, body: nn.Module | None = None
              ) -> DetectorOutput:
        """Eval-mode detection of a batch [B, 1, S, S]; the backbone sees ``backbone_batch`` images
        per pass (``None``: all), the RPN and the heads the whole batch. On CPU small backbone
        passes are faster per image (their activations stay in cache); the output is the same.
        ``body``: the backbone body's inference copy (:mod:`crrg.folding`), else its own."""
        image_list, feature_maps = self._backbone(images, backbone_batch, body)
        proposals, _ = self.rpn(image_list, feature_maps)
        return self._regions(feature_maps, proposals, image_list.image_sizes[0])

    def forward_with_features(
        self, images: Tensor, targets: list[dict[str, Tensor]]
    ) -> tuple[dict[str, Tensor], DetectorOutput]:
        """Training-mode losses plus the per-region output from one backbone pass.

        Regions are selected (RGRG rule) among all training-time RPN proposals with the current
        heads; the selection runs without gradient, the returned ``features`` keep the gradient
        through box head and backbone (detach them to train region heads only).
        """
        if not self.training:
            raise RuntimeError("forward_with_features needs training mode; use forward() in eval")
        losses, feature_maps, proposals = self._train_losses(images, targets)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return losses, self._regions(feature_maps, proposals, size)

    def _train_losses(
        self, images: Tensor, targets: list[dict[str, Tensor]] | None
    ) -> tuple[dict[str, Tensor], OrderedDict[str, Tensor], list[Tensor]]:
        self._check_targets(targets, images.shape[0])
        image_list, feature_maps = self._backbone(images)
        proposals, rpn_losses = self.rpn(image_list, feature_maps, targets)
        _, roi_losses = self.roi_heads(feature_maps, proposals, image_list.image_sizes, targets)
        return {**rpn_losses, **roi_losses}, feature_maps, proposals

    # -------------------------------------------------------------- regions
    def _regions(
        self, feature_maps: OrderedDict[str, Tensor], proposals: list[Tensor], size: tuple[int, int]
    ) -> DetectorOutput:
        with torch.no_grad():
            boxes, scores, detected = self._select(feature_maps, proposals, size)
        batch = len(proposals)
        features = self.box_features(feature_maps, list(boxes), image_size=size)  # [B * 29, D]
        features = features.view(batch, NUM_REGIONS, -1) * detected[..., None]  # [B, 29, D]
        return DetectorOutput(boxes, scores, detected, features, feature_maps, size)

    def _select(
        self, feature_maps: OrderedDict[str, Tensor], proposals: list[Tensor], size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        heads = self.roi_heads
        pooled = heads.box_roi_pool(feature_maps, proposals, [size] * len(proposals))
        logits, deltas = heads.box_predictor(heads.box_head(pooled))  # [P, 30], [P, 120]
        boxes = clip_boxes_to_image(heads.box_coder.decode(deltas, proposals), size)  # [P, 30, 4]
        scores = F.softmax(logits, dim=-1)[:, 1:]  # [P, 29] background dropped after softmax
        counts = [p.shape[0] for p in proposals]
        per_image = [
            _top_box_per_region(s, b[:, 1:], self.config.detect_score_thresh, self.config.box_vote_iou)
            for s, b in zip(scores.split(counts), boxes.split(counts))
        ]
        top_boxes, top_scores, detected = (torch.stack(x) for x in zip(*per_image))
        return top_boxes, top_scores, detected  # [B, 29, 4], [B, 29], [B, 29]

    def box_features(
        self,
        feature_maps: OrderedDict[str, Tensor],
        boxes: list[Tensor],
        image_size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Box-head features of arbitrary xyxy boxes (input pixels): one [K_i, 4] per image.

        Returns [sum K_i, D]; reuses ``feature_maps`` (no backbone pass). ``image_size`` defaults
        to the input size implied by the finest map and its stride.
        """
        batch = next(iter(feature_maps.values())).shape[0]
        if len(boxes) != batch:
            raise ValueError(f"expected one box tensor per image ({batch}), got {len(boxes)}")
        if image_size is None:
            h, w = feature_maps["0"].shape[-2:]
            stride = self.config.feature_strides[0]
            image_size = (int(h) * stride, int(w) * stride)
        boxes = [b.to(feature_maps["0"].dtype).reshape(-1, 4) for b in boxes]
        pooled = self.roi_heads.box_roi_pool(feature_maps, boxes, [image_size] * batch)
        return self.roi_heads.box_head(pooled)  # [sum K, D]
