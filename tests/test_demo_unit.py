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


# ------------------------------------------------- evidence, CTR, input check (issues 10 and 11)
CTR_BOXES = {"cardiac silhouette": (200.0, 350.0, 420.0, 560.0), "right lung": (60.0, 80.0, 270.0, 600.0),
             "left lung": (300.0, 80.0, 500.0, 610.0), "right lower lung zone": (70.0, 420.0, 260.0, 590.0)}
NOT_A_CXR = "This does not look like a frontal chest radiograph, so no report was written."


def _built(input_check=None, ctr: float | None = 0.49, image: str = "/tmp/gradio/3f9a0c1e2b/chest.png") -> dict:
    """A pipeline result built with the real result types (crrg.types), in its JSON form."""
    return _typed(input_check, ctr, image).to_json()


def _typed(input_check=None, ctr: float | None = 0.49, image: str = "/tmp/gradio/3f9a0c1e2b/chest.png"):
    """A pipeline result built with the real result types (crrg.types)."""
    from crrg.types import Evidence, RegionResult, ReportResult, Sentence

    regions = tuple(RegionResult(n, CTR_BOXES.get(n), 0.9 if n in CTR_BOXES else 0.0,
                                 0.6 if n in CTR_BOXES else None, 0.2 if n in CTR_BOXES else None,
                                 n == "right lower lung zone", n == "right lower lung zone",
                                 "There is a nodule." if n == "right lower lung zone" else None,
                                 findings={"nodule": 0.87, "opacity": 0.1} if n == "right lower lung zone" else {})
                    for n in REGIONS)
    sentences = (
        Sentence("There is a nodule in the right lower lung zone.", ("right lower lung zone",), "nodule",
                 Evidence("region", probability=0.87)),
        Sentence("The heart size is normal (cardiothoracic ratio 0.49).",
                 ("cardiac silhouette", "right lung", "left lung"), None,
                 Evidence("measurement", value=0.49, measurement="cardiothoracic_ratio")),
        Sentence("There is no radiographic evidence of pneumonia.", (), None, Evidence("image", probability=0.93)),
    )
    impression = "Nodule in the right lower lung zone."
    return ReportResult(image=image, width=W, height=H, regions=regions, impression=impression,
                        report=" ".join(s.text for s in sentences) + "\nImpression: " + impression
                        + "\nNot assessed by this model: pneumothorax, bones.", not_assessed=("pneumothorax", "bones"),
                        labels={"pneumonia": 0.07, "nodule": 0.81},
                        label_regions={"pneumonia": None, "nodule": "right lower lung zone"},
                        timings={"total": 0.5, "detect": 0.2}, sentences=sentences,
                        measurements={"cardiothoracic_ratio": ctr}, input_check=input_check,
                        image_findings={"pneumonia": 0.07, "pleural effusion": 0.2})


def _rejected_typed(reason: str = NOT_A_CXR, **kwargs):
    from crrg.types import InputCheck

    return _typed(InputCheck(ok=False, score=0.04, reason=reason), **kwargs)


def _rejected(**kwargs) -> dict:
    return _rejected_typed(**kwargs).to_json()


def _analysis(result, forced: bool = False):
    """An Analysis of a typed result (crrg.types.ReportResult)."""
    from dataclasses import replace

    from demo.service import Analysis

    base = np.full((H, W, 3), 40, np.uint8)
    return Analysis(path="/srv/uploads/chest.png", report_result=replace(result, image="chest.png"), base=base,
                    scale=1.0, forced=forced)


COMPONENTS = ("state", "focus", "corner", "sentence", "overlay", "legend", "check", "force", "report_view",
              "report_text", "region_card", "describe", "table", "json_view", "status", "label_view",
              "label_plot", "label_table", "label_pick", "label_image", "ticks", "box_image", "box_card",
              "dl_json", "dl_png")


def _c():
    from types import SimpleNamespace

    return SimpleNamespace(**{name: name for name in COMPONENTS})  # component -> its name as the key


