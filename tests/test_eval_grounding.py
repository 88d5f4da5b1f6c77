"""The grounded-report evaluation on constructed results: unsupported locations are counted,
nodule sensitivity / side / zone and false sentences, per-source specificity."""

from __future__ import annotations

from pathlib import Path

import pytest

from crrg.findings import LUNG_ZONES
from crrg.types import Evidence, ReportResult, Sentence
from train.eval_grounding import grounding_metrics
from train.finding_labels import FindingLabeler

ZONE_BOXES = dict(zip(LUNG_ZONES, [(100, 100, 400, 300), (100, 300, 400, 500), (100, 500, 400, 700),
                                   (600, 100, 900, 300), (600, 300, 900, 500), (600, 500, 900, 700)]))


def _result(image: str, *sentences: Sentence) -> ReportResult:
    return ReportResult(image=image, width=1024, height=1024, regions=(), report=" ".join(s.text for s in sentences),
                        labels={}, label_regions={}, sentences=tuple(sentences))


def _nodule(zone: str) -> Sentence:
    return Sentence(f"There is a nodule in the {zone}.", (zone,), "nodule", Evidence("region", probability=0.9))


@pytest.fixture()
def labeler(tmp_path: Path) -> FindingLabeler:
    (tmp_path / "jsrt_scr").mkdir()
    (tmp_path / "jsrt_scr" / "nodules.csv").write_text(
        "image,nodule,subtlety,size_mm,age,sex,x,y,malignancy,location,diagnosis\n"
        "images/JPCLN001.jpg,1,5,14,53,Male,700,200,malignant,l.upper lobe,cancer\n"
        "images/JPCLN002.jpg,1,2,14,53,Male,200,600,benign,r.lower lobe,granuloma\n"
        "images/JPCLN003.jpg,1,4,14,53,Male,250,400,benign,r.middle lobe,granuloma\n")
    return FindingLabeler(tmp_path)


def test_nodule_and_contract_figures(labeler: FindingLabeler) -> None:
    rows = [{"image": f"jsrt_scr/images/JPCLN00{i}.jpg", "source": "jsrt_scr", "width": 1024, "height": 1024,
             "labels": {"nodule": 1, "no finding": 0}, "abnormal": True} for i in (1, 2, 3)]
    rows.append({"image": "jsrt_scr/images/JPCNN001.jpg", "source": "jsrt_scr", "width": 1024, "height": 1024,
                 "labels": {"no finding": 1}, "abnormal": False})
    results = {
        rows[0]["image"]: _result(rows[0]["image"], _nodule("left upper lung zone")),  # right zone
        rows[1]["image"]: _result(rows[1]["image"], _nodule("left lower lung zone")),  # wrong side
        rows[2]["image"]: _result(rows[2]["image"]),  # missed
        rows[3]["image"]: _result(rows[3]["image"], _nodule("right mid lung zone"),  # a false sentence
                                  Sentence("Right lower lobe pneumonia.", (), "pneumonia", Evidence("image", 0.8))),
    }
    m = grounding_metrics(rows, results, labeler, {r["image"]: ZONE_BOXES for r in rows})
    assert m["unsupported_locations"] == 1 and m["n_sentences"] == 4
    nodules = m["nodules"]
    assert nodules["sensitivity_by_subtlety"]["3+"] == {"sensitivity": 0.5, "n": 2}
    assert nodules["sensitivity_by_subtlety"]["1-2"] == {"sensitivity": 1.0, "n": 1}
    assert nodules["side_accuracy"] == 0.5 and nodules["zone_accuracy"] == 0.5
    assert nodules["non_nodule_with_sentence"] == 1.0 and nodules["n_non_nodule"] == 1
    assert m["by_source"]["jsrt_scr"]["specificity"] == 0.0
    assert m["per_finding"]["nodule"]["recall"] == pytest.approx(2 / 3)


def test_tb_area_figures_from_expert_boxes_over_zone_boxes() -> None:
    """A TB box in the right upper zone: a report naming that zone hits; one naming only the left
    upper zone misses and names the clear side; an image without a sentence misses."""
    from train.eval_grounding import tb_area_metrics

    def truth(regions):
        return {"opacity": {"present": 1, "regions": regions}}

    def said(*regions):
        return {"opacity": Sentence("x", regions, "opacity", Evidence("region", probability=0.9))} if regions else {}

    rows = [{"image": k, "source": "tbx11k", "finding_boxes": [{"finding": "opacity", "box": [0, 0, 1, 1]}]}
            for k in ("hit", "wrong", "silent")] + [{"image": "nobox", "source": "kermany_pneumonia"}]
    stated = {"hit": said("right upper lung zone", "left upper lung zone"), "wrong": said("left upper lung zone"),
              "silent": said(), "nobox": said("right upper lung zone")}
    truths = {k: truth(["right upper lung zone"]) for k in ("hit", "wrong", "silent", "nobox")}
    m = tb_area_metrics(rows, stated, truths)
    assert m["n"] == 3 and m["named_in_a_boxed_zone"] == pytest.approx(1 / 3)
    assert m["n_one_sided"] == 3 and m["one_sided_also_named_on_clear_side"] == pytest.approx(2 / 3)
