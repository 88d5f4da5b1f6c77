"""Normal statements only on assessed topics: a report says "No pneumothorax." only when some
evidence in the image looks for a pneumothorax, and names what it did not assess (the line
"Not assessed by this model: ..." and the typed ``not_assessed``)."""

from __future__ import annotations

from grounding_fixture import ALL_TOPICS, evidence, probs

from crrg.findings import GroundingConfig
from crrg.grounding import NO_ACUTE, NO_ACUTE_ASSESSED, assessed_topics, compose, measurement_sentence
from crrg.measurements import heart_size


NORMALS = {
    "right lung": "The lungs are clear.",
    "left costophrenic angle": "No pneumothorax or pleural effusion.",
    "right costophrenic angle": "No pleural effusion.",
    "spine": "No acute bony abnormality.",
    "mediastinum": "The trachea is midline.",
}


def _texts(out) -> list[str]:
    return [s.text for s in out.sentences]


def test_the_default_model_assesses_the_lungs_only_through_its_abnormality_labels() -> None:
    assert GroundingConfig().abnormality_topics == ("lungs",)
    assert assessed_topics(evidence(), GroundingConfig().abnormality_topics) == {"lungs"}


def test_topics_come_from_the_heads_the_image_was_scored_by_and_the_measured_heart() -> None:
    ev = evidence(region_findings={"support device": probs({})}, image_findings={"pleural effusion": 0.1},
                  measurements=[measurement_sentence(heart_size(0.45, "PA"))])
    assert assessed_topics(ev, ("lungs",)) == {"lungs", "devices", "pleural effusion", "heart"}


def test_normal_statements_on_unassessed_topics_are_dropped_and_listed() -> None:
    out = compose(evidence(generated=NORMALS, image_findings={"pleural effusion": 0.1}),
                  image_thresholds={"pleural effusion": 0.5})
    assert _texts(out) == ["The lungs are clear.", "No pleural effusion."]
    why = dict(out.dropped)
    assert why["No pneumothorax or pleural effusion."] == "normal statement on pneumothorax: no head assesses it"
    assert why["No acute bony abnormality."] == "normal statement on bones: no head assesses it"
    assert why["The trachea is midline."] == "normal statement on mediastinum: no head assesses it"
    assert out.not_assessed == ("pneumothorax", "heart", "mediastinum", "hila", "bones", "devices",
                                "upper abdomen", "diaphragm")
    assert out.impression == NO_ACUTE_ASSESSED
    assert out.report.splitlines() == [
        "The lungs are clear. No pleural effusion.", f"Impression: {NO_ACUTE_ASSESSED}",
        "Not assessed by this model: pneumothorax, heart, mediastinum, hila, bones, devices, upper abdomen, "
        "diaphragm."]


def test_a_model_whose_abnormality_labels_cover_every_topic_keeps_them_all() -> None:
    out = compose(evidence(generated=NORMALS), abnormality_topics=ALL_TOPICS)
    assert set(_texts(out)) == set(NORMALS.values()) - {"No pleural effusion."}  # absorbed by the combined one
    assert out.not_assessed == () and out.impression == NO_ACUTE
    assert "Not assessed" not in out.report


def test_findings_are_reported_whatever_topics_are_assessed() -> None:
    ev = evidence(region_findings={"opacity": probs({"left lower lung zone": 0.9})}, generated=NORMALS)
    out = compose(ev, {"opacity": 0.5}, abnormality_topics=())
    assert _texts(out) == ["There is an opacity in the left lower lung zone."]
    assert out.impression == "Opacity in the left lower lung zone."
    assert "lungs" not in out.not_assessed and "pneumothorax" in out.not_assessed
