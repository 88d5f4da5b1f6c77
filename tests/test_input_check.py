"""The input check: features, the checker and its verdicts, saving and loading it, the negatives it
is trained on, the pipeline's ``result.input_check``, and the trained checker
(``runs/input_check``, or the one embedded in the default model) on freshly generated negatives and
on real test-split radiographs of every source at 224 and 2048 px. (The CLI and batch contract of
a rejected image is in ``test_cli.py`` / ``test_batch.py``.)"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from crrg.input_check import (
    INPUT_CLASSES,
    REASONS,
    InputCheckConfig,
    InputChecker,
    image_stats,
    input_features,
    load_checker,
    save_checker,
    verdict,
)
from crrg.pipeline import Pipeline
from pipeline_fixture import chest_like_png, tiny_model
from train.negatives import FROM, GENERATORS, KINDS, resized, varied

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "assets" / "crrg-default"
TRAINED = ROOT / "runs" / "input_check"


def test_features_and_checker_shapes_and_round_trip(tmp_path: Path) -> None:
    images = torch.randn(3, 1, 64, 64)
    x = input_features(torch.randn(3, 256), torch.rand(3, 29), images)
    assert x.shape == (3, 256 + 29 + 8)
    checker = InputChecker(InputCheckConfig(feature_dim=x.shape[1]))
    logits = checker(x)
    assert logits.shape == (3, len(INPUT_CLASSES))
    clone = InputChecker(InputCheckConfig(feature_dim=x.shape[1]))
    clone.load_state_dict(checker.state_dict())
    assert torch.allclose(clone(x), logits)
    assert len(checker.check(x)) == 3
    checker.config.threshold = 0.37
    save_checker(checker, tmp_path / "ic")
    loaded = load_checker(tmp_path / "ic")
    assert loaded.config == checker.config and isinstance(loaded.config.classes, tuple)
    assert torch.allclose(loaded(x), logits)
    assert [c.ok for c in loaded.check(x)] == [c.ok for c in checker.check(x)]
    loaded.config.threshold = 0.0  # the classifier accepts everything; the distance check still flags
    loaded.config.ood_threshold = float(loaded.distance(x).min()) - 1e-3
    assert all(not c.ok and c.reason == REASONS["unlike_training"] for c in loaded.check(x))
    linear = InputChecker(InputCheckConfig(feature_dim=x.shape[1], hidden_dim=0))
    assert linear(x).shape == (3, 4)


def test_image_stats_see_inversion_and_rotation() -> None:
    # a radiograph-like image: dark lungs either side of a bright mediastinum, bright at the bottom
    x = torch.full((1, 1, 64, 64), -1.0)
    x[..., :, 24:40] = 1.5  # mediastinum / spine
    x[..., 48:, :] = 1.0  # abdomen
    flipped = x.flip(-2)
    inverted = (1 - (x * 0.302 + 0.471)).sub(0.471).div(0.302)
    s, f, i = image_stats(x)[0], image_stats(flipped)[0], image_stats(inverted)[0]
    assert s[3] < 0 < f[3]  # top minus bottom changes sign upside down
    assert s[4] > 0 > i[4]  # centre column brighter than the sides, unless inverted


def test_verdict_reasons() -> None:
    assert verdict([0.9, 0.05, 0.03, 0.02]).ok
    bad = verdict([0.1, 0.7, 0.1, 0.1])
    assert not bad.ok and bad.score == pytest.approx(0.1) and "MONOCHROME1" in bad.reason
    assert verdict([0.2, 0.1, 0.6, 0.1]).reason == REASONS["rotated"]
    assert verdict([0.4, 0.1, 0.1, 0.4], threshold=0.3).ok


def test_negative_generators_make_images_of_every_kind(tmp_path: Path) -> None:
    rng = random.Random(0)
    radiograph = Image.open(chest_like_png(tmp_path / "c.png"))
    for kind, make in GENERATORS.items():
        image = make(rng)
        assert isinstance(image, Image.Image) and min(image.size) >= 64, kind
        assert KINDS[kind] == "not_radiograph"
    assert set(GENERATORS) >= {"natural", "photo", "noise", "smooth", "pattern", "text"}
    for kind, make in FROM.items():
        image = make(radiograph, rng)
        assert isinstance(image, Image.Image) and KINDS[kind] in INPUT_CLASSES
    gray = radiograph.convert("L")
    assert FROM["inverted"](gray, rng).getpixel((10, 10)) == 255 - gray.getpixel((10, 10))
    turned = FROM["rotated"](gray, rng)
    assert turned.size in (gray.size, gray.size[::-1]) and turned.tobytes() != gray.tobytes()
    corner = FROM["crop"](gray, rng)
    assert corner.size[0] >= 224  # a small corner crop, enlarged
    assert max(resized(radiograph, 2048).size) == 2048 and max(resized(radiograph, 224).size) == 224
    for seed in range(5):
        assert varied(gray, random.Random(seed)).mode == "L"


def _rejecting_model():
    model = tiny_model()
    config = InputCheckConfig(feature_dim=model.config.clip.embed_dim + 29 + 8, hidden_dim=0, threshold=0.5)
    checker = InputChecker(config)
    with torch.no_grad():
        checker.mlp.weight.zero_()
        checker.mlp.bias.copy_(torch.tensor([-5.0, 0.0, 0.0, 5.0]))  # never a radiograph
    model.config = dataclasses.replace(model.config, input_check=config)
    model.input_check = checker
    return model


def test_pipeline_result_carries_the_check(tmp_path: Path) -> None:
    pipe = Pipeline(_rejecting_model(), device="cpu")
    result = pipe(chest_like_png(tmp_path / "c.png"), prompts=[])
    assert result.input_check is not None and not result.input_check.ok
    assert result.input_check.reason == REASONS["not_radiograph"]
    assert result.to_json()["input_check"] == result.input_check.to_json()
    assert Pipeline(tiny_model(), device="cpu")(chest_like_png(tmp_path / "c.png"), prompts=[]).input_check is None


def _trained_pipeline():
    """The default model's towers with the trained checker of ``runs/input_check`` (or its own)."""
    import crrg

    if not (DEFAULT / "config.json").is_file():
        pytest.skip("no embedded default model")
    pipe = crrg.load(DEFAULT, device="cpu")
    if (TRAINED / "config.json").is_file():
        pipe.model.input_check = load_checker(TRAINED)
    if pipe.model.input_check is None:
        pytest.skip("no trained input check: run `python -m train.train_input_check` (writes runs/input_check)")
    return pipe