def test_report_lists_each_sentence_with_its_evidence() -> None:
    result = _built()
    sentences = views.evidence_sentences(result)
    assert [s["evidence"]["kind"] for s in sentences] == ["region", "measurement", "image"]
    assert views.report_sentences(result)[0] == (("right lower lung zone",), sentences[0]["text"])
    assert views.evidence_text(result, sentences[0]) == "region evidence · nodule 87 %"
    assert views.evidence_text(result, sentences[1]) == "measurement · cardiothoracic ratio 0.49"
    assert views.evidence_text(result, sentences[2]) == \
        "image-level evidence · normal 93 % · rests on the whole image (no box)"
    page = views.report_html(result, picked=1)
    assert page.count('class="crrg-sentence"') == 3 and page.count('aria-pressed="true"') == 1
    assert all(f'data-sentence="{i}"' in page for i in range(3))
    assert "nodule 87 %" in page and "cardiothoracic ratio 0.49" in page and "whole image (no box)" in page
    card = views.sentence_card(result, 2)
    assert "image-level classifier" in card and "whole image" in card and "crrg-chip crrg-whole" in card
    assert "cardiac silhouette" in views.sentence_card(result, 1) and "left lung" in views.sentence_card(result, 1)
    assert views.sentence_regions(result, 1) == ["cardiac silhouette", "right lung", "left lung"]
    assert views.sentence_regions(result, 2) == [] and views.sentence_regions(result, 7) == []


def test_the_impression_is_shown_above_the_sentences_and_carried_by_text_and_json() -> None:
    from demo.events import render_main

    result = _built()
    page = views.report_html(result)
    assert result["impression"] == "Nodule in the right lower lung zone."
    assert page.count('class="crrg-impression"') == 1
    assert page.index("crrg-impression") < page.index('class="crrg-sentence"')
    assert "<b>Impression:</b> Nodule in the right lower lung zone.</p>" in page
    shown = render_main(_c(), _analysis(_typed()), None, False)
    assert shown["report_text"].endswith("\nImpression: Nodule in the right lower lung zone.\n"
                                         "Not assessed by this model: pneumothorax, bones.")
    assert shown["json_view"]["impression"] == result["impression"]
    assert 'class="crrg-impression"' in shown["report_view"]
    assert views.impression_html({k: v for k, v in result.items() if k != "impression"}) == ""  # an older result


def test_the_topics_not_assessed_are_named_below_the_sentences() -> None:
    result = _built()
    page = views.report_html(result)
    assert page.count('class="crrg-not-assessed"') == 1
    assert page.rindex('class="crrg-sentence"') < page.index("crrg-not-assessed")
    assert "<b>Not assessed by this model:</b> pneumothorax, bones." in page
    assert views.not_assessed_html({k: v for k, v in result.items() if k != "not_assessed"}) == ""  # an older result
    assert views.not_assessed_html(dict(result, not_assessed=[])) == ""
    undecided = views.not_assessed_html(dict(result, indeterminate=["pleural effusion"]))
    assert undecided.count('class="crrg-not-assessed"') == 2
    assert "<b>Indeterminate (neither stated nor ruled out):</b> pleural effusion (20 %)." in undecided


def test_every_finding_the_model_checks_is_listed_with_whether_the_report_states_it() -> None:
    result = _built()
    assert "findings" in result and result["findings"]  # the JSON of a typed ReportResult
    page = views.report_html(result)
    table = views.findings_html(result)
    assert table and table in page and page.index("crrg-impression") < page.index("crrg-findings")
    for name, p in result["findings"].items():
        assert f"<td>{name}</td><td>{views.percent(p)}</td>" in table
    stated = {s["finding"] for s in result["sentences"] if s.get("finding")}
    assert table.count("<td>stated</td>") == len(stated & set(result["findings"]))
    assert views.findings_html({k: v for k, v in result.items() if k != "findings"}) == ""  # an older result


