"""train.report_quality on report lines as `python -m crrg report --out` writes them (new ones from
the composer, and old ones without an impression or a measurement name)."""

from __future__ import annotations

import json
from pathlib import Path

from crrg.grounding import NO_ACUTE_ASSESSED, ImageEvidence, compose, measurement_sentence
from crrg.measurements import heart_size
from crrg.regions import NUM_REGIONS, REGION_INDEX
from crrg.types import ReportResult
from train import report_quality

LONG = ("The visualized osseous structures of the thoracic spine show mild multilevel degenerative change "
        "with small anterior osteophytes at several levels and no acute fracture or destructive lesion "
        "is seen at any of the visualized levels.")  # 35 words, one topic (bones)


def _line(image: str, generated: dict[str, str], opacity: dict[str, float] | None = None, ctr: float = 0.45) -> dict:
    """A JSON line of the current pipeline for this evidence (ReportResult.to_json)."""
    probs = [0.0] * NUM_REGIONS
    for region, p in (opacity or {}).items():
        probs[REGION_INDEX[region]] = p
    ev = ImageEvidence(detected=[True] * NUM_REGIONS, abnormal=[0.1] * NUM_REGIONS,
                       region_findings={"opacity": probs}, generated=generated,
                       measurements=[measurement_sentence(heart_size(ctr, None))])
    out = compose(ev, {"opacity": 0.5})
    return ReportResult(image=image, width=100, height=100, regions=(), report=out.report, labels={},
                        label_regions={}, sentences=out.sentences, impression=out.impression,
                        not_assessed=out.not_assessed).to_json()


def _old(text: str, regions: list[str], finding: str | None = None, kind: str = "region", value=None) -> dict:
    """A sentence as the old code wrote it (no "measurement" in the evidence)."""
    return {"text": text, "regions": regions, "finding": finding,
            "evidence": {"kind": kind, "probability": None if value else 0.9, "value": value}}


OLD_LINE = {  # written before reports had an impression
    "image": "/data/jsrt_scr/images/JPCNN001.jpg", "report": "...",
    "sentences": [
        _old("There is an opacity in the right lower lung zone.", ["right lower lung zone"], "opacity"),
        _old("The lungs are clear.", ["right lung", "left lung"]),  # contradicts the opacity
        _old("No pleural effusion.", ["right costophrenic angle"]),
        _old("No pleural effusion or pneumothorax.", ["left costophrenic angle"]),  # effusion twice
        _old("The heart is normal in size.", ["cardiac silhouette"]),  # heart twice, with the CTR
        _old("The heart size is normal (cardiothoracic ratio 0.47); the view is not known.",
             ["cardiac silhouette", "right lung", "left lung"], kind="measurement", value=0.47),
        _old("Right shoulder: 3 images.", ["right clavicle"]),  # not about the chest
        _old("The XXXX XXXX are intact.", ["spine"]),  # malformed
        _old(LONG, ["spine"]),
    ],
}
GENERATED = {"right lung": "The lungs are clear.", "right costophrenic angle": "No pleural effusion.",
             "left costophrenic angle": "No pleural effusion or pneumothorax.",
             "cardiac silhouette": "The heart is normal in size.", "abdomen": "No free intraperitoneal air.",
             "spine": "No acute bony abnormality."}


def test_counts_of_an_old_line_without_impression() -> None:
    sentences = [report_quality._sentence(s) for s in OLD_LINE["sentences"]]
    assert sentences[5].evidence.measurement == "cardiothoracic_ratio"
    assert report_quality.report_counts(sentences) == {
        "topics_twice": 2, "non_chest": 1, "malformed": 1, "contradictions": 1, "long_sentences": 1}
    figures = report_quality.quality([OLD_LINE])
    assert figures["mean_impression_words"] == 0 and figures["no_acute_impressions"] == 0
    assert figures["mean_sentences"] == 9
    assert figures["mean_words"] == sum(len(s["text"].split()) for s in OLD_LINE["sentences"])


def test_lines_of_the_current_composer_count_zero() -> None:
    normal = _line("/data/a.png", GENERATED)
    sick = _line("/data/b.png", GENERATED, opacity={"right lower lung zone": 0.9})
    assert normal["impression"] == NO_ACUTE_ASSESSED and sick["impression"] == "Opacity in the right lower lung zone."
    figures = report_quality.quality([normal, sick])
    assert figures["totals"] == dict.fromkeys(report_quality.COUNTS, 0)
    assert figures["no_acute_impressions"] == 1
    assert figures["mean_impression_words"] == (8 + 7) / 2
    both = report_quality.quality([normal, sick, OLD_LINE])
    assert both["reports_with"] == {"topics_twice": 1, "non_chest": 1, "malformed": 1, "contradictions": 1,
                                    "long_sentences": 1}
    texts = {s["text"] for line in (normal, sick, OLD_LINE) for s in line["sentences"]}
    assert both["distinct_sentences"] == len(texts)
    other_ctr = _line("/data/c.png", GENERATED, ctr=0.47)
    three = report_quality.quality([normal, sick, other_ctr])
    assert three["distinct_sentences"] == three["distinct_without_numbers"] + 1  # 0.45 and 0.47


