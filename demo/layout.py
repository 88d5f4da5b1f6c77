"""Components of the demo page (no behaviour: :mod:`demo.events` wires them)."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from crrg import DISCLAIMER
from crrg.regions import REGIONS
from demo import views

TITLE = "crrg · CRRG-CLIP chest X-ray report demo"
SUBTITLE = ("Upload a chest X-ray: the model finds 29 anatomical regions, writes one sentence per "
            "region worth reporting, and answers zero-shot questions with your own prompts.")
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"]
# A report sentence is a button (data-sentence = its index): clicking it, or Enter / Space on it,
# sends a select event with that index (demo.events: its evidence is drawn on the overlay).
SENTENCE_JS = """
const pick = (event) => {
  const row = event.target.closest('[data-sentence]');
  if (!row || !element.contains(row)) return false;
  trigger('select', {index: Number(row.dataset.sentence), value: row.innerText, selected: true});
  return true;
};
element.addEventListener('click', pick);
element.addEventListener('keydown', (event) => {
  if ((event.key === 'Enter' || event.key === ' ') && pick(event)) event.preventDefault();
});
"""


def inputs(gallery: list[tuple[Any, str]], default_beams: int) -> dict[str, Any]:
    """Left column: upload, examples, run button, options, status line."""
    c: dict[str, Any] = {}
    c["upload"] = gr.File(label="Chest X-ray (PNG, JPEG, DICOM)", file_types=UPLOAD_TYPES,
                          type="filepath", height=150, elem_id="crrg-upload")
    c["gallery"] = gr.Gallery(value=gallery or None, label="Examples (click one)", columns=3, height=190,
                              allow_preview=False, visible=bool(gallery), elem_id="crrg-examples")
    c["run"] = gr.Button("Analyse", variant="primary", elem_id="crrg-run")
    with gr.Accordion("Options", open=False):
        c["beams"] = gr.Slider(1, 4, value=default_beams, step=1, label="Beam search width")
    c["status"] = gr.Markdown(elem_id="crrg-status")
    return c


def main_panels() -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Column(scale=5, min_width=380):
        c["overlay"] = gr.Image(label="Regions: click a box", interactive=False, height=600, format="png",
                                elem_id="crrg-overlay", buttons=["fullscreen", "download"])
        # Off: only the selected and abnormal regions (and the clicked one) are drawn and named.
        c["show_all"] = gr.Checkbox(value=False, label="Show all 29 regions (the rest as thin boxes)",
                                    container=False, elem_id="crrg-show-all")
        c["legend"] = gr.HTML(elem_id="crrg-legend")
    with gr.Column(scale=5, min_width=340):
        # the input check's warning and its "Analyse anyway" box (shown only for a rejected image)
        c["check"] = gr.HTML("", elem_id="crrg-input-check")
        c["force"] = gr.Checkbox(value=False, visible=False, elem_id="crrg-force",
                                 label="Analyse anyway (show the report of an image the input check rejected)")
        c["report_view"] = gr.HTML(views.report_html({"regions": [], "report": ""}, "Report"),
                                   elem_id="crrg-report", js_on_load=SENTENCE_JS)
        c["report_text"] = gr.Textbox(label="Report (plain text)", lines=3, max_lines=8, interactive=False,
                                      buttons=["copy"], elem_id="crrg-report-text")
        with gr.Row():
            c["dl_json"] = gr.DownloadButton("⬇ JSON", interactive=False, size="sm", elem_id="crrg-dl-json")
            c["dl_png"] = gr.DownloadButton("⬇ PNG overlay", interactive=False, size="sm",
                                            elem_id="crrg-dl-png")
        c["region_card"] = gr.HTML(views.region_card({"regions": []}, None), elem_id="crrg-region-card")
        c["describe"] = gr.Button("Describe this region", size="sm", interactive=False)
    return c


def tabs(default_prompts: list[str], probability_note: str = "") -> dict[str, Any]:
    """The tabs under the main row: labels, region table, interactive generation, JSON, about."""
    c: dict[str, Any] = {}
    with gr.Tabs():
        with gr.Tab("Zero-shot labels", id="labels"):
            c |= labels_tab(default_prompts, probability_note)
        with gr.Tab("Region table", id="regions"):
            c["table"] = gr.Dataframe(headers=views.REGION_HEADERS, interactive=False, wrap=True,
                                      max_height=460, elem_id="crrg-table",
                                      column_widths=["19%", "9%", "9%", "9%", "10%", "44%"],
                                      datatype=["str", "number", "number", "number", "str", "str"])
        with gr.Tab("Interactive", id="interactive"):
            with gr.Row():
                with gr.Column(scale=1):
                    c["ticks"] = gr.CheckboxGroup(choices=list(REGIONS), label="Write sentences for exactly "
                                                  "these regions", elem_id="crrg-ticks")
                    with gr.Row():
                        c["write"] = gr.Button("Write sentences for ticked regions", variant="primary")
                        c["back"] = gr.Button("Back to the model's choice", size="sm")
                with gr.Column(scale=1):
                    c["box_image"] = gr.Image(label="Draw a box: click two opposite corners",
                                              interactive=False,
                                              height=460, format="png", elem_id="crrg-box")
                    c["box_card"] = gr.HTML(views.box_card(None), elem_id="crrg-box-card")
        with gr.Tab("JSON", id="json"):
            c["json_view"] = gr.JSON(label="ReportResult.to_json() (the CLI's --json schema)")
        with gr.Tab("About & API", id="about"):
            gr.Markdown(ABOUT)
    return c


def labels_tab(default_prompts: list[str], probability_note: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            c["prompts"] = gr.Dropdown(choices=default_prompts, value=default_prompts, multiselect=True,
                                       allow_custom_value=True, label="Prompts",
                                       info="Remove one with ×; type a new finding and press Enter.",
                                       elem_id="crrg-prompts")
            with gr.Row():
                c["relabel"] = gr.Button("Update labels", variant="primary", size="sm")
                c["reset"] = gr.Button("Default prompts", size="sm")
            c["label_view"] = gr.Label(label="Probability (click one to see where it matches)",
                                       num_top_classes=8, show_heading=False, elem_id="crrg-labels")
            c["probability_note"] = gr.HTML(f'<p class="crrg-note">{html.escape(probability_note)}</p>',
                                            elem_id="crrg-probability-note")
        with gr.Column(scale=3, min_width=360):
            c["label_plot"] = gr.BarPlot(x="prompt", y="probability", sort="-y", y_lim=[0, 1], x_title="",
                                         y_title='P("label" vs "no label")', x_label_angle=-35, height=360,
                                         label="Zero-shot probabilities", tooltip="all",
                                         elem_id="crrg-label-plot")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            c["label_pick"] = gr.Dropdown(label="Where does this prompt match best?", choices=[])
            c["label_table"] = gr.Dataframe(headers=views.LABEL_HEADERS, interactive=False, max_height=380,
                                            column_widths=["38%", "20%", "42%"], wrap=True,
                                            elem_id="crrg-label-table")
        with gr.Column(scale=3, min_width=360):
            c["label_image"] = gr.Image(label="Best-matching region", interactive=False, height=460,
                                        format="png", elem_id="crrg-label-image")
    return c


ABOUT = f"""
**How it works.** A Faster R-CNN finds the 29 Chest ImaGenome anatomical regions and gives one
feature vector per region; a region-selection classifier picks the regions worth a sentence (an
abnormality classifier is shown too); a small GPT-2 conditioned on each region's feature (pseudo
self-attention) writes that region's sentence; the de-duplicated sentences form the report (RGRG,
Tanida et al. CVPR 2023). A CLIP model answers zero-shot prompts as `"<label>"` vs `"no <label>"`
(CheXzero) and scores each region against each prompt (CRRG-CLIP, arXiv 2501.01989).

