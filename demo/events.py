"""Behaviour of the demo: error handling, rendering an :class:`Analysis` into component updates,
the event wiring, and the named API endpoints ``/report`` and ``/classify``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import gradio as gr

from crrg.images import ImageError
from crrg.regions import REGIONS
from demo import views
from demo.drawing import ctr_of, draw_regions, region_at, visible_regions
from demo.loader import ModelNotReadyError
from demo.messages import public_message
from demo.service import Analysis, DemoService

logger = logging.getLogger(__name__)

MIN_BOX_PX = 4.0  # original pixels: a smaller drawn box is a mis-click
MODEL = "crrg-model"  # concurrency id shared by every event that runs the model
PRIVATE = {"api_visibility": "private"}




def user_errors(fn: Callable) -> Callable:
    """Show input problems as ``gr.Error`` messages (file base names only, never a server path);
    log anything unexpected. The app keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ImageError as err:
            raise gr.Error(public_message(str(err)), title="Cannot read this image") from err
        except ModelNotReadyError as err:
            raise gr.Error(public_message(str(err)), title="The model is not available") from err
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise gr.Error(public_message(str(err)), title="Cannot do that") from err
        except Exception as err:  # noqa: BLE001 - the demo must keep serving
            logger.exception("demo handler %s failed", fn.__name__)
            raise gr.Error(public_message(f"Internal error ({type(err).__name__}: {err}). The demo is still "
                                          "running; see the server log."), title="Something went wrong") from err
    return wrapper


def api(service: DemoService) -> None:
    """Hidden components behind the named endpoints ``/report`` and ``/classify``."""
    with gr.Column(visible=False):
        image_in = gr.File(label="image", type="filepath")
        prompts_in = gr.Textbox(label="prompts", value="")
        force_in = gr.Checkbox(label="force", value=False)
        report = gr.Textbox(label="report")
        result = gr.JSON(label="result")
        labels = gr.JSON(label="labels")
        report_btn = gr.Button("report")
        classify_btn = gr.Button("classify")

    @user_errors
    def api_report(image: str | None, prompts: str | None, force: bool = False) -> tuple[str, dict[str, Any]]:
        if not image:
            raise gr.Error("no image given: pass an image file (PNG, JPEG or DICOM)")
        return service.report(image, prompts, force=bool(force))

    @user_errors
    def api_classify(image: str | None, prompts: str | None) -> dict[str, float]:
        if not image:
            raise gr.Error("no image given: pass an image file (PNG, JPEG or DICOM)")
        return service.classify(image, prompts)

    serial = {"concurrency_id": MODEL, "concurrency_limit": 1}
    report_btn.click(api_report, [image_in, prompts_in, force_in], [report, result], api_name="report", **serial,
                     api_description="Image file + comma-separated prompts ('' = defaults) [+ force] -> "
                     "(report text, the CLI's JSON: regions, report, impression, sentences with their evidence, "
                     "measurements, input_check, labels, disclaimer). An image the input check rejects "
                     "gets ('', {image, error, input_check}) unless force is true.")
    classify_btn.click(api_classify, [image_in, prompts_in], [labels], api_name="classify", **serial,
                       api_description="Image file + comma-separated prompts -> {prompt: probability}.")


# --------------------------------------------------------------------------------- rendering
def _lit(analysis: Analysis, sentence: int | None) -> list[str]:
    return views.sentence_regions(analysis.result, sentence)


def _overlay(analysis: Analysis, focus: str | None, sentence: int | None, show_all: bool) -> Any:
    """The main overlay: boxes, the chosen sentence's regions lit, the CTR widths; while the
    result is withheld, the bare image."""
    if analysis.withheld:
        return analysis.base
    result = analysis.result
    return draw_regions(analysis.base, result["regions"], analysis.scale, focus, show_all,
                        lit=_lit(analysis, sentence), ctr=ctr_of(result))


