"""crrg.pooling: the detector's RoI pooler gives torchvision's values exactly."""

from collections import OrderedDict

import torch
from torchvision.ops import MultiScaleRoIAlign

from crrg.pooling import RegionRoIAlign


def _maps(batch: int = 3, size: int = 384, channels: int = 8) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return OrderedDict([("0", torch.randn(batch, channels, size // 16, size // 16, generator=g)),
                        ("1", torch.randn(batch, channels, size // 32, size // 32, generator=g))])


def _boxes(count: int, batch: int, size: float, max_side: float, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        xy = torch.rand(count, 2, generator=g) * (size - max_side)
        wh = 4 + torch.rand(count, 2, generator=g) * (max_side - 4)
        out.append(torch.cat([xy, xy + wh], dim=1))
    return out


def test_one_level_matches_torchvision_exactly() -> None:
    maps, shapes = _maps(), [(384, 384)] * 3
    ours, reference = RegionRoIAlign(["0", "1"], 7, 2), MultiScaleRoIAlign(["0", "1"], 7, 2)
    for seed in (1, 2):  # the first call sets the level mapper up, the second takes the one-level path
        boxes = _boxes(50, 3, 384, 300, seed=seed)
        expected = reference(maps, boxes, shapes)
        got = ours(maps, boxes, shapes)
        assert got.shape == (150, 8, 7, 7)
        assert torch.equal(got, expected)
    assert bool((ours.map_levels(boxes) == 0).all())  # every box of a 384 px input on the finest level


def test_mixed_levels_fall_back_to_torchvision() -> None:
    maps, shapes = _maps(size=1024), [(1024, 1024)] * 3
    ours, reference = RegionRoIAlign(["0", "1"], 7, 2), MultiScaleRoIAlign(["0", "1"], 7, 2)
    for seed in (2, 3):
        boxes = _boxes(40, 3, 1024, 1000, seed=seed)
        expected = reference(maps, boxes, shapes)
        assert torch.equal(ours(maps, boxes, shapes), expected)
    assert len(set(reference.map_levels(boxes).tolist())) == 2  # the input really has both levels


def test_gradient_flows_through_the_one_level_path() -> None:
    maps = _maps()
    maps["0"].requires_grad_(True)
    pool = RegionRoIAlign(["0", "1"], 7, 2)
    boxes = _boxes(10, 3, 384, 200)
    pool(maps, boxes, [(384, 384)] * 3)  # set-up call
    pool(maps, boxes, [(384, 384)] * 3).sum().backward()
    assert maps["0"].grad is not None and maps["0"].grad.abs().sum() > 0
