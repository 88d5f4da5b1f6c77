from __future__ import annotations

import pytest
from pipeline_fixture import one_thread  # noqa: F401  (the fixture, used by pytestmark)
import torch
from torch import nn

from crrg.backbones import build_backbone
from crrg.folding import FoldedTower, fold_batchnorm


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_norms(module: nn.Module) -> None:
    """Give every batch norm non-trivial statistics and affine parameters, as after training."""
    torch.manual_seed(0)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.2, 0.2)


def _probe(device: torch.device) -> torch.Tensor:
    return torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(1)).to(device)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_folded_backbone_body_gives_the_same_maps(name):
    backbone = build_backbone(name, feature_strides=(16, 32), fpn_channels=32).eval()
    _randomise_norms(backbone)
    folded, count = fold_batchnorm(backbone.body)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in backbone.body.modules())
    assert count == norms > 0  # every norm folded ...
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())  # ... out of the copy
    assert any(isinstance(m, nn.BatchNorm2d) for m in backbone.body.modules())  # original untouched
    x = torch.randn(2, 1, 96, 96)
    with torch.inference_mode():
        ref, got = backbone(x), backbone(x, folded)
    for key in ref:
        assert torch.allclose(ref[key], got[key], atol=1e-4 * float(ref[key].abs().max()))


def test_folded_tower_follows_weight_changes_and_training_mode():
    backbone = build_backbone("efficientnet_lite0", feature_strides=(16, 32), fpn_channels=32).eval()
    _randomise_norms(backbone)
    tower = FoldedTower(backbone.body, _probe)
    first = tower.get()
    assert first is not backbone.body and tower.get() is first  # folded once, then reused
    x = torch.randn(1, 1, 96, 96)
    with torch.no_grad():
        next(backbone.body.parameters()).mul_(2.0)  # an in-place weight change (optimizer step)
    second = tower.get()
    assert second is not first
    with torch.inference_mode():
        assert torch.allclose(backbone.body(x)[-1], second(x)[-1], atol=1e-4)
    backbone.train()
    assert tower.get() is backbone.body  # training runs the real batch norms


def test_a_norm_before_its_conv_is_caught_by_the_probe():
    """Declaration order that is not the forward order: the copy would differ, so it is not used."""

    class NormFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.norm(x))  # the norm runs first, though declared second

    module = NormFirst().eval()
    _randomise_norms(module)
    assert fold_batchnorm(module)[1] == 1
    tower = FoldedTower(module, lambda device: torch.randn(1, 4, 16, 16, device=device))
    assert tower.get() is module
