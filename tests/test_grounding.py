"""The evidence contract: locations named vs evidence, the overlap rule, the report composer and
the stage-3 targets that must not borrow a side."""

from __future__ import annotations

import random

import numpy as np
import pytest
from grounding_fixture import ALL_TOPICS
from grounding_fixture import evidence as _evidence
from grounding_fixture import probs as _probs

from crrg.data.overlap import box_mask, region_overlap_labels
from crrg.findings import LUNG_ZONES, REGION_FINDINGS
from crrg.grounding import compose, measurement_sentence
from crrg.locations import is_supported, named_locations, unsupported_locations
from crrg.measurements import Measured
from crrg.regions import NUM_REGIONS, REGION_INDEX, REGIONS
from crrg.types import Evidence, Sentence


# ------------------------------------------------------------------------------ locations
@pytest.mark.parametrize("text, sides, zones", [
    ("There is a right lower lobe pneumonia.", {"right"}, {"lower"}),
    ("Bibasilar atelectasis.", {"right", "left"}, {"bibasilar"}),
    ("Opacity in both lung bases.", {"right", "left"}, {"bases"}),
    ("Heart size is within the upper limits of normal.", set(), set()),
    ("The lungs are clear.", set(), set()),
    ("Lingular opacity.", set(), {"lingular"}),
])
def test_named_locations(text: str, sides: set[str], zones: set[str]) -> None:
    named = named_locations(text)
    assert named.sides == sides and named.zones == zones


def test_a_sided_sentence_needs_region_evidence_on_that_side() -> None:
    text = "There is a right lower lobe pneumonia."
    assert not is_supported(text, (), "image")  # image-level evidence: no location allowed
    assert not is_supported(text, ("left lower lung zone",), "region")  # wrong side
    assert not is_supported(text, ("right upper lung zone",), "region")  # wrong zone
    assert not is_supported(text, ("right lung",), "region")  # side right, zone not evidenced
    assert is_supported(text, ("right lower lung zone",), "region")
    assert unsupported_locations("Bilateral opacities.", ("right lung",), "region").sides == {"left"}
    assert is_supported("Bilateral opacities.", ("right lung", "left lung"), "region")
    assert is_supported("Findings may represent pneumonia.", (), "image")


# ------------------------------------------------------------------------------ overlap rule
def test_overlap_rule_positive_negative_unknown() -> None:
    boxes = {"a": (0, 0, 100, 100), "b": (100, 0, 200, 100), "c": (0, 100, 100, 200)}
    small = box_mask((40, 40, 60, 60), 200, 200)  # a 20 px nodule inside "a"
    assert region_overlap_labels(small, boxes) == {"a": 1, "b": 0, "c": 0}
    straddle = box_mask((90, 40, 110, 60), 200, 200)  # half in "a", half in "b": both positive
    assert region_overlap_labels(straddle, boxes) == {"a": 1, "b": 1, "c": 0}
    large = box_mask((0, 0, 200, 99), 200, 200)  # a large opacity; a 1-px sliver would be unknown
    sliver = large.copy()
    sliver[100, 50] = True  # one pixel in "c": 1/10000 of its box and 1/19801 of the mask
    assert region_overlap_labels(sliver, boxes) == {"a": 1, "b": 1, "c": None}


# ------------------------------------------------------------------------------ composer
def test_region_finding_sentence_names_its_zone_and_carries_its_probability() -> None:
    ev = _evidence(region_findings={"nodule": _probs({"left upper lung zone": 0.9}),
                                    "opacity": _probs({}), "support device": _probs({})})
    out = compose(ev, {"nodule": 0.5, "opacity": 0.5, "support device": 0.5})
    [nodule] = [s for s in out.sentences if s.finding == "nodule"]
    assert nodule.text == "There is a nodule in the left upper lung zone."
    assert nodule.regions == ("left upper lung zone",)
    assert nodule.evidence == Evidence("region", probability=0.9)


def test_image_level_finding_names_no_location_and_decoder_findings_are_dropped() -> None:
    ev = _evidence(image_findings={"pneumonia": 0.8}, generated={
        "right lower lung zone": "There is a right lower lobe pneumonia.",  # a finding: no evidence
        "left lung": "The left lung is clear.",  # contradicts the image-level finding
        "spine": "No acute osseous abnormality.",
    })
    out = compose(ev, image_thresholds={"pneumonia": 0.5}, abnormality_topics=ALL_TOPICS)
    texts = [s.text for s in out.sentences]
    assert "Findings are consistent with pneumonia." in texts
    assert "No acute osseous abnormality." in texts
    assert not any("right" in t or "left" in t for t in texts)
    assert {why for _, why in out.dropped} >= {"states a finding without region-level evidence",
                                               "normal lung statement contradicts a lung finding"}
    for s in out.sentences:
        assert is_supported(s.text, s.regions, s.evidence.kind)
    [image] = [s for s in out.sentences if s.evidence.kind == "image"]
    assert image.regions == () and image.evidence.probability == pytest.approx(0.8)