**API.** Two named endpoints for `gradio_client`:

```python
from gradio_client import Client, handle_file
client = Client("http://127.0.0.1:7860/")
report, result = client.predict(handle_file("chest.png"), "pneumonia, nodule", api_name="/report")
probs = client.predict(handle_file("chest.png"), "pneumonia, cardiomegaly", api_name="/classify")
```

`/report` returns the report text (the findings, then a line "Impression: …") and the CLI's
JSON: the 29 regions, the `impression` (one line), the report's findings `sentences` each with
its `evidence` (kind `region`, `measurement` or `image`; probability or value; the regions it
rests on), `measurements` (the cardiothoracic ratio), `input_check`, labels and the
disclaimer. An image the input check rejects (not a frontal chest radiograph) gets no report:
`("", {{"image", "error", "input_check"}})`, as the CLI writes it, unless you pass `force=True`
(`client.predict(..., True, api_name="/report")`). `/classify` returns `{{prompt: probability}}`.
An empty prompt string means the model's default prompts.

**Evidence.** Every sentence comes from one kind of evidence: `region` (a region-level classifier
trained on region-level labels, for the boxed regions), `measurement` (a value computed from the
detected boxes, such as the cardiothoracic ratio: the cardiac silhouette's width over the width of
both lungs, drawn as two lines) or `image` (an image-level classifier: the sentence names no
location and rests on the whole image). Click a sentence to draw its evidence.

{DISCLAIMER}
"""


