"""The input check: features, the checker and its verdicts, the negatives it is trained on, the CLI
contract (a rejected image gets an error line with ``input_check`` and no report; ``--force``),
and the shipped checker on generated negatives and real radiographs of every source."""

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
    verdict,
)
from crrg.pipeline import Pipeline
from pipeline_fixture import chest_like_png, tiny_model
from train.negatives import FROM, GENERATORS, KINDS, resized

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "assets" / "crrg-default"


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
    for kind, make in FROM.items():
        image = make(radiograph, rng)
        assert isinstance(image, Image.Image)
    assert max(resized(radiograph, 2048).size) == 2048 and max(resized(radiograph, 224).size) == 224


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


def test_cli_rejects_with_an_error_line_and_force_reports(tmp_path: Path) -> None:
    from crrg import cli

    weights = tmp_path / "w"
    _rejecting_model().save_pretrained(weights)
    images = [chest_like_png(tmp_path / f"{i}.png", seed=i) for i in range(2)]
    out = tmp_path / "out.jsonl"
    code = cli.main(["report", *map(str, images), "--weights", str(weights), "--out", str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 1 and len(lines) == 2
    for line in lines:
        assert set(line) >= {"image", "error", "input_check"} and "report" not in line
        assert line["input_check"]["ok"] is False and line["input_check"]["reason"] == REASONS["not_radiograph"]
    forced = tmp_path / "forced.jsonl"
    code = cli.main(["report", *map(str, images), "--weights", str(weights), "--out", str(forced), "--force"])
    lines = [json.loads(line) for line in forced.read_text().splitlines()]
    assert code == 0 and all("report" in line and line["input_check"]["ok"] is False for line in lines)


@pytest.mark.skipif(not (DEFAULT / "config.json").is_file(), reason="no embedded default model")
def test_default_model_flags_generated_negatives() -> None:
    import crrg

    pipe = crrg.load(DEFAULT, device="cpu")
    if pipe.model.input_check is None:
        pytest.skip("the embedded model has no input check")
    rng = random.Random(123)  # not the training seeds
    images = [make(rng) for make in GENERATORS.values() for _ in range(3)]
    results = pipe.batch(images, prompts=[])
    flagged = [not r.input_check.ok for r in results]
    assert sum(flagged) >= 0.9 * len(flagged)


def test_default_model_passes_real_radiographs_and_flags_inverted(data_dir: Path) -> None:
    import crrg

    pipe = crrg.load(DEFAULT, device="cpu")
    if pipe.model.input_check is None:
        pytest.skip("the embedded model has no input check")
    picks = [sorted((data_dir / "jsrt_scr" / "images").glob("*.jpg"))[-1],
             sorted((data_dir / "kermany_pneumonia" / "test" / "NORMAL").glob("*"))[0],
             sorted((data_dir / "covid_radiography" / "COVID").glob("*"))[-1]]
    radiographs = [Image.open(p).convert("L") for p in picks]
    results = pipe.batch(radiographs + [FROM["inverted"](radiographs[0], random.Random(0))], prompts=[])
    assert all(r.input_check.ok for r in results[:3]), [r.input_check for r in results[:3]]
    assert not results[3].input_check.ok and "MONOCHROME1" in results[3].input_check.reason
