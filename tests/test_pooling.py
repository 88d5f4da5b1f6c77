"""crrg.pooling: the detector's RoI pooler gives torchvision's values exactly; roi_mean is roi_align's mean."""

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from crrg.pooling import RegionRoIAlign, roi_mean


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


def _rois(count: int, batch: int, side: float, seed: int) -> torch.Tensor:
    """[count, 5] RoIs on a map of ``side`` px, some partly or wholly outside it, some tiny."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * (side + 4) - 3
    wh = torch.rand(count, 2, generator=g) * side * 0.8 + 0.05
    image = torch.randint(0, batch, (count, 1), generator=g).float()
    return torch.cat([image, xy, xy + wh], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("channels,side,grid,scale", [(1280, 7, 4, 1.0), (16, 24, 7, 1.0), (8, 24, 4, 0.0625)])
def test_roi_mean_is_the_mean_of_roi_align(aligned: bool, channels: int, side: int, grid: int, scale: float) -> None:
    g = torch.Generator().manual_seed(side)
    maps = torch.randn(3, channels, side, side, generator=g)
    rois = _rois(60, 3, side / scale, seed=channels)
    expected = roi_align(maps, rois, (grid, grid), scale, 2, aligned).mean(dim=(2, 3))
    got = roi_mean(maps, rois, grid, scale, 2, aligned)
    assert got.shape == (60, channels)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    beyond = torch.tensor([side + 5.0, side + 5.0, side + 9.0, side + 9.0]) / scale  # wholly outside the map
    outside = torch.cat([torch.zeros(1), beyond])[None]
    assert torch.equal(roi_mean(maps, outside, grid, scale, 2, aligned), torch.zeros(1, channels))  # roi_align's zeros


def test_roi_mean_keeps_the_rois_order_and_its_gradient() -> None:
    maps = torch.randn(2, 4, 7, 7, requires_grad=True)
    rois = torch.tensor([[1.0, 0, 0, 3, 3], [0.0, 1, 1, 6, 6], [1.0, 2, 2, 7, 7]])
    got = roi_mean(maps, rois, 4, 1.0, 2, True)
    for i in range(3):
        assert torch.allclose(got[i], roi_mean(maps, rois[i:i + 1], 4, 1.0, 2, True)[0])
    got.sum().backward()
    assert maps.grad is not None and maps.grad[0].abs().sum() > 0 and maps.grad[1].abs().sum() > 0
    with pytest.raises(ValueError, match="fixed sampling_ratio"):
        roi_mean(maps, rois, 4, 1.0, 0, True)
