"""train.prepare end to end: on the fixture data (every source, MIMIC included) and on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crrg.labels import FINDINGS
from crrg.regions import LUNG_REGIONS, REGIONS
from fixtures.data_builder import build_fixture_data
from train import prepare, preparation

REGION_KEYS = {"image", "source", "width", "height", "split", "boxes", "annotated", "derived",
               "labels", "patient"}
SENTENCE_KEYS = {"report", "index", "text", "regions", "abnormal", "findings", "split"}
IMAGE_KEYS = {"image", "source", "split", "labels", "abnormal", "region_status", "patient"}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_outputs(out: Path, data: Path) -> dict[str, list[dict]]:
    """Schema checks shared by the fixture and real-data runs."""
    files = {name: load(out / f"{name}.jsonl") for name in ("regions", "sentences", "images")}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data_root"] == data.resolve().as_posix()
    for line in files["regions"]:
        assert REGION_KEYS <= set(line)
        assert set(line["annotated"]) == set(line["boxes"]) and set(line["derived"]) <= set(line["annotated"])
        assert (data / line["image"]).is_file()  # paths relative to the data root
        for x1, y1, x2, y2 in line["boxes"].values():
            assert 0 <= x1 < x2 <= line["width"] and 0 <= y1 < y2 <= line["height"]
    for line in files["sentences"]:
        assert SENTENCE_KEYS <= set(line) and line["text"]
        assert set(line["regions"]) <= set(REGIONS) and set(line["findings"]) <= set(FINDINGS)
    for line in files["images"]:
        assert IMAGE_KEYS <= set(line) and set(line["region_status"]) == set(REGIONS)
        assert set(line["region_status"].values()) <= {"normal", "abnormal", "unknown"}
    splits = {line["split"] for name in files for line in files[name]}
    assert splits <= {"train", "val", "test", "excluded"}
    parts: dict[tuple[str, str], set[str]] = {}
    for line in files["images"]:  # patient-disjoint within each source ("excluded" is never used)
        if line["split"] != "excluded":
            parts.setdefault((line["source"], line["patient"]), set()).add(line["split"])
    assert all(len(p) == 1 for p in parts.values())
    return files


def test_prepare_on_fixture_data(tmp_path):
    data = build_fixture_data(tmp_path / "data")
    out = tmp_path / "out"
    prepare.main(["--data", str(data), "--out", str(out), "--preview", "1",
                  "--iu-images", str(data / "iu_images")])
    files = check_outputs(out, data)
    sources = {line["source"] for line in files["regions"]}
    assert sources == {"jsrt_scr", "covid_lung_boxes", "covid_anatomy", "mimic_cxr"}
    by_report: dict[str, list[dict]] = {}
    for line in files["sentences"]:
        by_report.setdefault(line["report"], []).append(line)
    assert set(by_report) == {"CXR1", "CXR2", "50000001"}  # CXR3 has no findings section
    assert [s["index"] for s in by_report["CXR1"]] == list(range(len(by_report["CXR1"])))
    assert by_report["CXR1"][0]["image"] == "iu_images/CXR1_1_IM-0001-4001.png"
    effusion = next(s for s in by_report["CXR1"] if "effusion" in s["text"])
    assert effusion["abnormal"] and "pleural effusion" in effusion["findings"] and effusion["regions"]
    assert {s["split"] for s in by_report["CXR2"]} == {"test"}
    mimic = {s["text"]: s for s in by_report["50000001"]}
    assert mimic["Possible small left pleural effusion."]["regions"] == ["left costophrenic angle"]
    images = {Path(line["image"]).name: line for line in files["images"]}
    normal = images["Normal-1.jpg"]
    assert normal["abnormal"] is False and set(normal["region_status"].values()) == {"normal"}
    pneumonia = images["person1_bacteria_1.jpeg"]["region_status"]
    assert all(pneumonia[r] == "abnormal" for r in LUNG_REGIONS) and pneumonia["spine"] == "unknown"
    nodule = images["JPCLN900.jpg"]
    assert nodule["abnormal"] is True and set(nodule["region_status"].values()) == {"unknown"}
    assert images["case-a-PA.jpg"]["text_kind"] == "clinical_notes"
    assert "text" not in images["Normal-1.jpg"]
    assert images["CXR1_1_IM-0001-4001.png"]["labels"]["pleural effusion"] == 1  # from the report
    assert sorted(p.name for p in (out / "preview").glob("*.png")) == [
        "covid_anatomy_1.png", "covid_lung_boxes_1.png", "jsrt_scr_1.png", "mimic_cxr_1.png"]
    assert "records per source" in (out / "summary.txt").read_text()
    nih_normal, nih_pneumonia = images["90000001_000.jpg"], images["90000001_001.jpg"]
    assert nih_normal["abnormal"] is False and set(nih_normal["region_status"].values()) == {"normal"}
    assert nih_normal["labels"]["cardiomegaly"] == 0 and "fracture" not in nih_normal["labels"]
    assert nih_pneumonia["split"] == nih_normal["split"]  # one patient, one split
    assert all(nih_pneumonia["region_status"][r] == "abnormal" for r in LUNG_REGIONS)
    tb = images["tb9001.jpg"]
    assert tb["abnormal"] is True and set(tb["region_status"].values()) == {"unknown"}
    assert tb["finding_boxes"][0] == {"finding": "opacity", "box": [25.0, 22.5, 80.0, 70.0],
                                      "kind": "ActiveTuberculosis"}
    assert "finding_boxes" not in images["tb9003.jpg"] and "finding_boxes" not in nih_normal


def test_prepare_on_real_data_subset(data_dir, tmp_path):
    summary = preparation.prepare_data(data_dir, tmp_path, limit=3)
    files = check_outputs(tmp_path, data_dir)
    counts = summary.as_dict()["records"]
    assert set(counts) == {"jsrt_scr", "covid_lung_boxes", "covid_anatomy", "kermany_pneumonia",
                           "covid_radiography", "iu_xray", "nih_cxr14", "tbx11k"}
    assert all(sum(v.values()) == 3 for v in counts.values())
    assert {line["source"] for line in files["regions"]} == {"jsrt_scr", "covid_lung_boxes", "covid_anatomy"}
    assert len(files["images"]) == 21  # 3 each from the 7 image sources
    assert {line["report"] for line in files["sentences"]} <= {"CXR1", "CXR10", "CXR100"}
    assert files["sentences"] and all(line["source"] == "iu_xray" for line in files["sentences"])


def test_prepare_rejects_a_missing_data_folder(tmp_path):
    with pytest.raises(SystemExit):
        prepare.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
