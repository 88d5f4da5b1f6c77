"""Training-side pieces of the grounding run: the source-cue augmentation, the image selection of
the feature cache, and the metrics merge that feeds the model card."""

from __future__ import annotations

import json
import random

import numpy as np
from PIL import Image

from train.merge_metrics import merge
from train.source_augment import STEPS, erase_source_cues


def _radiograph() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((200, 160)) * 255).astype(np.uint8))


def test_source_augmentation_is_seeded_and_identity_at_p0() -> None:
    image = _radiograph()
    assert np.array_equal(np.asarray(erase_source_cues(image, random.Random(1), p=0.0)), np.asarray(image))
    a = erase_source_cues(image, random.Random("x"), p=1.0)
    b = erase_source_cues(image, random.Random("x"), p=1.0)
    assert a.mode == "L" and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a.resize(image.size)), np.asarray(image))
    for step in STEPS:  # every step keeps a usable grayscale image
        out = step(image, random.Random(3))
        assert out.mode == "L" and min(out.size) >= 100


def test_cache_selection_caps_only_large_train_groups() -> None:
    from train.cache_features import select_images

    rows = [{"image": f"kermany_pneumonia/{i}.jpg", "source": "kermany_pneumonia", "split": "train",
             "abnormal": i % 2 == 0} for i in range(20)]
    rows += [{"image": f"kermany_pneumonia/t{i}.jpg", "source": "kermany_pneumonia", "split": "test",
              "abnormal": True} for i in range(7)]
    rows += [{"image": f"jsrt_scr/{i}.jpg", "source": "jsrt_scr", "split": "train", "abnormal": False}
             for i in range(9)]

    class _Prepared:
        def images(self, split):
            return rows

    chosen = select_images(_Prepared(), cap=3)
    by = {(r["source"], r["split"], r["abnormal"]) for r in chosen}
    counts = {key: sum((r["source"], r["split"], r["abnormal"]) == key for r in chosen) for key in by}
    assert counts[("kermany_pneumonia", "train", True)] == 3 and counts[("kermany_pneumonia", "train", False)] == 3
    assert counts[("kermany_pneumonia", "test", True)] == 7 and counts[("jsrt_scr", "train", False)] == 9
    assert chosen == select_images(_Prepared(), cap=3)  # deterministic


def test_merge_puts_every_section_where_the_card_reads_it() -> None:
    loso = {"covid_radiography": {"sensitivity": 0.8}, "mean_balanced_accuracy": 0.9}
    heads = {"image_level": {"chosen": "both", "threshold": 0.6, "loso": loso, "per_source": {"x": {}},
                             "variants": {"both": {"val": {"mean_balanced_accuracy": 0.91}, "test": loso}}},
             "calibration": {"abnormality": {"ece_before": 0.1, "ece_after": 0.01}},
             "region_findings": {"thresholds": {"nodule": 0.3}}, "zero_shot_by_source": {}}
    measured = {"test": {"both": {"detector": {"mae": 0.02}}}}
    out = merge({"split": "test"}, heads, None, {"test": {"negatives_flagged": 1.0}}, measured)
    assert out["cross_source"]["loso"] == loso and out["cross_source"]["chosen"] == "both"
    assert out["cross_source"]["variants"]["both"]["val_mean_balanced_accuracy"] == 0.91
    assert out["measurements"]["cardiothoracic_ratio"]["mae"] == 0.02
    assert out["input_check"]["test"]["negatives_flagged"] == 1.0
    assert out["calibration"]["abnormality"]["ece_after"] == 0.01


