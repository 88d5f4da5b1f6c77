"""Region classifier head and masked BCE loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crrg.classifier import ClassifierConfig, RegionClassifier, region_bce_loss
from crrg.config import from_dict, to_dict
from crrg.regions import NUM_REGIONS


def test_classifier_shapes_and_config() -> None:
    torch.manual_seed(0)
    config = ClassifierConfig(feature_dim=16, hidden_dim=8)
    assert from_dict(ClassifierConfig, to_dict(config)) == config
    model = RegionClassifier(config).eval()
    features = torch.randn(3, NUM_REGIONS, 16)
    logits = model(features)
    assert logits.shape == (3, NUM_REGIONS)
    # the MLP is shared across regions: each region's logit depends on its own feature only
    changed = features.clone()
    changed[:, 7] += 1.0
    diff = (model(changed) - logits).abs().amax(dim=0)
    assert diff[7] > 0 and torch.all(diff[torch.arange(NUM_REGIONS) != 7] == 0)
    with pytest.raises(ValueError, match="region features"):
        model(torch.randn(3, NUM_REGIONS, 15))
    linear = RegionClassifier(ClassifierConfig(feature_dim=16, hidden_dim=0, per_region_bias=False))
    assert linear(features).shape == (3, NUM_REGIONS)


def test_bce_loss_mask_and_pos_weight() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, NUM_REGIONS)
    targets = (torch.rand(2, NUM_REGIONS) > 0.7).float()
    mask = torch.rand(2, NUM_REGIONS) > 0.5
    plain = F.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(region_bce_loss(logits, targets), plain)
    masked = region_bce_loss(logits, targets, mask=mask)
    expected = F.binary_cross_entropy_with_logits(logits[mask], targets[mask])
    assert torch.allclose(masked, expected)
    # garbage in excluded regions does not change the loss
    noisy = logits.masked_fill(~mask, 50.0)
    assert torch.allclose(region_bce_loss(noisy, targets, mask=mask), masked)
    weighted = region_bce_loss(logits, targets, pos_weight=2.2)
    ref = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(2.2))
    assert torch.allclose(weighted, ref) and weighted > plain
    empty = region_bce_loss(logits.requires_grad_(), targets, mask=torch.zeros_like(mask))
    assert empty.item() == 0.0
    empty.backward()
    with pytest.raises(ValueError, match="must match"):
        region_bce_loss(logits, targets[:, :5])


def test_classifier_learns_a_feature_rule() -> None:
    torch.manual_seed(0)
    model = RegionClassifier(ClassifierConfig(feature_dim=8, hidden_dim=16, dropout=0.0))
    features = torch.randn(64, NUM_REGIONS, 8)
    targets = (features[..., 0] > 0.5).float()  # [64, 29]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = region_bce_loss(model(features), targets, pos_weight=2.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    accuracy = ((model(features) > 0).float() == targets).float().mean()
    assert loss.item() < 0.5 * first and accuracy > 0.95
