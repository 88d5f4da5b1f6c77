"""RoI pooling for the detector: torchvision's ``MultiScaleRoIAlign`` without its zero-fill and
scatter when every box maps to one pyramid level (bit-for-bit the same output).

On a 384 px input no box reaches the 448 px that torchvision's level mapper needs for the coarser
level, so the 300 proposals of every image are pooled from the finest map anyway; torchvision's
general path still allocates a zero tensor for all RoIs ([2400, 128, 7, 7], 60 MB on a batch of
8) and scatters the one level's result into it. Here that level's ``roi_align`` output is returned
as it is. Mixed levels (larger inputs) take torchvision's path.

Measured and not kept: splitting the single-threaded CPU ``roi_align`` across 2 Python threads
made ``detect`` 13 % faster alone, but end to end (``crrg report``, 2 decoding workers) it was
slower (7.7-8.0 vs 8.7-9.4 images/s) and raised the peak RSS by about 230 MB (per-thread malloc
arenas), so RoI-align stays on one thread.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align


class RegionRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` that pools a one-level set of boxes with one ``roi_align`` call."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        maps = [x[name] for name in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            return super().forward(x, boxes, image_shapes)  # sets the scales and the level mapper
        levels = self.map_levels(boxes) if len(maps) > 1 else torch.zeros(1, dtype=torch.int64)
        if levels.numel() == 0 or not bool((levels == levels[0]).all()):
            return super().forward(x, boxes, image_shapes)
        level = int(levels[0])
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        return roi_align(maps[level], rois, self.output_size, self.scales[level], self.sampling_ratio)
