"""NIH ChestX-ray14 and TBX11K: readers, the NIH label map, TB-area region labels from boxes
through the overlap rule, and patient-disjoint splits (fixtures, then the real data when present)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crrg.data.duplicates import same_films
from crrg.data.readers import read_source
from crrg.data.readers.tbx11k import REGION_FINDING, region_labels
from crrg.data.records import FindingBox, Record
from crrg.data.sentences import extract_findings
from crrg.data.silver import OrganMasks, derive_boxes
from crrg.data.splits import EXCLUDED, POLICIES, assign_splits, follow_same_films
from crrg.findings import FINDING_REGIONS, REGION_FINDINGS
from crrg.labels import FINDINGS, LABELS, NIH_LABELS, NIH_MAP, UNREPORTED, nih_labels
from crrg.regions import LUNG_REGIONS
from fixtures.data_builder import JSRT_ORGANS, build_fixture_data, rect_mask
from train.preparation import prepare_data


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_data(tmp_path_factory.mktemp("data"))


def flags(*positive: str) -> dict[str, int]:
    return {name: int(name in positive) for name in NIH_LABELS}


# ------------------------------------------------------------------------------ label map
def test_no_finding_image_is_negative_for_what_nih_assesses_only():
    labels = nih_labels(flags())
    assert labels["no finding"] == 1
    assessed = set(NIH_MAP)
    assert {k for k, v in labels.items() if v == 0} == assessed
    for unassessed in ("enlarged cardiomediastinum", "fracture", "support devices", "tuberculosis"):
        assert unassessed not in labels  # unknown, masked downstream


def test_abnormal_image_positives_complete_negatives_and_unknown_parents():
    labels = nih_labels(flags("Infiltration", "Pneumonia"))
    assert labels["no finding"] == 0 and labels["pneumonia"] == 1 and labels["infiltration"] == 1
    assert labels["lung opacity"] == 1  # infiltration is an opacity in the project's vocabulary
    assert labels["cardiomegaly"] == 0 and labels["nodule"] == 0 and labels["covid-19"] == 0
    assert "lung lesion" not in labels and "pleural other" not in labels  # NIH covers them partly
    mass = nih_labels(flags("Mass"))
    assert mass["lung lesion"] == 1 and mass["mass"] == 1 and mass["nodule"] == 0
    assert "lung opacity" not in mass  # neither present nor safely absent
    assert list(mass) == [name for name in LABELS if name in mass]  # LABELS order


def test_map_keeps_the_meaning_of_the_project_vocabulary():
    """The positive mapping into the reported FINDINGS is what the report extractor reads from the
    NIH finding's own words, so an NIH label means what an IU report sentence would."""
    for name in NIH_LABELS:
        words = {"Effusion": "pleural effusion", "Pleural_Thickening": "pleural thickening"}.get(name, name.lower())
        mapped = {f for f, v in nih_labels(flags(name)).items() if v == 1 and f in FINDINGS}
        assert mapped == set(extract_findings(words)), name
    assert {s for rule in NIH_MAP.values() for s in rule.sources} == set(NIH_LABELS)
    assert set(NIH_MAP) <= set(LABELS) and not set(UNREPORTED) & set(FINDINGS)


def test_missing_nih_flag_raises():
    with pytest.raises(ValueError, match="Hernia"):
        nih_labels({k: v for k, v in flags().items() if k != "Hernia"})


# -------------------------------------------------------------------------------- readers
def test_nih_reader(fixture_data):
    records = list(read_source("nih_cxr14", fixture_data / "nih_cxr14"))
    assert [r.patient for r in records] == ["90000001", "90000001", "90000002", "90000003", "90000004"]
    first, follow_up, heart, lesion, hernia = records
    assert (first.width, first.height) == (64, 64) and not first.boxes and not first.finding_boxes
    assert first.labels == nih_labels(flags()) and first.labels["no finding"] == 1
    assert heart.labels["cardiomegaly"] == 1 and heart.labels["pleural effusion"] == 1
    assert lesion.labels["nodule"] == 1 and lesion.labels["lung lesion"] == 1
    assert hernia.labels["hernia"] == 1 and hernia.labels["no finding"] == 0
    assert follow_up.extra["finding_labels"] == "Infiltration|Pneumonia" and "NIH" in first.licence


def test_nih_reader_rejects_disagreeing_columns(fixture_data, tmp_path):
    root = tmp_path / "nih_cxr14"
    (root / "images").mkdir(parents=True)
    for image in (fixture_data / "nih_cxr14" / "images").iterdir():
        (root / "images" / image.name).write_bytes(image.read_bytes())
    rows = list(csv.reader(open(fixture_data / "nih_cxr14" / "labels.csv")))
    rows[3][2] = "Cardiomegaly"  # but Effusion is 1 too
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(ValueError, match="disagree"):
        list(read_source("nih_cxr14", root))


