"""Report sentences: splitting, regions, normal/abnormal status, findings (rules in vocab_rules)."""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from pathlib import Path

import pytest

from crrg.data import vocab_rules
from crrg.data.sentences import (
    SentenceAnalysis,
    analyse_sentence,
    extract_findings,
    is_abnormal,
    label_report,
    sentence_regions,
    split_sentences,
)
from crrg.labels import FINDINGS
from crrg.regions import REGION_INDEX, REGIONS

FIXTURE = Path(__file__).parent / "fixtures" / "iu_sentence_labels.csv"
log = logging.getLogger(__name__)
LUNGS = ["right lung", "left lung"]
ANGLES = ["right costophrenic angle", "left costophrenic angle"]


# ------------------------------------------------------------------------------------ splitting
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Heart size normal. No effusion.", ["Heart size normal.", "No effusion."]),
        ("A 1.5 cm nodule. Heart is normal.", ["A 1.5 cm nodule.", "Heart is normal."]),
        ("Normal chest x-XXXX. XXXX. XXXX XXXX.", ["Normal chest x-XXXX."]),
        ("1. No acute disease. 2. Mild cardiomegaly.", ["No acute disease.", "Mild cardiomegaly."]),
        ("Vascularity normal.Calcified aorta.", ["Vascularity normal.", "Calcified aorta."]),
        ("Discussed with Dr. XXXX at 3 p.m. on XXXX. Lungs clear.",
         ["Discussed with Dr. XXXX at 3 p.m. on XXXX.", "Lungs clear."]),
        ("The previously<BR>described deformity. Lungs clear", ["The previously described deformity.", "Lungs clear"]),
        ("the lungs are clear . no effusion .", ["the lungs are clear .", "no effusion ."]),
        ("FINDINGS: The lungs are\nclear.\n\nIMPRESSION: No acute process", ["The lungs are clear.", "No acute process"]),
        ("Small 3.3 mm right-sided pneumothorax?  Follow up.", ["Small 3.3 mm right-sided pneumothorax?", "Follow up."]),
        ("", []),
        (None, []),
        (" . . ", []),
    ],
)
def test_split_sentences(text: str | None, expected: list[str]) -> None:
    assert split_sentences(text) == expected


# ------------------------------------------------------------------------------- normal/abnormal
@pytest.mark.parametrize(
    ("sentence", "abnormal"),
    [
        ("No pleural effusion.", False),
        ("Small left effusion.", True),
        ("No evidence of focal consolidation, pneumothorax, or effusion.", False),
        ("No focal consolidation, large pleural effusion, or pneumothorax is identified.", False),
        ("Heart size is normal.", False),
        ("Mild cardiomegaly.", True),
        ("The heart is not enlarged.", False),
        ("The cardiac silhouette is enlarged.", True),
        ("Stable cardiomegaly.", True),
        ("Heart size is stable.", False),
        ("Unchanged calcified granuloma in the right upper lobe.", True),
        ("Lungs are clear without focal consolidation, effusion, or pneumothorax.", False),
        ("Negative for pneumothorax or pleural effusion.", False),
        ("The lungs are free of focal airspace disease.", False),
        ("Cardiomediastinal silhouette is within normal limits.", False),
        ("The mediastinum is unremarkable.", False),
        ("There is no focal air space opacity to suggest a pneumonia.", False),
        ("There are no XXXX of a pleural effusion.", False),
        ("XXXX XXXX are intact.", False),
        ("Degenerative changes of the thoracic spine.", True),
        ("Pneumothorax cannot be excluded.", True),
        ("Possible small left pleural effusion.", True),
        ("Previously seen left effusion has resolved.", False),
        ("No change in the small left pleural effusion.", True),
        ("No pneumothorax, mild cardiomegaly.", True),
        ("Pacemaker in place.", False),
        ("Low lung volumes.", True),
        ("Lungs are hyperexpanded.", True),
        ("Tortuous thoracic aorta.", True),
        ("No acute cardiopulmonary abnormality.", False),
    ],
)
def test_is_abnormal(sentence: str, abnormal: bool) -> None:
    assert is_abnormal(sentence) is abnormal