@torch.inference_mode()
def _checks(pipe, images: list[Image.Image]):
    """The checks as the pipeline computes them (detector scores, CLIP embedding, pixels)."""
    from crrg.pipeline import prepare

    model, out = pipe.model, []
    for start in range(0, len(images), 4):
        batch = torch.stack([prepare(im, model.config.image_size).tensor for im in images[start:start + 4]])
        scores = model.detector.infer(batch, backbone_batch=2).scores
        out += model.input_check.check(input_features(model.clip.encode_image(batch), scores, batch))
    return out


def test_trained_checker_flags_fresh_generated_negatives() -> None:
    pipe = _trained_pipeline()
    rng = random.Random(20261202)  # not a training seed
    kinds = [kind for kind in GENERATORS for _ in range(3)]
    checks = _checks(pipe, [GENERATORS[kind](rng) for kind in kinds])
    missed = [kind for kind, check in zip(kinds, checks) if check.ok]
    assert len(missed) <= 0.05 * len(kinds), missed
    assert all(c.reason for c in checks if not c.ok)


def test_trained_checker_passes_real_radiographs_and_flags_their_inversions(data_dir: Path) -> None:
    from train.train_input_check import SOURCES, data_pools

    pipe = _trained_pipeline()
    pools = data_pools(data_dir)
    paths = [data_dir / p for source in SOURCES for p in pools.get(("test", source), [])[:2]]
    assert len(paths) >= 2 * (len(SOURCES) - 1)
    originals = [Image.open(p).convert("L") for p in paths]
    radiographs = [resized(im, side) for im in originals for side in (224, 2048)]
    checks = _checks(pipe, radiographs)
    flagged = [f"{p.name}@{side}" for (p, side), c in zip([(p, s) for p in paths for s in (224, 2048)], checks)
               if not c.ok]
    assert len(flagged) <= 1, flagged
    rng = random.Random(7)
    bad = _checks(pipe, [FROM["inverted"](im, rng) for im in originals[::2]]
                  + [FROM["rotated"](im, rng) for im in originals[1::2]])
    n = len(originals[::2])
    assert sum(not c.ok for c in bad) >= 0.9 * len(bad)
    assert sum("MONOCHROME1" in (c.reason or "") for c in bad[:n]) >= 0.8 * n


def test_training_samples_thresholds_and_rates() -> None:
    import numpy as np

    from train.train_input_check import SOURCES, TEST_SIDES, choose_threshold, rates, samples

    pools = {(split, s): [f"{s}/{split}/{i}.jpg" for i in range(50)] for split in ("train", "val", "test")
             for s in SOURCES}
    items = samples(pools, per_source=8)
    assert items == samples(pools, per_source=8)  # deterministic: the feature cache relies on it
    for item in items:  # radiographs and the negatives made from them stay in their own split
        if "path" in item:
            assert f"/{item['split']}/" in item["path"]
    plain_test = [s for s in items if s["split"] == "test" and s["kind"] == "radiograph" and not s.get("variant")]
    assert {s["side"] for s in plain_test} == set(TEST_SIDES)
    assert {s["kind"] for s in items} >= set(KINDS) | {"radiograph"}
    assert choose_threshold(np.array([0.9] * 99 + [0.2])) == 0.5
    assert choose_threshold(np.array([0.3] * 50 + [0.9] * 50)) == pytest.approx(0.3)
    assert choose_threshold(np.array([0.0] * 10)) == 0.1  # never switched off by odd images
    report = rates(np.array([True, False, False]), [
        {"kind": "radiograph", "source": "jsrt_scr", "side": 224}, {"kind": "noise"},
        {"kind": "radiograph", "source": "jsrt_scr", "side": 224, "variant": True}])
    assert report["negatives_flagged"] == 1.0 and report["radiographs_flagged"] == 0.0
    assert report["varied_radiographs_flagged"] == 1.0