def test_normal_statement_cites_its_region_and_a_flagged_region_gets_none() -> None:
    abnormal = [0.1] * NUM_REGIONS
    abnormal[REGION_INDEX["right costophrenic angle"]] = 0.9
    ev = _evidence(abnormal=abnormal, generated={
        "spine": "No acute osseous abnormality.",
        "right costophrenic angle": "The right costophrenic angle is sharp.",
    })
    out = compose(ev, abnormality_topics=ALL_TOPICS)
    assert [s.text for s in out.sentences] == ["No acute osseous abnormality."]
    assert out.sentences[0].regions == ("spine",)
    assert out.sentences[0].evidence == Evidence("region", probability=pytest.approx(0.9))


_MEASURED = Measured("cardiothoracic_ratio", 0.45, "Heart size is within normal limits (cardiothoracic ratio 0.45).", None)


def test_measurement_sentence_replaces_the_decoder_heart_sentence() -> None:
    ev = _evidence(generated={"cardiac silhouette": "The heart is normal in size."},
                   measurements=[measurement_sentence(_MEASURED)])
    out = compose(ev)
    assert [s.text for s in out.sentences] == [_MEASURED.text]
    assert out.sentences[0].evidence == Evidence("measurement", value=0.45, measurement="cardiothoracic_ratio")


def test_image_level_findings_beyond_pneumonia_read_without_location_and_are_never_said_twice() -> None:
    thresholds = {"pleural effusion": 0.5, "pneumothorax": 0.5, "edema": 0.5, "cardiomegaly": 0.5, "nodule": 0.5}
    ev = _evidence(image_findings={"pleural effusion": 0.7, "pneumothorax": 0.9, "edema": 0.2,
                                   "cardiomegaly": 0.8, "nodule": 0.9},
                   region_findings={"nodule": _probs({"left upper lung zone": 0.9}),
                                    "opacity": _probs({}), "support device": _probs({})},
                   generated={"right costophrenic angle": "No pleural effusion or pneumothorax.",
                              "spine": "No acute osseous abnormality."},
                   measurements=[measurement_sentence(_MEASURED)])
    out = compose(ev, {"nodule": 0.5, "opacity": 0.5, "support device": 0.5}, thresholds)
    texts = [s.text for s in out.sentences]
    image = [s for s in out.sentences if s.evidence.kind == "image"]
    assert {s.finding for s in image} == {"pleural effusion", "pneumothorax"}  # edema below threshold: silent
    assert all(s.regions == () and is_supported(s.text, (), "image") for s in image)
    assert "The heart appears enlarged." not in texts  # the measured heart size, with its value, says it
    assert _MEASURED.text in texts
    assert "Findings suggest a pulmonary nodule." not in texts  # the region-level nodule sentence says it
    assert "There is a nodule in the left upper lung zone." in texts
    assert "No pleural effusion or pneumothorax." not in texts  # would contradict the findings
    assert out.impression.startswith("Findings suggest a pneumothorax.")  # most urgent first


def test_every_sentence_kind_serialises_with_the_contract_fields() -> None:
    s = Sentence("There is a nodule in the right mid lung zone.", ("right mid lung zone",), "nodule",
                 Evidence("region", probability=0.71234))
    assert s.to_json() == {"text": s.text, "regions": ["right mid lung zone"], "finding": "nodule",
                           "evidence": {"kind": "region", "probability": 0.7123, "value": None, "measurement": None}}
    with pytest.raises(ValueError):
        Evidence("text")


# ------------------------------------------------------------------------------ targets
def test_image_level_abnormal_targets_name_no_location_and_never_borrow() -> None:
    from train.targets import SentenceMatcher

    pool = [
        {"text": "There is a right lower lobe pneumonia.", "regions": ["right lower lung zone"],
         "abnormal": True, "findings": ["pneumonia"]},
        {"text": "Airspace disease consistent with pneumonia.", "regions": ["right lung", "left lung"],
         "abnormal": True, "findings": ["pneumonia"]},
        {"text": "The lungs are clear.", "regions": ["right lung", "left lung"], "abnormal": False,
         "findings": ["no finding"]},
    ]
    matcher = SentenceMatcher(pool)
    record = {"labels": {"pneumonia": 1, "no finding": 0},
              "region_status": {r: "abnormal" for r in ("right lung", "left lung", "right lower lung zone",
                                                        "left lower lung zone")}}
    targets = dict(zip(REGIONS, matcher.sample(record, random.Random(0))))
    assert targets["right lung"] == "Airspace disease consistent with pneumonia."
    assert targets["right lower lung zone"] is None  # its own sentence names a side: labels do not locate it
    assert targets["left lower lung zone"] is None  # nothing borrowed from the right
    localised = dict(record, region_abnormal={"right lower lung zone": True})
    targets = dict(zip(REGIONS, matcher.sample(localised, random.Random(0))))
    assert targets["right lower lung zone"] == "There is a right lower lobe pneumonia."