def _legend(analysis: Analysis, focus: str | None, sentence: int | None, show_all: bool) -> str:
    if analysis.withheld:
        return views.WITHHELD_LEGEND
    return views.legend_html(analysis.result, show_all, focus, _lit(analysis, sentence))


def _card(analysis: Analysis, focus: str | None, sentence: int | None) -> str:
    if analysis.withheld:
        return views.WITHHELD_CARD
    if sentence is not None:
        return views.sentence_card(analysis.result, sentence)
    return views.region_card(_with_extra(analysis), focus)


def _report_view(analysis: Analysis, sentence: int | None) -> str:
    title = "Report" if analysis.mode == "model" else "Report (your regions)"
    return views.WITHHELD_REPORT if analysis.withheld else views.report_html(analysis.result, title, sentence)


def render_main(c: SimpleNamespace, analysis: Analysis, focus: str | None, show_all: bool,
                sentence: int | None = None) -> dict:
    result = analysis.result
    check = result.get("input_check") or {}
    return {
        c.overlay: _overlay(analysis, focus, sentence, show_all),
        c.legend: _legend(analysis, focus, sentence, show_all),
        c.check: views.input_check_html(result, analysis.forced),
        c.force: gr.Checkbox(value=analysis.forced, visible=bool(check) and not check.get("ok", True)),
        c.report_view: _report_view(analysis, sentence),
        c.report_text: "" if analysis.withheld else result["report"],
        c.region_card: _card(analysis, focus, sentence),
        c.describe: gr.Button(interactive=focus is not None and not analysis.withheld),
        c.table: [] if analysis.withheld else views.region_rows(result),
        c.json_view: analysis.shown(),
        c.status: views.timing_text(result, analysis.withheld),
        c.sentence: sentence,
    }


def _with_extra(analysis: Analysis) -> dict[str, Any]:
    """The result with sentences written on request filled in (for the region card)."""
    if not analysis.extra:
        return analysis.result
    regions = [dict(r, sentence=r.get("sentence") or analysis.extra.get(r["name"]))
               for r in analysis.result["regions"]]
    return dict(analysis.result, regions=regions)


def render_label(c: SimpleNamespace, analysis: Analysis, prompt: str | None) -> dict:
    if analysis.withheld:
        return {c.label_image: analysis.base}
    result = analysis.result
    region = (result.get("label_regions") or {}).get(prompt) if prompt else None
    tags = {region: f"{prompt}: {result['labels'][prompt]:.2f}"} if region else {}
    image = draw_regions(analysis.base, result["regions"], analysis.scale, region, show_all=False,
                         show_findings=False, tags=tags)
    return {c.label_image: image}


def render_labels(c: SimpleNamespace, analysis: Analysis) -> dict:
    labels = {} if analysis.withheld else analysis.result.get("labels") or {}
    rows = [] if analysis.withheld else views.label_rows(analysis.result)
    top = rows[0][0] if rows else None
    out = {
        c.label_view: labels or None,
        c.label_plot: views.label_frame(labels) if labels else None,
        c.label_table: rows,
        c.label_pick: gr.Dropdown(choices=[r[0] for r in rows], value=top),
    }
    out.update(render_label(c, analysis, top))
    return out


def render_box(c: SimpleNamespace, analysis: Analysis, box: Any = None, corner: Any = None) -> dict:
    if analysis.withheld:
        return {c.box_image: analysis.base, c.box_card: views.box_card(None), c.corner: None}
    regions = analysis.result["regions"]
    user_box = box["box"] if box else None
    image = draw_regions(analysis.base, regions, analysis.scale, None, show_all=True, user_box=user_box,
                         marker=corner)
    return {c.box_image: image, c.box_card: views.box_card(box, corner), c.corner: corner}


