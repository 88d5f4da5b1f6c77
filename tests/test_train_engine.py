"""Training building blocks: sampler, schedule, checkpoints, augmentation, targets, plots."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from crrg.config import to_dict
from crrg.images import IMAGE_MEAN, IMAGE_STD, LoadedImage, preprocess
from crrg.labels import FINDINGS
from crrg.regions import LUNG_REGIONS, REGIONS
from train.checkpoint import load_checkpoint, save_checkpoint
from train.common import load_run_config
from train.datasets import AugmentConfig, augment
from train.distributed import DistInfo
from train.engine import ResumableSampler, RunConfig, build_optimizer, build_scheduler
from train.plots import plot_history
from train.train_detector import DetectorRunConfig
from train.targets import (
    SentenceMatcher,
    common_regions,
    label_vector,
    note_sentences,
    paired_region_sentences,
    prompt_texts,
    region_targets,
    standalone,
)


def test_resumable_sampler_skips_exactly_the_seen_samples() -> None:
    data = list(range(10))
    full = ResumableSampler(data, DistInfo(), seed=3)
    full.set_epoch(2)
    order = list(full)
    assert sorted(order) == data and order != data  # shuffled, complete
    part = ResumableSampler(data, DistInfo(), seed=3)
    part.set_epoch(2)
    part.start = 4
    assert list(part) == order[4:] and len(part) == 6
    ranks = [ResumableSampler(data, DistInfo(rank=r, world_size=2), seed=3) for r in (0, 1)]
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == 5 and sorted(shards[0] + shards[1]) == data


def test_schedule_warms_up_then_decays() -> None:
    model = torch.nn.Linear(3, 2)
    run = RunConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    opt = build_optimizer(model, run)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]  # weight decays, bias does not
    sched = build_scheduler(opt, run, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[3] < lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] >= 0.1 - 1e-6


def test_checkpoint_round_trip_is_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, RunConfig())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = build_scheduler(opt, RunConfig(warmup_steps=0), 10)
    path = save_checkpoint(tmp_path / "c.pt", model=model, model_config={"a": 1}, optimizer=opt,
                           scheduler=sched, step=7, epoch=1, batch_in_epoch=2, run_config={"lr": 1e-4},
                           stage="lm", history=[{"step": 1, "loss": 2.0}])
    state = torch.load(path, weights_only=True)  # no arbitrary unpickling needed
    assert state["step"] == 7 and state["model_config"] == {"a": 1}
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    assert load_checkpoint(path, stage="lm")["batch_in_epoch"] == 2
    with pytest.raises(ValueError, match="not 'clip'"):
        load_checkpoint(path, stage="clip")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_run_config_of_an_older_checkpoint_loads_under_the_new_names() -> None:
    saved = to_dict(DetectorRunConfig())
    saved["abnormal_loss_weight"] = saved.pop("abnormality_loss_weight") + 1.0  # written before #19
    saved["pos_weight_abnormal"] = 3.5
    del saved["pos_weight_abnormality"]
    args = argparse.Namespace(config=None, overrides=["epochs=2"])
    cfg = load_run_config(DetectorRunConfig, "region_heads", args, saved)
    assert (cfg.abnormality_loss_weight, cfg.pos_weight_abnormality, cfg.epochs) == (2.0, 3.5, 2)
    with pytest.raises(ValueError, match="unknown DetectorRunConfig keys"):
        load_run_config(DetectorRunConfig, "region_heads", args, {**saved, "abnormal_weight": 1.0})


def test_augment_moves_boxes_with_the_image() -> None:
    pixels = np.full((80, 120), 0.1, dtype=np.float32)
    pixels[20:50, 30:60] = 0.9  # a bright box at x 30..60, y 20..50 (original pixels)
    tensor, geometry = preprocess(LoadedImage(pixels), size=96)
    box = torch.as_tensor(geometry.to_tensor(np.array([[30.0, 20.0, 60.0, 50.0]])), dtype=torch.float32)
    cfg = AugmentConfig(scale=0.15, shift=0.08, brightness=0.0, contrast=0.0)
    for seed in range(3):
        out, boxes, keep = augment(tensor.clone(), geometry, box, cfg, random.Random(seed))
        assert out.shape == tensor.shape and bool(keep.all())
        bright = (out[0] * IMAGE_STD + IMAGE_MEAN) > 0.5  # [S, S]
        ys, xs = torch.nonzero(bright, as_tuple=True)
        found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert torch.allclose(found, boxes[0], atol=2.0), (found, boxes[0])


def test_augment_photometric_keeps_padding_black() -> None:
    tensor, geometry = preprocess(LoadedImage(np.random.default_rng(0).random((60, 120), dtype=np.float32)), 64)
    cfg = AugmentConfig(scale=0.0, shift=0.0, brightness=0.3, contrast=0.3)
    out, _, _ = augment(tensor.clone(), geometry, torch.zeros(0, 4), cfg, random.Random(1))
    pad = (out[0, : geometry.pad_y] * IMAGE_STD + IMAGE_MEAN).abs()
    assert geometry.pad_y > 0 and float(pad.max()) < 1e-5
    assert not torch.allclose(out, tensor)


SENTENCES = [
    {"report": "A", "text": "The lungs are clear.", "regions": ["right lung", "left lung"], "abnormal": False,
     "findings": ["no finding"]},
    {"report": "A", "text": "Right lung opacity.", "regions": ["right lung"], "abnormal": True,
     "findings": ["lung opacity"]},
    {"report": "B", "text": "Heart is enlarged.", "regions": ["cardiac silhouette"], "abnormal": True,
     "findings": ["cardiomegaly"]},
    {"report": "B", "text": "Pacemaker in place.", "regions": ["cardiac silhouette"], "abnormal": False,
     "findings": ["no finding", "support devices"]},
    {"report": "C", "text": "Nodule in the right lung.", "regions": ["right lung"], "abnormal": True,
     "findings": ["nodule"]},
]


def test_selection_and_abnormality_targets() -> None:
    common = common_regions(SENTENCES, threshold=0.5)
    assert set(common) == {"right lung"}  # named in reports A and C of 3; left lung only in A
    status = dict.fromkeys(REGIONS, "unknown") | dict.fromkeys(LUNG_REGIONS, "abnormal")
    t = region_targets({"region_status": status}, common)
    i_rl, i_heart, i_spine = REGIONS.index("right lung"), REGIONS.index("cardiac silhouette"), REGIONS.index("spine")
    assert t["abnormality"][i_rl] == 1 and t["abnormality_mask"][i_rl] and not t["abnormality_mask"][i_heart]
    assert t["selection"][REGIONS.index("left lung")] == 1  # abnormal -> selected
    assert not t["selection_mask"][i_spine]  # unknown and not common -> masked
    normal = region_targets({"region_status": dict.fromkeys(REGIONS, "normal")}, common)
    assert normal["selection"].sum() == 1 and normal["selection_mask"].all() and normal["abnormality"].sum() == 0
    paired = region_targets({"region_status": {}}, common, paired=[SENTENCES[2]])
    assert paired["selection"].sum() == 1 and paired["selection"][i_heart] == 1 and paired["selection_mask"].all()


def test_sentence_matcher_follows_status_and_findings() -> None:
    matcher = SentenceMatcher(SENTENCES)
    loose = SentenceMatcher(SENTENCES, require_primary=False)
    pneumonia = {"labels": {"pneumonia": 1, "no finding": 0},
                 "region_status": dict.fromkeys(REGIONS, "unknown") | dict.fromkeys(LUNG_REGIONS, "abnormal")}
    # an opacity sentence is compatible with pneumonia but does not name it
    assert loose.candidates("right lung", "abnormal", pneumonia["labels"]) == ["Right lung opacity."]
    assert matcher.candidates("right lung", "abnormal", pneumonia["labels"]) == []
    normal = {"labels": {"no finding": 1}, "region_status": dict.fromkeys(REGIONS, "normal")}
    assert matcher.candidates("cardiac silhouette", "normal", normal["labels"]) == []  # no pacemaker label
    with_device = {"no finding": 1, "support devices": 1}
    assert matcher.candidates("cardiac silhouette", "normal", with_device) == ["Pacemaker in place."]
    drawn = loose.sample(pneumonia, random.Random(0))
    # image labels do not locate the pneumonia: a sentence that names a side is never a target,
    # and nothing is borrowed from the other side
    assert drawn[REGIONS.index("right lung")] is None
    assert drawn[REGIONS.index("cardiac silhouette")] is None  # unknown status -> skipped
    assert drawn[REGIONS.index("left lung")] is None
    localised = loose.sample(pneumonia | {"region_abnormal": {"right lung": True}}, random.Random(0))
    assert localised[REGIONS.index("right lung")] == "Right lung opacity."  # the source locates it
    assert localised[REGIONS.index("left lung")] is None
    assert matcher.has_any(normal) and not matcher.has_any({"labels": {}, "region_status": {}})
    assert not matcher.has_any(pneumonia)


def test_sentence_matcher_names_the_image_finding() -> None:
    lines = SENTENCES + [
        {"text": "Right lower lobe pneumonia.", "regions": ["right lower lung zone"], "abnormal": True,
         "findings": ["lung opacity", "pneumonia"]},
        {"text": "Opacities typical of COVID-19.", "regions": ["left lung"], "abnormal": True,
         "findings": ["lung opacity", "pneumonia", "covid-19"]},
    ]
    matcher = SentenceMatcher(lines)
    bacterial = {"pneumonia": 1, "covid-19": 0, "no finding": 0}
    covid = {"covid-19": 1, "no finding": 0}  # pneumonia not given: COVID-19 is named by "pneumonia"
    assert matcher.candidates("right lower lung zone", "abnormal", bacterial) == ["Right lower lobe pneumonia."]
    # a region's own sentences only (never borrowed); a COVID-19 sentence never for a non-COVID pneumonia
    assert matcher.candidates("right lung", "abnormal", bacterial) == []
    assert matcher.candidates("left lung", "abnormal", bacterial) == []
    assert matcher.candidates("left lung", "abnormal", covid) == ["Opacities typical of COVID-19."]
    assert matcher.candidates("right lung", "abnormal", covid) == []
    # known from image labels only: kept when it names no location, dropped when it names one
    assert matcher.candidates("left lung", "abnormal", covid, localised=False) == ["Opacities typical of COVID-19."]
    assert matcher.candidates("right lower lung zone", "abnormal", bacterial, localised=False) == []
    assert matcher.candidates("cardiac silhouette", "abnormal", covid) == []  # not a lung region
    nodule = {"nodule": 1, "lung lesion": 1, "no finding": 0}
    assert matcher.candidates("right lung", "abnormal", nodule) == ["Nodule in the right lung."]


def test_open_targets_leave_out_masked_and_comparison_sentences() -> None:
    assert standalone("The lungs are clear.") and standalone("There is a right lower lobe pneumonia.")
    for text in ("The heart and pulmonary XXXX are normal.", "Stable cardiomegaly.",
                 "No new focal consolidation.", "Opacity has improved since the prior study.",
                 "Airspace disease consistent with pneumonia given the history."):
        assert not standalone(text), text
    lines = SENTENCES + [
        {"text": "The XXXX are clear.", "regions": ["left lung"], "abnormal": False, "findings": ["no finding"]},
        {"text": "Left lung unchanged.", "regions": ["left lung"], "abnormal": False, "findings": ["no finding"]},
    ]
    normal = {"no finding": 1}
    assert SentenceMatcher(lines).candidates("left lung", "normal", normal) == ["The lungs are clear."]
    everything = SentenceMatcher(lines, standalone_only=False).candidates("left lung", "normal", normal)
    # the masked sentence stays out either way: the pool filter calls a masked word malformed
    assert everything == ["The lungs are clear.", "Left lung unchanged."]


def test_note_sentences_keep_radiograph_descriptions() -> None:
    notes = ("A 61 year old woman presented with fever. Chest radiograph shows bilateral patchy opacities. "
             "Ground-glass opacities were seen on CT. Lymphocyte count was low. The heart is normal in size.")
    records = [{"image": "a.jpg", "patient": "p1", "split": "train", "text": notes, "text_kind": "clinical_notes"},
               {"image": "b.jpg", "patient": "p1", "split": "train", "text": notes, "text_kind": "clinical_notes"},
               {"image": "c.jpg", "split": "train", "text": "Chest radiograph shows opacities.", "text_kind": "report"}]
    lines = note_sentences(records)
    assert [line["text"] for line in lines] == ["Chest radiograph shows bilateral patchy opacities."]
    line = lines[0]
    assert line["abnormal"] and "lung opacity" in line["findings"] and {"right lung", "left lung"} <= set(line["regions"])
    assert line["source"] == "clinical_notes" and line["image"] is None and line["split"] == "train"


def test_paired_sentences_join_per_region() -> None:
    texts = paired_region_sentences(SENTENCES[:2])
    assert texts[REGIONS.index("right lung")] == "The lungs are clear. Right lung opacity."
    assert texts[REGIONS.index("left lung")] == "The lungs are clear." and texts[REGIONS.index("spine")] is None


def test_label_vectors_and_prompts() -> None:
    vec = label_vector({"covid-19": 1, "no finding": 0, "pneumonia": -1})
    idx = {f: i for i, f in enumerate(FINDINGS)}
    assert vec[idx["covid-19"]] == 1 and vec[idx["no finding"]] == -1
    assert vec[idx["lung opacity"]] == 0.5 and vec[idx["pneumonia"]] == 0.5  # implied, uncertain -> implied
    texts, vectors = prompt_texts("{}", "no {}")
    assert texts[:3] == ["no finding", "enlarged cardiomediastinum", "no enlarged cardiomediastinum"]
    assert vectors.shape == (2 * len(FINDINGS) - 1, len(FINDINGS)) and vectors[2].sum() == -1


def test_plot_history_writes_png(tmp_path: Path) -> None:
    history = [{"step": i, "loss": 1 / i, "loss_lm": 2 / i} for i in range(1, 20)] + [{"step": 19, "val_loss": 0.1}]
    path = plot_history(history, tmp_path / "loss.png", title="t")
    assert path is not None and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_history([], tmp_path / "none.png") is None