# ------------------------------------------------------------------------------------- regions
@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Heart size is normal.", ["cardiac silhouette"]),
        ("Cardiomediastinal silhouette is within normal limits.", ["mediastinum", "cardiac silhouette"]),
        ("The lungs are clear.", LUNGS),
        ("Right base opacity.", ["right lower lung zone"]),
        ("Bibasilar atelectasis.", ["right lower lung zone", "left lower lung zone"]),
        ("No pleural effusion.", ANGLES),
        ("Small left pleural effusion.", ["left costophrenic angle"]),
        ("Right greater than left pleural effusions.", ANGLES),
        ("No pneumothorax.", LUNGS),
        ("No pneumothorax or pleural effusion.", ["right lung", ANGLES[0], "left lung", ANGLES[1]]),
        ("Osseous structures are intact.", ["spine"]),
        ("Degenerative changes of the thoracic vertebrae.", ["spine"]),
        ("Tortuous aorta with calcified aortic knob.", ["aortic arch"]),
        ("Hilar contours are normal.", ["right hilar structures", "left hilar structures"]),
        ("Elevated right hemidiaphragm.", ["right hemidiaphragm"]),
        ("Old healed fracture of the left clavicle.", ["left clavicle"]),
        ("Calcified granuloma in the left upper lobe.", ["left upper lung zone"]),
        ("Stable calcified granuloma in left base.", ["left lower lung zone"]),
        ("Right upper and lower lobe opacities.", ["right upper lung zone", "right lower lung zone"]),
        ("Right apical pleural thickening.", ["right apical zone"]),
        ("Lingular atelectasis.", ["left mid lung zone"]),
        ("Opacity at the base on the right.", ["right lower lung zone"]),
        ("Right internal jugular catheter with tip in the cavoatrial junction.", ["cavoatrial junction"]),
        ("Endotracheal tube tip 3 cm above the carina.", ["trachea", "carina"]),
        ("No free air under the diaphragm.", ["right hemidiaphragm", "left hemidiaphragm", "abdomen"]),
        ("Right paratracheal stripe is normal.", ["upper mediastinum"]),
        ("No acute disease.", []),
        ("Normal chest x-XXXX.", []),
    ],
)
def test_sentence_regions(sentence: str, expected: list[str]) -> None:
    assert sentence_regions(sentence) == sorted(expected, key=REGION_INDEX.__getitem__)


def test_region_rules_name_real_regions() -> None:
    for rule in vocab_rules.REGION_RULES:
        re.compile(rule.pattern)
        for region in rule.regions:
            for side in ("right", "left"):
                assert region.format(side=side) in REGION_INDEX, (rule.pattern, region)
    for pattern, labels, kind in vocab_rules.TERMS:
        re.compile(pattern)
        assert kind in {"abnormal", "device", "context"}
        assert set(labels) <= set(FINDINGS) - {"no finding"}


# ------------------------------------------------------------------------------------ findings
@pytest.mark.parametrize(
    ("sentence", "positive", "uncertain", "negated"),
    [
        ("Mild cardiomegaly.", ["cardiomegaly"], [], []),
        ("The heart is not enlarged.", [], [], ["cardiomegaly"]),
        ("Mildly enlarged cardiac silhouette.", ["cardiomegaly"], [], []),
        ("Widened mediastinum.", ["enlarged cardiomediastinum"], [], []),
        ("No pneumothorax or pleural effusion.", [], [], ["pneumothorax", "pleural effusion"]),
        ("Right lower lobe opacity which may represent pneumonia.", ["lung opacity"], ["pneumonia"], []),
        ("Possible small left effusion.", [], ["pleural effusion"], []),
        ("Subsegmental atelectasis versus infiltrate.", [], ["lung opacity", "atelectasis"], []),
        ("Calcified granuloma in the right upper lobe.", ["lung lesion", "nodule"], [], []),
        ("Right upper lobe mass.", ["lung lesion"], [], []),
        ("Findings consistent with COVID-19 pneumonia.", ["pneumonia", "covid-19"], [], []),
        ("Interstitial edema.", ["edema"], [], []),
        ("Old right rib fractures.", ["fracture"], [], []),
        ("Left chest wall pacemaker with leads in the right atrium.", ["support devices"], [], []),
        ("Right apical pleural thickening.", ["pleural other"], [], []),
        ("No focal consolidation.", [], [], ["consolidation"]),
    ],
)
def test_sentence_findings(sentence: str, positive: list[str], uncertain: list[str], negated: list[str]) -> None:
    analysis = analyse_sentence(sentence)
    order = FINDINGS.index
    assert list(analysis.findings) == sorted(positive, key=order)
    assert list(analysis.uncertain) == sorted(uncertain, key=order)
    assert list(analysis.negated) == sorted(negated, key=order)


