"""train.evaluate: hand-checked IoU / sampling helpers and an end-to-end run on a generated
prepared folder (generated images, tiny model)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_fixture import chest_like_png, tiny_model

from crrg import DISCLAIMER
from crrg.calibration import Calibration, Platt, Temperature
from crrg.labels import FINDINGS
from crrg.pipeline import Pipeline
from crrg.regions import LUNG_REGIONS, REGIONS
from train import evaluate as ev
from train.datasets import PreparedData


# ------------------------------------------------------------------------------ helpers
def test_box_iou_pairs_hand_made() -> None:
    pred = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 2, 2], [0, 0, 4, 2]], dtype=torch.float)
    gt = torch.tensor([[5, 5, 15, 15], [0, 0, 10, 10], [5, 5, 6, 6], [2, 0, 6, 2]], dtype=torch.float)
    iou = ev.box_iou_pairs(pred, gt)
    # 25 / (100 + 100 - 25); identical; disjoint; 4 / (8 + 8 - 4)
    assert torch.allclose(iou, torch.tensor([25 / 175, 1.0, 0.0, 4 / 12]))
    assert ev.box_iou_pairs(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        ev.box_iou_pairs(pred, gt[:2])


def _outputs(boxes: dict[str, list[float]], detected: set[str], width: int = 100,
             height: int = 80) -> ev.Outputs:
    all_boxes = np.zeros((len(REGIONS), 4))
    for name, box in boxes.items():
        all_boxes[REGIONS.index(name)] = box
    det = np.array([r in detected for r in REGIONS])
    zeros = np.zeros(len(REGIONS))
    return ev.Outputs(width=width, height=height, boxes=all_boxes, detected=det, selection=zeros,
                      abnormality=zeros, zero_shot={})


def test_report_metrics_headline_and_strict_protocols() -> None:
    normal = dict.fromkeys(FINDINGS, 0) | {"no finding": 1}
    sample = [
        {"image": "a", "source": "kermany_pneumonia", "abnormal": True,
         "labels": {"pneumonia": 1, "covid-19": 0, "no finding": 0}},
        {"image": "b", "source": "covid_radiography", "abnormal": True, "labels": {"covid-19": 1, "no finding": 0}},
        {"image": "c", "source": "covid_radiography", "abnormal": False, "labels": normal},
    ]
    texts = {"a": "Right lower lobe airspace disease consistent with pneumonia.",
             "b": "Right lower lobe airspace disease consistent with pneumonia.", "c": "The lungs are clear."}
    outputs = {}
    for key, text in texts.items():
        outputs[key] = _outputs({}, set())
        outputs[key].report, outputs[key].sentences = text, {"right lung": text}
    m = ev.report_metrics(sample, outputs)
    # headline (CheXpert space, COVID-19 -> pneumonia, unassessed skipped): every scored pair right;
    # "lung opacity" of a and b is not assessed by their labels
    assert m["micro_precision"] == 1.0 and m["micro_recall"] == 1.0 and m["n_scored"] == 2 + 2 + 14
    assert m["per_label"]["lung opacity"]["assessed"] == 1 and m["per_label"]["pneumonia"]["support"] == 2
    # strict: opacity of a and b and pneumonia of b (no pneumonia label) are false positives, COVID-19 of b
    # is missed -> TP 2 (a pneumonia, c no finding), FP 3, FN 1
    strict = m["all_findings"]
    assert strict["micro_precision"] == pytest.approx(2 / 5) and strict["micro_recall"] == pytest.approx(2 / 3)
    assert m["abnormal_vs_normal"]["accuracy"] == 1.0 and set(m["by_source"]) == {"kermany_pneumonia",
                                                                                   "covid_radiography"}


def test_report_metrics_says_how_often_a_report_states_a_pathology_per_source() -> None:
    sample = [{"image": k, "source": "nih_cxr14", "abnormal": abnormal,
               "labels": {"no finding": int(not abnormal), "atelectasis": int(abnormal)}}
              for k, abnormal in (("a", True), ("b", True), ("c", False), ("d", False))]
    texts = {"a": "Right lower lobe airspace disease consistent with pneumonia.", "b": "The lungs are clear.",
             "c": "The lungs are clear.", "d": "There is a left pleural effusion."}
    outputs = {}
    for key, text in texts.items():
        outputs[key] = _outputs({}, set())
        outputs[key].report = text
    stated = ev.report_metrics(sample, outputs)["pathology_stated_by_source"]["nih_cxr14"]
    assert stated == {"abnormal_stated": 0.5, "n_abnormal": 2, "normal_stated": 0.5, "n_normal": 2}


def test_a_report_states_what_its_typed_sentences_state_hedged_or_not() -> None:
    """With the pipeline's typed findings, a hedged image-level sentence counts as stated (the
    extractor reads "suggest" as uncertain) and a device is no pathology."""
    sample = [{"image": k, "source": "nih_cxr14", "abnormal": abnormal,
               "labels": {"no finding": int(not abnormal), "pleural effusion": int(abnormal)}}
              for k, abnormal in (("a", True), ("b", True), ("c", False), ("d", False))]
    rows = {"a": ("Findings suggest a pleural effusion.", ("pleural effusion",)),
            "b": ("The lungs are clear.", ()),
            "c": ("A support device projects over the mediastinum.", ("support device",)),
            "d": ("There are diffuse bilateral opacities.", ("opacity",))}
    outputs = {}
    for key, (text, stated) in rows.items():
        outputs[key] = _outputs({}, set())
        outputs[key].report, outputs[key].stated = text, stated
    m = ev.report_metrics(sample, outputs)
    assert m["pathology_stated_by_source"]["nih_cxr14"] == {"abnormal_stated": 0.5, "n_abnormal": 2,
                                                            "normal_stated": 0.5, "n_normal": 2}
    # the extractor misses the hedged effusion: no abnormal film states one by the text
    assert m["pathology_stated_by_source_by_labeler"]["nih_cxr14"]["abnormal_stated"] == 0.0
    assert m["abnormal_vs_normal"]["recall"] == 0.5 and m["abnormal_vs_normal_by_labeler"]["recall"] == 0.0
    assert not ev.states_pathology(("support device",)) and ev.states_pathology(("support device", "edema"))
    # CE: the headline reads "suggest" as uncertain (no effusion predicted); hedged_as_stated credits it
    assert m["per_label"]["pleural effusion"]["predicted"] == 0
    assert m["hedged_as_stated"]["per_label"]["pleural effusion"]["predicted"] == 1
    assert m["hedged_as_stated"]["per_label"]["pleural effusion"]["f1"] > m["per_label"]["pleural effusion"]["f1"]


def test_image_finding_metrics_score_each_finding_on_the_sources_that_assess_it() -> None:
    """Pneumonia-like on every labelled source; NIH's findings on NIH only (a normal Kermany film
    is not a negative for effusion); sensitivity / specificity at the model's own threshold."""
    rows = [("k1", "kermany_pneumonia", {"pneumonia": 1, "no finding": 0}, 0.9, 0.8),
            ("k2", "kermany_pneumonia", {"no finding": 1}, 0.2, 0.1),
            ("n1", "nih_cxr14", {"no finding": 0, "pleural effusion": 1}, 0.3, 0.7),
            ("n2", "nih_cxr14", {"no finding": 1}, 0.1, 0.4),
            ("n3", "nih_cxr14", {"no finding": 0, "pleural effusion": 0, "pneumonia": 1}, 0.6, 0.2)]
    records, outputs = [], {}
    for key, source, labels, pneumonia, effusion in rows:
        records.append({"image": key, "source": source, "labels": labels})
        outputs[key] = _outputs({}, set())
        outputs[key].image_findings = {"pneumonia": pneumonia, "pleural effusion": effusion}
    from crrg.model import CRRGConfig

    config = CRRGConfig()
    config.grounding.image_thresholds = {"pneumonia": 0.5, "pleural effusion": 0.5}
    m = ev.image_finding_metrics(records, outputs, config)
    assert m["pneumonia"]["n"] == 4 and m["pneumonia"]["auc"] == 1.0  # n1: atelectasis-free, unknown
    assert m["pleural effusion"]["n"] == 3 and set(m["pleural effusion"]["by_source"]) == {"nih_cxr14"}
    assert m["pleural effusion"]["sensitivity"] == 1.0 and m["pleural effusion"]["specificity"] == 1.0
    assert m["pneumonia"]["by_source"]["nih_cxr14"]["sensitivity"] == 1.0


