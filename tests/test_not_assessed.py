"""Normal statements only where evidence supports them: a decoder statement (region evidence)
only on topics region-level evidence assesses, an image-level head's "absent" statement only
below its rule-out probability; and the report names what it leaves open (the typed
``not_assessed`` and ``indeterminate``, and their report lines)."""

from __future__ import annotations

import json

from grounding_fixture import ALL_TOPICS, evidence, probs

from crrg.findings import GroundingConfig
from crrg.grounding import NO_ACUTE, NO_ACUTE_ASSESSED, assessed_topics, compose, measurement_sentence
from crrg.measurements import heart_size
from crrg.types import ReportResult

NORMALS = {
    "right lung": "The lungs are clear.",
    "left costophrenic angle": "No pneumothorax or pleural effusion.",
    "right costophrenic angle": "No pleural effusion.",
    "spine": "No acute bony abnormality.",
    "mediastinum": "The trachea is midline.",
}
EFFUSION = {"pleural effusion": 0.5}  # the image-level head's threshold
RULE_OUT = {"pleural effusion": 0.1}


def _texts(out) -> list[str]:
    return [s.text for s in out.sentences]


def test_the_default_model_assesses_the_lungs_only_through_its_abnormality_labels() -> None:
    assert GroundingConfig().abnormality_topics == ("lungs",) and GroundingConfig().rule_out == {}
    assert assessed_topics(evidence(), GroundingConfig().abnormality_topics) == {"lungs"}


def test_region_heads_and_the_measured_heart_assess_topics_image_heads_do_not() -> None:
    ev = evidence(region_findings={"support device": probs({})}, image_findings={"pleural effusion": 0.01},
                  measurements=[measurement_sentence(heart_size(0.45, "PA"))])
    assert assessed_topics(ev, ("lungs",)) == {"lungs", "devices", "heart"}
    out = compose(ev, image_thresholds=EFFUSION, rule_out=RULE_OUT)
    assert "pleural effusion" not in out.not_assessed  # its head spoke: "There is no pleural effusion."
    assert "heart" not in out.not_assessed and "pneumothorax" in out.not_assessed


def test_decoder_statements_on_topics_without_region_evidence_are_dropped_and_listed() -> None:
    out = compose(evidence(generated=NORMALS, image_findings={"pleural effusion": 0.05}),
                  image_thresholds=EFFUSION, rule_out=RULE_OUT)
    assert _texts(out) == ["The lungs are clear.", "There is no pleural effusion."]
    [effusion] = [s for s in out.sentences if "effusion" in s.text]
    assert effusion.evidence.kind == "image" and effusion.regions == () and effusion.finding is None
    why = dict(out.dropped)
    assert why["No pneumothorax or pleural effusion."] == \
        "normal statement on pleural effusion, pneumothorax: no region-level evidence for it"
    assert why["No pleural effusion."] == "normal statement on pleural effusion: no region-level evidence for it"
    assert why["No acute bony abnormality."] == "normal statement on bones: no region-level evidence for it"
    assert why["The trachea is midline."] == "normal statement on mediastinum: no region-level evidence for it"
    assert out.not_assessed == ("pneumothorax", "heart", "mediastinum", "hila", "bones", "devices",
                                "upper abdomen", "diaphragm")
    assert out.indeterminate == () and out.impression == NO_ACUTE_ASSESSED
    assert out.report.splitlines() == [
        "The lungs are clear. There is no pleural effusion.", f"Impression: {NO_ACUTE_ASSESSED}",
        "Not assessed by this model: pneumothorax, heart, mediastinum, hila, bones, devices, upper abdomen, "
        "diaphragm."]


def test_an_absent_statement_needs_the_rule_out_probability_and_between_it_is_indeterminate() -> None:
    def run(p: float, rule_out: dict[str, float] | None = RULE_OUT):
        ev = evidence(image_findings={"pleural effusion": p}, generated={"right lung": "The lungs are clear."})
        return compose(ev, image_thresholds=EFFUSION, rule_out=rule_out)

    assert "There is no pleural effusion." in _texts(run(0.09))
    for undecided in (run(0.1), run(0.3), run(0.01, rule_out={})):  # at the limit, above it, no limit
        assert _texts(undecided) == ["The lungs are clear."] and undecided.indeterminate == ("pleural effusion",)
        assert "Indeterminate (neither stated nor ruled out): pleural effusion." in undecided.report.splitlines()
        assert undecided.impression == NO_ACUTE_ASSESSED
    stated = run(0.7)
    assert "Findings suggest a pleural effusion." in _texts(stated) and stated.indeterminate == ()


def test_a_model_whose_abnormality_labels_cover_every_topic_keeps_them_all() -> None:
    out = compose(evidence(generated=NORMALS), abnormality_topics=ALL_TOPICS)
    assert set(_texts(out)) == set(NORMALS.values()) - {"No pleural effusion."}  # absorbed by the combined one
    assert out.not_assessed == () and out.indeterminate == () and out.impression == NO_ACUTE
    assert "Not assessed" not in out.report and "Indeterminate" not in out.report


def test_findings_are_reported_whatever_topics_are_assessed() -> None:
    ev = evidence(region_findings={"opacity": probs({"left lower lung zone": 0.9})}, generated=NORMALS)
    out = compose(ev, {"opacity": 0.5}, abnormality_topics=())
    assert _texts(out) == ["There is an opacity in the left lower lung zone."]
    assert out.impression == "Opacity in the left lower lung zone."
    assert "lungs" not in out.not_assessed and "pneumothorax" in out.not_assessed


def test_the_result_json_carries_what_the_report_leaves_open() -> None:
    ev = evidence(image_findings={"pleural effusion": 0.3}, generated={"right lung": "The lungs are clear."})
    out = compose(ev, image_thresholds=EFFUSION, rule_out=RULE_OUT)
    result = ReportResult(image="a.png", width=10, height=10, regions=(), report=out.report, labels={},
                          label_regions={}, sentences=out.sentences, impression=out.impression,
                          not_assessed=out.not_assessed, indeterminate=out.indeterminate)
    line = json.loads(json.dumps(result.to_json()))
    assert line["indeterminate"] == ["pleural effusion"] and line["not_assessed"][0] == "pneumothorax"
    assert line["report"].splitlines()[-2:] == [
        "Indeterminate (neither stated nor ruled out): pleural effusion.",
        "Not assessed by this model: " + ", ".join(line["not_assessed"]) + "."]