def cleared(c: SimpleNamespace) -> dict:
    empty = {"regions": [], "report": ""}
    return {
        c.state: None, c.focus: None, c.corner: None, c.sentence: None, c.overlay: None, c.legend: "",
        c.check: "", c.force: gr.Checkbox(value=False, visible=False),
        c.report_view: views.report_html(empty), c.report_text: "",
        c.region_card: views.region_card(empty, None), c.describe: gr.Button(interactive=False),
        c.table: None, c.json_view: None, c.status: "", c.label_view: None, c.label_plot: None,
        c.label_table: None, c.label_pick: gr.Dropdown(choices=[], value=None),
        c.label_image: None, c.ticks: gr.CheckboxGroup(choices=list(REGIONS), value=[]), c.box_image: None,
        c.box_card: views.box_card(None),
    }


def everything(c: SimpleNamespace, analysis: Analysis, show_all: bool) -> dict:
    """Every view of a fresh analysis (focus, chosen sentence, drawn box and pending corner reset)."""
    out = {c.state: analysis, c.focus: None}
    out.update(render_main(c, analysis, None, show_all))
    out.update(render_labels(c, analysis))
    out.update(render_box(c, analysis))
    out[c.ticks] = (gr.CheckboxGroup(choices=list(REGIONS), value=[]) if analysis.withheld else
                    gr.CheckboxGroup(choices=analysis.detected(), value=analysis.selected()))
    return out


def focus_on(c: SimpleNamespace, analysis: Analysis, name: str | None, show_all: bool,
             sentence: int | None = None) -> dict:
    """Emphasise one region (drawn and named even when not a finding) and show its card, or, with
    ``sentence``, light the regions that report sentence rests on and show its evidence card."""
    detected = name is not None and name in analysis.detected() and not analysis.withheld
    return {
        c.focus: name,
        c.sentence: sentence,
        c.overlay: _overlay(analysis, name, sentence, show_all),
        c.legend: _legend(analysis, name, sentence, show_all),
        c.region_card: _card(analysis, name, sentence),
        c.describe: gr.Button(interactive=detected),
        c.report_view: _report_view(analysis, sentence),
    }


def _need(analysis: Analysis | None) -> Analysis:
    if analysis is None:
        raise gr.Error("Upload a chest X-ray first (PNG, JPEG or DICOM).", title="No image yet")
    return analysis


def _analysable(analysis: Analysis | None) -> Analysis:
    """The analysis, when the user may see the model's output for it (not withheld)."""
    analysis = _need(analysis)
    if analysis.withheld:
        raise gr.Error(f"The input check rejected {public_message(analysis.name)}: tick Analyse anyway "
                       "first.", title="Not analysed")
    return analysis


def _select_xy(analysis: Analysis, evt: gr.SelectData) -> tuple[float, float]:
    """Click position on a display image -> original pixels."""
    x, y = evt.index[:2]
    return float(x) / analysis.scale, float(y) / analysis.scale


def _selected_label(evt: gr.SelectData) -> str | None:
    """The prompt a click on the label list (its value) or the label table (first cell) names."""
    value = evt.row_value if evt.row_value else evt.value
    if isinstance(value, dict):
        value = value.get("label")
    if isinstance(value, list):  # a dataframe row
        value = value[0] if value else None
    return str(value) if value else None


def _sentence_index(evt: gr.SelectData) -> int | None:
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) and evt.index else evt.index
    try:
        return int(index)
    except (TypeError, ValueError):
        return None