def test_ctr_scores_nih_cardiomegaly_from_the_detector_boxes() -> None:
    def heart(width: float) -> ev.Outputs:  # lungs span x 10..90 (thorax 80 px)
        return _outputs({"right lung": [10, 10, 45, 70], "left lung": [55, 10, 90, 70],
                         "cardiac silhouette": [50 - width / 2, 40, 50 + width / 2, 65]},
                        detected={"right lung", "left lung", "cardiac silhouette"})

    records = [{"image": k, "source": "nih_cxr14", "labels": labels} for k, labels in (
        ("big", {"no finding": 0, "cardiomegaly": 1}), ("small", {"no finding": 1}),
        ("mid", {"no finding": 0, "cardiomegaly": 0}))]
    outputs = {"big": heart(48), "small": heart(32), "mid": heart(36)}  # CTR 0.6, 0.4, 0.45
    m = ev.ctr_vs_cardiomegaly(records + [{"image": "x", "source": "kermany_pneumonia",
                                           "labels": {"no finding": 1}}], outputs | {"x": heart(60)})
    assert m["n"] == 3 and m["auc"] == 1.0 and m["sensitivity"] == 1.0 and m["specificity"] == 1.0


def test_nih_zero_shot_scores_each_finding_on_nih_only() -> None:
    records, outputs = [], {}
    for key, source, labels, p in (("a", "nih_cxr14", {"no finding": 0, "edema": 1}, 0.9),
                                   ("b", "nih_cxr14", {"no finding": 1}, 0.2),
                                   ("c", "nih_cxr14", {"no finding": 0, "edema": 0}, 0.4),
                                   ("d", "kermany_pneumonia", {"no finding": 1}, 0.95)):
        records.append({"image": key, "source": source, "labels": labels})
        outputs[key] = _outputs({}, set())
        outputs[key].zero_shot = {"edema": p}
    m = ev.nih_zero_shot_metrics(records, outputs)
    assert m["per_finding"]["edema"]["n"] == 3 and m["per_finding"]["edema"]["auc"] == 1.0
    assert m["mean_auc"] == 1.0 and m["n_findings"] == 1


