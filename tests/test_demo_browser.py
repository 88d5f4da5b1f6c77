"""A real browser (headless Chromium via Playwright) uses the demo: upload, report, boxes, labels,
clicking a region, drawing a box, the focused overlay and its "Show all 29 regions" toggle. Saves
screenshots to ``artifacts/demo_browser.png``, ``demo_overlay_focused.png`` and ``demo_overlay_all.png``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crrg import DISCLAIMER
from demo.drawing import region_at, visible_regions
from demo.testing import ROOT, DemoServer, write_png
from demo.views import report_sentences

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed "
                               "(pip install -r requirements.txt; no browser download needed)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "artifacts"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from crrg.cli import main

    weights = tmp_path_factory.mktemp("crrg-tiny")
    assert main(["init", str(weights), "--variant", "tiny"]) == 0
    # the random model's selection probabilities are all about 0.63-0.75: a higher threshold leaves
    # some detected regions unselected, so the focused overlay has something to leave out
    config_path = weights / "config.json"
    config = json.loads(config_path.read_text())
    config["selection_threshold"] = 0.7
    config_path.write_text(json.dumps(config))
    examples = tmp_path_factory.mktemp("examples")
    write_png(examples / "example-phantom.png", seed=9, height=700, width=600)
    with DemoServer(weights, examples=examples) as running:
        yield running


@pytest.fixture(scope="module")
def xray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png(tmp_path_factory.mktemp("img") / "synthetic-chest.png", seed=5)


@pytest.fixture(scope="module")
def expected(server: DemoServer, xray: Path) -> dict:
    """What the API says about the same image with the default prompts (the model is deterministic)."""
    from gradio_client import Client, handle_file

    return Client(server.url, verbose=False).predict(handle_file(str(xray)), "", api_name="/report")[1]


@pytest.fixture()
def page(server: DemoServer):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page(viewport={"width": 1440, "height": 1000})
        tab.set_default_timeout(TIMEOUT_MS)
        tab.errors = []
        tab.on("pageerror", lambda err: tab.errors.append(str(err)))
        yield tab
        browser.close()


def _click_image(page, selector: str, x: float, y: float) -> None:
    """Click natural-pixel (x, y) of an <img> shown with object-fit contain."""
    image = page.locator(selector)
    # the image may have just been replaced (e.g. the first-corner marker): wait until it has loaded
    page.wait_for_function("s => { const el = document.querySelector(s); "
                           "return el && el.complete && el.naturalWidth > 0 && el.getBoundingClientRect().width > 0; }",
                           arg=selector)
    natural = image.evaluate("el => [el.naturalWidth, el.naturalHeight]")
    box = image.bounding_box()
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    left, top = (box["width"] - natural[0] * scale) / 2, (box["height"] - natural[1] * scale) / 2
    image.click(position={"x": left + x * scale, "y": top + y * scale})


def _coloured_pixels(png: bytes) -> int:
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())  # the X-ray itself is gray


def test_upload_report_regions_labels_and_interaction(page, server: DemoServer, xray: Path,
                                                      expected: dict) -> None:
    page.goto(server.url)
    assert DISCLAIMER in page.locator("#crrg-disclaimer").inner_text()
    page.set_input_files("#crrg-upload input[type=file]", str(xray))
    page.wait_for_selector("#crrg-report .crrg-sentence, #crrg-report .crrg-empty")
    page.wait_for_selector("#crrg-overlay img")
    page.wait_for_function("document.querySelector('#crrg-report-text textarea').value.length > 0"
                           if expected["report"] else "true")

    detected = [r for r in expected["regions"] if r["box"] is not None]
    assert page.locator("#crrg-report-text textarea").input_value() == expected["report"]
    thick, _ = visible_regions(expected["regions"])  # default: only the selected and abnormal ones
    assert page.locator("#crrg-legend .crrg-chip").count() == len(thick)
    sentences = report_sentences(expected)
    assert page.locator("#crrg-report .crrg-sentence").count() == len(sentences)
    assert page.locator("#crrg-report .crrg-empty").count() == (0 if sentences else 1)
    unassessed = expected.get("not_assessed") or []  # the tiny model assesses the lungs only
    assert unassessed and page.locator("#crrg-report .crrg-not-assessed").count() == 1
    assert ", ".join(unassessed) in page.locator("#crrg-report .crrg-not-assessed").inner_text()
    if detected:
        assert _coloured_pixels(page.locator("#crrg-overlay img").screenshot()) > 200  # boxes drawn
        target = min(detected, key=lambda r: (r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
        cx, cy = (target["box"][0] + target["box"][2]) / 2, (target["box"][1] + target["box"][3]) / 2
        name = region_at(expected["regions"], cx, cy, prefer=thick)
        _click_image(page, "#crrg-overlay img", cx, cy)
        page.wait_for_function(f"document.querySelector('#crrg-region-card').innerText.includes({name!r})")

    top = max(expected["labels"], key=expected["labels"].get)
    page.get_by_role("tab", name="Zero-shot labels").click()
    page.wait_for_function(f"document.querySelector('#crrg-labels').innerText.includes({top!r})")
    page.wait_for_selector("#crrg-label-plot canvas, #crrg-label-plot svg")

    page.get_by_role("tab", name="Interactive").click()
    page.wait_for_selector("#crrg-box img")
    _click_image(page, "#crrg-box img", 120, 150)
    page.wait_for_function("document.querySelector('#crrg-box-card').innerText.includes('First corner')")
    _click_image(page, "#crrg-box img", 300, 420)
    page.wait_for_function("document.querySelector('#crrg-box-card').innerText.includes('your box')")

    page.locator("#crrg-examples img").first.click()  # an example replaces the upload and runs
    page.wait_for_function("document.querySelector('#crrg-status').innerText.includes('example-phantom.png')")

    page.get_by_role("tab", name="Zero-shot labels").click()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo_browser.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")
    assert not page.errors, page.errors


def _legend_counts(page) -> tuple[int, int]:
    legend = page.locator("#crrg-legend .crrg-legend")
    return int(legend.get_attribute("data-drawn")), int(legend.get_attribute("data-detected"))


def _wait_drawn(page, drawn: int) -> None:
    page.wait_for_function("n => { const el = document.querySelector('#crrg-legend .crrg-legend'); "
                           "return el && el.dataset.drawn === String(n); }", arg=drawn)


def _overlay_src(page) -> str:
    return page.locator("#crrg-overlay img").get_attribute("src")


def _shot_overlay(page, name: str) -> Path:
    """The overlay, its checkbox and the legend in one screenshot."""
    boxes = [page.locator(s).bounding_box() for s in ("#crrg-overlay", "#crrg-show-all", "#crrg-legend")]
    x1, y1 = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
    x2, y2 = max(b["x"] + b["width"] for b in boxes), max(b["y"] + b["height"] for b in boxes)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot), clip={"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1})
    print(f"\nscreenshot: {shot}")
    return shot


def test_focused_overlay_and_show_all_toggle(page, server: DemoServer, xray: Path, expected: dict) -> None:
    regions = expected["regions"]
    detected = [r["name"] for r in regions if r["box"] is not None]
    findings, _ = visible_regions(regions)
    rest = [n for n in detected if n not in findings]
    assert rest, "with selection_threshold 0.7 some detected region should be neither selected nor abnormal"
    page.goto(server.url)
    page.set_input_files("#crrg-upload input[type=file]", str(xray))
    page.wait_for_selector("#crrg-overlay img")
    _wait_drawn(page, len(findings))
    assert _legend_counts(page) == (len(findings), len(detected))
    note = page.locator("#crrg-legend .crrg-legend-note").inner_text()
    assert f"Showing {len(findings)} of {len(detected)} detected regions" in note
    checkbox = page.locator("#crrg-show-all input[type=checkbox]")
    assert checkbox.is_visible() and not checkbox.is_checked()  # right under the overlay, off
    focused_src = _overlay_src(page)
    focused_png = page.locator("#crrg-overlay img").screenshot()
    _shot_overlay(page, "demo_overlay_focused.png")

    checkbox.check()
    _wait_drawn(page, len(detected))
    page.wait_for_function("old => { const el = document.querySelector('#crrg-overlay img'); "
                           "return el && el.complete && el.naturalWidth > 0 && el.getAttribute('src') !== old; }",
                           arg=focused_src)
    assert f"Showing {len(detected)} of {len(detected)}" in page.locator("#crrg-legend .crrg-legend-note").inner_text()
    assert page.locator("#crrg-legend .crrg-chip").count() == len(detected)
    assert page.locator("#crrg-overlay img").screenshot() != focused_png  # the rest drawn thin
    _shot_overlay(page, "demo_overlay_all.png")

    # click a region that only the full view draws: its card shows, and it stays drawn when unticked
    target = min((r for r in regions if r["name"] in rest),
                 key=lambda r: (r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
    cx, cy = (target["box"][0] + target["box"][2]) / 2, (target["box"][1] + target["box"][3]) / 2
    name = region_at(regions, cx, cy, prefer=detected)
    _click_image(page, "#crrg-overlay img", cx, cy)
    page.wait_for_function(f"document.querySelector('#crrg-region-card').innerText.includes({name!r})")
    checkbox.uncheck()
    _wait_drawn(page, len(findings) + (name not in findings))
    assert _legend_counts(page) == (len(findings) + (name not in findings), len(detected))
    assert not page.errors, page.errors



class _Scripted:
    """The real tiny pipeline, whose random report is usually empty, with a report of known
    sentences on its own detected boxes (a region sentence, an image-level one) and an input check
    that rejects files named ``noise*``: what the page does with them is what is tested."""

    def __init__(self, pipe) -> None:
        self.pipe, self.default_prompts, self.num_beams = pipe, pipe.default_prompts, 1

    def __call__(self, image, **kwargs):
        from dataclasses import replace

        from crrg.types import Evidence, InputCheck, Sentence

        result = self.pipe(image, **kwargs)
        found = tuple(r.name for r in result.regions if r.box is not None)[:2]
        sentences = (Sentence(f"There is an opacity in the {' and '.join(found)}.", found, "opacity",
                              Evidence("region", probability=0.83)),
                     Sentence("There is no radiographic evidence of pneumonia.", (), None,
                              Evidence("image", probability=0.9)))
        rejected = Path(str(image)).name.startswith("noise")
        check = (InputCheck(False, 0.02, f"{image}: This does not look like a frontal chest radiograph.")
                 if rejected else InputCheck(True, 0.98))
        return replace(result, sentences=sentences, report=" ".join(s.text for s in sentences),
                       input_check=check)

    def classify(self, image, prompts=None):
        return self.pipe.classify(image, prompts)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory):
    """The demo over :class:`_Scripted`, served in this process."""
    import crrg
    from crrg.cli import main
    from demo import build_demo, launch_options
    from demo.testing import free_port

    weights = tmp_path_factory.mktemp("crrg-tiny-scripted")
    assert main(["init", str(weights), "--variant", "tiny"]) == 0
    blocks = build_demo(_Scripted(crrg.load(weights, device="cpu")))
    blocks.launch(prevent_thread_lock=True, **launch_options(server_name="127.0.0.1", server_port=free_port()))
    try:
        yield blocks.local_url
    finally:
        blocks.close()


def _pressed(page, index: int, value: str) -> None:
    page.wait_for_function("([i, v]) => document.querySelector(`#crrg-report [data-sentence='${i}']`)"
                           "?.getAttribute('aria-pressed') === v", arg=[index, value])


def test_clicking_a_sentence_shows_its_evidence_on_the_image(page, scripted: str, xray: Path) -> None:
    """Every report sentence shows its evidence; clicking one lights the boxes it rests on and
    shows its evidence card; clicking it again turns it off; an image-level one rests on the whole
    image. The probability note is under the labels."""
    page.goto(scripted)
    page.set_input_files("#crrg-upload input[type=file]", str(xray))
    page.wait_for_selector("#crrg-report .crrg-sentence")
    page.wait_for_selector("#crrg-overlay img")
    rows = page.locator("#crrg-report .crrg-sentence")
    assert rows.count() == 2
    assert rows.nth(0).locator(".crrg-evidence").inner_text() == "region evidence · opacity 83 %"
    assert "rests on the whole image (no box)" in rows.nth(1).locator(".crrg-evidence").inner_text()
    assert not page.locator("#crrg-input-check .crrg-check").count()  # accepted: no warning
    before = _overlay_src(page)
    plain = page.locator("#crrg-overlay img").screenshot()
    rows.nth(0).click()
    _pressed(page, 0, "true")
    page.wait_for_function("old => document.querySelector('#crrg-overlay img')?.getAttribute('src') !== old",
                           arg=before)
    page.wait_for_function("document.querySelector('#crrg-region-card').innerText.includes('region-level classifier')")
    page.wait_for_function("document.querySelector('#crrg-overlay img').complete")
    assert page.locator("#crrg-overlay img").screenshot() != plain  # its boxes lit
    _shot_overlay(page, "demo_overlay_sentence.png")
    page.locator("#crrg-report").screenshot(path=str(ARTIFACTS / "demo_report_evidence.png"))
    page.locator("#crrg-report [data-sentence='1']").click()  # the image-level one: no box
    _pressed(page, 1, "true")
    page.wait_for_function("document.querySelector('#crrg-region-card').innerText.includes('whole image')")
    page.locator("#crrg-report [data-sentence='1']").click()  # again: off
    _pressed(page, 1, "false")
    page.get_by_role("tab", name="Zero-shot labels").click()
    assert "not a diagnosis" in page.locator("#crrg-probability-note").inner_text()
    assert not page.errors, page.errors


def test_a_rejected_image_gets_no_report_until_analyse_anyway(page, scripted: str, tmp_path: Path) -> None:
    noise = write_png(tmp_path / "noise.png", seed=3)
    page.goto(scripted)
    page.set_input_files("#crrg-upload input[type=file]", str(noise))
    page.wait_for_selector("#crrg-input-check .crrg-check")
    warning = page.locator("#crrg-input-check").inner_text()
    assert "noise.png" in warning and "does not look like a frontal chest radiograph" in warning
    assert str(tmp_path) not in warning and "/tmp" not in warning and "gradio" not in warning
    assert page.locator("#crrg-report .crrg-sentence").count() == 0
    assert page.locator("#crrg-report-text textarea").input_value() == ""
    assert page.locator("#crrg-legend .crrg-legend").get_attribute("data-drawn") == "0"
    box = page.locator("#crrg-force input[type=checkbox]")
    assert box.is_visible() and not box.is_checked()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_input_check.png"), full_page=True)
    box.check()
    page.wait_for_selector("#crrg-report .crrg-sentence")
    assert page.locator("#crrg-report .crrg-sentence").count() == 2
    assert "Analysed anyway" in page.locator("#crrg-input-check").inner_text()  # the warning stays
    page.wait_for_function("document.querySelector('#crrg-report-text textarea').value.length > 0")
    box.uncheck()
    page.wait_for_selector("#crrg-report .crrg-withheld")
    assert not page.errors, page.errors