def test_an_older_result_without_sentences_is_rebuilt_from_the_regions() -> None:
    result = {k: v for k, v in _built().items() if k != "sentences"}
    [(regions, text)] = views.report_sentences(result)
    assert regions == ("right lower lung zone",) and text == "There is a nodule."
    assert views.evidence_text(result, views.evidence_sentences(result)[0]) == ""
    assert "No region was selected" in views.report_html(dict(_built(), sentences=[]))


def test_choosing_a_sentence_lights_its_boxes_on_the_overlay() -> None:
    from demo.events import focus_on

    analysis = _analysis(_typed(ctr=None))
    plain = focus_on(_c(), analysis, None, False)
    heart = focus_on(_c(), analysis, None, False, sentence=1)  # the CTR sentence: heart and both lungs
    assert heart["sentence"] == 1 and 'aria-pressed="true"' in heart["report_view"]
    assert "measurement" in heart["region_card"]
    inside_heart = (slice(400, 500), slice(250, 380))
    assert heart["overlay"][inside_heart].mean() > plain["overlay"][inside_heart].mean()  # tinted fill
    assert tuple(heart["overlay"][455, 200]) == hex_to_rgb(REGION_COLORS["cardiac silhouette"])
    assert np.array_equal(plain["overlay"][455, 200], analysis.base[455, 200])  # not drawn without it
    whole = focus_on(_c(), analysis, None, False, sentence=2)  # image-level: no box lit
    assert np.array_equal(whole["overlay"], plain["overlay"]) and "whole image" in whole["region_card"]


def test_clicking_a_sentence_twice_turns_it_off() -> None:
    import gradio as gr

    from demo.events import Handlers

    h = Handlers(_c(), service=None, examples=[])
    analysis = _analysis(_typed())
    picked = h.pick_sentence(analysis, None, False, gr.SelectData(None, {"index": 0, "value": "x"}))
    assert picked["sentence"] == 0 and picked["focus"] is None
    again = h.pick_sentence(analysis, 0, False, gr.SelectData(None, {"index": 0, "value": "x"}))
    assert again["sentence"] is None
    assert h.pick_sentence(analysis, None, False, gr.SelectData(None, {"index": 9, "value": ""}))["sentence"] is None