def test_tbx_reader(fixture_data):
    records = {r.patient: r for r in read_source("tbx11k", fixture_data / "tbx11k")}
    assert sorted(records) == ["tb9001", "tb9002", "tb9003"]
    one = records["tb9001"]
    assert one.labels == {"no finding": 0, "tuberculosis": 1} and not one.boxes
    assert [(f.finding, f.box, f.kind) for f in one.finding_boxes] == [
        ("opacity", (25.0, 22.5, 80.0, 70.0), "ActiveTuberculosis"),
        ("opacity", (150.5, 130.0, 170.0, 150.0), "ObsoletePulmonaryTuberculosis")]
    assert records["tb9003"].finding_boxes == ()  # TB, not localised
    assert REGION_FINDING in REGION_FINDINGS and "research use" in one.licence


def test_finding_box_outside_the_image_is_rejected():
    record = Record(source="tbx11k", patient="x", width=10, height=10,
                    finding_boxes=(FindingBox("opacity", (2.0, 2.0, 12.0, 5.0)),))
    with pytest.raises(ValueError, match="outside"):
        record.validate()


# ------------------------------------------------------------------ region labels from boxes
def silver_regions() -> dict:
    masks = {organ: rect_mask(200, 200, rows, cols) for organ, (rows, cols) in JSRT_ORGANS.items()}
    return derive_boxes(OrganMasks(height=200, width=200, **masks)).boxes


def test_tb_boxes_make_their_zones_positive_and_the_rest_negative(fixture_data):
    records = {r.patient: r for r in read_source("tbx11k", fixture_data / "tbx11k")}
    regions = silver_regions()  # stand-in for the detector's boxes on a 200 px film
    labels = region_labels(records["tb9001"].finding_boxes, regions, 200, 200)
    assert set(labels) == set(LUNG_REGIONS) & set(regions)
    assert labels["right upper lung zone"] == 1 and labels["right lung"] == 1
    assert labels["left lower lung zone"] == 1 and labels["left lung"] == 1  # the obsolete-TB box
    for zone in ("right mid lung zone", "right lower lung zone", "left upper lung zone", "left mid lung zone"):
        assert labels[zone] == 0
    one_sided = region_labels(records["tb9002"].finding_boxes, regions, 200, 200)
    zones = FINDING_REGIONS["opacity"]
    assert {z for z in zones if one_sided[z] == 1} == {"left upper lung zone", "left mid lung zone"}
    assert all(one_sided[z] == 0 for z in zones if z.startswith("right"))
    assert region_labels(records["tb9003"].finding_boxes, regions, 200, 200) == {}  # all unknown


def test_region_labels_combine_boxes_through_the_overlap_rule():
    zone = {"right upper lung zone": (0.0, 0.0, 100.0, 100.0)}
    sliver = FindingBox("opacity", (95.0, 10.0, 195.0, 110.0))  # 4.5 % of the zone, 4.5 % of the box
    inside = FindingBox("opacity", (10.0, 10.0, 30.0, 30.0))
    away = FindingBox("opacity", (150.0, 150.0, 190.0, 190.0))
    assert region_labels([sliver], zone, 200, 200) == {"right upper lung zone": None}
    assert region_labels([sliver, away], zone, 200, 200) == {"right upper lung zone": None}
    assert region_labels([sliver, inside], zone, 200, 200) == {"right upper lung zone": 1}
    assert region_labels([away], zone, 200, 200) == {"right upper lung zone": 0}
    assert region_labels([], zone, 200, 200) == {}
    assert region_labels([inside], {}, 200, 200) == {}  # no region boxes: nothing to label


# ---------------------------------------------------------------------------------- splits
def disjoint(records: list[Record]) -> dict[str, set[str]]:
    splits = assign_splits(records)
    parts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        parts[(r.source, r.patient)].add(splits[r.key])
    assert all(len(p) == 1 for p in parts.values()), {k: v for k, v in parts.items() if len(v) > 1}
    out: dict[str, set[str]] = defaultdict(set)
    for (source, patient), (split,) in parts.items():
        out[split].add(patient)
    return out


def test_fixture_splits_are_by_patient(fixture_data):
    records = list(read_source("nih_cxr14", fixture_data / "nih_cxr14"))
    records += list(read_source("tbx11k", fixture_data / "tbx11k"))
    disjoint(records)
    assert POLICIES["nih_cxr14"].namespace != POLICIES["tbx11k"].namespace


