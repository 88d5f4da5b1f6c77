"""Text views of a result (HTML / Markdown / table rows) for the demo. Pure functions on the JSON
form of a :class:`crrg.types.ReportResult` (``to_json()``)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from crrg.report import assemble_report
from demo.drawing import REGION_COLORS, is_finding, visible_regions

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


def report_sentences(result: Result) -> list[tuple[tuple[str, ...], str]]:
    """(regions, sentence) of each sentence of the report, in report order.

    Rebuilt with :func:`crrg.report.assemble_report` from the regions' sentences, as the pipeline
    built the report: a kept sentence lists every region that said it (de-duplication merges them).
    """
    written = [(r["name"], r["sentence"]) for r in result["regions"] if r.get("sentence")]
    if not written:
        return []
    _, kept = assemble_report(written)
    return [(s.regions or (s.region,), s.text) for s in kept]


def report_html(result: Result, title: str = "Report") -> str:
    """The report, one line per sentence, each tagged with its region's coloured chip(s)."""
    pairs = report_sentences(result)
    if not pairs:
        body = ('<p class="crrg-empty">No region was selected for a sentence. Tick regions under '
                "<b>Interactive</b> or click a box and press <b>Describe this region</b>.</p>")
    else:
        body = '<div class="crrg-sentences">' + "".join(
            f'<div class="crrg-sentence"><span class="crrg-chips">{"".join(chip(n) for n in names)}</span>'
            f"<span>{html.escape(text)}</span></div>"
            for names, text in pairs) + "</div>"
    return f'<div class="crrg-report"><h3>{html.escape(title)}</h3>{body}</div>'


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


def timing_text(result: Result) -> str:
    times = result.get("timings") or {}
    total = times.get("total")
    if total is None:
        return ""
    parts = " · ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items() if k != "total")
    found = sum(r.get("box") is not None for r in result["regions"])
    chosen = sum(bool(r.get("selected")) for r in result["regions"])
    return (f"**{result.get('image', '')}** · {result['width']}×{result['height']} px · "
            f"{found}/29 regions detected, {chosen} selected · {total:.2f} s ({parts})")


def legend_html(result: Result | None, show_all: bool = False, highlight: str | None = None) -> str:
    """Colour legend of the regions the overlay draws (:func:`demo.drawing.visible_regions`) and a
    line saying how many of the detected regions that is. Named (thick) ones bold, thin ones plain,
    abnormal ones marked ⚠. ``data-drawn`` / ``data-detected`` carry the two counts."""
    if not result:
        return ""
    detected = [r for r in result["regions"] if r.get("box") is not None]
    if not detected:
        return '<div class="crrg-legend" data-drawn="0" data-detected="0"><span class="crrg-legend-note">' \
               "No region detected.</span></div>"
    thick, thin = visible_regions(result["regions"], highlight, show_all)
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
    abnormal = sum(bool(r.get("abnormal")) for r in detected)
    note = f"Showing {len(drawn)} of {len(detected)} detected regions ({what})"
    if abnormal:
        note += f" · ⚠ {abnormal} abnormal"
    if len(drawn) < len(detected):
        note += " · tick <b>Show all 29 regions</b> for the rest"
    return (f'<div class="crrg-legend" data-drawn="{len(drawn)}" data-detected="{len(detected)}">'
            f'<span class="crrg-legend-note">{note}.</span>' + "".join(items) + "</div>")