def test_detector_boxes_reach_the_stored_image_pixels_of_expert_boxes() -> None:
    out = _outputs({"right upper lung zone": [10, 20, 30, 40], "left lung": [50, 0, 90, 80]},
                   detected={"right upper lung zone"}, width=100, height=80)
    record = {"width": 200, "height": 40, "finding_boxes": [{"finding": "opacity", "box": [0, 0, 1, 1]}]}
    assert ev.stored_pixel_boxes(record, out) == {"right upper lung zone": [20.0, 10.0, 60.0, 20.0]}


def test_region_ious_scales_stored_boxes_and_counts_misses_as_zero() -> None:
    # the stored image was twice the loaded size: ground truth is halved before the IoU
    boxes = {"right lung": [0, 0, 40, 40], "left lung": [100, 0, 140, 40], "trachea": [80, 0, 100, 40]}
    record = {"width": 200, "height": 160, "annotated": list(boxes), "derived": ["trachea"], "boxes": boxes}
    halved = {name: [v / 2 for v in box] for name, box in boxes.items()}
    out = _outputs(halved, detected={"right lung", "trachea"})
    rows = {name: (derived, det, iou) for name, derived, det, iou in ev.region_ious(record, out)}
    assert rows["right lung"] == (False, True, pytest.approx(1.0))
    assert rows["left lung"] == (False, False, 0.0)  # not detected: 0 whatever its box
    assert rows["trachea"] == (True, True, pytest.approx(1.0))
    rows = [("right lung", True, 0.8), ("right lung", False, 0.0), ("left lung", True, 0.4)]
    summary = ev.summarise_iou(rows)
    assert summary["n"] == 3 and summary["detection_rate"] == pytest.approx(2 / 3)
    assert summary["mean_iou"] == pytest.approx(0.4)
    assert summary["mean_iou_detected"] == pytest.approx(0.6)
    assert summary["iou_50"] == pytest.approx(1 / 3)
    assert summary["per_region"]["right lung"]["mean_iou"] == pytest.approx(0.4)
    assert summary["mean_iou_over_regions"] == pytest.approx(0.4)


