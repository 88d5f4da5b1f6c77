"""Per-region binary classifiers on detector features (RGRG's region-selection / abnormality heads).

One MLP is shared by all 29 regions (as RGRG) and applied to each region feature independently;
an optional learned per-region bias lets regions keep different base rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crrg.regions import NUM_REGIONS


@dataclass
class ClassifierConfig:
    """``feature_dim``: detector feature size D; ``hidden_dim``: MLP width (0 = linear probe)."""

    feature_dim: int = 256
    hidden_dim: int = 128
    dropout: float = 0.1
    per_region_bias: bool = True

    def __post_init__(self) -> None:
        if self.feature_dim <= 0 or self.hidden_dim < 0:
            raise ValueError(f"feature_dim must be > 0 and hidden_dim >= 0, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class RegionClassifier(nn.Module):
    """features [B, 29, D] -> logits [B, 29] (apply a sigmoid for probabilities)."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClassifierConfig()
        if config.hidden_dim > 0:
            self.mlp = nn.Sequential(
                nn.Linear(config.feature_dim, config.hidden_dim),
                nn.ReLU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden_dim, 1),
            )
        else:
            self.mlp = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, 1))
        bias = nn.Parameter(torch.zeros(NUM_REGIONS)) if config.per_region_bias else None
        self.region_bias = bias  # [29] or None

    def score_any(self, features: Tensor) -> Tensor:
        """Region-agnostic logits for free-standing features [N, D] -> [N] (no per-region bias),
        e.g. the feature of a user-drawn box."""
        return self.mlp(features).squeeze(-1)  # [N]

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 3 or features.shape[1:] != (NUM_REGIONS, self.config.feature_dim):
            raise ValueError(
                f"expected region features [B, {NUM_REGIONS}, {self.config.feature_dim}], "
                f"got {tuple(features.shape)}"
            )
        logits = self.mlp(features).squeeze(-1)  # [B, 29]
        if self.region_bias is not None:
            logits = logits + self.region_bias  # [B, 29]
        return logits


def region_bce_loss(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    pos_weight: float | Tensor | None = None,
) -> Tensor:
    """Mean binary cross-entropy over the regions where ``mask`` is True.

    logits, targets: [B, 29] (targets 0/1, any dtype); mask: [B, 29] bool, False for regions to
    exclude (undetected or unannotated); pos_weight: scalar or [29] weight of positives (RGRG uses
    it against class imbalance). With an all-False mask the loss is a zero that keeps the graph.
    """
    if targets.shape != logits.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must match logits {tuple(logits.shape)}")
    if pos_weight is not None and not isinstance(pos_weight, Tensor):
        pos_weight = torch.tensor(float(pos_weight), device=logits.device)
    per_region = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none"
    )  # [B, 29]
    if mask is None:
        return per_region.mean()
    if mask.shape != logits.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match logits {tuple(logits.shape)}")
    mask = mask.to(torch.bool)
    count = mask.sum()
    return (per_region * mask).sum() / count.clamp(min=1)