def test_note_sentences_pair_with_their_own_image() -> None:
    from train.targets import note_sentences

    records = [{"image": "a.jpg", "patient": "p1", "split": "train", "text_kind": "clinical_notes",
                "text": "Chest x-ray showed an infiltrate in the upper lobe of the left lung. CT scan "
                        "showed nodules."},
               {"image": "b.jpg", "patient": "p1", "split": "train", "text_kind": "clinical_notes",
                "text": "Chest x-ray showed an infiltrate in the upper lobe of the left lung."}]
    lines = note_sentences(records, paired=True)
    assert [(line["image"], line["text"]) for line in lines] == [
        ("a.jpg", "Chest x-ray showed an infiltrate in the upper lobe of the left lung."),
        ("b.jpg", "Chest x-ray showed an infiltrate in the upper lobe of the left lung.")]
    assert "left upper lung zone" in lines[0]["regions"]
    assert len(note_sentences(records)) == 1 and note_sentences(records)[0]["image"] is None


def test_finding_labels_from_a_nodule_position(tmp_path) -> None:
    from train.finding_labels import FindingLabeler

    (tmp_path / "jsrt_scr").mkdir()
    (tmp_path / "jsrt_scr" / "nodules.csv").write_text(
        "image,nodule,subtlety,size_mm,age,sex,x,y,malignancy,location,diagnosis\n"
        "images/JPCLN001.jpg,1,5,14,53,Male,700,200,malignant,l.upper lobe,lung cancer\n")
    boxes = {z: b for z, b in zip(LUNG_ZONES, [(100, 100, 400, 300), (100, 300, 400, 500), (100, 500, 400, 700),
                                              (600, 100, 900, 300), (600, 300, 900, 500), (600, 500, 900, 700)])}
    labeler = FindingLabeler(tmp_path)
    row = {"image": "jsrt_scr/images/JPCLN001.jpg", "source": "jsrt_scr", "width": 1024, "height": 1024,
           "labels": {"nodule": 1, "no finding": 0}}
    target, known = labeler(row, boxes)
    j = REGION_FINDINGS.index("nodule")
    positive = {REGIONS[i] for i in range(NUM_REGIONS) if target[i, j] == 1 and known[i, j]}
    negative = {REGIONS[i] for i in range(NUM_REGIONS) if target[i, j] == 0 and known[i, j]}
    assert positive == {"left upper lung zone"} and negative == set(LUNG_ZONES) - positive
    normal = dict(row, image="jsrt_scr/images/JPCNN001.jpg", labels={"no finding": 1})
    target, known = labeler(normal, boxes)
    assert known[:, j].sum() == len(LUNG_ZONES) and target.sum() == 0
    np.testing.assert_array_equal(known[:, REGION_FINDINGS.index("support device")].numpy().any(), True)


def test_region_relative_names_only_zones_near_the_images_highest() -> None:
    """Opacity on one side: the clear side's zone is above threshold but far below the affected
    side's; with a relative share it is not named, and the evidence follows the text."""
    opacity = _probs({"right lower lung zone": 0.9, "right mid lung zone": 0.6, "left lower lung zone": 0.45})
    ev = _evidence(region_findings={"nodule": _probs({}), "opacity": opacity, "support device": _probs({})})
    thresholds = {"nodule": 0.5, "opacity": 0.4, "support device": 0.5}

    def opacity_regions(relative):
        out = compose(ev, thresholds, region_relative=relative)
        (sentence,) = [s for s in out.sentences if s.finding == "opacity"]
        assert not unsupported_locations(sentence.text, sentence.regions, sentence.evidence.kind)
        return set(sentence.regions)

    both = {"right lower lung zone", "right mid lung zone", "left lower lung zone"}
    assert opacity_regions(None) == both
    assert opacity_regions({"opacity": 0.6}) == {"right lower lung zone", "right mid lung zone"}
    assert opacity_regions({"opacity": 0.9}) == {"right lower lung zone"}
    assert opacity_regions({"nodule": 0.9}) == both  # another finding's share changes nothing