def test_stratified_sample_and_zero_shot_targets() -> None:
    records = [{"source": s, "i": i} for s, n in (("a", 10), ("b", 2), ("c", 1)) for i in range(n)]
    sample = ev.stratified_sample(records, 6, seed=1)
    assert [sum(r["source"] == s for r in sample) for s in "abc"] == [3, 2, 1]
    assert sample == ev.stratified_sample(records, 6, seed=1)
    assert len(ev.stratified_sample(records, 100, seed=0)) == 13
    assert ev.zero_shot_target({"pneumonia": 1, "no finding": 0}, "pneumonia") == 1
    assert ev.zero_shot_target({"pneumonia": 0, "no finding": 1}, "pneumonia") == 0
    assert ev.zero_shot_target({"covid-19": 1}, "pneumonia") is None
    scores = ev.abnormal_scores([True, True, False, False], np.array([True, False, True, False]))
    assert scores["precision"] == scores["recall"] == scores["accuracy"] == pytest.approx(0.5)
    assert scores["n"] == 4 and scores["n_abnormal"] == 2


# ------------------------------------------------------------------------------ generated data
def _labels(positive: list[str]) -> dict[str, int]:
    if not positive:
        return {f: int(f == "no finding") for f in FINDINGS}
    return {"no finding": 0, **{p: 1 for p in positive}}


def _status(positive: list[str]) -> dict[str, str]:
    if not positive:
        return dict.fromkeys(REGIONS, "normal")
    lung = any(p in ("pneumonia", "covid-19") for p in positive)
    return {r: "abnormal" if lung and r in LUNG_REGIONS else "unknown" for r in REGIONS}


MASK_BACKED = ("right lung", "left lung", "right clavicle", "left clavicle", "cardiac silhouette")


