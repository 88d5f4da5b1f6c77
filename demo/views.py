"""Text views of a result (HTML / Markdown / table rows) for the demo. Pure functions on the JSON
form of a :class:`crrg.types.ReportResult` (``to_json()``)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from crrg.calibration import Calibration, Temperature
from crrg.grounding import INDETERMINATE_LABEL, NOT_ASSESSED_LABEL
from crrg.report import assemble_report
from demo.drawing import CARDIAC_WIDTH_COLOR, REGION_COLORS, THORACIC_WIDTH_COLOR, ctr_of, is_finding, visible_regions
from demo.messages import public_message

REGION_HEADERS = ["region", "detection", "selection p", "abnormal p", "selected", "sentence"]
LABEL_HEADERS = ["prompt", "probability", "best-matching region"]

Result = Mapping[str, Any]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def chip(name: str) -> str:
    """A coloured region name (the same colour as its box)."""
    colour = REGION_COLORS.get(name, "#999999")
    return (f'<span class="crrg-chip" style="--chip:{colour}">'
            f'<span class="crrg-dot"></span>{html.escape(name)}</span>')


#: what each evidence kind means, for the reader (crrg.types.Evidence)
EVIDENCE_KINDS = {
    "region": ("region evidence", "a region-level classifier trained on region-level labels, for the boxed regions"),
    "measurement": ("measurement", "a value measured on the detected anatomy's boxes"),
    "image": ("image-level evidence", "an image-level classifier: it rests on the whole image, not on a box"),
}
WHOLE_IMAGE = "whole image (no box)"


def evidence_sentences(result: Result) -> list[dict[str, Any]]:
    """The report's sentences with their evidence (``ReportResult.to_json()["sentences"]``), in
    report order: ``{"text", "regions", "finding", "evidence"}``.

    A result from before sentences carried evidence (no ``"sentences"`` key) is rebuilt from the
    regions' sentences with :func:`crrg.report.assemble_report`, as the pipeline built the report
    then (a kept sentence lists every region that said it); its ``evidence`` is ``None``.
    """
    if result.get("sentences") is not None:
        return [dict(s, regions=list(s.get("regions") or [])) for s in result["sentences"]]
    written = [(r["name"], r["sentence"]) for r in result.get("regions") or [] if r.get("sentence")]
    if not written:
        return []
    _, kept = assemble_report(written)
    return [{"text": s.text, "regions": list(s.regions or (s.region,)), "finding": None, "evidence": None}
            for s in kept]


def report_sentences(result: Result) -> list[tuple[tuple[str, ...], str]]:
    """(regions, sentence) of each sentence of the report, in report order."""
    return [(tuple(s["regions"]), s["text"]) for s in evidence_sentences(result)]


def percent(p: float) -> str:
    return f"{100 * p:.0f} %" if 0.005 <= p <= 0.995 else ("< 1 %" if p < 0.005 else "> 99 %")


def evidence_text(result: Result, sentence: Mapping[str, Any]) -> str:
    """One line of plain text: the evidence kind, then the probability (as a percentage: of the
    finding stated, or of normal for a normal statement) or the measured value, then where."""
    evidence = sentence.get("evidence")
    if not evidence:
        return ""
    kind = evidence.get("kind", "")
    parts = [EVIDENCE_KINDS.get(kind, (f"{kind} evidence", ""))[0]]
    if evidence.get("probability") is not None:
        parts.append(f"{sentence.get('finding') or 'normal'} {percent(evidence['probability'])}")
    if evidence.get("value") is not None:
        parts.append(f"{(evidence.get('measurement') or 'value').replace('_', ' ')} {evidence['value']:.2f}")
    if kind == "image" or not sentence.get("regions"):
        parts.append("rests on the " + WHOLE_IMAGE)
    return " · ".join(parts)


def whole_image_chip() -> str:
    return (f'<span class="crrg-chip crrg-whole" style="--chip:#9ca3af"><span class="crrg-dot"></span>'
            f"{WHOLE_IMAGE}</span>")


def _chips(sentence: Mapping[str, Any]) -> str:
    names = sentence.get("regions") or []
    return "".join(chip(n) for n in names) if names else whole_image_chip()


def impression_html(result: Result) -> str:
    """The report's impression (``ReportResult.impression``) as one line; empty when the result has
    none (no sentence, or a result from before reports had one)."""
    text = (result.get("impression") or "").strip()
    if not text:
        return ""
    return f'<p class="crrg-impression"><b>Impression:</b> {html.escape(text)}</p>'


def not_assessed_html(result: Result) -> str:
    """What the report leaves open: the image-level findings it neither states nor rules out
    (``ReportResult.indeterminate``) and the topics no evidence in the image speaks to
    (``ReportResult.not_assessed``); empty when there are none or the result predates the fields."""
    found = result.get("findings") or {}
    parts = []
    undecided = result.get("indeterminate") or []
    if undecided:
        named = ", ".join(f"{f} ({percent(found[f])})" if f in found else f for f in undecided)
        parts.append(f"<b>{INDETERMINATE_LABEL}:</b> {html.escape(named)}.")
    topics = result.get("not_assessed") or []
    if topics:
        parts.append(f'<b>{NOT_ASSESSED_LABEL}:</b> {html.escape(", ".join(topics))}. '
                     "The report states nothing about these, normal or not.")
    return "".join(f'<p class="crrg-not-assessed">{p}</p>' for p in parts)


def findings_html(result: Result) -> str:
    """Every finding the model knows with its calibrated probability (``ReportResult.findings``:
    a region-level finding's maximum over its regions), and whether the report states it; empty
    for a result without the field."""
    found = result.get("findings") or {}
    if not found:
        return ""
    stated = {s.get("finding") for s in evidence_sentences(result) if s.get("finding")}
    rows = "".join(
        f'<tr><td>{html.escape(name)}</td><td>{percent(p)}</td><td>{"stated" if name in stated else ""}</td></tr>'
        for name, p in sorted(found.items(), key=lambda kv: -kv[1]))
    return ('<details class="crrg-findings"><summary>All findings the model checks</summary>'
            '<table><thead><tr><th>finding</th><th>probability</th><th>in the report</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            '<p class="crrg-hint">Calibrated probabilities; a finding is stated only above its threshold, '
            "and an image-level finding stated absent only below its rule-out probability, both chosen on "
            "validation images. Research demo, not a diagnosis.</p></details>")


def report_html(result: Result, title: str = "Report", picked: int | None = None) -> str:
    """The report: its impression (:func:`impression_html`), then one row per findings sentence:
    the coloured chip(s) of the regions it rests on (or "whole image"), the sentence and a line
    with its evidence, then what the report leaves open (:func:`not_assessed_html`). A row is a
    button (``data-sentence`` = its index): choosing it shows its evidence on the image;
    ``picked`` is the chosen one."""
    sentences = evidence_sentences(result)
    if not sentences:
        body = ('<p class="crrg-empty">No region was selected for a sentence. Tick regions under '
                "<b>Interactive</b> or click a box and press <b>Describe this region</b>.</p>")
    else:
        rows = []
        for i, sentence in enumerate(sentences):
            line = evidence_text(result, sentence)
            kind = (sentence.get("evidence") or {}).get("kind", "")
            evidence = f'<span class="crrg-evidence" data-kind="{html.escape(kind)}">{html.escape(line)}</span>' \
                if line else ""
            rows.append(
                f'<div class="crrg-sentence" data-sentence="{i}" role="button" tabindex="0" '
                f'aria-pressed="{"true" if i == picked else "false"}" '
                f'title="Show the evidence of this sentence on the image">'
                f'<span class="crrg-chips">{_chips(sentence)}</span>'
                f'<span class="crrg-said"><span class="crrg-text">{html.escape(sentence["text"])}</span>'
                f"{evidence}</span></div>")
        body = ('<div class="crrg-sentences">' + "".join(rows) + "</div>"
                '<p class="crrg-hint">Click a sentence to see its evidence on the image. Percentages: '
                "the model's probability of the finding stated (for a normal statement: of normal).</p>")
    return (f'<div class="crrg-report"><h3>{html.escape(title)}</h3>{impression_html(result)}{body}'
            f"{not_assessed_html(result)}{findings_html(result)}</div>")


def sentence_regions(result: Result, index: int | None) -> list[str]:
    """The regions sentence ``index`` of the report rests on ([] for none or an image-level one)."""
    sentences = evidence_sentences(result)
    if index is None or not 0 <= index < len(sentences):
        return []
    return list(sentences[index]["regions"])


def sentence_card(result: Result, index: int) -> str:
    """HTML card of one report sentence: where it rests, its evidence kind explained, the value."""
    sentences = evidence_sentences(result)
    if not 0 <= index < len(sentences):
        return region_card(result, None)
    sentence = sentences[index]
    evidence = sentence.get("evidence") or {}
    kind = evidence.get("kind")
    lines = [evidence_text(result, sentence) or "evidence not recorded (an older result)"]
    if kind in EVIDENCE_KINDS:
        lines.append("from " + EVIDENCE_KINDS[kind][1])
    detected = {r["name"] for r in result.get("regions") or [] if r.get("box") is not None}
    missing = [n for n in sentence.get("regions") or [] if n not in detected]
    if missing:
        lines.append("not detected, so not drawn: " + ", ".join(missing))
    stats = "<br>".join(html.escape(line) for line in lines)
    return (f'<div class="crrg-card">{_chips(sentence)}<div class="crrg-stats">{stats}</div>'
            f'<p class="crrg-quote">{html.escape(sentence["text"])}</p></div>')


def probability_note(calibration: Calibration | None) -> str:
    """One line on what a label probability means, true to the model's ``config.calibration``."""
    scaling = None if calibration is None else calibration.zero_shot
    tail = "they are not a diagnosis and may be miscalibrated on images from other hospitals."
    if scaling is not None:
        how = "temperature" if isinstance(scaling, Temperature) else "Platt"
        return (f"Probabilities are calibrated on the validation split of the training sources ({how} "
                f"scaling); {tail}")
    return ('Probabilities are uncalibrated scores (a softmax of "label" vs "no label"); ' + tail)


# ---------------------------------------------------------------------------------- input check
WITHHELD_REPORT = ('<div class="crrg-report"><h3>Report</h3><p class="crrg-empty crrg-withheld">No report: '
                   "the input check says this does not look like a frontal chest radiograph (see the "
                   "warning above).</p></div>")
WITHHELD_CARD = ('<div class="crrg-card crrg-muted">Not analysed: no regions, labels or sentences are '
                 "shown for an image the input check rejected.</div>")
WITHHELD_LEGEND = ('<div class="crrg-legend" data-drawn="0" data-detected="0"><span class="crrg-legend-note">'
                   "No regions drawn: the input check rejected this image.</span></div>")


def withheld(result: Result, forced: bool = False) -> bool:
    """True when the input check says this is not a frontal chest radiograph and the user has not
    asked to analyse it anyway: no report, labels or regions are shown."""
    check = result.get("input_check")
    return bool(check) and not check.get("ok", True) and not forced


def input_check_html(result: Result | None, forced: bool = False) -> str:
    """The input check's warning (empty when the input passed or was not checked)."""
    check = (result or {}).get("input_check")
    if not check or check.get("ok", True):
        return ""
    name = html.escape(public_message(str(result.get("image") or "this file")))
    reason = html.escape(public_message(check.get("reason") or "The input check rejected this image."))
    score = f"P(frontal chest radiograph) = {check.get('score', 0.0):.2f}"
    if forced:
        head, tail = f"Analysed anyway: {name}", "The report, labels and regions below may be meaningless."
    else:
        head, tail = (f"Not analysed: {name}", "No report, labels or regions are shown. Tick "
                      "<b>Analyse anyway</b> to see them.")
    return (f'<div class="crrg-check" role="alert" data-forced="{str(forced).lower()}"><b>⚠ {head}.</b> '
            f'{reason} <span class="crrg-muted">({score}.)</span> {tail}</div>')


def region_rows(result: Result) -> list[list[Any]]:
    """One table row per region: detected regions first (by selection probability), then the rest."""
    def key(region: Mapping[str, Any]) -> tuple[bool, float]:
        return region.get("box") is None, -(region.get("selection_prob") or 0.0)

    rows = []
    for region in sorted(result["regions"], key=key):
        detected = region.get("box") is not None
        rows.append([
            region["name"],
            round(region["score"], 3) if detected else None,
            None if region.get("selection_prob") is None else round(region["selection_prob"], 3),
            None if region.get("abnormal_prob") is None else round(region["abnormal_prob"], 3),
            "✓" if region.get("selected") else ("" if detected else "not detected"),
            region.get("sentence") or "",
        ])
    return rows


def region_card(result: Result, name: str | None) -> str:
    """Markdown-free HTML card of one region: its probabilities and sentence."""
    if not name:
        return ('<div class="crrg-card crrg-muted">Click a box on the image or a row of the table to '
                "see that region's sentence.</div>")
    region = next((r for r in result["regions"] if r["name"] == name), None)
    if region is None:
        return f'<div class="crrg-card">Unknown region {html.escape(name)}</div>'
    if region.get("box") is None:
        stats = "not detected in this image"
    else:
        stats = (f"detection {_fmt(region['score'])} · selection {_fmt(region.get('selection_prob'))}"
                 f" · abnormal {_fmt(region.get('abnormal_prob'))}"
                 + (" · <b>abnormal</b>" if region.get("abnormal") else ""))
    sentence = region.get("sentence")
    text = (f'<p class="crrg-quote">{html.escape(sentence)}</p>' if sentence else
            '<p class="crrg-muted">No sentence: the model did not select this region. Press '
            "<b>Describe this region</b> to write one.</p>")
    return f'<div class="crrg-card">{chip(name)}<div class="crrg-stats">{stats}</div>{text}</div>'


def box_card(box_result: Mapping[str, Any] | None, pending: Sequence[float] | None = None) -> str:
    """State of the draw-a-box tool: first corner pending, or the sentence for the drawn box."""
    if pending is not None:
        return (f'<div class="crrg-card">First corner at ({pending[0]:.0f}, {pending[1]:.0f}) px. '
                "Click the opposite corner.</div>")
    if not box_result:
        return ('<div class="crrg-card crrg-muted">Click two opposite corners on the image to draw a '
                "box; the model writes a sentence for it.</div>")
    x1, y1, x2, y2 = box_result["box"]
    return (f'<div class="crrg-card"><span class="crrg-chip" style="--chip:#6b7280"><span '
            f'class="crrg-dot"></span>your box</span><div class="crrg-stats">({x1:.0f}, {y1:.0f}) – '
            f"({x2:.0f}, {y2:.0f}) px · abnormal {box_result['abnormal_prob']:.2f}</div>"
            f'<p class="crrg-quote">{html.escape(box_result["sentence"] or "(empty sentence)")}</p></div>')


def label_rows(result: Result) -> list[list[Any]]:
    """(prompt, probability, best region) rows, most probable first."""
    regions = result.get("label_regions") or {}
    items = sorted(result.get("labels", {}).items(), key=lambda kv: -kv[1])
    return [[label, round(p, 3), regions.get(label) or "—"] for label, p in items]


def label_frame(labels: Mapping[str, float]) -> Any:
    """Zero-shot probabilities as a DataFrame for ``gr.BarPlot`` (most probable first)."""
    import pandas as pd

    items = sorted(labels.items(), key=lambda kv: -kv[1])
    return pd.DataFrame({
        "prompt": [k for k, _ in items],
        "probability": [round(float(v), 4) for _, v in items],
        "call": ["≥ 0.5" if v >= 0.5 else "< 0.5" for _, v in items],
    })


def timing_text(result: Result, withheld: bool = False) -> str:
    times = result.get("timings") or {}
    total = times.get("total")
    if total is None:
        return ""
    if withheld:
        return (f"**{result.get('image', '')}** · {result['width']}×{result['height']} px · "
                f"not analysed (input check) · {total:.2f} s")
    parts = " · ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items() if k != "total")
    found = sum(r.get("box") is not None for r in result["regions"])
    chosen = sum(bool(r.get("selected")) for r in result["regions"])
    return (f"**{result.get('image', '')}** · {result['width']}×{result['height']} px · "
            f"{found}/29 regions detected, {chosen} selected · {total:.2f} s ({parts})")


def legend_html(result: Result | None, show_all: bool = False, highlight: str | None = None,
                lit: Sequence[str] = ()) -> str:
    """Colour legend of the regions the overlay draws (:func:`demo.drawing.visible_regions`) and a
    line saying how many of the detected regions that is. Named (thick) ones bold, thin ones plain,
    abnormal ones marked ⚠. ``data-drawn`` / ``data-detected`` carry the two counts. ``lit``: the
    regions of the chosen sentence (drawn too); a measured CTR gets a note on its two widths."""
    if not result:
        return ""
    detected = [r for r in result["regions"] if r.get("box") is not None]
    if not detected:
        return '<div class="crrg-legend" data-drawn="0" data-detected="0"><span class="crrg-legend-note">' \
               "No region detected.</span></div>"
    thick, thin = visible_regions(result["regions"], highlight, show_all, tagged=lit)
    drawn = set(thick) | set(thin)
    items = []
    for region in detected:
        name = region["name"]
        if name not in drawn:
            continue
        cls = "crrg-legend-item crrg-selected" if name in thick else "crrg-legend-item"
        warn = '<span class="crrg-warn" title="abnormal">⚠</span>' if region.get("abnormal") else ""
        items.append(f'<span class="{cls}">{chip(name)}{warn}</span>')
    clicked = highlight in drawn and not any(r["name"] == highlight and is_finding(r) for r in detected)
    if len(drawn) == len(detected):
        what = "all detected regions"
    else:
        what = "selected and abnormal regions" + (" and the clicked one" if clicked else "")
        if any(n in drawn and not is_finding(next(r for r in detected if r["name"] == n)) for n in lit):
            what += " and the chosen sentence's"
    abnormal = sum(bool(r.get("abnormal")) for r in detected)
    note = f"Showing {len(drawn)} of {len(detected)} detected regions ({what})"
    if abnormal:
        note += f" · ⚠ {abnormal} abnormal"
    if len(drawn) < len(detected):
        note += " · tick <b>Show all 29 regions</b> for the rest"
    ctr = ctr_of(result)
    if ctr is not None:
        items.append(f'<span class="crrg-legend-item crrg-ctr">{_line_chip("cardiac width", CARDIAC_WIDTH_COLOR)}'
                     f'{_line_chip(f"thoracic width · CTR {ctr.ratio:.2f}", THORACIC_WIDTH_COLOR)}</span>')
    return (f'<div class="crrg-legend" data-drawn="{len(drawn)}" data-detected="{len(detected)}">'
            f'<span class="crrg-legend-note">{note}.</span>' + "".join(items) + "</div>")


def _line_chip(text: str, colour: str) -> str:
    return (f'<span class="crrg-chip" style="--chip:{colour}"><span class="crrg-line"></span>'
            f"{html.escape(text)}</span>")