def test_ctr_widths_are_drawn_where_the_boxes_put_them() -> None:
    from crrg.measurements import ctr_widths
    from demo.drawing import CARDIAC_WIDTH_COLOR, THORACIC_WIDTH_COLOR, ctr_of

    assert {CARDIAC_WIDTH_COLOR, THORACIC_WIDTH_COLOR}.isdisjoint(REGION_COLORS.values())
    result = _built(ctr=0.49)
    ctr = ctr_of(result)
    assert ctr is not None and ctr.ratio == pytest.approx(0.49)
    assert (ctr.cardiac, ctr.thoracic) == ctr_widths(CTR_BOXES)  # the measurement module's rule
    assert ctr_of(_built(ctr=None)) is None  # no measured CTR: nothing to draw
    base = np.full((H, W, 3), 40, np.uint8)
    for scale in (1.0, 0.5):
        small = np.full((round(H * scale), round(W * scale), 3), 40, np.uint8) if scale != 1 else base
        drawn = draw_regions(small, [], scale, ctr=ctr)
        cy, ty = round(ctr.cardiac.y * scale), round(ctr.thoracic.y * scale)
        mid_c = round((ctr.cardiac.x1 + ctr.cardiac.x2) / 2 * scale)
        assert tuple(drawn[cy, mid_c]) == hex_to_rgb(CARDIAC_WIDTH_COLOR)
        assert tuple(drawn[ty, round((ctr.thoracic.x1 + 10) * scale)]) == hex_to_rgb(THORACIC_WIDTH_COLOR)
        assert tuple(drawn[ty, round((ctr.thoracic.x2 - 10) * scale)]) == hex_to_rgb(THORACIC_WIDTH_COLOR)
        left_of = round((ctr.thoracic.x1 - 20) * scale)  # beyond the thorax: the line stops
        assert np.array_equal(drawn[ty, left_of], small[ty, left_of])
        assert _count(drawn, CARDIAC_WIDTH_COLOR) > 100 and _count(drawn, THORACIC_WIDTH_COLOR) > 100
    assert np.array_equal(draw_regions(base, [], 1.0), base)
    legend = views.legend_html(result)
    assert "cardiac width" in legend and "CTR 0.49" in legend
    png = overlay_png(np.full((H, W), 0.3, np.float32), result)
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_rejected_input_shows_the_reason_and_no_report_until_analyse_anyway() -> None:
    from demo.events import everything

    analysis = _analysis(_rejected_typed())
    assert analysis.withheld
    out = everything(_c(), analysis, show_all=False)
    assert NOT_A_CXR in out["check"] and "Analyse anyway" in out["check"] and "chest.png" in out["check"]
    assert out["force"].visible and out["force"].value is False
    assert out["report_text"] == "" and "crrg-sentence" not in out["report_view"]
    assert "No report" in out["report_view"]
    assert np.array_equal(out["overlay"], analysis.base)  # no region overlay, no CTR widths
    assert np.array_equal(out["box_image"], analysis.base) and np.array_equal(out["label_image"], analysis.base)
    assert out["label_view"] is None and out["label_plot"] is None and out["label_table"] == []
    assert out["table"] == [] and 'data-drawn="0"' in out["legend"]
    shown = out["json_view"]
    assert set(shown) == {"image", "error", "input_check", "disclaimer"} and "report" not in shown
    assert shown["input_check"]["ok"] is False and "labels" not in shown

    forced = everything(_c(), _analysis(_rejected_typed(), forced=True), show_all=False)
    assert forced["report_text"] == analysis.result["report"]
    assert forced["report_view"].count('class="crrg-sentence"') == 3
    assert NOT_A_CXR in forced["check"] and "Analysed anyway" in forced["check"]  # the warning stays
    assert forced["force"].visible and forced["force"].value is True
    assert not np.array_equal(forced["overlay"], analysis.base) and forced["label_view"]
    assert forced["json_view"]["report"] == analysis.result["report"]

    ok = everything(_c(), _analysis(_typed()), show_all=False)
    assert ok["check"] == "" and not ok["force"].visible and ok["report_text"]


def test_the_analyse_anyway_box_reveals_without_running_the_model() -> None:
    import gradio as gr

    from demo.events import Handlers

    h = Handlers(_c(), service=None, examples=[])  # no service: nothing can run the model
    analysis = _analysis(_rejected_typed())
    shown = h.analyse_anyway(analysis, True, False)
    assert shown["state"].forced and shown["report_text"] == analysis.result["report"]
    hidden = h.analyse_anyway(shown["state"], False, False)
    assert hidden["report_text"] == "" and not hidden["state"].forced
    for attempt in (lambda: h.write(analysis, ["right lung"], 1, False), lambda: h.describe(analysis, "right lung", 1),
                    lambda: h.relabel(analysis, ["edema"])):
        with pytest.raises(gr.Error, match="Analyse anyway"):
            attempt()
    assert h.pick_sentence(analysis, None, False, gr.SelectData(None, {"index": 0, "value": ""})) == {}


class _Rejecting:
    """The real tiny pipeline with its input check answered 'not a chest radiograph' (the tiny
    model has no input checker): every image is rejected, the full result is still computed."""

    def __init__(self, pipe, reason: str = NOT_A_CXR) -> None:
        from crrg.types import InputCheck

        self.pipe, self.check = pipe, InputCheck(ok=False, score=0.03, reason=reason)
        self.default_prompts, self.num_beams = pipe.default_prompts, 1

    def __call__(self, image, **kwargs):
        from dataclasses import replace

        return replace(self.pipe(image, **kwargs), input_check=self.check)

    def classify(self, image, prompts=None):
        return self.pipe.classify(image, prompts)


