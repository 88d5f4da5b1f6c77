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
    N_THUMB,
    REASONS,
    THUMB,
    THUMB_AT,
    WARNINGS,
    InputCheckConfig,
    InputChecker,
    far_verdict,
    image_stats,
    input_features,
    inverted_pixels,
    load_checker,
    orientation_stats,
    pixel_features,
    pooled,
    reason_key,
    robust_stats,
    save_checker,
    status,
    thumbnails,
    verdict,
)
from crrg.pipeline import Pipeline
from pipeline_fixture import chest_like_png, tiny_model
from train.negatives import FROM, GENERATORS, KINDS, leads, resized, varied

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "assets" / "crrg-default"
TRAINED = ROOT / "runs" / "input_check"


def test_features_and_checker_shapes_and_round_trip(tmp_path: Path) -> None:
    images = torch.randn(3, 1, 64, 64)
    x = input_features(torch.randn(3, 256), torch.rand(3, 29), images)
    assert x.shape == (3, 256 + 29 + 8 + 9 + 13 + 4 * (9 + 13) + 2 * 16 * 16)
    for dim in (293, 302):  # checkers from before the robust / orientation statistics still read theirs
        old = InputChecker(InputCheckConfig(feature_dim=dim))
        assert torch.allclose(old(x), old(x[:, :dim])) and len(old.check(x)) == 3
        assert set(old.state_dict()) == {"norm.weight", "norm.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight",
                                         "mlp.2.bias", "ood_mean", "ood_precision"}  # the old file format
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


