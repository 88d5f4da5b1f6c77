"""crrg.fusion: the CLIP image embedding added to region features, in the model, the pipeline,
hub round trips and train.assemble."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crrg.fusion import ClipFusion
from crrg.model import CRRGModel, get_config, replace
from crrg.pipeline import Pipeline
from pipeline_fixture import chest_like_png, tiny_model
from train.assemble import assemble


def fused_tiny(seed: int = 0) -> CRRGModel:
    """The tiny test model with clip_fusion on and a non-zero (so active) fusion MLP."""
    torch.manual_seed(seed)
    config = replace(get_config("tiny"), detector__detect_score_thresh=0.0, clip_fusion=True)
    model = CRRGModel(config).eval()
    with torch.no_grad():
        model.detector.roi_heads.box_predictor.cls_score.bias[0] = -30.0
        torch.nn.init.normal_(model.fusion.net[-1].weight, std=0.5)
    return model


def test_fresh_fusion_is_the_identity_and_checks_shapes() -> None:
    fusion = ClipFusion(clip_dim=8, feature_dim=4)
    features, embedding = torch.randn(2, 29, 4), torch.randn(2, 8)
    assert torch.equal(fusion(features, embedding), features)  # zero-initialised last layer
    with torch.no_grad():
        fusion.net[-1].bias.fill_(1.0)
    assert torch.allclose(fusion(features, embedding), features + 1.0)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        fusion(torch.randn(29, 4), embedding)


def test_head_inputs_carry_the_image_embedding() -> None:
    model = fused_tiny()
    images = torch.randn(2, 1, 128, 128)
    detector_features = torch.randn(1, 29, 32).expand(2, 29, 32)  # same for both images
    with torch.no_grad():
        fused = model.head_inputs(images, detector_features)  # [2, 29, 32]
        again = model.head_inputs(None, detector_features, model.clip.encode_image(images))
    assert fused.shape == (2, 29, 32) and torch.allclose(fused, again)
    assert not torch.allclose(fused[0], fused[1])  # differs by image, through CLIP only
    shift = fused - detector_features
    assert torch.allclose(shift[:, :1].expand_as(shift), shift, atol=1e-5)  # one shift for all regions of an image
    assert torch.equal(tiny_model().head_inputs(images, detector_features), detector_features)
    with pytest.raises(ValueError, match="embedding"):
        model.head_inputs(None, detector_features)


def test_fused_model_round_trip_and_pipeline(tmp_path: Path) -> None:
    model = fused_tiny()
    model.save_pretrained(tmp_path / "m")
    loaded = CRRGModel.from_pretrained(str(tmp_path / "m"))
    assert loaded.config.clip_fusion and "fusion" in loaded.num_parameters()
    assert torch.equal(loaded.fusion.net[-1].weight, model.fusion.net[-1].weight.half().float())
    image = chest_like_png(tmp_path / "x.png")
    result = Pipeline(loaded)(image, box=(20, 20, 120, 200))
    assert bool(result.report) == bool(result.sentences)  # gibberish of the tiny decoder is filtered out
    assert result.box_sentence is not None and 0.0 <= result.box_sentence.abnormal_prob <= 1.0
    fused = [r.abnormal_prob for r in result.regions]
    loaded.fusion = None  # the same weights without the fusion: other probabilities
    plain = [r.abnormal_prob for r in Pipeline(loaded)(image).regions]
    assert fused != plain


def test_assemble_turns_fusion_on_and_guards_its_clip(tmp_path: Path) -> None:
    tiny_model(seed=1).save_pretrained(tmp_path / "base")
    tiny_model(seed=2).save_pretrained(tmp_path / "clip")
    model = assemble(tmp_path / "base", tmp_path / "clip", tmp_path / "on", clip_fusion=True)
    assert model.config.clip_fusion and isinstance(model.fusion, ClipFusion)
    loaded = CRRGModel.from_pretrained(str(tmp_path / "on"))
    assert loaded.config.clip_fusion and float(loaded.fusion.net[-1].weight.detach().abs().sum()) == 0.0
    with pytest.raises(ValueError, match="clip_fusion"):
        assemble(tmp_path / "on", tmp_path / "clip", tmp_path / "bad")
    off = assemble(tmp_path / "on", None, tmp_path / "off", clip_fusion=False)
    assert off.fusion is None and not CRRGModel.from_pretrained(str(tmp_path / "off")).config.clip_fusion