def test_service_withholds_a_rejected_image_in_the_api_and_downloads(tiny_pipeline, tmp_path: Path,
                                                                       xray: Path) -> None:
    from demo.service import DemoService

    service = DemoService(_Rejecting(tiny_pipeline, f"{xray} {NOT_A_CXR}"), tmp_path / "work")
    report, record = service.report(str(xray), "pneumonia")
    assert report == "" and set(record) == {"image", "error", "input_check", "disclaimer"}
    assert record["image"] == "chest.png" and record["input_check"]["ok"] is False
    text = json.dumps(record)
    assert str(xray.parent) not in text and "chest.png" in text  # base names only
    forced_report, forced = service.report(str(xray), "pneumonia", force=True)
    assert forced_report == forced["report"] and forced["input_check"]["ok"] is False
    assert {"sentences", "measurements", "regions", "labels"} <= set(forced)
    analysis = service.analyse(str(xray), ["pneumonia"])
    assert analysis.withheld
    json_path, png_path = service.downloads(analysis)
    assert png_path is None and json.loads(Path(json_path).read_text()) == analysis.shown()
    assert "report" not in analysis.shown()
    from dataclasses import replace

    json_path, png_path = service.downloads(replace(analysis, forced=True))
    assert json.loads(Path(json_path).read_text())["report"] == analysis.result["report"] and png_path


def test_the_api_and_downloads_carry_sentences_measurements_and_input_check(service, xray: Path) -> None:
    _, result = service.report(str(xray), "pneumonia")
    assert {"sentences", "measurements", "input_check"} <= set(result)
    for sentence in result["sentences"]:
        assert set(sentence) == {"text", "regions", "finding", "evidence"}
        assert sentence["evidence"]["kind"] in ("region", "measurement", "image")
    findings = " ".join(s["text"] for s in result["sentences"])
    assert result["report"] == (f"{findings}\nImpression: {result['impression']}" if findings else "")
    assert "cardiothoracic_ratio" in result["measurements"]
    analysis = service.analyse(str(xray), ["pneumonia"])
    json_path, _ = service.downloads(analysis)
    saved = json.loads(Path(json_path).read_text())
    assert saved["sentences"] == analysis.result["sentences"]
    assert saved["impression"] == analysis.result["impression"] and saved["report"] == analysis.result["report"]
    assert saved["measurements"] == analysis.result["measurements"]


def test_input_check_messages_name_the_file_never_a_server_path() -> None:
    from demo.events import _analysable
    from demo.service import withheld_record

    typed = _rejected_typed(reason="/tmp/gradio/3f9a0c1e2b/noise.png: " + NOT_A_CXR,
                            image="/tmp/gradio/3f9a0c1e2b/noise.png")
    result = typed.to_json()
    page = views.input_check_html(result)
    record = withheld_record(result, "tick Analyse anyway")
    for shown in (page, json.dumps(record)):
        assert "noise.png" in shown and "/tmp" not in shown and "3f9a0c1e2b" not in shown
    import gradio as gr

    with pytest.raises(gr.Error) as caught:
        _analysable(_analysis(typed))
    assert "/" not in str(caught.value).replace("http", "")


def test_probability_note_says_what_a_probability_means() -> None:
    from crrg.calibration import Calibration, Platt, Temperature

    calibrated = views.probability_note(Calibration(zero_shot=Temperature(1.7)))
    assert "calibrated on the validation split" in calibrated and "temperature" in calibrated
    assert "not a diagnosis" in calibrated and "other hospitals" in calibrated
    assert "Platt" in views.probability_note(Calibration(zero_shot=Platt(1.2, 0.1)))
    raw = views.probability_note(Calibration())
    assert "uncalibrated" in raw and "not a diagnosis" in raw


def test_the_page_shows_the_probability_note_under_the_labels(tiny_pipeline) -> None:
    from demo import build_demo

    blocks = build_demo(tiny_pipeline)
    notes = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "crrg-probability-note"]
    assert len(notes) == 1 and "not a diagnosis" in notes[0].value
    force = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "crrg-force"]
    assert len(force) == 1 and "Analyse anyway" in force[0].label and force[0].visible is False
