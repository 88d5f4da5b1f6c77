"""Silver-box rules on synthetic masks, with boxes worked out by hand from the rule table."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.data.records import Record
from crrg.data.silver import OrganMasks, SilverRules, box_mask, derive_boxes, find_carina, mask_bbox
from crrg.regions import REGIONS
from fixtures.data_builder import JSRT_ORGANS, rect_mask, t_airway

H = W = 200
# Hand-computed from the module table with the default rules, for the JSRT-like rectangles:
# right lung rows 20-179 x cols 20-89 (box 20,20,90,180: w 70, h 160), left lung cols 110-179,
# heart rows 100-169 x cols 70-139; both lungs: top 20, bottom 180, span 160, thorax W 160.
EXPECTED = {
    "right lung": (20, 20, 90, 180),
    "right upper lung zone": (20, 20, 90, 73),  # rows 20 .. 20 + 160/3 (rounded)
    "right mid lung zone": (20, 73, 90, 127),
    "right lower lung zone": (20, 127, 90, 180),
    "right hilar structures": (65.5, 68, 93.5, 116),  # medial 90; -0.35 w, +0.05 w; rows .3-.6 h
    "right apical zone": (20, 20, 90, 52),  # top 0.2 h
    "right costophrenic angle": (20, 148, 48, 180),  # bottom 0.2 h, lateral 0.4 w
    "right hemidiaphragm": (20, 175.8, 90, 183.2),  # flat base at row 179, pad 0.02 h = 3.2
    "left lung": (110, 20, 180, 180),
    "left costophrenic angle": (152, 148, 180, 180),
    "left hilar structures": (106.5, 68, 134.5, 116),
    "right clavicle": (30, 25, 95, 40),
    "left clavicle": (105, 25, 170, 40),
    "cardiac silhouette": (70, 100, 140, 170),
    "upper mediastinum": (90, 20, 110, 100),  # between the lungs' medial edges, top to heart
    "mediastinum": (70, 20, 140, 170),
    "trachea": (95.2, 12, 104.8, 79.2),  # mid 100, 0.06 W wide, from top - 0.05 span to carina
    "carina": (90.4, 69.6, 109.6, 88.8),  # carina at top + 0.37 span = 79.2
    "spine": (90.4, 20, 109.6, 180),
    "aortic arch": (100, 60, 114, 82.4),
    "svc": (90, 44, 100, 100),
    "cavoatrial junction": (90, 92, 100, 116),
    "right atrium": (70, 110.5, 100, 170),
    "abdomen": (20, 175.8, 180, 200),  # to bottom + 0.25 span, clipped to the image
}
MASK_BACKED = {"right lung", "left lung", "right clavicle", "left clavicle", "cardiac silhouette"}


def jsrt_like_masks(**drop: bool) -> OrganMasks:
    masks = {organ: rect_mask(H, W, rows, cols) for organ, (rows, cols) in JSRT_ORGANS.items()}
    return OrganMasks(height=H, width=W, **{k: v for k, v in masks.items() if not drop.get(k)})


def test_rules_on_rectangles_give_the_hand_computed_boxes():
    silver = derive_boxes(jsrt_like_masks())
    assert set(silver.boxes) == set(REGIONS)  # heart + lungs + clavicles allow all 29
    for name, box in EXPECTED.items():
        assert silver.boxes[name] == pytest.approx(box, abs=0.01), name
    assert set(silver.derived) == set(REGIONS) - MASK_BACKED
    assert list(silver.boxes) == [r for r in REGIONS if r in silver.boxes]


def test_missing_organs_leave_their_regions_out():
    lungs_only = derive_boxes(jsrt_like_masks(heart=True, right_clavicle=True, left_clavicle=True))
    assert "cardiac silhouette" not in lungs_only.boxes and "right clavicle" not in lungs_only.boxes
    assert {"mediastinum", "trachea", "svc", "right atrium"}.isdisjoint(lungs_only.boxes)
    assert lungs_only.boxes["right lung"] == EXPECTED["right lung"]
    one_lung = derive_boxes(jsrt_like_masks(left_lung=True))
    assert all(not name.startswith("left") or "clavicle" in name for name in one_lung.boxes)
    assert "spine" not in one_lung.boxes  # the midline needs both lungs


def test_carina_and_trachea_from_an_airway_mask():
    airway = t_airway(H, W, top=10, left=85)  # trachea cols 95-104, bar row 50, legs rows 51-79
    assert find_carina(airway) == pytest.approx((100.0, 51.0))
    masks = jsrt_like_masks()
    masks.airways = airway
    silver = derive_boxes(masks)
    assert silver.boxes["trachea"] == (85, 10, 115, 51)  # mask crop above the carina (incl. bar)
    assert "trachea" not in silver.derived
    assert silver.boxes["carina"] == pytest.approx((90, 41, 110, 61))  # side 2 x width 10
    assert silver.boxes["spine"] == pytest.approx((90.4, 20, 109.6, 180))  # midline from trachea


def test_cardiomediastinum_splits_into_heart_and_upper_mediastinum():
    cm = np.zeros((H, W), bool)
    cm[40:90, 95:105] = True
    cm[90:170, 85:115] = True
    lung_boxes = {"right lung": (20.0, 20.0, 90.0, 180.0), "left lung": (110.0, 20.0, 180.0, 180.0)}
    masks = OrganMasks(height=H, width=W, cardiomediastinum=cm,
                       right_lung=box_mask(lung_boxes["right lung"], H, W) & ~cm,
                       left_lung=box_mask(lung_boxes["left lung"], H, W) & ~cm)
    silver = derive_boxes(masks, lung_boxes=lung_boxes)
    assert silver.boxes["mediastinum"] == (85, 40, 115, 170)
    assert silver.boxes["cardiac silhouette"] == (85, 90, 115, 170)
    assert silver.boxes["upper mediastinum"] == (95, 20, 105, 90)  # reaches up to the lung top
    assert "mediastinum" not in silver.derived and "cardiac silhouette" in silver.derived
    assert "right clavicle" not in silver.boxes


def test_mask_bbox_is_continuous_and_respects_crops():
    mask = rect_mask(10, 10, (2, 5), (3, 7))
    assert mask_bbox(mask) == (3, 2, 7, 5)
    assert mask_bbox(mask, rows=(3, 10), cols=(0, 5)) == (3, 3, 5, 5)
    assert mask_bbox(mask, rows=(6, 10)) is None


def test_boxes_stay_inside_small_images_and_pass_record_validation():
    rules = SilverRules(abdomen_depth=5.0, trachea_above=5.0)  # push rule boxes past the border
    silver = derive_boxes(jsrt_like_masks(), rules=rules)
    record = Record(source="jsrt_scr", patient="x", width=W, height=H, boxes=silver.boxes,
                    annotated=tuple(silver.boxes), derived=silver.derived)
    record.validate()
    assert silver.boxes["abdomen"][3] == H and silver.boxes["trachea"][1] == 0


def test_mask_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="expected"):
        OrganMasks(height=10, width=10, heart=np.ones((5, 5), bool))
