"""CLIP -> region-feature fusion: the image-level CLIP embedding added to every region feature.

Why: on the open data (no image-report pairs, image-level labels only) the detector's region
features are trained to localise anatomy and carry little pathology signal; measured on the
validation split, the abnormality head on them separates abnormal from normal images with an AUC
of about 0.75, while the contrastively trained CLIP image tower separates pneumonia from normal
with 0.98. With ``CRRGConfig.clip_fusion`` every region feature becomes

    f_r = detector_feature_r + MLP(LayerNorm(clip_image_embedding))        # [B, 29, D]

so the selection / abnormality heads and the sentence decoder see both where the region is
(detector) and what the image shows (CLIP). The CLIP tower is trained on its own objective
(``train.train_clip``) and is never updated through this path; the MLP's last layer starts at
zero, so a fresh fusion leaves the detector features unchanged. This departs from RGRG, whose
region features come from the detector alone (it trains them with paired report sentences).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ClipFusion(nn.Module):
    """``features [B, N, D] + MLP(LayerNorm(embedding [B, E]))`` broadcast over the N regions."""

    def __init__(self, clip_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(clip_dim),
            nn.Linear(clip_dim, feature_dim),
            nn.GELU(),
            nn.Linear(feature_dim, feature_dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: Tensor, embedding: Tensor) -> Tensor:
        if features.ndim != 3 or embedding.ndim != 2 or features.shape[0] != embedding.shape[0]:
            raise ValueError(f"expected features [B, N, D] and embedding [B, E], got "
                             f"{tuple(features.shape)} and {tuple(embedding.shape)}")
        return features + self.net(embedding.to(features.dtype)).unsqueeze(1)  # [B, N, D]


@torch.no_grad()
def clip_embedding(clip: nn.Module, images: Tensor) -> Tensor:
    """L2-normalised CLIP image embedding [B, E] without gradient (CLIP is trained separately)."""
    return clip.encode_image(images)


def fuse(fusion: ClipFusion | None, clip: nn.Module, images: Tensor | None, features: Tensor,
         embedding: Tensor | None = None) -> Tensor:
    """``features`` [B, N, D] unchanged without a fusion module, else plus the fused CLIP
    embedding of ``images`` [B, 1, S, S] (or the given ``embedding`` [B, E])."""
    if fusion is None:
        return features
    if embedding is None:
        if images is None:
            raise ValueError("clip_fusion needs the images or their CLIP embedding")
        embedding = clip_embedding(clip, images)  # [B, E]
    return fusion(features, embedding)