def test_carry_keeps_the_previous_runs_sections_and_renews_zero_shot_calibration(tmp_path) -> None:
    from train.merge_metrics import carry, main

    previous = {"calibration": {"abnormality": {"ece_after": 0.1},
                                "zero_shot.pneumonia": {"params": {"temperature": 1.06}}},
                "input_check": {"refused": 0.002}, "report_quality": {"after": {}}, "zero_shot": {"old": 1}}
    evaluation = {"zero_shot": {"pneumonia_vs_normal": {"label": "pneumonia", "n": 10, "ece": 0.05}},
                  "report_quality": {"after": {"new": True}}}
    text = {"zero_shot_temperature": {"params": {"temperature": 0.88}, "ece_before": 0.2, "ece_after": 0.04}}
    out = carry(json.loads(json.dumps(evaluation)), previous, "old/metrics.json", text)
    assert out["input_check"] == {"refused": 0.002}
    assert out["report_quality"] == {"after": {"new": True}}  # the evaluation's own section wins
    assert out["zero_shot"] == evaluation["zero_shot"]
    assert out["calibration"]["abnormality"] == {"ece_after": 0.1}
    assert out["calibration"]["zero_shot.pneumonia"]["params"] == {"temperature": 0.88}
    assert out["calibration"]["zero_shot.pneumonia"]["ece_after"] == 0.05
    assert sorted(out["carried"]["sections"]) == ["calibration", "input_check"]
    paths = {}
    for name, data in (("eval", evaluation), ("prev", previous), ("text", text)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    paths["rule"] = tmp_path / "rule_out.json"
    paths["rule"].write_text(json.dumps({"chosen": {"pneumonia": 0.16}}))
    main([str(paths["eval"]), "--carry", str(paths["prev"]), "--text-tower", str(paths["text"]),
          "--rule-out", str(paths["rule"])])
    merged = json.loads(paths["eval"].read_text())
    assert merged["text_tower"] == text and merged["input_check"] == {"refused": 0.002}
    assert merged["rule_out"] == {"chosen": {"pneumonia": 0.16}}


def test_refit_replaces_the_image_findings_calibration_and_sets_every_test_report_quality(tmp_path) -> None:
    from train.merge_metrics import main

    previous = {"calibration": {"abnormality": {"ece_after": 0.1}, "image.pneumonia": {"ece_after": 0.02},
                                "image.pneumothorax": {"ece_after": 0.3}, "image.mass": {"ece_after": 0.2}},
                "report_quality": {"issue_17": {"kept": 1}, "all_test": {"old": True}},
                "text_tower": {"chosen_step": 100}}
    refit = {"kept": ["mass", "edema"], "findings": {"pneumothorax": {"kept": False}, "mass": {"kept": True},
                                                     "edema": {"kept": True}},
             "calibration": {"image.mass": {"ece_after": 0.05}, "image.edema": {"ece_after": 0.04},
                             "image.pneumothorax": {"ece_after": 0.5}}}
    paths = {}
    for name, data in (("eval", {"zero_shot": {}}), ("prev", previous), ("refit", refit),
                       ("quality", {"reports": 12}), ("tower", {"frozen_mean": 0.69, "tuned_mean": 0.68})):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    main([str(paths["eval"]), "--carry", str(paths["prev"]), "--refit", str(paths["refit"]),
          "--report-quality", str(paths["quality"]), "--image-tower", str(paths["tower"])])
    merged = json.loads(paths["eval"].read_text())
    assert merged["calibration"] == {"abnormality": {"ece_after": 0.1}, "image.pneumonia": {"ece_after": 0.02},
                                     "image.mass": {"ece_after": 0.05}, "image.edema": {"ece_after": 0.04}}
    assert merged["report_quality"] == {"issue_17": {"kept": 1}, "all_test": {"reports": 12}}
    assert merged["image_findings_refit"]["kept"] == ["mass", "edema"]
    assert merged["image_tower_finetune"]["tuned_mean"] == 0.68
    assert merged["text_tower"] == {"chosen_step": 100}  # carried: the text tower is this model's
    assert "text_tower" in merged["carried"]["sections"]
    # a later re-evaluation of the same weights (code changes only) keeps the refit and tower figures
    paths["eval2"] = tmp_path / "eval2.json"
    paths["eval2"].write_text(json.dumps({"zero_shot": {}}))
    main([str(paths["eval2"]), "--carry", str(paths["eval"])])
    again = json.loads(paths["eval2"].read_text())
    assert again["image_findings_refit"] == merged["image_findings_refit"]
    assert again["image_tower_finetune"] == merged["image_tower_finetune"]
    assert {"image_findings_refit", "image_tower_finetune"} <= set(again["carried"]["sections"])