def _chest(size: int = 384, seed: int = 0) -> torch.Tensor:
    """A radiograph-like preprocessed image [1, 1, S, S]: black padding at the sides, a grey body,
    dark lungs either side of a bright mediastinum, a brighter abdomen."""
    g = torch.Generator().manual_seed(seed)
    px = torch.full((size, size), 0.0)
    body = torch.full((size, size - size // 5), 0.55)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(body.shape[1]), indexing="ij")
    w = body.shape[1]
    for cx in (0.28 * w, 0.72 * w):
        body[((xx - cx) / (0.12 * w)) ** 2 + ((yy - 0.45 * size) / (0.3 * size)) ** 2 < 1] = 0.2
    body[int(0.8 * size):] = 0.75
    px[:, size // 10: size // 10 + w] = body + 0.03 * torch.randn(body.shape, generator=g)
    return ((px.clamp(0, 1) - 0.471) / 0.302)[None, None]


def _with_dots(image: torch.Tensor, n: int = 6, seed: int = 0) -> torch.Tensor:
    """ECG-electrode-like bright discs on the chest."""
    g = torch.Generator().manual_seed(seed)
    out = image.clone()
    s = image.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    for _ in range(n):
        cx, cy = (torch.rand(2, generator=g) * 0.6 + 0.2) * s
        out[0, 0][(xx - cx) ** 2 + (yy - cy) ** 2 < (0.03 * s) ** 2] = (1 - 0.471) / 0.302
    return out


def test_robust_stats_keep_their_sign_with_electrodes_and_flip_when_inverted() -> None:
    chest = _chest()
    dotted = _with_dots(chest)
    inverted = (1 - (chest * 0.302 + 0.471)).sub(0.471).div(0.302)
    s, d, i = (robust_stats(pooled(x))[0] for x in (chest, dotted, inverted))
    assert s.shape == (9,) and pooled(chest).shape == (1, 96, 96)
    assert s[5] > 0.1 and d[5] > 0.1 and i[5] < -0.1  # mediastinum brighter than the lungs, unless inverted
    assert (d[:5] - s[:5]).abs().max() < 0.05  # the electrodes barely move the quantiles
    # ... whereas the plain share of near-white pixels jumps
    assert image_stats(dotted)[0, 7] > image_stats(chest)[0, 7] + 0.01


def test_orientation_stats_see_turns_and_the_layout_rule_refuses_them(tmp_path: Path) -> None:
    from train.train_input_check import CalibrationRule, fit_layout

    g = torch.Generator().manual_seed(3)
    chests = torch.cat([_chest(128, seed) for seed in range(100)])
    # other hospitals' films: contrast and brightness
    gain, offset = 0.8 + 0.4 * torch.rand(2, 100, 1, 1, 1, generator=g)
    chests = chests * gain + (offset - 1.0) * 1.5  # contrast x0.8..1.2, brightness -0.3..0.3
    small = pooled(chests)
    assert orientation_stats(small).shape == (100, 13)
    x = torch.cat([torch.zeros(100, 256 + 29 + 8), pixel_features(small)], dim=1)
    turned = torch.cat([torch.zeros(2, 256 + 29 + 8), pixel_features(small[:2].rot90(1, (1, 2)))], dim=1)
    upside = torch.cat([torch.zeros(2, 256 + 29 + 8), pixel_features(small[:2].flip(1))], dim=1)
    inverted = torch.cat([torch.zeros(2, 256 + 29 + 8), pixel_features(inverted_pixels(small[:2]))], dim=1)
    o = orientation_stats(small[:1])[0]
    t = orientation_stats(small[:1].rot90(1, (1, 2)))[0]
    assert o[0] < t[0] and o[8] < o[7] and t[7] < t[8]  # the spine's band and peak move from columns to rows
    checker = InputChecker(InputCheckConfig(hidden_dim=0, threshold=0.0, layout=True))  # the classifier accepts all
    fit_layout(checker, x[:80], x[80:], CalibrationRule())
    cfg = checker.config
    assert cfg.layout_inverted_warn <= cfg.layout_inverted_threshold
    assert all(c.ok for c in checker.check(x))
    assert [reason_key(c) for c in checker.check(inverted)] == ["inverted"] * 2
    assert [reason_key(c) for c in checker.check(torch.cat([turned, upside]))] == ["rotated"] * 4
    assert all(not c.ok for c in checker.check(torch.cat([inverted, turned, upside])))
    save_checker(checker, tmp_path / "ic")  # the layout model travels with the checker
    loaded = load_checker(tmp_path / "ic")
    assert loaded.config == cfg and torch.allclose(loaded.layout_margins(x), checker.layout_margins(x))
    assert all(c.ok for c in checker.check(torch.cat([inverted, turned])[:, :315]))  # no copies: no layout rule


def test_thumbnail_model_sees_turned_and_inverted_films_and_travels_with_the_checker(tmp_path: Path) -> None:
    """The eigen-radiograph thumbnails: fitted on upright films only, a turned or inverted copy's
    own thumbnail is farther from them than its upright (positive) copy; a film's thumbnail turned
    is the turned film's thumbnail; the model is saved with the checker and adds to the margins."""
    from train.train_input_check import CalibrationRule, fit_layout

    small = pooled(torch.cat([_chest(128, seed) for seed in range(100)]))
    x = torch.cat([torch.zeros(100, 256 + 29 + 8), pixel_features(small)], dim=1)
    assert torch.allclose(thumbnails(small.rot90(1, (1, 2)))[:, :N_THUMB].reshape(-1, THUMB, THUMB),
                          thumbnails(small)[:, :N_THUMB].reshape(-1, THUMB, THUMB).rot90(1, (1, 2)), atol=1e-5)
    checker = InputChecker(InputCheckConfig(hidden_dim=0, threshold=0.0, layout=True, thumb_components=8))
    fit_layout(checker, x[:80], x[80:], CalibrationRule())
    assert all(w > 0 for w in checker.config.thumb_weights)
    fresh = small[80:]
    copies = [pixel_features(c) for c in (inverted_pixels(fresh), fresh.rot90(1, (1, 2)), fresh.flip(1))]
    margins = [checker.thumb_margins(torch.cat([torch.zeros(20, 256 + 29 + 8), c], dim=1)) for c in copies]
    upright = checker.thumb_margins(x[80:])
    assert (upright < 0).all()  # no copy of an upright film is nearer the radiographs than the film
    assert (margins[0][:, 0] > 0).all() and (margins[1][:, 1] > 0).all() and (margins[2][:, 1] > 0).all()
    stats_only = checker.layout_margins(x[80:, :THUMB_AT])
    assert torch.allclose(checker.layout_margins(x[80:]),
                          stats_only + upright * torch.tensor(checker.config.thumb_weights), atol=1e-4)
    save_checker(checker, tmp_path / "ic")
    loaded = load_checker(tmp_path / "ic")
    assert loaded.config == checker.config and isinstance(loaded.config.thumb_weights, tuple)
    assert torch.allclose(loaded.layout_margins(x), checker.layout_margins(x))


def test_verdict_reasons() -> None:
    assert verdict([0.9, 0.05, 0.03, 0.02]).ok
    bad = verdict([0.1, 0.7, 0.1, 0.1])
    assert not bad.ok and bad.score == pytest.approx(0.1) and "MONOCHROME1" in bad.reason
    assert verdict([0.2, 0.1, 0.6, 0.1]).reason == REASONS["rotated"]
    assert verdict([0.4, 0.1, 0.1, 0.4], threshold=0.3).ok


def test_three_states_refuse_warn_accept() -> None:
    refused = verdict([0.05, 0.9, 0.03, 0.02], threshold=0.1, warn_threshold=0.5)
    warned = verdict([0.3, 0.6, 0.05, 0.05], threshold=0.1, warn_threshold=0.5)
    accepted = verdict([0.8, 0.1, 0.05, 0.05], threshold=0.1, warn_threshold=0.5)
    assert (status(refused), status(warned), status(accepted)) == ("reject", "warn", "ok")
    assert not refused.ok and refused.reason == REASONS["inverted"] and refused.warning is None
    assert warned.ok and warned.reason is None and warned.warning == WARNINGS["inverted"]
    assert accepted.ok and accepted.reason is None and accepted.warning is None
    assert (reason_key(refused), reason_key(warned), reason_key(accepted)) == ("inverted", "inverted", None)
    assert warned.to_json()["warning"] == WARNINGS["inverted"] and "warning" not in accepted.to_json()
    assert set(refused.to_json()) == {"ok", "score", "reason"}  # the rejected line's shape is unchanged
    # the embedding's distance: beyond the refusal threshold refuses, beyond the warning one warns
    assert far_verdict(accepted, 9.0, refuse=10.0, warn=5.0).warning == WARNINGS["unlike_training"]
    assert far_verdict(accepted, 11.0, refuse=10.0, warn=5.0).reason == REASONS["unlike_training"]
    assert far_verdict(accepted, 4.0, refuse=10.0, warn=5.0) == accepted
    assert far_verdict(warned, 9.0, refuse=10.0, warn=5.0) == warned  # the classifier's warning stays
    assert far_verdict(refused, 0.0, refuse=10.0, warn=5.0) == refused
    # a checker saved without the warning thresholds refuses or accepts, as before
    assert verdict([0.3, 0.6, 0.05, 0.05], threshold=0.5) == verdict([0.3, 0.6, 0.05, 0.05])


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


def _checking_model(bias: tuple[float, float, float, float] = (-5.0, 0.0, 0.0, 5.0),
                    warn_threshold: float | None = None):
    """The tiny model with a constant checker (default: never a radiograph)."""
    model = tiny_model()
    config = InputCheckConfig(feature_dim=model.config.clip.embed_dim + 29 + 8, hidden_dim=0,
                              threshold=0.1 if warn_threshold else 0.5, warn_threshold=warn_threshold)
    checker = InputChecker(config)
    with torch.no_grad():
        checker.mlp.weight.zero_()
        checker.mlp.bias.copy_(torch.tensor(bias))
    model.config = dataclasses.replace(model.config, input_check=config)
    model.input_check = checker
    return model


def _rejecting_model():
    return _checking_model()


def test_an_unsure_input_is_reported_with_a_warning_not_refused(tmp_path: Path) -> None:
    from crrg.batch import run_reports

    # P(radiograph) = 1 / (1 + e^0.5 + 2 e^-5) ~ 0.37: between the refusal (0.1) and warning (0.5) thresholds
    pipe = Pipeline(_checking_model((0.0, -5.0, -5.0, 0.5), warn_threshold=0.5), device="cpu")
    scans = tmp_path / "scans"
    scans.mkdir()
    chest_like_png(scans / "a.png")
    check = pipe(scans / "a.png", prompts=[]).input_check
    assert check.ok and check.reason is None and check.warning == WARNINGS["not_radiograph"]
    assert 0.1 < check.score < 0.5
    summary = run_reports(pipe, [scans], out=tmp_path / "out.jsonl", prompts=[])
    assert summary.written == 1 and summary.failed == 0 and summary.rejected == 0
    (record,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert "error" not in record and record["image"].endswith("a.png")
    assert record["input_check"]["ok"] is True and record["input_check"]["warning"] == WARNINGS["not_radiograph"]


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
    # ECG electrodes, wires and tubes drawn on the same films: still not refused
    rng = random.Random(11)
    wired = _checks(pipe, [resized(leads(im, rng), 1024) for im in originals])
    refused = [p.name for p, c in zip(paths, wired) if not c.ok]
    assert len(refused) <= 1, refused
    rng = random.Random(7)
    bad = _checks(pipe, [FROM["inverted"](im, rng) for im in originals[::2]]
                  + [FROM["rotated"](im, rng) for im in originals[1::2]])
    n = len(originals[::2])
    assert sum(not c.ok for c in bad) >= 0.9 * len(bad)
    assert sum("MONOCHROME1" in (c.reason or "") for c in bad[:n]) >= 0.8 * n


def test_training_samples_thresholds_and_rates() -> None:
    import numpy as np

    from train.train_input_check import SOURCES, TEST_SIDES, CalibrationRule, rates, refusal_threshold, samples

    pools = {(split, s): [f"{s}/{split}/{i}.jpg" for i in range(20)] for split in ("train", "val", "test")
             for s in SOURCES}
    caps = {"kermany_pneumonia": 30}
    n_neg = {"train": 4, "val": 2, "test": 3}
    items = samples(pools, caps, n_negatives=n_neg)
    assert items == samples(pools, caps, n_negatives=n_neg)  # deterministic: the feature cache relies on it
    plain = [s for s in items if s["kind"] == "radiograph" and not s.get("variant") and not s.get("leads")]
    wired = [s for s in items if s.get("leads")]
    assert len(wired) == 10 * len(SOURCES) and {s["split"] for s in wired} == {"test"}
    per_source = {src: sum(s["source"] == src for s in plain) for src in SOURCES}
    assert per_source["kermany_pneumonia"] == 30 and per_source["jsrt_scr"] == 60  # capped / every one
    assert {s["source"] for s in plain[:len(SOURCES)]} == set(SOURCES)  # sources interleaved
    assert sum(s["kind"] == "inverted" and s["split"] == "val" for s in items) == 2
    assert any(s.get("rgb") for s in plain) and not all(s.get("rgb") for s in plain)
    for item in items:  # radiographs and the negatives made from them stay in their own split
        if "path" in item:
            assert f"/{item['split']}/" in item["path"]
    plain_test = [s for s in items if s["split"] == "test" and s["kind"] == "radiograph" and not s.get("variant")]
    assert {s["side"] for s in plain_test} == set(TEST_SIDES)
    assert {s["kind"] for s in items} >= set(KINDS) | {"radiograph"}
    rule = CalibrationRule()
    assert refusal_threshold(np.array([0.0] * 99 + [0.12]), rule) == pytest.approx(0.24)  # 2 x the top negative
    assert refusal_threshold(np.array([0.0] * 99 + [0.4]), rule) == 0.5  # never above the warning threshold
    assert refusal_threshold(np.array([0.0] * 10), rule) == 0.05  # never below the floor
    report = rates(np.array([True, False, False]), [
        {"kind": "radiograph", "source": "jsrt_scr", "side": 224}, {"kind": "noise"},
        {"kind": "radiograph", "source": "jsrt_scr", "side": 224, "variant": True}])
    assert report["negatives_flagged"] == 1.0 and report["radiographs_flagged"] == 0.0
    assert report["varied_radiographs_flagged"] == 1.0


def test_real_rates_per_source_reason_and_input() -> None:
    from train.train_input_check import real_rates

    items = [{"kind": "radiograph", "source": "nih_cxr14", "side": 512, "path": "nih_cxr14/a.jpg"},
             {"kind": "radiograph", "source": "nih_cxr14", "side": 2048, "path": "nih_cxr14/b.jpg", "rgb": True},
             {"kind": "radiograph", "source": "covid_anatomy", "side": 224, "path": "covid_anatomy/c.jpg"},
             {"kind": "radiograph", "source": "covid_anatomy", "side": 224, "path": "covid_anatomy/d.jpg"},
             {"kind": "inverted", "path": "nih_cxr14/a.jpg"}]
    checks = [verdict([0.05, 0.9, 0.03, 0.02], threshold=0.1), verdict([0.9, 0.05, 0.03, 0.02]),
              verdict([0.3, 0.1, 0.5, 0.1], threshold=0.1, warn_threshold=0.5), verdict([0.9, 0, 0, 0.1]),
              verdict([0.05, 0.9, 0.03, 0.02], threshold=0.1)]
    out = real_rates(checks, items, lines={"covid_anatomy/c.jpg"})
    assert out["all"]["n"] == 4 and out["all"]["refused"] == 0.25 and out["all"]["warned"] == 0.25
    assert out["by_source"]["nih_cxr14"]["refused_by_reason"] == {"inverted": 0.5}
    assert out["by_source"]["covid_anatomy"]["warned_by_reason"] == {"rotated": 0.5}
    assert out["by_input"]["covid_anatomy_with_lines"]["warned"] == 1.0
    assert out["by_input"]["rgb"]["refused"] == 0.0 and out["by_input"]["side:2048"]["n"] == 1
