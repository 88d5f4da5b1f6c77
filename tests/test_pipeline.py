"""The whole pipeline on a tiny random model: result structure, modes, save/load, variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import crrg
from crrg.config import to_dict
from crrg.model import CRRGConfig, CRRGModel, config_variants, get_config
from crrg.pipeline import Pipeline, parse_prompts
from crrg.regions import REGIONS
from pipeline_fixture import chest_like_png, tiny_model


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    torch.set_num_threads(1)
    return Pipeline(tiny_model(), device="cpu")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chest_like_png(tmp_path_factory.mktemp("img") / "chest.png")


def test_result_lists_all_regions_with_boxes_in_original_pixels(pipe: Pipeline, image: Path) -> None:
    result = pipe(image, prompts="pneumonia, nodule")
    assert [r.name for r in result.regions] == list(REGIONS)
    assert (result.width, result.height) == (300, 240)
    found = [r for r in result.regions if r.box is not None]
    assert len(found) >= 3
    for r in found:
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 <= x2 <= 300 and 0 <= y1 <= y2 <= 240
        assert 0 <= r.selection_prob <= 1 and 0 <= r.abnormal_prob <= 1
        assert r.selected == (r.selection_prob > pipe.config.selection_threshold)
        assert (r.sentence is not None) == r.selected
    assert set(result.labels) == {"pneumonia", "nodule"}
    assert all(0 < p < 1 for p in result.labels.values())
    assert set(result.label_regions) == {"pneumonia", "nodule"}
    assert all(v in REGIONS for v in result.label_regions.values())
    assert {"preprocess", "detect", "generate", "clip", "total"} <= set(result.timings)
    assert result.disclaimer == crrg.DISCLAIMER


def test_report_is_its_sentences_and_every_sentence_keeps_the_evidence_contract(pipe: Pipeline, image: Path) -> None:
    result = pipe(image, prompts=[])
    assert result.labels == {}
    for _, sentence in result.region_sentences:
        assert sentence.strip()
    findings = " ".join(s.text for s in result.sentences)
    open_lines = "".join(f"\n{name}: {', '.join(items)}." for name, items in (
        ("Indeterminate (neither stated nor ruled out)", result.indeterminate),
        ("Not assessed by this model", result.not_assessed)) if items)
    assert result.report == (f"{findings}\nImpression: {result.impression}{open_lines}" if result.sentences else "")
    assert bool(result.impression) == bool(result.sentences)
    # the tiny model's abnormality head covers the lungs only, and it has no finding heads
    assert {"pneumothorax", "bones", "mediastinum"} <= set(result.not_assessed) and "lungs" not in result.not_assessed
    from crrg.report import topic_keys

    for s in result.sentences:
        if s.finding is None and s.evidence.kind != "measurement":
            assert not {t for t, _ in topic_keys(s.text)} & set(result.not_assessed), s.text
    from crrg.locations import is_supported
    from crrg.report import normalize_sentence

    written = {normalize_sentence(t) for _, t in result.region_sentences}
    for s in result.sentences:
        assert is_supported(s.text, s.regions, s.evidence.kind)
        assert s.evidence.kind in ("region", "measurement", "image")
        if s.evidence.kind == "region" and s.finding is None:  # a kept decoder statement
            assert s.text in written and s.regions
            assert all(result.region(r).box is not None for r in s.regions)
    assert set(result.measurements) == {"cardiothoracic_ratio"}
    line = json.loads(json.dumps(result.to_json()))
    assert [x["text"] for x in line["sentences"]] == [s.text for s in result.sentences]
    assert line["impression"] == result.impression and line["report"] == result.report
    assert line["not_assessed"] == list(result.not_assessed) and line["indeterminate"] == list(result.indeterminate)
    assert set(line["measurements"]) == {"cardiothoracic_ratio"}
    assert result.findings_text == findings


def test_findings_field_holds_every_finding_with_region_maxima() -> None:
    from crrg.types import RegionResult, ReportResult

    def region(name: str, **findings: float) -> RegionResult:
        return RegionResult(name, (0, 0, 1, 1), 0.9, 0.5, 0.1, False, False, findings=findings)

    result = ReportResult(
        image="x", width=1, height=1, report="", labels={}, label_regions={},
        regions=(region("right upper lung zone", opacity=0.2, nodule=0.1),
                 region("left upper lung zone", opacity=0.7, nodule=0.05)),
        image_findings={"pneumonia": 0.6, "pleural effusion": 0.3, "nodule": 0.4})
    assert result.findings == {"nodule": 0.4, "opacity": 0.7, "pleural effusion": 0.3, "pneumonia": 0.6}
    assert json.loads(json.dumps(result.to_json()))["findings"] == result.findings


def test_undetected_regions_are_never_described(image: Path) -> None:
    model = CRRGModel(get_config("tiny")).eval()  # default score threshold 0.05
    with torch.no_grad():
        model.detector.roi_heads.box_predictor.cls_score.bias[0] = 30.0  # background always wins
    result = Pipeline(model, device="cpu")(image, regions=list(REGIONS), prompts=["edema"])
    assert all(r.box is None and r.sentence is None and not r.selected for r in result.regions)
    assert result.report == ""
    assert result.label_regions == {"edema": None}


def test_regions_argument_writes_exactly_those(pipe: Pipeline, image: Path) -> None:
    detected = [r.name for r in pipe(image, prompts=[]).regions if r.box is not None]
    wanted = detected[:2]
    result = pipe(image, regions=wanted + [n for n in REGIONS if n not in detected][:1], prompts=[])
    assert {r.name for r in result.regions if r.sentence} == set(wanted)
    assert {r.name for r in result.regions if r.selected} == set(wanted)  # undetected: no sentence
    with pytest.raises(ValueError, match="unknown region"):
        pipe(image, regions=["left elbow"])


def test_box_gets_a_sentence(pipe: Pipeline, image: Path) -> None:
    result = pipe(image, box=(20, 30, 140, 200), prompts=[])
    assert result.box_sentence is not None
    assert result.box_sentence.box == (20.0, 30.0, 140.0, 200.0)
    assert isinstance(result.box_sentence.sentence, str)
    assert 0 <= result.box_sentence.abnormal_prob <= 1
    assert result.to_json()["box"]["sentence"] == result.box_sentence.sentence
    with pytest.raises(ValueError, match="x2 > x1"):
        pipe(image, box=(50, 50, 10, 10))


def test_conditioning_different_boxes_give_different_features(pipe: Pipeline, image: Path) -> None:
    from crrg.images import load_image, preprocess

    tensor, _ = preprocess(load_image(image), size=pipe.config.image_size)
    out = pipe.model.detector(tensor[None])
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 60.0], [60.0, 60.0, 120.0, 120.0]])]
    feats = pipe.model.detector.box_features(out.feature_maps, boxes)
    assert not torch.allclose(feats[0], feats[1])


def test_json_schema(pipe: Pipeline, image: Path) -> None:
    data = json.loads(json.dumps(pipe(image, prompts="edema").to_json()))
    assert {"image", "regions", "report", "labels", "disclaimer"} <= set(data)
    assert len(data["regions"]) == 29
    assert {"name", "box", "score", "selected", "abnormal", "sentence"} <= set(data["regions"][0])
    assert list(data["labels"]) == ["edema"]


def test_classify_matches_pipeline_labels(pipe: Pipeline, image: Path) -> None:
    probs = pipe.classify(image, "cardiomegaly,edema")
    full = pipe(image, prompts=["cardiomegaly", "edema"]).labels
    assert probs.keys() == full.keys()
    for key in probs:
        assert probs[key] == pytest.approx(full[key], abs=1e-5)


def test_default_prompts_used_when_none(pipe: Pipeline, image: Path) -> None:
    assert list(pipe(image).labels) == list(pipe.config.prompts)


def test_parse_prompts() -> None:
    assert parse_prompts(" a, b ,,a, c ") == ["a", "b", "c"]
    assert parse_prompts(["x", " ", "y"]) == ["x", "y"]
    assert parse_prompts(None) == []


def test_save_and_load_round_trip(tmp_path: Path, pipe: Pipeline, image: Path) -> None:
    folder = tmp_path / "m"
    pipe.model.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md", "LICENSE.md"}
    assert "Research use only" in (folder / "README.md").read_text()
    loaded = crrg.load(folder, device="cpu")
    original = pipe.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        # fp16 on disk: equal to the fp16 rounding of the original.
        assert torch.equal(value, original[key].half().to(value.dtype)) if value.is_floating_point() \
            else torch.equal(value, original[key]), key
    a, b = pipe(image, prompts=[]), loaded(image, prompts=[])
    assert [r.selected for r in a.regions] == [r.selected for r in b.regions]


def test_loading_rejects_mismatched_weights(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    tiny_model().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["decoder"]["n_layer"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="state_dict"):
        crrg.load(folder)


def test_config_variants_and_unknown_keys() -> None:
    assert {"default", "tiny"} <= set(config_variants())
    config = get_config("default")
    assert config.detector.image_size == config.image_size == 384
    assert get_config("rgrg").detector.backbone == "resnet50"
    with pytest.raises(ValueError, match="valid variants"):
        get_config("huge")
    data = to_dict(get_config("tiny"))
    data["detector"]["anchors_please"] = 1
    with pytest.raises(ValueError, match="anchors_please"):
        CRRGModel(data)
    with pytest.raises(ValueError, match="image_size"):
        CRRGConfig(image_size=256)
