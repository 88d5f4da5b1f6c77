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
from demo.drawing import REGION_COLORS, display_image, draw_regions, hex_to_rgb, overlay_png, region_at
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


def test_region_at_picks_the_smallest_box_under_the_point() -> None:
    regions = [_region("right lung", (0, 0, 300, 600)), _region("right lower lung zone", (0, 400, 300, 600)),
               _region("abdomen", None)]
    assert region_at(regions, 100, 500) == "right lower lung zone"
    assert region_at(regions, 100, 100) == "right lung"
    assert region_at(regions, 500, 100) is None


def test_draw_regions_colours_selected_boxes_and_emphasises_the_highlight() -> None:
    base = np.full((200, 200, 3), 40, np.uint8)
    regions = [_region("right lung", (20, 20, 100, 180), selected=True),
               _region("left lung", (110, 20, 190, 180))]
    plain = draw_regions(base, regions, scale=1.0)
    assert plain.shape == base.shape
    assert tuple(plain[100, 20]) == hex_to_rgb(REGION_COLORS["right lung"])  # left edge, opaque
    assert not np.array_equal(plain[100, 110], base[100, 110])  # thin, translucent, but drawn
    hidden = draw_regions(base, regions, scale=1.0, show_unselected=False)
    assert np.array_equal(hidden[100, 110], base[100, 110])
    lit = draw_regions(base, regions, scale=1.0, highlight="left lung")
    assert lit[100, 150].mean() > plain[100, 150].mean()  # tinted fill inside the highlighted box
    boxed = draw_regions(base, [], scale=0.5, user_box=(100, 100, 300, 300))
    assert boxed[50:150, 50:150].max() == 255  # the user's box, at display scale


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
    assert analysis.base.shape == (H, W, 3) and analysis.scale == 1.0
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
