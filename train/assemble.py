"""Assemble one model folder from stage outputs: the report model of one run + the CLIP of another.

    python -m train.assemble --base runs/default/s3/model --clip runs/default/clip/model --out OUT
        [--metrics runs/default/eval/metrics.json]

Stages can train in parallel (e.g. CLIP beside the detector); this copies the CLIP weights and
config into the base model and writes a hub-style folder (config.json + fp16 model.safetensors +
README.md + LICENSE.md). The card's front matter (licence, tags, and with ``--metrics`` or an
existing OUT/metrics.json the held-out results as ``model-index``) comes from :mod:`crrg.card`;
an existing OUT/README.md (a hand-written model card) keeps its body.

``--heads DIR`` (``train.train_heads`` output: ``heads.pt``, ``grounding.json``, and
``calibration.json`` when fitted) adds the evidence heads (:mod:`crrg.findings`), replaces the
abnormality head with the one trained on region-level labels, and sets the thresholds and the
calibration; ``--decoder-from MODEL`` takes the stage-3 decoder of another run (same features).
``--input-check DIR`` (``train.train_input_check`` output) adds the input checker.

``--clip-fusion on`` turns on :mod:`crrg.fusion` with a fresh (zero, so inactive) fusion MLP,
to start stage 2 from a detector + a trained CLIP; ``off`` removes it. A trained fusion is tied
to its CLIP, so replacing the CLIP of such a model is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from crrg.calibration import Calibration
from crrg.config import from_dict
from crrg.findings import GroundingConfig, ImageFindings, ImageFindingsConfig, RegionFindings, RegionFindingsConfig
from crrg.fusion import ClipFusion
from crrg.model import CRRGModel, replace

logger = logging.getLogger(__name__)


def attach_heads(model: CRRGModel, folder: Path) -> None:
    """The evidence heads, region-level abnormality head, thresholds and calibration of a
    ``train.train_heads`` run."""
    bundle = torch.load(folder / "heads.pt", weights_only=False)
    findings = RegionFindings(from_dict(RegionFindingsConfig, bundle["findings_config"]))
    findings.load_state_dict(bundle["findings"])
    image = ImageFindings(from_dict(ImageFindingsConfig, bundle["image_findings_config"]))
    image.load_state_dict(bundle["image_findings"])
    model.abnormality.load_state_dict(bundle["abnormality"])
    grounding = from_dict(GroundingConfig, json.loads((folder / "grounding.json").read_text()))
    calibration_path = folder / "calibration.json"
    calibration = Calibration.from_json(json.loads(calibration_path.read_text())
                                        if calibration_path.is_file() else None)
    model.config = dataclasses.replace(model.config, findings=findings.config, image_findings=image.config,
                                       grounding=grounding, calibration=calibration)
    model.findings, model.image_findings = findings.float(), image.float()


def attach_input_check(model: CRRGModel, folder: Path) -> None:
    from crrg.input_check import load_checker

    checker = load_checker(folder)
    model.config = dataclasses.replace(model.config, input_check=checker.config)
    model.input_check = checker


def assemble(base: Path, clip: Path | None, out: Path, variant: str | None = None,
             clip_fusion: bool | None = None, settings: dict[str, Any] | None = None,
             metrics: Path | dict[str, Any] | None = None, heads: Path | None = None,
             decoder_from: Path | None = None, input_check: Path | None = None) -> CRRGModel:
    """``settings``: inference-time config changes, ``{"detector__box_vote_iou": 0.5}``
    (:func:`crrg.model.replace`); fields that change weight shapes are refused. ``metrics``: a
    ``train.evaluate`` metrics.json (or dict) of these weights, copied to OUT/metrics.json and
    put on the card."""
    model = CRRGModel.from_pretrained(str(base))
    if settings:
        config = replace(model.config, **settings)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if {k: tuple(v.shape) for k, v in CRRGModel(config).state_dict().items()} != shapes:
            raise ValueError(f"settings {settings} change the weights' shapes; retrain instead")
        model.config = config
        for part in ("detector", "decoder", "selection", "abnormality", "clip"):
            getattr(model, part).config = getattr(config, part)
    if clip is not None:
        if model.fusion is not None:
            raise ValueError(f"{base} fuses its own CLIP into the region features (clip_fusion); "
                             "replacing that CLIP would invalidate the trained heads and decoder")
        donor = CRRGModel.from_pretrained(str(clip))
        model.config = dataclasses.replace(model.config, clip=donor.config.clip)
        model.clip = donor.clip
    if clip_fusion is not None and clip_fusion != (model.fusion is not None):
        model.config = dataclasses.replace(model.config, clip_fusion=clip_fusion)
        model.fusion = ClipFusion(model.config.clip.embed_dim, model.config.detector.feature_dim) if clip_fusion else None
    if decoder_from is not None:
        donor = CRRGModel.from_pretrained(str(decoder_from))
        model.config = dataclasses.replace(model.config, decoder=donor.config.decoder)
        model.decoder = donor.decoder
    if heads is not None:
        attach_heads(model, heads)
    if input_check is not None:
        attach_input_check(model, input_check)
    if variant:
        model.config = dataclasses.replace(model.config, variant=variant)
    model.save_pretrained(out, metrics=metrics)
    sizes = model.num_parameters()
    logger.info("assembled %s (%.1f M parameters: %s)", out, sum(sizes.values()) / 1e6,
                ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in sizes.items()))
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="model folder with detector/heads/decoder")
    parser.add_argument("--clip", type=Path, default=None, help="model folder whose CLIP replaces the base's")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", default=None, help="name recorded in config.json")
    parser.add_argument("--clip-fusion", choices=("on", "off"), default=None,
                        help="turn the CLIP -> region-feature fusion on (fresh) or off")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="train.evaluate metrics.json of the assembled weights (model card eval results)")
    parser.add_argument("--heads", type=Path, default=None, help="train.train_heads output folder")
    parser.add_argument("--decoder-from", type=Path, default=None, help="model folder whose decoder to take")
    parser.add_argument("--input-check", type=Path, default=None, help="train.train_input_check output folder")
    parser.add_argument("--set", action="append", default=[], metavar="PART.FIELD=JSON",
                        help="inference setting, e.g. detector.box_vote_iou=0.5 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    fusion = None if args.clip_fusion is None else args.clip_fusion == "on"
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs KEY=VALUE, got {item!r}")
        settings[key.replace(".", "__")] = json.loads(value)
    assemble(args.base, args.clip, args.out, args.variant, fusion, settings, args.metrics, args.heads,
             args.decoder_from, args.input_check)


if __name__ == "__main__":
    main()