class Handlers:
    """Event handlers of the page; each returns ``{component: update}`` for the components ``c``."""

    def __init__(self, c: SimpleNamespace, service: DemoService, examples: list[Any]) -> None:
        self.c, self.service, self.examples = c, service, examples

    @user_errors
    def analyse(self, path: str | None, prompts: list[str] | None, beams: float, show_all: bool) -> dict:
        if not path:
            return cleared(self.c)
        return everything(self.c, self.service.analyse(path, prompts, int(beams)), show_all)

    @user_errors
    def analyse_anyway(self, analysis: Analysis | None, forced: bool, show_all: bool) -> dict:
        """The "Analyse anyway" box: show (or hide again) what the input check withheld. The
        pipeline already computed it: nothing runs again."""
        if analysis is None:
            return {}
        return everything(self.c, replace(analysis, forced=bool(forced)), show_all)

    @user_errors
    def downloads(self, analysis: Analysis | None) -> dict:
        c = self.c
        if analysis is None:
            return {b: gr.DownloadButton(value=None, interactive=False) for b in (c.dl_json, c.dl_png)}
        json_path, png_path = self.service.downloads(analysis)
        return {c.dl_json: gr.DownloadButton(value=json_path, interactive=True),
                c.dl_png: gr.DownloadButton(value=png_path, interactive=png_path is not None)}

    @user_errors
    def write(self, analysis: Analysis | None, ticked: list[str] | None, beams: float,
              show_all: bool) -> dict:
        analysis = _analysable(analysis)
        if not ticked:
            raise gr.Error("Tick at least one region.", title="No region ticked")
        analysis = self.service.for_regions(analysis, ticked, int(beams))
        missing = [r for r in ticked if r not in analysis.detected()]
        if missing:
            gr.Warning(f"Not detected in this image, so no sentence: {', '.join(missing)}")
        return render_main(self.c, analysis, None, show_all) | {self.c.state: analysis, self.c.focus: None}

    @user_errors
    def relabel(self, analysis: Analysis | None, prompts: list[str] | None) -> dict:
        analysis = _analysable(analysis)
        analysis = self.service.relabel(analysis, prompts)
        return render_labels(self.c, analysis) | {self.c.state: analysis, self.c.json_view: analysis.shown()}

    @user_errors
    def describe(self, analysis: Analysis | None, focus: str | None, beams: float) -> dict:
        analysis = _analysable(analysis)
        if not focus:
            raise gr.Error("Click a region first.", title="No region chosen")
        analysis.extra[focus] = self.service.describe(analysis, focus, int(beams))
        return {self.c.state: analysis, self.c.region_card: views.region_card(_with_extra(analysis), focus)}

    @user_errors
    def click_overlay(self, analysis: Analysis | None, focus: str | None, show_all: bool,
                      evt: gr.SelectData) -> dict:
        """The smallest drawn box under the click; where no drawn box is, the smallest detected one."""
        if analysis is None or analysis.withheld:
            return {}
        x, y = _select_xy(analysis, evt)
        regions = analysis.result["regions"]
        thick, thin = visible_regions(regions, focus, show_all)
        return focus_on(self.c, analysis, region_at(regions, x, y, prefer=thick + thin), show_all)

    @user_errors
    def click_row(self, analysis: Analysis | None, show_all: bool, evt: gr.SelectData) -> dict:
        if analysis is None or analysis.withheld:
            return {}
        row = evt.row_value or []
        return focus_on(self.c, analysis, row[0] if row and row[0] in REGIONS else None, show_all)

    @user_errors
    def pick_sentence(self, analysis: Analysis | None, current: int | None, show_all: bool,
                      evt: gr.SelectData) -> dict:
        """A click on a report sentence: light its regions and show its evidence; a second click on
        the same sentence turns it off."""
        if analysis is None or analysis.withheld:
            return {}
        index = _sentence_index(evt)
        if index is None or not 0 <= index < len(views.evidence_sentences(analysis.result)) or index == current:
            index = None
        return focus_on(self.c, analysis, None, show_all, sentence=index)

    @user_errors
    def click_box(self, analysis: Analysis | None, corner: Any, beams: float, evt: gr.SelectData) -> dict:
        """First click: remember a corner; second click: a sentence for the box they span."""
        if analysis is None or analysis.withheld:
            return {}
        x, y = _select_xy(analysis, evt)
        if corner is None:
            return render_box(self.c, analysis, None, (x, y))
        (x1, x2), (y1, y2) = sorted((corner[0], x)), sorted((corner[1], y))
        if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
            gr.Warning("That box is too small: click two opposite corners of the area you want described.")
            return render_box(self.c, analysis)
        return render_box(self.c, analysis, self.service.for_box(analysis, (x1, y1, x2, y2), int(beams)))

    def redraw(self, analysis: Analysis | None, focus: str | None, sentence: int | None, show_all: bool) -> dict:
        return focus_on(self.c, analysis, focus, show_all, sentence) if analysis is not None else {}

    def pick_label(self, analysis: Analysis | None, prompt: str | None) -> dict:
        return render_label(self.c, analysis, prompt) if analysis is not None else {}

    def label_clicked(self, evt: gr.SelectData) -> Any:
        return gr.Dropdown(value=_selected_label(evt))

    def pick_example(self, evt: gr.SelectData) -> str:
        return str(self.examples[evt.index])

    def default_prompts(self) -> Any:
        return gr.Dropdown(value=self.service.default_prompts)


