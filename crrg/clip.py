"""CXRClip: an open_clip CLIP for chest X-rays, zero-shot labels and prompt -> region scores.

The model is open_clip's own ``CLIP`` class built from a config in open_clip's schema
(``embed_dim``, ``vision_cfg``, ``text_cfg``, read into open_clip's ``CLIPVisionCfg`` /
``CLIPTextCfg`` dataclasses, so unknown keys raise), never downloaded: weights are random, or the
image tower starts from the offline ImageNet EfficientNet-Lite0 weights
(``pretrained_image_tower=True``, training only; mapping in :mod:`crrg.backbones`).

Decisions (measured on the 2-core CPU, torch 2.14.1, 2 threads):

- Image tower: timm ``efficientnet_lite0`` through open_clip's ``TimmModel`` (avg pool + linear
  projection) at 224 px. open_clip does not pass ``in_chans`` to timm, so after building, the stem
  convolution is replaced by a 1-channel one (kernels summed over RGB). That is exactly the RGB
  model fed a repeated gray channel, minus 2/3 of the stem's input work and a [B, 3, S, S] copy.
  Inputs are the project's preprocessed tensors (any S); they are resized to 224 inside
  (bilinear, antialias).
- Text tower: open_clip's text transformer (4 layers x 256, 4 heads, context 77) and its own BPE
  tokenizer. The full 49,408-token embedding alone would be 12.6 M parameters (whole CLIP 19.6 M,
  over the ~14 M budget), so the vocabulary is compacted by truncating the BPE merge table to its
  first ``bpe_merges`` merges (8,192 by default: 512 byte tokens + 8,192 merges + SOT/EOT = 8,706
  ids, 2.2 M parameters). Because BPE merges by rank, the truncated tokenizer is the same
  algorithm with a shorter merge list: every text still tokenizes (no unknown token, any user
  prompt works), ids stay contiguous and SOT/EOT stay the two largest ids, so open_clip's
  ``argmax`` EOT pooling is unchanged; nothing corpus-derived is stored. On IU X-ray report
  sentences this costs 13.6 tokens per sentence instead of 10.1 with the full table.
  A corpus-derived id remap was rejected: it needs the corpus at config time and an unknown-token
  fallback for prompts typed by users.
- Text sequences are cut after the longest EOT in the batch before the transformer: with the
  causal mask and EOT pooling this gives the same features as the padded 77 tokens (tested) at
  a fraction of the cost. Hence the config must keep ``pool_type="argmax"`` and a causal mask.
- Zero-shot (CheXzero): for each label, a 2-way softmax over the logits (``logit_scale`` times
  cosine) of the image against "{label}" and "no {label}"; the probability of the positive
  prompt. Prompt ensembles average the normalised text features over templates.
- Region embeddings (``region_source``), used by the region heads and the prompt -> region map:
  - ``"feature_map"`` (default): RoI-pooled from the ONE image-tower pass that gives the global
    embedding. The trunk's last feature map (before its global average pool; 7 x 7 at 224 px) is
    ``torchvision.ops.roi_align``-ed on each detected box (scaled to the map) into a
    ``_ROI_GRID`` x ``_ROI_GRID`` grid, averaged (computed as one weighted sum of the map per box,
    :func:`crrg.pooling.roi_mean`), and put through the same projection head: the
    region version of the global embedding (a box over the whole image gives the global
    embedding up to roi_align's bilinear sampling). Measured (2 cores, batch 8): the 29 crop
    passes cost ~5x the global pass per image; this costs ~0.
  - ``"crops"`` (models trained before): each box, squared around its centre with a margin, is
    cropped and resized by ``roi_align`` (adaptive sampling, so it also anti-aliases; outside the
    image it fills with the image minimum, i.e. the preprocessing's black padding) and encoded by
    the image tower, ``region_crop_size`` px.
  Score = ``logit_scale`` x cosine of the region embedding with the label prompt. Undetected
  regions get ``-inf`` (so ``softmax(dim=1)`` over regions gives them 0 and ``isfinite`` finds
  them).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import text_global_pool
from torch import Tensor, nn
from torchvision.ops import roi_align

from crrg.config import load_variant, variants
from crrg.pooling import roi_mean

logger = logging.getLogger(__name__)

_BYTE_TOKENS = 512  # open_clip's BPE: 256 byte symbols, plain and with "</w>"
_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_FULL_MERGES = 49408 - _BYTE_TOKENS - len(_SPECIAL_TOKENS)  # 48,894
REGION_SOURCES = ("feature_map", "crops")
_ROI_GRID = 4  # RoI-align bins per side on the tower's last map (2 samples each): 64 samples a box


def vocab_size_for(bpe_merges: int | None) -> int:
    """Text vocabulary size of the tokenizer that keeps the first ``bpe_merges`` merges."""
    merges = _FULL_MERGES if bpe_merges is None else bpe_merges
    return _BYTE_TOKENS + merges + len(_SPECIAL_TOKENS)


def _default_vision_cfg() -> CLIPVisionCfg:
    return CLIPVisionCfg(image_size=224, timm_model_name="efficientnet_lite0", timm_pool="avg",
                         timm_proj="linear")


def _default_text_cfg() -> CLIPTextCfg:
    return CLIPTextCfg(context_length=77, vocab_size=vocab_size_for(8192), width=256, heads=4, layers=4)


@dataclass
class ClipConfig:
    """open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``,
    ``init_logit_scale``) plus the tokenizer and prompting settings of :class:`CXRClip`.

    ``bpe_merges``: BPE merges kept (``None`` = all 48,894); ``text_cfg.vocab_size`` must equal
    :func:`vocab_size_for` of it. ``positive`` / ``negative``: zero-shot prompt patterns ("{}" is
    the label); ``templates``: prompt ensemble ("{}" is the prompt), features averaged.
    ``region_source``: how region embeddings are made, ``"feature_map"`` (RoI-pooled from the
    global image pass) or ``"crops"`` (one tower pass per region crop, models trained before);
    ``region_margin``: extra border around a region crop, as a fraction of its longer side, and
    ``region_crop_size``: side of the crops the image tower encodes (both ``"crops"`` only).
    ``max_logit_scale``: cap of ``exp(logit_scale)`` (CLIP's 100).
    """

    embed_dim: int = 256
    vision_cfg: CLIPVisionCfg = field(default_factory=_default_vision_cfg)
    text_cfg: CLIPTextCfg = field(default_factory=_default_text_cfg)
    quick_gelu: bool = False
    init_logit_scale: float = math.log(1 / 0.07)
    bpe_merges: int | None = 8192
    positive: str = "{}"
    negative: str = "no {}"
    templates: tuple[str, ...] = ("{}",)
    region_source: str = "feature_map"
    region_margin: float = 0.1
    region_crop_size: int = 96
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        vis, txt = self.vision_cfg, self.text_cfg
        if not vis.timm_model_name:
            raise ValueError("vision_cfg.timm_model_name is required (a timm CNN, e.g. 'efficientnet_lite0')")
        if vis.timm_model_pretrained or txt.hf_model_name:
            raise ValueError("ClipConfig builds offline: set vision_cfg.timm_model_pretrained=false and no "
                             "text_cfg.hf_model_name (use CXRClip(..., pretrained_image_tower=True))")
        if txt.pool_type != "argmax" or txt.no_causal_mask or txt.embed_cls:
            raise ValueError("text_cfg needs pool_type='argmax', a causal mask and embed_cls=false "
                             f"(EOT pooling), got pool_type={txt.pool_type!r}")
        if self.bpe_merges is not None and not 0 <= self.bpe_merges <= _FULL_MERGES:
            raise ValueError(f"bpe_merges must be in [0, {_FULL_MERGES}] or None, got {self.bpe_merges}")
        if txt.vocab_size != vocab_size_for(self.bpe_merges):
            raise ValueError(f"text_cfg.vocab_size must be {vocab_size_for(self.bpe_merges)} for "
                             f"bpe_merges={self.bpe_merges}, got {txt.vocab_size}")
        for name, pattern in [("positive", self.positive), ("negative", self.negative)] + [
                ("templates", t) for t in self.templates]:
            _check_pattern(pattern, name)
        if not self.templates:
            raise ValueError("templates must hold at least one pattern, e.g. ['{}']")
        if self.region_source not in REGION_SOURCES:
            raise ValueError(f"region_source must be one of {REGION_SOURCES}, got {self.region_source!r}")
        if self.region_crop_size < 32:
            raise ValueError(f"region_crop_size must be >= 32 pixels, got {self.region_crop_size}")

    @property
    def image_size(self) -> int:
        """Side of the square image the tower sees."""
        size = self.vision_cfg.image_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def context_length(self) -> int:
        return int(self.text_cfg.context_length)


def clip_config_variants() -> list[str]:
    return variants("clip")


def get_clip_config(variant: str = "default") -> ClipConfig:
    """A named CLIP variant from ``crrg/configs/clip_<variant>.json``."""
    return load_variant(ClipConfig, "clip", variant, "CLIP")


def _check_pattern(pattern: str, name: str) -> None:
    if not isinstance(pattern, str) or pattern.count("{}") != 1:
        raise ValueError(f"{name} pattern must contain '{{}}' exactly once, got {pattern!r}")


def _fill(pattern: str, text: str) -> str:
    return pattern.replace("{}", text)


def build_tokenizer(bpe_merges: int | None = None, context_length: int = 77) -> SimpleTokenizer:
    """open_clip's ``SimpleTokenizer`` keeping only the first ``bpe_merges`` merges.

    Ids: byte tokens 0..511, merge ``r`` -> 512 + r, then SOT, EOT (the two largest ids).
    ``bpe_merges=None`` is open_clip's tokenizer unchanged.
    """
    tok = SimpleTokenizer(context_length=context_length)
    if bpe_merges is None:
        return tok
    n = _BYTE_TOKENS + bpe_merges
    specials = {s: n + i for i, s in enumerate(_SPECIAL_TOKENS)}
    tok.encoder = {tok.decoder[i]: i for i in range(n)} | specials
    tok.decoder = {i: s for s, i in tok.encoder.items()}
    tok.bpe_ranks = {pair: rank for pair, rank in tok.bpe_ranks.items() if rank < bpe_merges}
    tok.cache = {s: s for s in _SPECIAL_TOKENS}
    tok.all_special_ids = list(specials.values())
    tok.sot_token_id, tok.eot_token_id = tok.all_special_ids
    tok.vocab_size = len(tok.encoder)
    return tok


def _grayscale_stem(trunk: nn.Module) -> None:
    """Replace a timm model's first convolution by a 1-channel one (kernels summed over RGB)."""
    name = trunk.pretrained_cfg.get("first_conv") if hasattr(trunk, "pretrained_cfg") else None
    conv = trunk.get_submodule(name) if name else None
    if type(conv) is not nn.Conv2d:
        raise ValueError(f"cannot find a plain Conv2d stem ('first_conv'={name!r}) in {type(trunk).__name__}")
    gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        gray.weight.copy_(conv.weight.sum(dim=1, keepdim=True))  # [C, 1, k, k]
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    trunk.set_submodule(name, gray)


class CXRClip(nn.Module):
    """open_clip CLIP on 1-channel preprocessed chest X-rays (see the module docstring)."""

    _TEXT_CACHE_SIZE = 32

    def __init__(self, config: ClipConfig | None = None, pretrained_image_tower: bool = False) -> None:
        super().__init__()
        self.config = config or ClipConfig()
        cfg = self.config
        self.model = CLIP(
            embed_dim=cfg.embed_dim,
            vision_cfg=dataclasses.replace(cfg.vision_cfg),
            text_cfg=dataclasses.replace(cfg.text_cfg),
            quick_gelu=cfg.quick_gelu,
            init_logit_scale=cfg.init_logit_scale,
        )
        _grayscale_stem(self.model.visual.trunk)
        self.tokenizer = build_tokenizer(cfg.bpe_merges, cfg.context_length)
        self._text_cache: dict[tuple, Tensor] = {}
        if pretrained_image_tower:
            self.load_imagenet_image_tower()

    def load_imagenet_image_tower(self) -> None:
        """Initialise the tower's trunk from the offline ImageNet EfficientNet-Lite0 weights."""
        from crrg.backbones import lite0_imagenet_state_dict

        if self.config.vision_cfg.timm_model_name != "efficientnet_lite0":
            raise ValueError("ImageNet weights exist only for vision_cfg.timm_model_name="
                             f"'efficientnet_lite0', got {self.config.vision_cfg.timm_model_name!r}")
        weights = lite0_imagenet_state_dict(in_chans=1)
        weights = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
        self.model.visual.trunk.load_state_dict(weights, strict=True)
        logger.info("CLIP image tower initialised from ImageNet EfficientNet-Lite0 weights")

    # --- encoders --------------------------------------------------------------------------

    def logit_scale(self) -> Tensor:
        """``exp(logit_scale)``, capped at ``config.max_logit_scale``."""
        return self.model.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def _tower_input(self, images: Tensor) -> Tensor:
        """[B, 1, H, W] preprocessed images (any size) -> [B, 1, size, size] tower input."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images [B, 1, H, W], got {tuple(images.shape)}")
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                   align_corners=False)  # [B, 1, size, size]
        return images

    def encode_image(self, images: Tensor) -> Tensor:
        """[B, 1, H, W] preprocessed images (any size) -> L2-normalised features [B, E]."""
        return F.normalize(self.model.encode_image(self._tower_input(images)), dim=-1)  # [B, E]

    def encode_image_map(self, images: Tensor, trunk: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`encode_image` plus the trunk's last feature map [B, C, h, w] (before the global
        pool) of the same pass, for :meth:`region_embeddings`. The features are exactly those of
        :meth:`encode_image` (the trunk's own ``forward_features`` / ``forward_head`` split).
        ``trunk``: the trunk's inference copy (:mod:`crrg.folding`), else its own."""
        visual = self.model.visual
        trunk = visual.trunk if trunk is None else trunk
        feature_map = trunk.forward_features(self._tower_input(images))  # [B, C, h, w]
        features = visual.head(trunk.forward_head(feature_map))  # [B, E]
        return F.normalize(features, dim=-1), feature_map

    def _text_version(self) -> int:
        """Changes whenever a text-tower weight is modified in place (optimizer step, load)."""
        return sum(p._version for name, p in self.model.named_parameters() if not name.startswith("visual."))

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Texts -> token ids [T, context_length] (SOT ... EOT, zero padded, truncated)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        return self.tokenizer(list(texts), self.config.context_length)

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """Token ids [T, C] -> L2-normalised features [T, E]; padding after the last EOT is cut."""
        m = self.model
        n = int(tokens.argmax(dim=-1).max()) + 1 if tokens.numel() else 1
        tokens = tokens[:, :n]  # [T, n]
        x = m.token_embedding(tokens).to(m.transformer.get_cast_dtype())  # [T, n, W]
        x = x + m.positional_embedding[:n].to(x.dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])  # [T, n, W]
        x = m.ln_final(x)
        x = text_global_pool(x, tokens, m.text_pool_type)  # [T, W] at EOT
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
        return F.normalize(x, dim=-1)  # [T, E]

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """List of T texts -> L2-normalised features [T, E].

        Without gradients and in eval mode the features are cached per text list (prompts repeat
        for every image); the cache key includes the text weights' in-place version counters,
        so optimizer steps and ``load_state_dict`` invalidate it. Do not modify the result in place.
        """
        device = self.model.positional_embedding.device
        if self.training or torch.is_grad_enabled():
            return self.encode_tokens(self.tokenize(texts).to(device))
        key = (tuple(texts), device, self.model.positional_embedding.dtype, self._text_version())
        if key not in self._text_cache:
            if len(self._text_cache) >= self._TEXT_CACHE_SIZE:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[key] = self.encode_tokens(self.tokenize(texts).to(device))
        return self._text_cache[key]

    def forward(self, images: Tensor, texts: Sequence[str] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training: (image features [B, E], text features [T, E], exp(logit_scale) scalar).

        ``texts`` may be strings or token ids from :meth:`tokenize` (e.g. made in data workers).
        """
        text_features = self.encode_tokens(texts) if isinstance(texts, Tensor) else self.encode_text(texts)
        return self.encode_image(images), text_features, self.logit_scale()

    # --- zero-shot ---------------------------------------------------------------------------

    def prompt_features(self, labels: Sequence[str], patterns: Sequence[str],
                        templates: Sequence[str] | None = None) -> Tensor:
        """Text features [P, L, E] of every pattern x label, averaged over the templates."""
        if isinstance(labels, str) or not labels or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"labels must be a non-empty list of strings, got {labels!r}")
        templates = tuple(self.config.templates if templates is None else templates)
        if not templates:
            raise ValueError("templates must hold at least one pattern, e.g. ['{}']")
        for pattern in patterns:
            _check_pattern(pattern, "prompt")
        for template in templates:
            _check_pattern(template, "template")
        texts = [_fill(t, _fill(p, label)) for p in patterns for label in labels for t in templates]
        features = self.encode_text(texts)  # [P * L * N, E]
        features = features.view(len(patterns), len(labels), len(templates), -1).mean(dim=2)
        return F.normalize(features, dim=-1)  # [P, L, E]

    @torch.no_grad()
    def zero_shot(self, images: Tensor | None, labels: Sequence[str], positive: str | None = None,
                  negative: str | None = None, templates: Sequence[str] | None = None,
                  image_features: Tensor | None = None) -> Tensor:
        """CheXzero zero-shot: probability [B, L] that each label is present.

        Per label, softmax over the image's logits with the positive and negative prompt
        (``positive`` / ``negative`` patterns, default from the config); ``templates`` is an
        optional prompt ensemble. ``image_features`` [B, E]: :meth:`encode_image` of ``images``
        when already computed (then ``images`` may be None).
        """
        pos_neg = [positive or self.config.positive, negative or self.config.negative]
        text = self.prompt_features(labels, pos_neg, templates)  # [2, L, E]
        image = self.encode_image(images) if image_features is None else image_features  # [B, E]
        logits = self.logit_scale() * torch.einsum("be,ple->blp", image, text)  # [B, L, 2]
        return logits.softmax(dim=-1)[..., 0]  # [B, L]

    # --- regions ----------------------------------------------------------------------------

    def crop_regions(self, image: Tensor, boxes: Tensor) -> Tensor:
        """[1, 1, S, S] image, [K, 4] xyxy pixel boxes -> [K, 1, s, s] square crops with margin."""
        size = self.config.region_crop_size
        boxes = boxes.to(image.dtype)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [K, 2]
        side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1).clamp(min=1.0) * (1 + 2 * self.config.region_margin)
        squares = torch.cat([centre - side[:, None] / 2, centre + side[:, None] / 2], dim=1)  # [K, 4]
        fill = image.amin()  # outside the image: the padding's black
        crops = roi_align(image - fill, [squares], output_size=(size, size), spatial_scale=1.0,
                          sampling_ratio=-1, aligned=True)  # [K, 1, size, size]
        return crops + fill

    @torch.no_grad()
    def region_embeddings(self, images: Tensor, boxes: Tensor, detected: Tensor,
                          crop_batch: int | None = None, feature_map: Tensor | None = None) -> Tensor:
        """L2-normalised image-tower embeddings of each region: [B, R, E] (zeros for undetected
        regions), made as ``config.region_source`` says. ``images`` [B, 1, S, S], ``boxes``
        [B, R, 4] xyxy pixels of that tensor, ``detected`` [B, R]; ``crop_batch``: crops (or, for
        ``"feature_map"``, images) per image-tower pass (``None``: all); ``feature_map``: the map
        :meth:`encode_image_map` gave for ``images`` (``"feature_map"`` only; saves the pass)."""
        batch, regions = boxes.shape[:2]
        out = torch.zeros(batch, regions, self.config.embed_dim, device=images.device)
        detected = detected.to(torch.bool)
        image_index, region_index = detected.nonzero(as_tuple=True)  # [K], [K] image-major
        if not image_index.numel():
            return out
        if self.config.region_source == "crops":
            features = self._crop_features(images, boxes, detected, crop_batch)
        else:
            if feature_map is None:
                step = batch if crop_batch is None else max(1, crop_batch)
                feature_map = torch.cat([self.encode_image_map(part)[1] for part in images.split(step)])
            features = self._pooled_features(feature_map, boxes[detected].to(feature_map.device),
                                             image_index.to(feature_map.device), images.shape[-2:])
        out[image_index, region_index] = F.normalize(features, dim=-1).to(out.dtype)  # [K, E]
        return out

    def _pooled_features(self, feature_map: Tensor, boxes: Tensor, image_index: Tensor,
                         image_size: Sequence[int]) -> Tensor:
        """Projected RoI averages of ``feature_map`` [B, C, h, w]: ``boxes`` [K, 4] xyxy pixels of
        an ``image_size`` (H, W) input, ``image_index`` [K] -> unnormalised features [K, E]."""
        height, width = int(image_size[0]), int(image_size[1])
        scale = torch.tensor([feature_map.shape[-1] / width, feature_map.shape[-2] / height] * 2,
                             dtype=feature_map.dtype, device=feature_map.device)
        rois = torch.cat([image_index[:, None].to(feature_map.dtype), boxes.to(feature_map.dtype) * scale], dim=1)
        pooled = roi_mean(feature_map, rois, _ROI_GRID, spatial_scale=1.0, sampling_ratio=2, aligned=True)  # [K, C]
        return self.model.visual.head(pooled)  # [K, E]

    def _crop_features(self, images: Tensor, boxes: Tensor, detected: Tensor, crop_batch: int | None) -> Tensor:
        """Unnormalised tower features [K, E] of the detected regions' crops, image-major."""
        crops = torch.cat([self.crop_regions(images[b:b + 1], boxes[b][detected[b]].to(images.device))
                           for b in range(boxes.shape[0]) if detected[b].any()])  # [K, 1, s, s]
        step = crops.shape[0] if crop_batch is None else max(1, crop_batch)
        return torch.cat([self.model.encode_image(chunk) for chunk in crops.split(step)])

    @torch.no_grad()
    def region_scores(self, images: Tensor, boxes: Tensor, detected: Tensor, labels: Sequence[str],
                      templates: Sequence[str] | None = None, crop_batch: int | None = None,
                      embeddings: Tensor | None = None) -> Tensor:
        """How well each region matches each label's positive prompt: logits [L, R] or [B, L, R].

        One image: ``images`` [1, 1, S, S], ``boxes`` [R, 4] xyxy pixels of that tensor (R = 29
        regions), ``detected`` [R] bool -> [L, R]. A batch: ``images`` [B, 1, S, S], ``boxes``
        [B, R, 4], ``detected`` [B, R] -> [B, L, R]; the crops of all images are encoded together,
        ``crop_batch`` crops per image-tower pass (``None``: all at once). Score = ``logit_scale`` x
        cosine(region crop, prompt); undetected regions get ``-inf``. ``embeddings`` [B, R, E]:
        :meth:`region_embeddings` of these inputs when already computed.
        """
        single = boxes.ndim == 2
        if single:
            if images.ndim != 4 or images.shape[:2] != (1, 1):
                raise ValueError(f"expected one image [1, 1, S, S], got {tuple(images.shape)}")
            boxes, detected = boxes[None], detected[None]
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images [B, 1, S, S], got {tuple(images.shape)}")
        if (boxes.ndim != 3 or boxes.shape[2] != 4 or boxes.shape[0] != images.shape[0]
                or detected.shape != boxes.shape[:2]):
            raise ValueError(f"expected boxes [R, 4] and detected [R] (one image) or [B, R, 4] and "
                             f"[B, R], got {tuple(boxes.shape)} and {tuple(detected.shape)}")
        text = self.prompt_features(labels, [self.config.positive], templates)[0]  # [L, E]
        features = (self.region_embeddings(images, boxes, detected, crop_batch) if embeddings is None
                    else embeddings.reshape(boxes.shape[0], boxes.shape[1], -1))  # [B, R, E]
        scores = self.logit_scale() * torch.einsum("le,bre->blr", text, features)  # [B, L, R]
        scores = scores.masked_fill(~detected.to(torch.bool)[:, None, :].to(scores.device), -torch.inf)
        return scores[0] if single else scores
