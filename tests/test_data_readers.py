"""Each reader on a tiny fixture in its published layout, then on the real data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from crrg.data.readers import covid_finding_labels, read_source
from crrg.data.readers.kermany import patient_id
from crrg.data.records import Record
from crrg.data.splits import EXCLUDED, assign_splits, hash_split, split_of
from crrg.regions import REGIONS
from fixtures.data_builder import build_fixture_data


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_data(tmp_path_factory.mktemp("data"))


def read(data: Path, source: str, **options) -> list[Record]:
    return list(read_source(source, data / source, **options))


def test_jsrt_reader_derives_all_regions(fixture_data):
    records = read(fixture_data, "jsrt_scr")
    assert [r.patient for r in records] == ["JPCLN900", "JPCNN900"]
    first = records[0]
    assert (first.width, first.height) == (200, 200)
    assert set(first.annotated) == set(REGIONS)
    assert first.boxes["right lung"] == (20, 20, 90, 180)
    assert first.boxes["cardiac silhouette"] == (70, 100, 140, 170)
    assert "right lung" not in first.derived and "right mid lung zone" in first.derived
    assert first.labels["nodule"] == 1 and records[1].labels["no finding"] == 1


def test_covid_lung_boxes_are_lungs_only(fixture_data):
    a, b = read(fixture_data, "covid_lung_boxes")
    assert a.annotated == ("right lung", "left lung") and a.derived == ()
    assert a.boxes["right lung"] == (10.5, 12.0, 40.5, 102.0)  # COCO xywh -> xyxy
    assert a.boxes["left lung"] == (55.0, 10.0, 90.0, 105.5)
    assert b.boxes["right lung"] == (8.0, 14.0, 40.0, 106.0)  # unlabelled box takes the missing lung
    assert a.labels == {"no finding": 0, "covid-19": 1, "pneumonia": 1} and b.labels == {}
    assert a.text_kind == "clinical_notes" and a.text.startswith("Fever") and b.text is None
    assert a.patient == "7" and "CC BY 4.0" in a.licence


def test_covid_anatomy_places_crops_and_marks_lesions(fixture_data):
    (record,) = read(fixture_data, "covid_anatomy")
    assert record.boxes["right lung"] == (20, 20, 90, 180)  # placement box of the empty lung crop
    assert record.boxes["mediastinum"] == (85, 40, 115, 170)  # cm crop placed at Top 40 / Left 85
    assert record.boxes["cardiac silhouette"] == (85, 90, 115, 170)
    assert record.boxes["trachea"] == (85, 10, 115, 51)  # airway crop above the carina (row 51)
    assert {"right clavicle", "left clavicle"}.isdisjoint(record.annotated)
    assert record.region_abnormal.get("right lower lung zone") is True  # ground glass rows 130-179
    assert "right upper lung zone" not in record.region_abnormal
    assert record.patient == "7" and record.text.startswith("Day 2") and record.view == "AP"


def test_kermany_reader_and_split_policy(fixture_data):
    records = read(fixture_data, "kermany_pneumonia")
    assert patient_id("person12_virus_3.jpeg") == "person12"
    assert patient_id("NORMAL2-IM-0005-0001.jpeg") == "NORMAL2-IM-0005"
    by_name = {r.image.name: r for r in records}
    assert by_name["person1_bacteria_1.jpeg"].extra["pneumonia_type"] == "bacterial"
    assert by_name["person1_bacteria_1.jpeg"].labels["pneumonia"] == 1
    splits = {r.image.name: split_of(r) for r in records}
    assert splits["IM-0001-0002.jpeg"] == "test" and splits["person3_virus_5.jpeg"] == "test"
    assert splits["IM-0001-0001.jpeg"] == EXCLUDED  # the same child has a test image
    assert splits["person1_bacteria_1.jpeg"] in ("train", "val")


def test_covid_radiography_reader(fixture_data):
    records = read(fixture_data, "covid_radiography")
    assert [r.labels.get("covid-19") for r in records] == [1, 1, 0]
    assert all(r.patient == r.image.stem and not r.boxes for r in records)


def test_iu_reader_reads_the_archive_and_pairs_frontal_images(fixture_data):
    records = {r.study: r for r in read(fixture_data, "iu_xray", images=fixture_data / "iu_images")}
    one, two, three = records["CXR1"], records["CXR2"], records["CXR3"]
    assert one.text.startswith("Heart size is normal.") and "\n" not in one.text
    assert one.split == "train" and two.split == "test" and three.split is None
    assert one.image.name == "CXR1_1_IM-0001-4001.png"  # the PA one, not the first (lateral)
    assert (one.width, one.height) == (90, 100) and three.image is None
    assert one.extra["mesh_major"] == ["Pleural Effusion/right/small"]
    assert two.labels["no finding"] == 1 and three.text is None
    assert split_of(three) == "train"  # outside R2Gen: train (one report per patient)


def test_mimic_reader_boxes_sentences_and_avoided_images(fixture_data):
    records = read(fixture_data, "mimic_cxr")
    assert len(records) == 1  # lateral: no scene graph; the third image is in images_to_avoid
    (record,) = records
    assert (record.width, record.height) == (128, 160) and record.split == "train"
    assert record.boxes == {
        "right lung": (10, 20, 60, 140), "right lower lung zone": (10, 100, 60, 140),
        "left lung": (68, 18, 128, 150), "left costophrenic angle": (110, 130, 128, 152),
    }  # out-of-image spine dropped, left lung clipped, "left breast" ignored
    assert record.labels == {"lung opacity": 1, "pleural effusion": -1, "pneumothorax": 0}
    assert record.text.startswith("There is a new opacity")
    sentences = {s.text: s for s in record.sentences}
    opacity = sentences["There is a new opacity in the right lower lobe."]
    assert opacity.regions == ("right lung", "right lower lung zone") and opacity.abnormal
    assert opacity.findings == ("lung opacity", "pneumonia")
    assert sentences["No pneumothorax."].regions == ("right lung", "left lung")
    assert not sentences["No pneumothorax."].abnormal
    assert record.region_abnormal == {"right lung": True, "right lower lung zone": True,
                                      "left lung": False, "left costophrenic angle": True}


def test_splits_are_deterministic_and_patient_disjoint(fixture_data):
    assert hash_split("ns", "p1", 0.1, 0.1) == hash_split("ns", "p1", 0.1, 0.1)
    parts = [hash_split("ns", f"p{i}", 0.1, 0.2) for i in range(2000)]
    assert 0.15 < parts.count("test") / 2000 < 0.25 and 0.05 < parts.count("val") / 2000 < 0.15
    same = [Record(source=s, patient="42", image=Path(f"/x/{s}.jpg"))
            for s in ("covid_lung_boxes", "covid_anatomy")]
    assert len(set(assign_splits(same).values())) == 1  # shared namespace across the COVID sets
    with pytest.raises(ValueError, match="fractions"):
        hash_split("ns", "p", 0.8, 0.8)


def test_covid_finding_labels():
    assert covid_finding_labels("Streptococcus") == {"no finding": 0, "pneumonia": 1, "covid-19": 0}
    assert covid_finding_labels("COVID-19, ARDS")["lung opacity"] == 1
    assert covid_finding_labels("No Finding")["no finding"] == 1
    assert covid_finding_labels("todo") == {}


def test_unknown_source_and_missing_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="valid sources"):
        read_source("chexpert", tmp_path)
    with pytest.raises(FileNotFoundError):
        read_source("jsrt_scr", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        list(read_source("jsrt_scr", tmp_path))


def test_record_validation_catches_inconsistent_flags():
    box = {"right lung": (0.0, 0.0, 5.0, 5.0)}
    with pytest.raises(ValueError, match="annotated"):
        Record(source="jsrt_scr", patient="p", width=10, height=10, boxes=box).validate()
    with pytest.raises(ValueError, match="outside"):
        Record(source="jsrt_scr", patient="p", width=4, height=10, boxes=box,
               annotated=("right lung",)).validate()
    with pytest.raises(ValueError, match="unknown finding"):
        Record(source="jsrt_scr", patient="p", labels={"flu": 1}).validate()


# ----------------------------------------------------------------------------- real data
def test_real_jsrt_mask_backed_regions_inside_the_image(data_dir):
    records = list(read_source("jsrt_scr", data_dir / "jsrt_scr", limit=4))
    assert len(records) == 4
    for record in records:
        mask_backed = set(record.annotated) - set(record.derived)
        assert mask_backed == {"right lung", "left lung", "right clavicle", "left clavicle",
                               "cardiac silhouette"}
        assert set(record.annotated) == set(REGIONS)
        for x1, y1, x2, y2 in record.boxes.values():
            assert 0 <= x1 < x2 <= record.width and 0 <= y1 < y2 <= record.height
        right, left = record.boxes["right lung"], record.boxes["left lung"]
        assert right[2] <= left[2] and right[0] < left[0]  # patient's right on the image's left


def test_real_covid_boxes_are_lungs_only(data_dir):
    records = list(read_source("covid_lung_boxes", data_dir / "covid_lung_boxes"))
    assert len(records) == 609
    assert all(set(r.annotated) <= {"right lung", "left lung"} and not r.derived for r in records)
    assert sum(len(r.annotated) for r in records) == 1218
    pairs = [r.boxes for r in records if len(r.boxes) == 2]
    assert all(b["right lung"][0] < b["left lung"][0] for b in pairs)


def test_mimic_scene_graphs_from_the_published_zip(fixture_data, tmp_path):
    import shutil
    import zipfile

    root = tmp_path / "mimic_cxr"
    shutil.copytree(fixture_data / "mimic_cxr", root)
    folder = root / "chest-imagenome" / "silver_dataset" / "scene_graph"
    with zipfile.ZipFile(folder.with_suffix(".zip"), "w") as archive:
        for path in folder.glob("*.json"):
            archive.write(path, f"scene_graph/{path.name}")
    shutil.rmtree(folder)
    (record,) = read_source("mimic_cxr", root)
    assert record.boxes["right lung"] == (10, 20, 60, 140) and len(record.sentences) == 3


def test_iu_images_in_the_r2gen_layout(fixture_data, tmp_path):
    from fixtures.data_builder import draw_image

    draw_image(tmp_path / "CXR2_IM-0002" / "0.png", 50, 60)  # CXR2's frontal image is its first
    records = {r.study: r for r in read_source("iu_xray", fixture_data / "iu_xray", images=tmp_path)}
    assert records["CXR2"].image == tmp_path / "CXR2_IM-0002" / "0.png"
    assert (records["CXR2"].width, records["CXR2"].height) == (50, 60)
    assert records["CXR1"].image is None  # its frontal image is the second: 1.png is missing