def wire(c: SimpleNamespace, service: DemoService, examples: list[Any]) -> None:
    """Connect the components of :mod:`demo.layout` (``c``) to the service."""
    h = Handlers(c, service, examples)
    everything_out = [c.state, c.focus, c.corner, c.sentence, c.overlay, c.legend, c.check, c.force,
                      c.report_view, c.report_text, c.region_card, c.describe, c.table, c.json_view, c.status,
                      c.label_view, c.label_plot, c.label_table, c.label_pick, c.label_image, c.ticks,
                      c.box_image, c.box_card]
    main_out = [c.state, c.focus, c.sentence, c.overlay, c.legend, c.check, c.force, c.report_view,
                c.report_text, c.region_card, c.describe, c.table, c.json_view, c.status]
    focus_out = [c.focus, c.sentence, c.overlay, c.legend, c.region_card, c.describe, c.report_view]
    labels_out = [c.state, c.json_view, c.label_view, c.label_plot, c.label_table, c.label_pick,
                  c.label_image]
    downloads_out = [c.dl_json, c.dl_png]
    model = {"concurrency_id": MODEL, "concurrency_limit": 1, **PRIVATE}

    gr.on([c.upload.change, c.run.click, c.back.click], h.analyse, [c.upload, c.prompts, c.beams, c.show_all],
          everything_out, **model).then(h.downloads, c.state, downloads_out, **PRIVATE)
    c.force.input(h.analyse_anyway, [c.state, c.force, c.show_all], everything_out, **PRIVATE
                  ).then(h.downloads, c.state, downloads_out, **PRIVATE)
    c.write.click(h.write, [c.state, c.ticks, c.beams, c.show_all], main_out, **model
                  ).then(h.downloads, c.state, downloads_out, **PRIVATE)
    c.relabel.click(h.relabel, [c.state, c.prompts], labels_out, **model
                    ).then(h.downloads, c.state, downloads_out, **PRIVATE)
    c.describe.click(h.describe, [c.state, c.focus, c.beams], [c.state, c.region_card], **model)
    c.overlay.select(h.click_overlay, [c.state, c.focus, c.show_all], focus_out, **PRIVATE)
    c.table.select(h.click_row, [c.state, c.show_all], focus_out, **PRIVATE)
    c.box_image.select(h.click_box, [c.state, c.corner, c.beams], [c.box_image, c.box_card, c.corner],
                       **model)
    c.report_view.select(h.pick_sentence, [c.state, c.sentence, c.show_all], focus_out, **PRIVATE)
    c.show_all.change(h.redraw, [c.state, c.focus, c.sentence, c.show_all], focus_out, **PRIVATE)
    c.label_pick.change(h.pick_label, [c.state, c.label_pick], [c.label_image], **PRIVATE)
    c.label_view.select(h.label_clicked, None, c.label_pick, **PRIVATE)
    c.label_table.select(h.label_clicked, None, c.label_pick, **PRIVATE)
    c.reset.click(h.default_prompts, None, c.prompts, **PRIVATE)
    if examples:
        c.gallery.select(h.pick_example, None, c.upload, **PRIVATE)