def test_extract_findings_report_level() -> None:
    normal = "Heart size is normal. The lungs are clear. No pneumothorax or pleural effusion."
    assert extract_findings(normal) == ["no finding"]
    abnormal = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax."
    assert extract_findings(abnormal) == ["cardiomegaly", "pleural effusion"]
    hedged = "Heart size normal. Possible small left effusion."
    assert extract_findings(hedged) == []
    assert extract_findings(hedged, uncertain_as_positive=True) == ["pleural effusion"]
    devices = "Pacemaker in place. Lungs are clear."
    assert extract_findings(devices) == ["no finding", "support devices"]
    # abnormal without a CheXpert label: not "no finding"
    assert extract_findings("Degenerative changes of the spine. Lungs are clear.") == []
    assert extract_findings("") == []
    assert extract_findings("XXXX.") == []
    labels = label_report("No pneumothorax. Possible effusion. Mild cardiomegaly.")
    assert labels == {"cardiomegaly": 1, "pneumothorax": 0, "pleural effusion": -1}


def test_analysis_is_frozen_and_consistent() -> None:
    analysis = analyse_sentence("Small left pleural effusion.")
    assert isinstance(analysis, SentenceAnalysis)
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysis.abnormal = False  # type: ignore[misc]
    assert analysis.regions == tuple(sentence_regions(analysis.text))
    assert analysis.abnormal == is_abnormal(analysis.text)


# ------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def iu_reports(data_dir: Path) -> dict[str, list[str]]:
    from train.sentence_coverage import iu_sentences

    try:
        return iu_sentences(data_dir)
    except FileNotFoundError as error:
        pytest.skip(str(error))


def test_region_coverage_on_iu_reports(iu_reports: dict[str, list[str]]) -> None:
    sentences = [s for ss in iu_reports.values() for s in ss]
    assert len(iu_reports) > 3000 and len(sentences) > 15000
    regions = [sentence_regions(s) for s in sentences]
    coverage = sum(bool(r) for r in regions) / len(sentences)
    log.info("IU region coverage %.3f over %d sentences", coverage, len(sentences))
    assert coverage >= 0.80, f"region coverage {coverage:.3f} < 0.80"
    assert all(r == sorted(r, key=REGIONS.index) for r in regions)


def _read_fixture() -> list[dict[str, str]]:
    with FIXTURE.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 100
    assert not any("text" in key for key in rows[0]), "the fixture must not hold report text"
    return rows


def test_hand_labelled_precision(iu_reports: dict[str, list[str]]) -> None:
    rows = _read_fixture()
    status_ok = predicted = predicted_ok = findings_ok = 0
    for row in rows:
        sentences = iu_reports[row["report_id"]]
        index = int(row["sentence_index"])
        assert index < len(sentences), f"{row['report_id']} has no sentence {index}"
        analysis = analyse_sentence(sentences[index])
        expected_regions = set(filter(None, row["regions"].split(";")))
        assert expected_regions <= set(REGIONS)
        status_ok += analysis.abnormal == bool(int(row["abnormal"]))
        predicted += len(analysis.regions)
        predicted_ok += len(set(analysis.regions) & expected_regions)
        findings_ok += set(analysis.findings) == set(filter(None, row["findings"].split(";")))
    status, precision, findings = status_ok / len(rows), predicted_ok / predicted, findings_ok / len(rows)
    log.info("hand labels: status %.3f, region precision %.3f, findings exact %.3f (n=%d)",
             status, precision, findings, len(rows))
    assert status >= 0.90, f"status accuracy {status:.3f}"
    assert precision >= 0.85, f"region precision {precision:.3f}"
    assert findings >= 0.80, f"findings exact-match {findings:.3f}"