def test_real_nih_and_tbx(data_dir):
    nih = list(read_source("nih_cxr14", data_dir / "nih_cxr14"))
    tbx = list(read_source("tbx11k", data_dir / "tbx11k"))
    assert len(nih) == 1075 and len({r.patient for r in nih}) == 868
    assert sum(r.labels["no finding"] for r in nih) == 433
    assert sum(r.labels["pneumonia"] for r in nih) == 301 and sum(r.labels["mass"] for r in nih) == 62
    assert len(tbx) == 600 and sum(len(r.finding_boxes) for r in tbx) == 902
    assert sum(not r.finding_boxes for r in tbx) == 1
    for source in (nih, tbx):
        parts = disjoint(source)
        sizes = {k: len(v) for k, v in parts.items()}
        total = sum(sizes.values())
        assert 0.1 < sizes["val"] / total < 0.2 and 0.1 < sizes["test"] / total < 0.2, sizes
    normals = list(read_source("covid_radiography", data_dir / "covid_radiography"))
    copies = same_films(nih + normals)  # NIH films that COVID-19 Radiography's "Normal" class holds too
    assert len(copies) == 12 and all(len(v) == 1 and "/Normal/" in v[0] for v in copies.values())
    splits = assign_splits(nih)
    for finding in ("no finding", *(f for f in NIH_MAP if NIH_MAP[f].complete and NIH_MAP[f].sources)):
        for part in ("val", "test"):
            assert any(r.labels[finding] == 1 and splits[r.key] == part for r in nih), (finding, part)


def test_a_film_in_two_sources_is_excluded_and_its_patient_follows_the_copy(tmp_path):
    data = build_fixture_data(tmp_path / "data")
    yy, xx = np.mgrid[0:32, 0:32]
    film = (128 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)  # smooth, like a film
    Image.fromarray(film).save(data / "covid_radiography" / "Normal" / "Normal-1.jpg")
    Image.fromarray(film).resize((64, 64), Image.BILINEAR).save(data / "nih_cxr14" / "images" / "90000001_001.jpg")
    records = list(read_source("nih_cxr14", data / "nih_cxr14")) + list(
        read_source("covid_radiography", data / "covid_radiography"))
    keys = {Path(r.key).name: r.key for r in records}
    copies = same_films(records)
    assert copies == {keys["90000001_001.jpg"]: [keys["Normal-1.jpg"]]}  # noise images match nothing
    before = assign_splits(records)
    after = follow_same_films(records, before, copies)
    assert after[keys["90000001_001.jpg"]] == EXCLUDED
    assert after[keys["90000001_000.jpg"]] == before[keys["Normal-1.jpg"]]  # same patient, copy's part
    changed = {k for k in before if before[k] != after[k]}
    assert changed <= {keys["90000001_001.jpg"], keys["90000001_000.jpg"]}
    split_copies = {keys["90000001_001.jpg"]: ["a", "b"]}
    assert follow_same_films(records, {**before, "a": "train", "b": "test"}, split_copies)[
        keys["90000001_000.jpg"]] == EXCLUDED  # copies in two parts: the patient is left out
    prepare_data(data, tmp_path / "out", sources=["nih_cxr14", "covid_radiography"])
    lines = {Path(x["image"]).name: x for x in map(json.loads, open(tmp_path / "out" / "images.jsonl"))}
    assert lines["90000001_001.jpg"]["split"] == EXCLUDED
    assert lines["90000001_001.jpg"]["same_film_as"] == ["covid_radiography/Normal/Normal-1.jpg"]
    assert "same_film_as" not in lines["Normal-1.jpg"]


def test_tb_boxes_reach_the_opacity_head_targets_through_the_detector_boxes(fixture_data, tmp_path):
    """train.heads_data: a TBX11K image has no prepared region boxes, so its opacity targets come
    from the detector's cached boxes (predicted_boxes) through the same region_labels rule."""
    import torch

    from crrg.regions import NUM_REGIONS, REGIONS
    from train.finding_labels import FindingLabeler
    from train.heads_data import predicted_boxes

    prepare_data(fixture_data, tmp_path / "prepared", sources=["tbx11k"])
    rows = {json.loads(line)["patient"]: json.loads(line)
            for line in (tmp_path / "prepared" / "images.jsonl").read_text().splitlines()}
    regions = silver_regions()
    cached = {"boxes": torch.tensor([regions.get(r, [0, 0, 1, 1]) for r in REGIONS], dtype=torch.float32),
              "detected": torch.tensor([r in regions for r in REGIONS])}
    assert set(predicted_boxes(cached)) == set(regions)
    labeler = FindingLabeler(fixture_data, REGION_FINDINGS)
    target, known = labeler(rows["tb9001"], predicted_boxes(cached))
    j = REGION_FINDINGS.index("opacity")
    expected = region_labels(
        [FindingBox(b["finding"], tuple(b["box"]), b["kind"]) for b in rows["tb9001"]["finding_boxes"]],
        regions, int(rows["tb9001"]["width"]), int(rows["tb9001"]["height"]), FINDING_REGIONS["opacity"])
    for zone in FINDING_REGIONS["opacity"]:
        i = REGIONS.index(zone)
        assert bool(known[i, j]) == (expected[zone] is not None)
        if expected[zone] is not None:
            assert target[i, j] == expected[zone]
    assert target[:, j].sum() >= 2 and (known[:, j] & (target[:, j] == 0)).sum() >= 2
    assert target.shape == (NUM_REGIONS, len(REGION_FINDINGS))
    _, nothing = labeler(rows["tb9003"], predicted_boxes(cached))  # TB without a box: unknown
    assert not nothing[:, j].any()
