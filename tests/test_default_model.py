"""The embedded default model (assets/crrg-default) on real held-out images: it loads offline from
its hub-style folder, finds the organs the SCR masks outline, and its reports and zero-shot labels
follow the images' labels. Thresholds sit well below the model card's measured figures (full test
split, ``train.evaluate``): these guard against a broken or swapped model, they are not the evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crrg import DISCLAIMER
from crrg.data.sentences import extract_findings
from crrg.model import CRRGModel
from crrg.pipeline import Pipeline
from train.preparation import prepare_data

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "assets" / "crrg-default"
PER_CLASS = 6  # held-out images per class (first by path: deterministic)


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline(CRRGModel.from_pretrained(str(WEIGHTS)))


@pytest.fixture(scope="module")
def test_images(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Test-split records of JSRT (with organ boxes) and Kermany, by class."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_data(data_dir, out, sources=["jsrt_scr", "kermany_pneumonia"])
    regions = {r["image"]: r for r in map(json.loads, (out / "regions.jsonl").read_text().splitlines())}
    images = [r for r in map(json.loads, (out / "images.jsonl").read_text().splitlines()) if r["split"] == "test"]
    images.sort(key=lambda r: r["image"])
    kermany = [r for r in images if r["source"] == "kermany_pneumonia"]
    return {
        "jsrt": [r | {"boxes": regions[r["image"]]["boxes"]} for r in images if r["source"] == "jsrt_scr"][:PER_CLASS],
        "pneumonia": [r for r in kermany if r["labels"].get("pneumonia") == 1][:PER_CLASS],
        "normal": [r for r in kermany if r["labels"].get("no finding") == 1][:PER_CLASS],
    }


def _iou(a: tuple[float, ...], b: list[float]) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_embedded_folder_is_a_small_fp16_hub_model() -> None:
    files = {p.name for p in WEIGHTS.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "metrics.json"} <= files
    assert sum(p.stat().st_size for p in WEIGHTS.iterdir()) < 80 * 2**20
    config = json.loads((WEIGHTS / "config.json").read_text())
    assert config["variant"] == "default" and config["clip_fusion"] is True
    card = (WEIGHTS / "README.md").read_text()
    assert "Research use only" in card and "not a diagnosis" in card
    metrics = json.loads((WEIGHTS / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["disclaimer"] == DISCLAIMER


def test_organs_are_found_where_the_masks_are(pipe: Pipeline, test_images: dict, data_dir: Path) -> None:
    ious = []
    for record in test_images["jsrt"]:
        result = pipe(data_dir / record["image"], prompts="nodule")
        for name in ("right lung", "left lung", "cardiac silhouette"):
            box = result.region(name).box
            ious.append(0.0 if box is None else _iou(box, record["boxes"][name]))
    assert len(ious) == 3 * PER_CLASS and float(np.mean(ious)) > 0.75, ious


def test_reports_and_labels_follow_the_image(pipe: Pipeline, test_images: dict, data_dir: Path) -> None:
    said, prob = {}, {}
    for kind in ("pneumonia", "normal"):
        results = [pipe(data_dir / r["image"], prompts="pneumonia") for r in test_images[kind]]
        assert all(r.report and r.disclaimer == DISCLAIMER for r in results)
        said[kind] = sum("pneumonia" in extract_findings(r.findings_text) for r in results)
        prob[kind] = float(np.mean([r.labels["pneumonia"] for r in results]))
    # most pneumonia reports name it, few normal ones do; CLIP ranks the classes apart
    assert said["pneumonia"] >= PER_CLASS - 2 and said["normal"] <= 2, said
    assert prob["pneumonia"] > prob["normal"] + 0.2, prob


def test_a_real_image_round_trips_through_png(pipe: Pipeline, test_images: dict, data_dir: Path,
                                              tmp_path: Path) -> None:
    """The same pixels as 16-bit PNG give the same boxes (the demo accepts what PACS exports)."""
    record = test_images["jsrt"][0]
    source = data_dir / record["image"]
    pixels = np.asarray(Image.open(source).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(pixels).save(tmp_path / "x16.png")
    a, b = pipe(source, prompts="nodule"), pipe(tmp_path / "x16.png", prompts="nodule")
    for ra, rb in zip(a.regions, b.regions):
        assert (ra.box is None) == (rb.box is None)
        if ra.box is not None:
            assert _iou(ra.box, list(rb.box)) > 0.95, ra.name


def test_every_sentence_carries_evidence_and_names_only_supported_locations(
        pipe: Pipeline, test_images: dict, data_dir: Path) -> None:
    from crrg.locations import is_supported
    from train.validate_measurements import jsrt_reference

    images = [r for kind in ("jsrt", "pneumonia", "normal") for r in test_images[kind]]
    results = pipe.batch([data_dir / r["image"] for r in images], prompts=[])
    for record, result in zip(images, results):
        assert result.input_check is not None and result.input_check.ok, result.input_check
        assert result.report.split("\nImpression: ")[0] == result.findings_text
        assert bool(result.impression) == bool(result.sentences)
        for s in result.sentences:
            assert is_supported(s.text, s.regions, s.evidence.kind), s
            if s.evidence.kind == "image":
                assert s.regions == () and s.evidence.probability is not None
            if s.evidence.kind == "measurement":
                assert s.evidence.value == pytest.approx(result.measurements["cardiothoracic_ratio"])
        if record["source"] == "jsrt_scr":  # the CTR from boxes against the SCR masks' ratio
            truth = jsrt_reference(data_dir / "jsrt_scr", Path(record["image"]).stem)["ctr"]
            assert abs(result.measurements["cardiothoracic_ratio"] - truth) < 0.06
    pneumonia = [r for r, rec in zip(results, images) if rec in test_images["pneumonia"]]
    assert sum(any(s.finding == "pneumonia" and s.evidence.kind == "image" for s in r.sentences)
               for r in pneumonia) >= PER_CLASS - 2
