"""Demo internals without a server: drawing, text views, the service over a real tiny random model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crrg import DISCLAIMER
from crrg.regions import REGIONS
from demo import views
from demo.drawing import (ABNORMAL_COLOR, DISPLAY_MIN_SIDE, REGION_COLORS, display_image, draw_regions, hex_to_rgb, overlay_png,
                          region_at, visible_regions)
from demo.labels_layout import inside, place_labels, rect_distance, rects_overlap
from demo.testing import write_png

H, W = 640, 560


def _region(name: str, box: tuple[float, float, float, float] | None, selected: bool = False,
            sentence: str | None = None) -> dict:
    return {"name": name, "box": None if box is None else list(box), "score": 0.9, "selected": selected,
            "abnormal": False, "selection_prob": 0.7 if box else None, "abnormal_prob": 0.2 if box else None,
            "sentence": sentence}


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory):
    import torch

    from crrg.cli import main
    from crrg.pipeline import load

    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    assert main(["init", str(folder), "--variant", "tiny"]) == 0
    return load(folder, device="cpu")


@pytest.fixture(scope="module")
def service(tiny_pipeline, tmp_path_factory: pytest.TempPathFactory):
    from demo.service import DemoService

    return DemoService(tiny_pipeline, tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def xray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png(tmp_path_factory.mktemp("img") / "chest.png", seed=1, height=H, width=W)


# ------------------------------------------------------------------------------------- drawing
def test_palette_has_a_distinct_colour_per_region() -> None:
    assert list(REGION_COLORS) == list(REGIONS)
    assert len(set(REGION_COLORS.values())) == len(REGIONS)


def test_display_image_scales_the_longest_side() -> None:
    pixels = np.linspace(0, 1, 2048 * 1536, dtype=np.float32).reshape(2048, 1536)
    rgb, scale = display_image(pixels, max_side=1024)
    assert rgb.shape == (1024, 768, 3) and rgb.dtype == np.uint8
    assert scale == pytest.approx(0.5)
    small, same = display_image(pixels[:300, :200], max_side=1024)
    assert small.shape == (300, 200, 3) and same == 1.0
    up, factor = display_image(pixels[:224, :200], max_side=1024, min_side=768)  # small: drawn larger
    assert up.shape == (768, 686, 3) and factor == pytest.approx(686 / 200)
    assert display_image(pixels[:1000, :900], max_side=1024, min_side=768)[1] == 1.0


def test_region_at_picks_the_smallest_box_under_the_point() -> None:
    regions = [_region("right lung", (0, 0, 300, 600)), _region("right lower lung zone", (0, 400, 300, 600)),
               _region("abdomen", None)]
    assert region_at(regions, 100, 500) == "right lower lung zone"
    assert region_at(regions, 100, 100) == "right lung"
    assert region_at(regions, 500, 100) is None


def test_region_at_prefers_the_drawn_regions() -> None:
    regions = [_region("right lung", (0, 0, 300, 600)), _region("right lower lung zone", (0, 400, 300, 600)),
               _region("spine", (280, 0, 340, 700))]
    assert region_at(regions, 100, 500, prefer=["right lung"]) == "right lung"  # drawn beats smaller
    assert region_at(regions, 320, 650, prefer=["right lung"]) == "spine"  # no drawn box there: any
    assert region_at(regions, 290, 500, prefer=["right lung", "spine"]) == "spine"  # smallest drawn


def test_visible_regions_default_to_the_findings() -> None:
    regions = [_region("right lung", (20, 20, 100, 180), selected=True),
               _region("left lung", (110, 20, 190, 180)),
               dict(_region("trachea", (90, 5, 110, 60)), abnormal=True),
               _region("abdomen", None, selected=True)]  # not detected: never drawn
    assert visible_regions(regions) == (["right lung", "trachea"], [])
    assert visible_regions(regions, show_all=True) == (["right lung", "trachea"], ["left lung"])
    assert visible_regions(regions, highlight="left lung") == (["right lung", "left lung", "trachea"], [])
    assert visible_regions(regions, show_findings=False, tagged=["trachea"]) == (["trachea"], [])


def _count(image: np.ndarray, colour: str) -> int:
    return int((image == np.array(hex_to_rgb(colour), np.uint8)).all(axis=2).sum())


def test_draw_regions_shows_findings_by_default_and_the_rest_on_request() -> None:
    base = np.full((300, 300, 3), 40, np.uint8)
    regions = [_region("right lung", (20, 60, 140, 280), selected=True),
               _region("left lung", (160, 60, 280, 280)),
               dict(_region("trachea", (135, 10, 165, 120)), abnormal=True)]
    focused = draw_regions(base, regions, scale=1.0)
    assert focused.shape == base.shape
    assert tuple(focused[200, 20]) == hex_to_rgb(REGION_COLORS["right lung"])  # selected: opaque edge
    assert tuple(focused[100, 165]) == hex_to_rgb(REGION_COLORS["trachea"])  # abnormal: drawn too
    assert np.array_equal(focused[200, 280], base[200, 280])  # neither: not drawn
    every = draw_regions(base, regions, scale=1.0, show_all=True)
    assert not np.array_equal(every[200, 280], base[200, 280])  # thin, translucent, but drawn
    assert tuple(every[200, 280]) != hex_to_rgb(REGION_COLORS["left lung"])
    lit = draw_regions(base, regions, scale=1.0, highlight="left lung")
    assert lit[200, 220].mean() > focused[200, 220].mean()  # tinted fill inside the highlighted box
    assert tuple(lit[200, 280]) == hex_to_rgb(REGION_COLORS["left lung"])  # the clicked one: thick
    boxed = draw_regions(base, [], scale=0.5, user_box=(100, 100, 300, 300))
    assert boxed[50:150, 50:150].max() == 255  # the user's box, at display scale


def test_legend_lists_what_the_overlay_draws_and_counts_it() -> None:
    result = {"regions": [_region("right lung", (20, 60, 140, 280), selected=True),
                          _region("left lung", (160, 60, 280, 280)),
                          dict(_region("trachea", (135, 10, 165, 120)), abnormal=True),
                          _region("abdomen", None)]}
    focused = views.legend_html(result)
    assert 'data-drawn="2" data-detected="3"' in focused and "Showing 2 of 3" in focused
    assert "right lung" in focused and "trachea" in focused and "left lung" not in focused
    assert focused.count("crrg-warn") == 1  # the abnormal trachea
    clicked = views.legend_html(result, highlight="left lung")
    assert "Showing 3 of 3" in clicked and "left lung" in clicked
    every = views.legend_html(result, show_all=True)
    assert 'data-drawn="3"' in every and "all detected regions" in every
    assert views.legend_html({"regions": [_region("abdomen", None)]}).count('data-drawn="0"') == 1


def test_tiny_model_overlay_leaves_the_other_boxes_alone_until_show_all(service, xray: Path) -> None:
    analysis = service.analyse(str(xray), [])
    detected = [r["name"] for r in analysis.result["regions"] if r["box"] is not None]
    assert len(detected) >= 3, "the tiny random model should detect some regions"
    # the random model's flags are noise: keep its boxes, mark one selected and one abnormal
    regions = [dict(r, selected=r["name"] == detected[0], abnormal=r["name"] == detected[1])
               for r in analysis.result["regions"]]
    thick, thin = visible_regions(regions)
    assert thin == [] and thick == detected[:2]
    rest = [r for r in regions if r["box"] is not None and r["name"] not in thick]
    base = analysis.base
    focused = draw_regions(base, regions, analysis.scale)
    every = draw_regions(base, regions, analysis.scale, show_all=True)
    assert focused.shape == every.shape == base.shape
    changed_focused = (focused != base).any(axis=2)
    changed_every = (every != base).any(axis=2)
    assert changed_every.sum() > changed_focused.sum()  # the rest drawn thin
    edges = np.zeros(base.shape[:2], bool)  # left edges of the undrawn boxes, far from every drawn one
    for region in rest:
        x1, y1, x2, y2 = (round(v * analysis.scale) for v in region["box"])
        edges[y1:y2 + 1, min(x1, base.shape[1] - 1)] = True
    assert changed_every[edges].any()
    bare = draw_regions(base, [dict(r, selected=False, abnormal=False) for r in regions], analysis.scale)
    assert np.array_equal(bare, base)  # no finding: nothing drawn


def test_abnormal_regions_get_a_red_framed_tag() -> None:
    assert ABNORMAL_COLOR not in REGION_COLORS.values()
    base = np.full((300, 300, 3), 40, np.uint8)
    normal = [_region("trachea", (135, 60, 165, 200), selected=True)]
    abnormal = [dict(normal[0], abnormal=True)]
    assert _count(draw_regions(base, normal, 1.0), ABNORMAL_COLOR) == 0
    assert _count(draw_regions(base, abnormal, 1.0), ABNORMAL_COLOR) > 100  # frame + warning triangle
    label_tab = draw_regions(base, abnormal, 1.0, show_findings=False)  # the label tab: only tagged ones
    assert np.array_equal(label_tab, base)


# ------------------------------------------------------------------------------ label placement
# assets/crrg-default on JSRT JPCLN001.jpg (1024 x 1024): real boxes, sharing many edges and corners.
REAL_BOXES = {
    "right lung": (158, 45, 503, 872), "right upper lung zone": (194, 47, 499, 314),
    "right mid lung zone": (165, 315, 491, 586), "right lower lung zone": (159, 585, 459, 859),
    "right hilar structures": (350, 298, 489, 530), "right apical zone": (221, 52, 499, 201),
    "right costophrenic angle": (161, 696, 293, 878), "right hemidiaphragm": (161, 717, 463, 887),
    "left lung": (590, 46, 946, 881), "left upper lung zone": (592, 40, 882, 321),
    "left mid lung zone": (629, 317, 922, 602), "left lower lung zone": (757, 598, 938, 885),
    "left hilar structures": (635, 297, 772, 543), "left apical zone": (594, 45, 858, 209),
    "left costophrenic angle": (798, 716, 938, 883), "left hemidiaphragm": (748, 703, 944, 898),
    "trachea": (531, 5, 581, 342), "spine": (510, 23, 602, 909), "right clavicle": (276, 73, 495, 166),
    "left clavicle": (591, 59, 800, 172), "aortic arch": (552, 250, 658, 367),
    "mediastinum": (433, 37, 792, 792), "upper mediastinum": (482, 23, 626, 433),
    "svc": (488, 158, 557, 430), "cardiac silhouette": (435, 437, 791, 776),
    "cavoatrial junction": (481, 400, 553, 519), "right atrium": (426, 470, 552, 788),
    "carina": (507, 296, 600, 392), "abdomen": (139, 655, 946, 1004),
}
# Stacked lung zones that share edges and top-left corners (hand-made, 512 x 512).
ZONES = {
    "right lung": (60, 40, 240, 460), "right upper lung zone": (60, 40, 240, 180),
    "right mid lung zone": (60, 180, 240, 320), "right lower lung zone": (60, 320, 240, 460),
    "left lung": (240, 40, 440, 460), "left upper lung zone": (240, 40, 440, 180),
    "left mid lung zone": (240, 180, 440, 320), "left lower lung zone": (240, 320, 440, 460),
}


def _sizes(names: list[str], char: float, height: float) -> list[tuple[float, float]]:
    return [(len(name) * char + 8, height) for name in names]


def _assert_clean_layout(boxes: list, sizes: list, image: tuple[int, int], placements: list) -> None:
    assert all(p is not None for p in placements)
    rects = [p.rect for p in placements]
    for rect, (w, h) in zip(rects, sizes, strict=True):
        assert inside(rect, *image) and rect[2] - rect[0] == pytest.approx(w) and rect[3] - rect[1] == pytest.approx(h)
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert not rects_overlap(a, b), (a, b)
    for box, p in zip(boxes, placements, strict=True):
        if p.leader is None:
            assert rect_distance(p.rect, box) <= 0.5  # touches its box
        else:  # a leader line from the tag's edge to the box
            start, end = p.leader
            assert rect_distance(p.rect, (*start, *start)) == 0 and rect_distance(box, (*end, *end)) == 0


@pytest.mark.parametrize("boxes, image, char, height", [
    (ZONES, (512, 512), 8.0, 18.0),
    (REAL_BOXES, (1024, 1024), 11.0, 27.0),
    ({k: tuple(v * 0.5 for v in b) for k, b in REAL_BOXES.items()}, (512, 512), 7.0, 18.0),  # crowded
])
def test_place_labels_never_overlap_and_stay_by_their_box(boxes: dict, image: tuple[int, int], char: float,
                                                           height: float) -> None:
    names = list(boxes)
    sizes = _sizes(names, char, height)
    naive = [(b[0], b[1] - h, b[0] + w, b[1]) for b, (w, h) in zip(boxes.values(), sizes, strict=True)]
    assert any(rects_overlap(a, b) for i, a in enumerate(naive) for b in naive[i + 1:])  # the old problem
    placements = place_labels(list(boxes.values()), sizes, image)
    _assert_clean_layout(list(boxes.values()), sizes, image, placements)


def test_place_labels_first_choice_is_above_the_top_left_corner() -> None:
    [only] = place_labels([(100, 100, 200, 200)], [(60, 20)], (400, 400))
    assert only.rect == (100, 80, 160, 100) and only.leader is None
    [at_top] = place_labels([(100, 0, 200, 200)], [(60, 20)], (400, 400))
    assert at_top.rect == (100, 0, 160, 20)  # no room above: inside


def test_place_labels_uses_leader_lines_when_crowded_and_gives_up_on_what_cannot_fit() -> None:
    boxes = [(100, 100, 110, 110)] * 12  # twelve tags for one tiny spot
    sizes = [(50.0, 14.0)] * 12
    placements = place_labels(boxes, sizes, (300, 300))
    _assert_clean_layout(boxes, sizes, (300, 300), placements)
    assert any(p.leader is not None for p in placements)
    assert place_labels([(0, 0, 10, 10)], [(500, 10)], (300, 300)) == [None]  # wider than the image
    full = place_labels([(0, 0, 10, 10)] * 3, [(300, 149)] * 3, (300, 300))  # two fit (2 px apart)
    assert full[2] is None and full[0] is not None and full[1] is not None


def test_place_labels_on_the_tiny_models_boxes(service, xray: Path) -> None:
    boxes = [tuple(r["box"]) for r in service.analyse(str(xray), []).result["regions"] if r["box"]]
    assert boxes, "the tiny random model should detect some regions"
    sizes = [(120.0, 18.0)] * len(boxes)
    _assert_clean_layout(boxes, sizes, (W, H), place_labels(boxes, sizes, (W, H)))


def test_overlay_png_is_a_png_with_the_report(xray: Path) -> None:
    from crrg.images import load_image

    result = {"image": "chest.png", "report": "Heart size is normal.", "disclaimer": DISCLAIMER,
              "regions": [_region("cardiac silhouette", (200, 350, 420, 560), True, "Heart size is normal.")]}
    data = overlay_png(load_image(xray).pixels, result)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.width >= 800


# --------------------------------------------------------------------------------------- views
def test_report_sentences_follow_the_pipelines_deduplication() -> None:
    regions = [_region("right lung", (0, 0, 1, 1), True, "no pleural effusion"),
               _region("left lung", (0, 0, 1, 1), True, "No pleural effusion."),
               _region("cardiac silhouette", (0, 0, 1, 1), True, "the heart is enlarged")]
    pairs = views.report_sentences({"regions": regions})
    assert pairs == [(("right lung", "left lung"), "No pleural effusion."),
                     (("cardiac silhouette",), "The heart is enlarged.")]
    page = views.report_html({"regions": regions})
    assert page.count("crrg-sentence\"") == 2 and "left lung" in page
    assert "No region was selected" in views.report_html({"regions": []})


def test_label_views_sort_by_probability() -> None:
    result = {"labels": {"edema": 0.2, "pneumonia": 0.9}, "regions": [],
              "label_regions": {"edema": None, "pneumonia": "left lung"}}
    assert views.label_rows(result) == [["pneumonia", 0.9, "left lung"], ["edema", 0.2, "—"]]
    frame = views.label_frame(result["labels"])
    assert list(frame["prompt"]) == ["pneumonia", "edema"] and list(frame["call"]) == ["≥ 0.5", "< 0.5"]


def test_region_card_and_rows() -> None:
    result = {"regions": [_region("trachea", (1, 1, 5, 5), True, "The trachea is midline."),
                          _region("abdomen", None)]}
    assert "The trachea is midline." in views.region_card(result, "trachea")
    assert "not detected" in views.region_card(result, "abdomen")
    rows = views.region_rows(result)
    assert [r[0] for r in rows] == ["trachea", "abdomen"] and rows[1][4] == "not detected"


# ------------------------------------------------------------------------------ service (model)
def test_analyse_gives_the_cli_schema_and_display_image(service, xray: Path) -> None:
    analysis = service.analyse(str(xray), ["pneumonia", "nodule"])
    result = analysis.result
    assert [r["name"] for r in result["regions"]] == list(REGIONS)
    assert result["image"] == "chest.png" and (result["width"], result["height"]) == (W, H)
    assert set(result["labels"]) == {"pneumonia", "nodule"} and result["disclaimer"] == DISCLAIMER
    side = DISPLAY_MIN_SIDE  # the 640 px test image is drawn at 768 px (tags stay small on small images)
    assert analysis.base.shape == (side, round(W * side / H), 3)
    assert analysis.scale == pytest.approx(analysis.base.shape[1] / W)
    json.dumps(result)  # plain data


def test_for_regions_writes_exactly_the_ticked_regions(service, xray: Path) -> None:
    analysis = service.analyse(str(xray), ["edema"])
    detected = analysis.detected()
    assert detected, "the tiny random model should detect some regions"
    ticked = detected[:2]
    custom = service.for_regions(analysis, ticked)
    assert custom.selected() == ticked and custom.mode == "custom"
    assert {r["name"] for r in custom.result["regions"] if r["sentence"]} == set(ticked)
    assert custom.result["labels"] == analysis.result["labels"]  # kept
    with pytest.raises(ValueError, match="unknown regions"):
        service.for_regions(analysis, ["spleen"])


def test_relabel_classify_and_downloads(service, xray: Path) -> None:
    analysis = service.analyse(str(xray), ["edema"])
    relabelled = service.relabel(analysis, ["pneumothorax", "fracture"])
    assert set(relabelled.result["labels"]) == {"pneumothorax", "fracture"}
    assert relabelled.result["regions"] == analysis.result["regions"]
    probs = service.classify(str(xray), "cardiomegaly, edema")
    assert set(probs) == {"cardiomegaly", "edema"} and all(0 <= p <= 1 for p in probs.values())
    assert set(service.classify(str(xray), "")) == set(service.default_prompts)
    json_path, png_path = service.downloads(relabelled)
    assert json.loads(Path(json_path).read_text()) == relabelled.result
    assert Path(png_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_box_sentence_in_original_pixels(service, xray: Path) -> None:
    analysis = service.analyse(str(xray), [])
    box = service.for_box(analysis, (100.0, 120.0, 300.0, 400.0))
    assert box["box"] == [100.0, 120.0, 300.0, 400.0]
    assert isinstance(box["sentence"], str) and 0.0 <= box["abnormal_prob"] <= 1.0


def test_bad_file_raises_a_typed_error(service, tmp_path: Path) -> None:
    from crrg.images import ImageError

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        service.analyse(str(bad), None)


def test_build_demo_exposes_the_named_endpoints(tiny_pipeline) -> None:
    from demo import build_demo

    blocks = build_demo(tiny_pipeline)
    public = {fn.api_name for fn in blocks.fns.values() if fn.api_visibility == "public"}
    assert public == {"report", "classify"}


def test_examples_are_resolved_and_allowed_file_by_file(tmp_path: Path) -> None:
    from demo import launch_options
    from demo.service import example_files, thumbnails

    folder = tmp_path / "examples"
    folder.mkdir()
    real = write_png(tmp_path / "real.png", height=300, width=260)
    (folder / "linked.png").symlink_to(real)
    (folder / "notes.txt").write_text("not an example")
    (folder / "broken.dcm").write_bytes(b"not dicom")
    files = example_files(folder)
    assert files == [(folder / "broken.dcm").resolve(), real.resolve()]
    assert launch_options(folder)["allowed_paths"] == [str(p) for p in files]  # files, not the folder
    assert [name for _, name in thumbnails(files)] == ["real.png"]  # unreadable ones are skipped
    assert example_files(None) == [] and "allowed_paths" not in launch_options(None)


def test_app_goes_offline_unless_given_a_hub_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import app

    assert app.is_hub_id("org/crrg-model") and app.is_hub_id("hf-hub:org/crrg-model")
    assert not app.is_hub_id(str(tmp_path)) and not app.is_hub_id(None) and not app.is_hub_id("/no/such/dir")
    for key in ("HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    app.offline_env("org/crrg-model")
    assert "HF_HUB_OFFLINE" not in __import__("os").environ
    app.offline_env(str(tmp_path))
    env = __import__("os").environ
    assert env["HF_HUB_OFFLINE"] == "1" and env["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_error_messages_show_base_names_never_server_paths() -> None:
    from demo.events import public_message

    upload = "/tmp/gradio/3f9a0c1e2b/sub dir/chest film.png"
    assert public_message("/tmp/gradio/3f9a0c1e2b/notes.png: not a readable image") == \
        "notes.png: not a readable image"
    assert public_message("image file not found: /srv/app/uploads/a.dcm (gone)") == "image file not found: a.dcm (gone)"
    assert "/tmp" not in public_message(f"'{upload}'")
    assert public_message("box must be (x1, y1, x2, y2), got 1/2") == "box must be (x1, y1, x2, y2), got 1/2"
    assert public_message("expected PNG/JPEG/TIFF/DICOM") == "expected PNG/JPEG/TIFF/DICOM"
