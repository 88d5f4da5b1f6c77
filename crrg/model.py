"""CRRGModel: every learned part of CRRG-CLIP in one hub-loadable module.

detector (Faster R-CNN, 29 regions) -> region features [B, 29, D]
  -> selection / abnormality classifiers (MLP heads) -> which regions get a sentence
  -> decoder (GPT-2 with pseudo self-attention on the region feature) -> one sentence per region
clip (open_clip) -> zero-shot label probabilities and prompt -> region scores.
With ``clip_fusion`` (the default variant) the region features also carry the CLIP image
embedding (:mod:`crrg.fusion`); :meth:`CRRGModel.head_inputs` is the one place that applies it.

Saved as a hub-style folder: config.json (the CRRGConfig) + model.safetensors (fp16 by default)
+ README.md model card (front matter from :mod:`crrg.card`, eval results from metrics.json) +
LICENSE.md (the training data's terms). Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from safetensors.torch import load_file, save_file
from torch import nn

from crrg import card
from crrg.calibration import Calibration
from crrg.classifier import ClassifierConfig, RegionClassifier
from crrg.clip import ClipConfig, CXRClip
from crrg.config import from_dict, load_variant, to_dict, variants
from crrg.decoder import DecoderConfig, ReportDecoder
from crrg.detector import DetectorConfig, RegionDetector
from crrg.findings import (
    GroundingConfig,
    ImageFindings,
    ImageFindingsConfig,
    RegionFindings,
    RegionFindingsConfig,
)
from crrg.fusion import ClipFusion, fuse
from crrg.input_check import InputCheckConfig, InputChecker
from crrg.labels import DEFAULT_PROMPTS

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


@dataclass
class CRRGConfig:
    """The whole model. Component configs are owned by their modules."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    selection: ClassifierConfig = field(default_factory=ClassifierConfig)
    abnormality: ClassifierConfig = field(default_factory=ClassifierConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    image_size: int = 512
    selection_threshold: float = 0.5
    abnormal_threshold: float = 0.5
    num_beams: int = 1
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    variant: str = "custom"
    clip_fusion: bool = False  # add the CLIP image embedding to every region feature (crrg.fusion)
    #: evidence heads (crrg.findings); None = a model without them (reports from the decoder alone)
    findings: RegionFindingsConfig | None = None
    image_findings: ImageFindingsConfig | None = None
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    #: calibration fitted on the validation split, one scaling per output (crrg.calibration);
    #: empty = raw sigmoid probabilities. Stored in config.json in Calibration's flat layout.
    calibration: Calibration = field(default_factory=Calibration)
    #: "is this a frontal chest radiograph?" (crrg.input_check); None = no check
    input_check: InputCheckConfig | None = None

    def __post_init__(self) -> None:
        if self.detector.image_size != self.image_size:
            raise ValueError(
                f"detector.image_size {self.detector.image_size} != image_size {self.image_size}"
            )


def config_variants() -> list[str]:
    return variants("crrg")


def get_config(variant: str = "default") -> CRRGConfig:
    """A named model variant from ``crrg/configs/crrg_<variant>.json``."""
    return load_variant(CRRGConfig, "crrg", variant, "model")


class CRRGModel(
    nn.Module,
    ModelHubMixin,
    library_name=card.LIBRARY_NAME,
    license=card.LICENSE,
    license_name=card.LICENSE_NAME,
    license_link=card.LICENSE_FILE,
    pipeline_tag=card.PIPELINE_TAG,
    tags=list(card.TAGS),
    paper_url="https://arxiv.org/abs/2501.01989",
    model_card_template=card.MODEL_CARD,
):
    """All learned parts. ``CRRGModel.from_pretrained(folder)``; ``save_pretrained(folder)``."""

    def __init__(self, config: dict | CRRGConfig) -> None:
        super().__init__()
        self.config = from_dict(CRRGConfig, config) if isinstance(config, dict) else config
        cfg = self.config
        self.detector = RegionDetector(cfg.detector)
        self.selection = RegionClassifier(cfg.selection)
        self.abnormality = RegionClassifier(cfg.abnormality)
        self.decoder = ReportDecoder(cfg.decoder)
        self.clip = CXRClip(cfg.clip)
        self.fusion = ClipFusion(cfg.clip.embed_dim, cfg.detector.feature_dim) if cfg.clip_fusion else None
        self.findings = RegionFindings(cfg.findings) if cfg.findings is not None else None
        self.image_findings = ImageFindings(cfg.image_findings) if cfg.image_findings is not None else None
        self.input_check = InputChecker(cfg.input_check) if cfg.input_check is not None else None

    def head_inputs(self, images: torch.Tensor | None, features: torch.Tensor,
                        embedding: torch.Tensor | None = None) -> torch.Tensor:
        """The features [B, N, D] the heads and the decoder read for detector features [B, N, D]
        of ``images`` [B, 1, S, S]: unchanged, or with ``clip_fusion`` plus the fused CLIP image
        embedding (pass ``embedding`` [B, E] when it is already computed)."""
        return fuse(self.fusion, self.clip, images, features, embedding)

    def select_regions(self, selection_prob: torch.Tensor, detected: torch.Tensor) -> torch.Tensor:
        """[..., 29] bool: regions that get a sentence (selected and detected; one rule for the
        pipeline and the evaluation)."""
        return (selection_prob > self.config.selection_threshold) & detected.bool()

    def num_parameters(self) -> dict[str, int]:
        parts = {"detector": self.detector, "selection": self.selection,
                 "abnormality": self.abnormality, "decoder": self.decoder, "clip": self.clip}
        for name in ("fusion", "findings", "image_findings", "input_check"):
            if getattr(self, name) is not None:
                parts[name] = getattr(self, name)
        return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}

    def save_pretrained(self, save_directory: str | Path, *,  # type: ignore[override]
                        metrics: str | Path | Mapping[str, Any] | None = None, **kwargs: Any) -> str | None:
        """The mixin's ``save_pretrained`` (``push_to_hub=True`` included) plus the card metadata of
        :mod:`crrg.card`: ``metrics`` (a ``train.evaluate`` dict or metrics.json path; also taken
        from ``model_card_kwargs["metrics"]``, the way ``push_to_hub`` passes it) is written to
        ``metrics.json``, else an existing ``metrics.json`` in the folder is used. A new README.md
        is rendered from ``crrg.card.MODEL_CARD``; an existing one keeps its body and gets fresh front matter."""
        folder = Path(save_directory)
        cards = dict(kwargs.pop("model_card_kwargs", None) or {})
        metrics = cards.pop("metrics", None) if metrics is None else metrics
        cards.setdefault("variant", self.config.variant)
        if kwargs.get("config") is None:
            kwargs["config"] = to_dict(self.config)
        had_card = (folder / card.CARD_NAME).is_file()
        values = card.write_folder_files(folder, metrics)
        if had_card:  # the mixin keeps an existing README.md untouched: refresh its front matter
            card.rewrite_front_matter(folder / card.CARD_NAME, card.card_data(self.config, values))
        return super().save_pretrained(folder, model_card_kwargs={**cards, "metrics": values}, **kwargs)

    def generate_model_card(self, *args: Any, metrics: Mapping[str, Any] | None = None,
                            **kwargs: Any) -> ModelCard:
        """``crrg.card.MODEL_CARD`` rendered with :func:`crrg.card.card_data` (config + ``metrics``)."""
        data = card.card_data(self.config, metrics)
        info = self._hub_mixin_info
        return ModelCard.from_template(data, template_str=info.model_card_template, repo_url=info.repo_url,
                                       paper_url=info.paper_url, docs_url=info.docs_url, **kwargs)

    def _save_pretrained(self, save_directory: Path, dtype: torch.dtype = torch.float16) -> None:
        """Weights as safetensors; floating tensors cast to fp16 (halves the size)."""
        state = {
            k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
            for k, v in self.state_dict().items()
        }
        save_file(state, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "crrg"})

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", **model_kwargs: Any) -> "CRRGModel":
        for key in ("revision", "cache_dir", "force_download", "local_files_only", "token"):
            model_kwargs.pop(key, None)
        config = model_kwargs.pop("config", None)
        if config is None:
            raise FileNotFoundError(f"{model_id!r} has no config.json: not a crrg model folder")
        if isinstance(config, dict) and isinstance(config.get("clip"), dict) and "region_source" not in config["clip"]:
            # saved before CLIPConfig.region_source existed: its heads were trained on crop embeddings
            config = {**config, "clip": {**config["clip"], "region_source": "crops"}}
        model = cls(config)
        model.load_weights(Path(model_id) / WEIGHTS_NAME)
        return model.to(map_location).eval()

    def load_weights(self, path: str | Path) -> None:
        """Strictly load a safetensors file (any float dtype; cast to this model's dtype)."""
        state = load_file(str(path))
        own = self.state_dict()
        state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
        self.load_state_dict(state, strict=True)


def replace(config: CRRGConfig, **changes: Any) -> CRRGConfig:
    """``dataclasses.replace`` that also accepts dotted component fields: ``decoder__n_layer=2``."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        if "__" in key:
            part, name = key.split("__", 1)
            nested.setdefault(part, {})[name] = value
        else:
            flat[key] = value
    for part, values in nested.items():
        flat[part] = dataclasses.replace(getattr(config, part), **values)
    return dataclasses.replace(config, **flat)
