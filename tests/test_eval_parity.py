"""The evaluation scores what a user gets: the shipped model (assets/crrg-default) run through
``train.evaluate``'s inference (batched pipeline stages) and through ``Pipeline.__call__`` (one
image at a time, as a user runs it) on real images gives the same probabilities for every output
the evaluation scores: region abnormality and selection, region-level and image-level findings,
zero-shot labels, and the same regions detected and selected. A raw sigmoid where the pipeline
calibrates, another selection rule or another preprocessing would fail it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crrg.pipeline import Pipeline, load
from crrg.regions import REGIONS
from train import evaluate as ev
from train.datasets import PreparedData

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "assets" / "crrg-default"
#: (folder under the data root, file pattern): a few images of each kind the evaluation scores
PICKS = (("jsrt_scr/images", "JPCLN*.jpg", 1), ("jsrt_scr/images", "JPCNN*.jpg", 1),
         ("kermany_pneumonia/test/PNEUMONIA", "*.jpeg", 1), ("covid_radiography/COVID", "*.jpg", 1))
ATOL = 1e-4  # batch of 3 vs one image: float rounding only (calibration alone moves these by > 0.05)


@pytest.fixture(scope="module")
def images(data_dir: Path) -> list[tuple[str, Path]]:
    picked = []
    for folder, pattern, count in PICKS:
        files = sorted((data_dir / folder).glob(pattern))[:count]
        if len(files) < count:
            pytest.skip(f"real images {data_dir / folder}/{pattern} not found (set CRRG_DATA to the shared data)")
        picked += [(str(p.relative_to(data_dir)), p) for p in files]
    return picked


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return load(WEIGHTS, device="cpu")


def test_evaluation_scores_the_pipelines_probabilities(pipe: Pipeline, images: list[tuple[str, Path]]) -> None:
    labels = [t.label for t in ev.ZERO_SHOT_TASKS]
    outputs, failed = ev.run_inference(pipe, images, labels, batch_size=3)
    assert not failed and set(outputs) == {key for key, _ in images}
    calibration = pipe.config.calibration
    assert calibration.abnormality is not None and calibration.zero_shot is not None  # the shipped model calibrates
    for key, path in images:
        result = pipe(path, prompts=labels)
        out = outputs[key]
        assert [r.box is not None for r in result.regions] == out.detected.tolist()
        detected = [r for r in result.regions if r.box is not None]
        assert detected, key
        for region in detected:
            i = REGIONS.index(region.name)
            assert region.abnormal_prob == pytest.approx(out.abnormality[i], abs=ATOL), (key, region.name)
            assert region.selection_prob == pytest.approx(out.selection[i], abs=ATOL), (key, region.name)
            assert np.allclose(region.box, out.boxes[i], atol=0.05)
            assert set(region.findings) == set(out.findings) and out.findings
            for finding, probs in out.findings.items():
                assert region.findings[finding] == pytest.approx(probs[i], abs=ATOL), (key, region.name, finding)
        # thresholded decisions: the same rule, the same thresholds
        threshold = pipe.config.selection_threshold
        assert [r.selected for r in result.regions] == (out.selection > threshold).tolist()
        assert [r.abnormal for r in result.regions] == (out.abnormality > pipe.config.abnormal_threshold).tolist()
        assert out.image_findings and result.image_findings.keys() == out.image_findings.keys()
        for finding, p in out.image_findings.items():
            assert result.image_findings[finding] == pytest.approx(p, abs=ATOL), (key, finding)
        for label in labels:
            assert result.labels[label] == pytest.approx(out.zero_shot[label], abs=ATOL), (key, label)


def test_evaluation_reports_are_the_pipelines(pipe: Pipeline, images: list[tuple[str, Path]],
                                              data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"data_root": str(data_dir)}))
    folder = PreparedData(tmp_path)  # keys are paths under the data root, as train.prepare writes them
    keys = [key for key, _ in images[:2]]
    outputs, _ = ev.run_inference(pipe, images[:2], [], batch_size=2)
    results = ev.generate_reports(pipe, outputs, keys, folder, batch_size=2)
    for key in keys:
        single = pipe(folder.path(key), prompts=[])
        assert results[key].report == single.report and outputs[key].report == single.findings_text
        assert outputs[key].sentences == dict(single.region_sentences)
