"""Measured findings: the CTR from known boxes, the heart-size sentence rule, the widths the demo
draws, and (with the data) the ratio from masks against the SCR-mask-backed boxes."""

from __future__ import annotations

import pytest

from crrg.locations import is_supported
from crrg.measurements import CTR_ENLARGED, cardiothoracic_ratio, ctr_widths, heart_size

BOXES = {"cardiac silhouette": (400, 500, 640, 800), "right lung": (200, 100, 500, 900),
         "left lung": (520, 120, 800, 880)}


def test_ctr_from_known_boxes() -> None:
    assert cardiothoracic_ratio(BOXES) == pytest.approx(240 / 600)
    assert cardiothoracic_ratio({**BOXES, "left lung": None}) is None
    assert cardiothoracic_ratio({**BOXES, "cardiac silhouette": (10, 10, 10, 20)}) is None  # degenerate
    assert cardiothoracic_ratio({}) is None


def test_heart_size_sentence_rule() -> None:
    normal = heart_size(0.42, "PA")
    assert normal.finding is None and "0.42" in normal.text and "normal" in normal.text
    big = heart_size(0.58, "PA")
    assert big.finding == "cardiomegaly" and "enlarged" in big.text and big.value == 0.58
    ap = heart_size(0.58, "AP")
    assert ap.finding is None and "AP view magnifies" in ap.text and "0.58" in ap.text
    unknown = heart_size(0.44, None)
    assert "not known" in unknown.text and unknown.finding is None
    assert CTR_ENLARGED == 0.5
    for m in (normal, big, ap, unknown):  # the value is measured on both lungs and the heart
        assert is_supported(m.text, ("cardiac silhouette", "right lung", "left lung"), "measurement")


def test_widths_are_the_two_measured_segments() -> None:
    heart, thorax = ctr_widths(BOXES)
    assert (heart.x1, heart.x2) == (400, 640) and (thorax.x1, thorax.x2) == (200, 800)
    assert 100 <= thorax.y <= 900 and 500 <= heart.y <= 800
    assert (heart.x2 - heart.x1) / (thorax.x2 - thorax.x1) == pytest.approx(cardiothoracic_ratio(BOXES))
    assert ctr_widths({"right lung": BOXES["right lung"]}) is None


def test_mask_ratio_matches_the_mask_backed_boxes(data_dir) -> None:
    from train.validate_measurements import jsrt_reference

    images = sorted((data_dir / "jsrt_scr" / "images").glob("*.jpg"))[:3]
    for path in images:
        from crrg.data.readers.jsrt import read_one

        record = read_one(data_dir / "jsrt_scr", f"images/{path.name}", 0)
        ratio = jsrt_reference(data_dir / "jsrt_scr", path.stem)["ctr"]
        assert 0.3 < ratio < 0.7
        assert cardiothoracic_ratio(record.boxes) == pytest.approx(ratio, abs=0.01)
