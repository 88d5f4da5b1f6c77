"""Measured findings: the CTR from known boxes, the heart-size sentence rule, the widths the demo
draws, the mask reference of the validation, and (with the data) masks against boxes on a few JSRT
images: the silver boxes exactly, the default detector's within a tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crrg.locations import is_supported
from crrg.measurements import (
    CTR_ENLARGED, CTR_REGIONS, cardiothoracic_ratio, ctr_widths, heart_size, normalise_view,
)
from train.validate_measurements import box_values, enlarged_agreement, error_stats, jsrt_reference

ROOT = Path(__file__).resolve().parents[1]
BOXES = {"cardiac silhouette": (400, 500, 640, 800), "right lung": (200, 100, 500, 900),
         "left lung": (520, 120, 800, 880)}


def test_ctr_from_known_boxes() -> None:
    assert cardiothoracic_ratio(BOXES) == pytest.approx(240 / 600)
    # the thorax is the union of the two lungs, whichever side lies where
    assert cardiothoracic_ratio({**BOXES, "left lung": (100, 120, 300, 880)}) == pytest.approx(240 / 400)
    assert cardiothoracic_ratio({**BOXES, "left lung": None}) is None
    assert cardiothoracic_ratio({k: v for k, v in BOXES.items() if k != "right lung"}) is None
    assert cardiothoracic_ratio({**BOXES, "cardiac silhouette": (10, 10, 10, 20)}) is None  # degenerate
    assert cardiothoracic_ratio({**BOXES, "cardiac silhouette": (10, 10, 20)}) is None  # not a box
    assert cardiothoracic_ratio({}) is None


def test_heart_size_sentence_rule() -> None:
    normal = heart_size(0.42, "PA")
    assert normal.text == "Heart size is within normal limits (cardiothoracic ratio 0.42)."
    assert normal.finding is None and normal.value == 0.42 and normal.regions == CTR_REGIONS
    big = heart_size(0.58, "PA")
    assert big.finding == "cardiomegaly" and "enlarged" in big.text and "0.58" in big.text and big.value == 0.58
    ap = heart_size(0.58, "AP")
    assert ap.finding is None and "AP view magnifies" in ap.text and "0.58" in ap.text
    assert heart_size(0.44, "AP").text == "Heart size is within normal limits (cardiothoracic ratio 0.44; AP view)."
    assert heart_size(0.44, None).text == "Heart size is within normal limits (cardiothoracic ratio 0.44; view unknown)."
    unknown = heart_size(0.58, None)
    assert "view unknown" in unknown.text and "AP view magnifies" in unknown.text and unknown.finding is None
    assert heart_size(0.58, "ap supine").text == ap.text and heart_size(0.58, "PA erect").finding == "cardiomegaly"
    assert CTR_ENLARGED == 0.5
    # the call follows the value as written: 0.503 reads "0.50", which is not above 0.5
    assert heart_size(0.503, "PA").finding is None and heart_size(0.506, "PA").finding == "cardiomegaly"
    for m in (normal, big, ap, unknown):  # measured on both lungs and the heart: no unsupported location
        assert is_supported(m.text, m.regions, "measurement")


def test_normalise_view() -> None:
    assert [normalise_view(v) for v in ("PA", "pa", "AP Supine", "L", "", None)] == ["PA", "PA", "AP", None, None, None]


def test_widths_are_the_two_measured_segments() -> None:
    heart, thorax = ctr_widths(BOXES)
    assert (heart.x1, heart.x2) == (400, 640) and (thorax.x1, thorax.x2) == (200, 800)
    assert 100 <= thorax.y <= 900 and 500 <= heart.y <= 800
    assert (heart.x2 - heart.x1) / (thorax.x2 - thorax.x1) == pytest.approx(cardiothoracic_ratio(BOXES))
    assert ctr_widths({"right lung": BOXES["right lung"]}) is None


def test_validation_statistics_on_known_pairs() -> None:
    stats = error_stats([(0.50, 0.48), (0.40, 0.44), (0.45, 0.45), (None, 0.5), (0.5, None)])
    assert stats["n"] == 3 and stats["mae"] == pytest.approx(0.02) and stats["bias"] == pytest.approx(-0.02 / 3)
    assert stats["median_ae"] == pytest.approx(0.02)
    assert error_stats([])["n"] == 0
    agree = enlarged_agreement([(0.55, 0.52), (0.45, 0.52), (0.40, 0.41)])
    assert agree == {"n": 3, "reference_enlarged": 2, "predicted_enlarged": 1, "accuracy": pytest.approx(2 / 3),
                     "sensitivity": 0.5, "specificity": 1.0}
    values = box_values({**BOXES, "trachea": (490, 0, 530, 300), "upper mediastinum": (440, 50, 620, 500)})
    assert values["ctr"] == pytest.approx(0.4)
    assert values["tracheal_deviation"] == pytest.approx((510 - 500) / 600)
    assert values["upper_mediastinal_ratio"] == pytest.approx(180 / 600)


def _jsrt_test_stems(data_dir: Path, count: int) -> list[str]:
    """The first ``count`` JSRT images of the patient-disjoint test split (patient = image id)."""
    from crrg.data.splits import POLICIES, hash_split

    policy = POLICIES["jsrt_scr"]
    stems = sorted(p.stem for p in (data_dir / "jsrt_scr" / "images").glob("*.jpg"))
    return [s for s in stems if hash_split(policy.namespace, s, policy.val, policy.test) == "test"][:count]


def test_mask_ratio_matches_the_silver_boxes(data_dir: Path) -> None:
    from crrg.data.readers.jsrt import read_one

    for stem in _jsrt_test_stems(data_dir, 3):
        record = read_one(data_dir / "jsrt_scr", f"images/{stem}.jpg", 0)
        ratio = jsrt_reference(data_dir / "jsrt_scr", stem)["ctr"]
        assert 0.3 < ratio < 0.7
        assert cardiothoracic_ratio(record.boxes) == pytest.approx(ratio, abs=0.005)


def test_detector_ratio_is_close_to_the_masks_on_held_out_jsrt(data_dir: Path) -> None:
    import crrg

    stems = _jsrt_test_stems(data_dir, 4)
    pipe = crrg.load(str(ROOT / "assets" / "crrg-default"))
    results = pipe.batch([str(data_dir / "jsrt_scr" / "images" / f"{s}.jpg") for s in stems], prompts=[], regions=[])
    errors = []
    for stem, result in zip(stems, results):
        boxes = {name: result.region(name).box for name in CTR_REGIONS}
        predicted = cardiothoracic_ratio(boxes)
        assert predicted is not None and result.measurements["cardiothoracic_ratio"] == pytest.approx(predicted)
        errors.append(abs(predicted - jsrt_reference(data_dir / "jsrt_scr", stem)["ctr"]))
    # the model card's test-split MAE is ~0.013; these bounds catch a broken detector or rule
    assert max(errors) < 0.06 and float(np.mean(errors)) < 0.035
