"""Heads that give a report its evidence: region-level findings and image-level findings.

``RegionFindings``: per region and finding, a logit from the region's fused detector feature and
the CLIP embedding of its crop, trained on region-level labels only (JSRT nodule positions, COVID
anatomy opacity / tube masks through :mod:`crrg.data.overlap`, locations the image's own note
names; masked where the source says nothing). ``ImageFindings``: image-level findings (pneumonia)
from features pooled over the detected lung regions and the CLIP image embedding, trained on image
labels; its sentences never name a location.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from crrg.regions import NUM_REGIONS, REGION_INDEX

REGION_FINDINGS: tuple[str, ...] = ("nodule", "opacity", "support device")
LUNG_ZONES: tuple[str, ...] = tuple(
    f"{side} {zone} lung zone" for side in ("right", "left") for zone in ("upper", "mid", "lower"))
DEVICE_REGIONS: tuple[str, ...] = (
    "trachea", "mediastinum", "upper mediastinum", "svc", "cardiac silhouette", "right lung",
    "left lung", "abdomen")
#: the regions a finding can be reported in (others are never labelled or reported for it)
FINDING_REGIONS: dict[str, tuple[str, ...]] = {
    "nodule": LUNG_ZONES, "opacity": LUNG_ZONES, "support device": DEVICE_REGIONS}
IMAGE_FINDINGS: tuple[str, ...] = ("pneumonia",)
POOL_REGIONS: tuple[str, ...] = ("right lung", "left lung") + LUNG_ZONES
INPUTS = ("embedding", "lung_fused", "lung_crops")


def finding_region_mask(findings: tuple[str, ...] = REGION_FINDINGS) -> Tensor:
    """[29, F] bool: region r can carry finding f."""
    mask = torch.zeros(NUM_REGIONS, len(findings), dtype=torch.bool)
    for j, finding in enumerate(findings):
        for region in FINDING_REGIONS[finding]:
            mask[REGION_INDEX[region], j] = True
    return mask


@dataclass
class RegionFindingsConfig:
    feature_dim: int = 256  # fused region feature D
    crop_dim: int = 256  # CLIP crop embedding E (0 = not used)
    hidden_dim: int = 128
    dropout: float = 0.2
    findings: tuple[str, ...] = REGION_FINDINGS


class RegionFindings(nn.Module):
    """fused [B, 29, D], crops [B, 29, E] -> logits [B, 29, F] (-inf where a region cannot carry
    the finding)."""

    def __init__(self, config: RegionFindingsConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RegionFindingsConfig()
        width = config.feature_dim + config.crop_dim
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, config.hidden_dim), nn.ReLU(),
                                 nn.Dropout(config.dropout), nn.Linear(config.hidden_dim, len(config.findings)))
        self.region_bias = nn.Parameter(torch.zeros(NUM_REGIONS, len(config.findings)))
        self.register_buffer("allowed", finding_region_mask(tuple(config.findings)), persistent=False)

    def forward(self, fused: Tensor, crops: Tensor | None = None) -> Tensor:
        x = fused if not self.config.crop_dim else torch.cat([fused, crops.to(fused.dtype)], dim=-1)
        logits = self.mlp(self.norm(x)) + self.region_bias  # [B, 29, F]
        return logits.masked_fill(~self.allowed, -torch.inf)


@dataclass
class ImageFindingsConfig:
    embed_dim: int = 256
    feature_dim: int = 256
    hidden_dim: int = 0  # 0 = logistic regression on the pooled features
    dropout: float = 0.2
    inputs: tuple[str, ...] = INPUTS
    findings: tuple[str, ...] = IMAGE_FINDINGS

    @property
    def width(self) -> int:
        sizes = {"embedding": self.embed_dim, "lung_fused": self.feature_dim, "lung_crops": self.embed_dim}
        return sum(sizes[name] for name in self.inputs)


def pooled_inputs(inputs: tuple[str, ...], embedding: Tensor, fused: Tensor, crops: Tensor,
                  detected: Tensor) -> Tensor:
    """[B, W] image-level input: the chosen parts among the CLIP image embedding and the means of
    the fused features / crop embeddings over the detected lung regions (:data:`POOL_REGIONS`)."""
    index = torch.tensor([REGION_INDEX[r] for r in POOL_REGIONS], device=fused.device)
    weight = detected[:, index].to(fused.dtype).unsqueeze(-1)  # [B, P, 1]
    count = weight.sum(1).clamp(min=1)  # [B, 1]
    parts = {"embedding": lambda: embedding.to(fused.dtype),
             "lung_fused": lambda: (fused[:, index] * weight).sum(1) / count,
             "lung_crops": lambda: (crops[:, index].to(fused.dtype) * weight).sum(1) / count}
    return torch.cat([parts[name]() for name in inputs], dim=-1)


class ImageFindings(nn.Module):
    """pooled [B, W] -> logits [B, F_image]."""

    def __init__(self, config: ImageFindingsConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ImageFindingsConfig()
        out = len(config.findings)
        self.norm = nn.LayerNorm(config.width)
        if config.hidden_dim:
            self.mlp = nn.Sequential(nn.Linear(config.width, config.hidden_dim), nn.ReLU(),
                                     nn.Dropout(config.dropout), nn.Linear(config.hidden_dim, out))
        else:
            self.mlp = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.width, out))

    def forward(self, pooled: Tensor) -> Tensor:
        return self.mlp(self.norm(pooled))

    def subset(self, findings: Sequence[str]) -> "ImageFindings":
        """A copy that outputs only ``findings`` (same inputs and weights; the output layer's
        rows of the others removed), e.g. to ship only the findings that passed validation."""
        rows = [self.config.findings.index(f) for f in findings]
        out = ImageFindings(dataclasses.replace(self.config, findings=tuple(findings)))
        state = {k: v.clone() for k, v in self.state_dict().items()}
        last = [k for k in state if k.startswith("mlp.")][-2:]  # the output layer's weight and bias
        for k in last:
            state[k] = state[k][rows]
        out.load_state_dict(state)
        return out.to(next(self.parameters()).dtype).train(self.training)


@dataclass
class GroundingConfig:
    """Decision thresholds on calibrated probabilities (chosen on the validation split)."""

    region_thresholds: dict[str, float] = field(
        default_factory=lambda: {f: 0.5 for f in REGION_FINDINGS})
    image_thresholds: dict[str, float] = field(default_factory=lambda: {f: 0.5 for f in IMAGE_FINDINGS})
    #: finding -> share: a region above threshold is named only when its probability is at least
    #: this share of the image's highest for the finding (opacity on a one-sided film: the clear
    #: side scores above threshold, but well below the affected side); absent or 0: every region
    region_relative: dict[str, float] = field(default_factory=dict)
    #: keep the decoder's own finding sentences for regions the abnormality head flags: only for
    #: models whose abnormality head learned region-level truth for every region it reports
    #: (paired MIMIC-CXR + Chest ImaGenome training); the open-data default model keeps it off
    decoder_findings: bool = False
    #: the report topics (:data:`crrg.report.TOPICS`) the abnormality head's region labels cover:
    #: a decoder normal statement on another topic is kept only where a finding head or a
    #: measurement speaks to it (:func:`crrg.grounding.assessed_topics`). The open-data default
    #: model's labels are lung findings (opacity, nodule masks and boxes); a model trained on
    #: Chest ImaGenome's region labels covers every topic (``crrg_rgrg.json``)
    abnormality_topics: tuple[str, ...] = ("lungs",)
    #: finding -> calibrated probability below which the report states the finding's absence
    #: ("There is no pleural effusion.", :data:`crrg.grounding.IMAGE_TEMPLATES`), chosen on
    #: validation so that at most a tenth of the positives fall below it (``train.rule_out``);
    #: between it and the threshold the finding is indeterminate; without one it is never stated
    #: absent
    rule_out: dict[str, float] = field(default_factory=dict)
