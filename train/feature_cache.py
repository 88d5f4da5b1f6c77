"""Reading the tower-output cache that ``python -m train.cache_features`` writes (one ``.pt``
shard per 256 images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_features(folder: str | Path) -> dict[str, dict[str, Any]]:
    """All cached shards of ``folder`` as {image key: features}."""
    features: dict[str, dict[str, Any]] = {}
    for shard in sorted(Path(folder).glob("shard-*.pt")):
        for item in torch.load(shard, weights_only=False):
            features[item["key"]] = item
    return features