def _all_boxes(size: tuple[int, int], seed: int) -> dict[str, list[float]]:
    """A large xyxy box for each of the 29 regions (stored-image pixels): any detection overlaps."""
    rng = np.random.default_rng(seed)
    w, h = size
    corners = rng.uniform(0.0, 0.1, size=(len(REGIONS), 2)) * (w, h)  # [29, 2]
    sides = rng.uniform(0.8, 0.9, size=(len(REGIONS), 2)) * (w, h)  # [29, 2]
    return {r: [*map(float, c), *map(float, c + d)] for r, c, d in zip(REGIONS, corners, sides)}


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared folder in train.prepare's format over generated images (no real data)."""
    root = tmp_path_factory.mktemp("evaldata")
    data, prep = root / "data", root / "prepared"
    prep.mkdir()
    images, regions = [], []
    specs = [  # source, split, positives, size
        ("kermany_pneumonia", "test", ["pneumonia"], (224, 224)),
        ("kermany_pneumonia", "test", ["pneumonia"], (224, 224)),
        ("kermany_pneumonia", "test", [], (224, 224)),
        ("kermany_pneumonia", "train", [], (224, 224)),
        ("covid_radiography", "test", ["covid-19"], (224, 224)),
        ("covid_radiography", "test", [], (224, 224)),
        ("jsrt_scr", "test", ["nodule", "lung lesion"], (256, 256)),
        ("jsrt_scr", "test", [], (256, 256)),
        ("iu_xray", "test", [], (240, 200)),
    ]
    for k, (source, split, positive, size) in enumerate(specs):
        ref = f"{source}/img{k}.png"
        (data / source).mkdir(parents=True, exist_ok=True)
        chest_like_png(data / ref, size=size, seed=k)
        line = {"image": ref, "source": source, "width": size[0], "height": size[1], "split": split,
                "labels": _labels(positive), "abnormal": bool(positive),
                "region_status": _status(positive), "patient": str(k), "licence": "generated"}
        if source == "iu_xray":
            line.update(text="The heart is normal in size. The lungs are clear.", text_kind="report")
        images.append(line)
        if source == "jsrt_scr":
            regions.append({"image": ref, "source": source, "width": size[0], "height": size[1],
                            "split": split, "boxes": _all_boxes(size, k), "annotated": list(REGIONS),
                            "derived": [r for r in REGIONS if r not in MASK_BACKED],
                            "labels": line["labels"], "patient": str(k)})
    chest_like_png(data / "covid_lung_boxes.png", size=(300, 240), seed=99)  # boxes, no labels line
    regions.append({"image": "covid_lung_boxes.png", "source": "covid_lung_boxes", "width": 300,
                    "height": 240, "split": "test", "boxes": {"right lung": [30, 20, 140, 220],
                                                              "left lung": [160, 20, 270, 220]},
                    "annotated": ["right lung", "left lung"], "derived": [], "labels": {},
                    "patient": "x"})
    images.append({**images[0], "image": "kermany_pneumonia/missing.png", "patient": "gone"})
    sentences = [{"report": f"r{i}", "source": "iu_xray", "split": "train", "image": None, "index": 0,
                  "text": "The lungs are clear.", "regions": ["right lung", "left lung"],
                  "abnormal": False, "findings": ["no finding"]} for i in range(3)]
    for name, lines in (("images", images), ("regions", regions), ("sentences", sentences)):
        (prep / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (prep / "meta.json").write_text(json.dumps({"data_root": str(data)}))
    return prep


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tinymodel")
    tiny_model(seed=0).save_pretrained(folder)
    return folder


def _auc_ok(metrics: dict) -> bool:
    return (metrics["auc"] is None and "note" in metrics) or 0.0 <= metrics["auc"] <= 1.0


def test_evaluate_end_to_end(prepared_dir: Path, weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    ev.main(["--weights", str(weights), "--prepared", str(prepared_dir), "--out", str(out),
             "--report-limit", "5", "--examples", "2", "--batch-size", "3",
             "--nlg-metrics", "bleu", "rouge"])
    m = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert m["disclaimer"] == DISCLAIMER and m["variant"] == "tiny" and m["split"] == "test"
    counts = m["counts"]
    assert counts["test_images"]["kermany_pneumonia"] == 4  # 3 readable test + 1 missing; train left out
    assert counts["unreadable"] == ["kermany_pneumonia/missing.png"] and counts["evaluated"] == 9
    assert counts["zero_shot"] == {"pneumonia_vs_normal": 3, "covid-19_vs_normal": 2,
                                   "nodule_vs_none": 2}
    assert counts["reports"] == 5 and len(counts["reports_by_source"]) >= 4  # stratified
    det = m["detector"]
    assert det["n_images"] == 3
    assert det["mask_backed"]["n"] == 2 * 5 + 2 and det["derived"]["n"] == 2 * 24
    for part in (det["mask_backed"], det["derived"]):
        for stats in [part, *part["per_region"].values()]:
            assert 0.0 <= stats["mean_iou"] <= 1.0 and 0.0 <= stats["detection_rate"] <= 1.0
    assert set(det["mask_backed"]["per_region"]) == set(MASK_BACKED)
    assert len(det["derived"]["per_region"]) == 24
    parts = (det["mask_backed"], det["derived"])
    detected = [s for p in parts for s in p["per_region"].values() if s["detection_rate"]]  # IoU path used
    assert detected and all(0.0 < s["mean_iou_detected"] <= 1.0 for s in detected)
    for name in ("abnormality", "selection"):
        section = m[name]
        assert _auc_ok(section["pooled"]) and _auc_ok(section["pooled_detected"])
        assert all(_auc_ok(v) for v in section["per_region"].values())
    assert m["abnormality"]["pooled"]["n"] > 0
    assert set(m["selection"]["common_regions"]) == {"right lung", "left lung"}
    for task, zs in m["zero_shot"].items():
        assert _auc_ok(zs) and 0.0 <= zs["accuracy"] <= 1.0 and 0.0 <= zs["ece"] <= 1.0
        assert (out / zs["roc_png"]).is_file() and zs["roc_png"] == f"roc_{task}.png"
    rep = m["reports"]
    assert rep["n_reports"] == 5 and 0.0 <= rep["micro_f1"] <= 1.0 and rep["by_source"]
    abnormal = rep["abnormal_vs_normal"]
    assert abnormal["n"] == 5 and 0.0 <= abnormal["f1"] <= 1.0 and 0.0 <= abnormal["accuracy"] <= 1.0
    assert m["nlg"]["n"] == 1 and 0.0 <= m["nlg"]["bleu_1"] <= 1.0 and "rouge_l" in m["nlg"]
    assert len(m["examples"]) == 2
    assert all((out / "examples" / p).stat().st_size > 10_000 for p in m["examples"])
    assert m["seconds_per_image"] > 0 and m["timings_s"]["total"] > 0


def test_limit_keeps_test_split_per_source_and_nlg_skips(prepared_dir: Path) -> None:
    prepared = PreparedData(prepared_dir)
    records = ev.test_records(prepared, limit=1, seed=0)
    assert all(r["split"] == "test" for r in records)
    assert sorted(r["source"] for r in records) == sorted(
        ["kermany_pneumonia", "covid_radiography", "jsrt_scr", "iu_xray", "covid_lung_boxes"])
    assert ev.nlg_metrics([], {}, ["bleu"])["skipped"] is True
    only = ev.test_records(prepared, None, 0, sources=("jsrt_scr", "kermany_pneumonia"))
    assert {r["source"] for r in only} == {"jsrt_scr", "kermany_pneumonia"}
    assert len(only) == sum(r["source"] in {"jsrt_scr", "kermany_pneumonia"} for r in ev.test_records(prepared, None, 0))
    assert ev.build_parser().parse_args(["--weights", "w", "--out", "o", "--sources", "nih_cxr14"]).sources == ["nih_cxr14"]


def test_batched_inference_matches_the_pipeline(prepared_dir: Path) -> None:
    """Generated images, a tiny model with a calibration: the evaluation's outputs are the
    pipeline's (tests/test_eval_parity.py does the same with the shipped model on real images)."""
    model = tiny_model(seed=0)
    model.config = dataclasses.replace(model.config, calibration=Calibration(
        abnormality=Platt(0.8, -1.5), zero_shot=Temperature(1.7)))
    pipe = Pipeline(model, device="cpu")
    prepared = PreparedData(prepared_dir)
    records = [r for r in ev.test_records(prepared, None, 0) if r["source"] == "jsrt_scr"]
    keys = {r["image"] for r in records}
    outputs, failed = ev.run_inference(pipe, [(k, prepared.path(k)) for k in sorted(keys)], ["pneumonia"],
                                       batch_size=2)
    ev.generate_reports(pipe, outputs, keys, prepared, batch_size=2)
    assert not failed
    for record in records:
        result = pipe(prepared.path(record["image"]), prompts=["pneumonia"])
        out = outputs[record["image"]]
        assert out.detected.any()
        assert [r.box is not None for r in result.regions] == out.detected.tolist()
        for i, region in enumerate(result.regions):
            if region.box is not None:
                assert np.allclose(region.box, out.boxes[i], atol=1e-2)
                assert math.isclose(region.abnormal_prob, out.abnormality[i], abs_tol=1e-5)
                assert math.isclose(region.selection_prob, out.selection[i], abs_tol=1e-5)
        assert out.report == result.findings_text
        assert math.isclose(out.zero_shot["pneumonia"], result.labels["pneumonia"], abs_tol=1e-5)