def test_main_reads_report_lines_and_tags_their_source(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rows = [{"image": "jsrt_scr/images/JPCNN001.jpg", "source": "jsrt_scr", "split": "test"},
            {"image": "kermany/test/NORMAL/a.png", "source": "kermany_pneumonia", "split": "test"}]
    (prepared / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reports = tmp_path / "reports.jsonl"
    lines = [OLD_LINE, _line("/data/kermany/test/NORMAL/a.png", GENERATED),
             {"image": "/data/broken.png", "error": "not a readable image"}]
    reports.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "q.json"
    report_quality.main([str(reports), "--prepared", str(prepared), "--out", str(out), "--no-nlg"])
    figures = json.loads(out.read_text())
    assert figures["all"]["reports"] == 2 and figures["splits"] == {"test": 2}
    assert figures["by_source"]["jsrt_scr"]["totals"]["non_chest"] == 1
    assert figures["by_source"]["kermany_pneumonia"]["totals"] == dict.fromkeys(report_quality.COUNTS, 0)


def test_iu_normal_reports_keep_reports_without_an_abnormal_sentence(tmp_path: Path) -> None:
    rows = [{"source": "iu_xray", "split": "test", "report": "CXR1", "index": 1, "text": "No effusion.", "abnormal": False},
            {"source": "iu_xray", "split": "test", "report": "CXR1", "index": 0, "text": "Lungs clear.", "abnormal": False},
            {"source": "iu_xray", "split": "test", "report": "CXR2", "index": 0, "text": "Cardiomegaly.", "abnormal": True},
            {"source": "iu_xray", "split": "train", "report": "CXR3", "index": 0, "text": "Lungs clear.", "abnormal": False},
            {"source": "mimic_cxr", "split": "test", "report": "m1", "index": 0, "text": "Clear.", "abnormal": False}]
    (tmp_path / "sentences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert report_quality.iu_normal_reports(tmp_path) == {"test": ["Lungs clear. No effusion."],
                                                         "train": ["Lungs clear."]}


def test_image_statements_count_per_source_and_group() -> None:
    def line(source: str, labels: dict, findings: list[str]) -> dict:
        sentences = [{"text": f"Findings suggest {f}.", "regions": [], "finding": f,
                      "evidence": {"kind": "image", "probability": 0.9}} for f in findings]
        sentences.append({"text": "There is an opacity in the right lower lung zone.", "regions": ["right lower lung zone"],
                          "finding": "opacity", "evidence": {"kind": "region", "probability": 0.8}})
        return {"source": source, "labels": labels, "sentences": sentences}

    records = [line("kermany_pneumonia", {"pneumonia": 1, "no finding": 0}, ["pneumothorax", "edema"]),
               line("kermany_pneumonia", {"pneumonia": 1, "no finding": 0}, ["pneumothorax"]),
               line("kermany_pneumonia", {"no finding": 1}, []),
               line("nih_cxr14", {"no finding": 1}, ["mass"]),
               {"source": "jsrt_scr", "labels": None, "sentences": []}]  # unlabelled: not counted
    out = report_quality.image_statements(records)
    assert set(out) == {"kermany_pneumonia", "nih_cxr14"}
    assert out["kermany_pneumonia"]["abnormal"] == {"reports": 2, "any": 2, "by_finding": {"edema": 1, "pneumothorax": 2}}
    assert out["kermany_pneumonia"]["normal"] == {"reports": 1, "any": 0, "by_finding": {}}
    assert out["nih_cxr14"]["normal"]["by_finding"] == {"mass": 1}  # region-level opacity never counted


def test_absent_statements_count_films_told_a_finding_is_absent_per_source() -> None:
    def line(source: str, labels: dict, sentences=(), indeterminate=()) -> dict:
        return {"source": source, "labels": labels, "indeterminate": list(indeterminate),
                "sentences": [{"text": t, "finding": None, "evidence": {"kind": k}} for t, k in sentences]}

    records = [
        line("nih_cxr14", {"pleural effusion": 1}, [("There is no pleural effusion.", "image")]),
        line("nih_cxr14", {"no finding": 1}, indeterminate=["pleural effusion", "pneumonia"]),
        line("kermany_pneumonia", {"no finding": 1}, [("No pleural effusion.", "region"),
                                                      ("There is no radiographic evidence of pneumonia.", "image")]),
        line("kermany_pneumonia", {"pneumonia": 1}, [("Heart size is normal (cardiothoracic ratio 0.45).",
                                                      "measurement")]),
        {"source": None, "labels": None, "sentences": []},  # an image the prepared folder does not know
    ]
    out = report_quality.absent_statements(records)
    assert out["pleural effusion"] == {"nih_cxr14": {  # Kermany does not assess effusions
        "negatives": 1, "negatives_indeterminate": 1, "negatives_told_absent": 0,
        "positives": 1, "positives_indeterminate": 0, "positives_told_absent": 1}}
    assert out["pneumonia"]["kermany_pneumonia"] == {
        "negatives": 1, "negatives_indeterminate": 0, "negatives_told_absent": 1,
        "positives": 1, "positives_indeterminate": 0, "positives_told_absent": 0}
    assert out["pneumonia"]["nih_cxr14"]["negatives_indeterminate"] == 1
