"""Look of the demo: theme, CSS and the header (passed to ``launch()``: gradio 6 takes them there)."""

from __future__ import annotations

import html

CSS = """
.gradio-container { max-width: 1480px !important; }
#crrg-header { padding: 4px 2px 0 2px; }
#crrg-header h1 { font-size: 1.55rem; margin: 0 0 2px 0; letter-spacing: -0.01em; }
#crrg-header p.crrg-sub { margin: 0 0 8px 0; color: var(--body-text-color-subdued); font-size: 0.95rem; }
.crrg-banner { display: flex; gap: 8px; align-items: center; padding: 7px 12px; border-radius: 8px;
  background: #fff4e5; color: #7a4100; border: 1px solid #ffcc80; font-size: 0.9rem; }
.dark .crrg-banner { background: #3b2a12; color: #ffd699; border-color: #7a5312; }
#crrg-overlay img, #crrg-box img, #crrg-label-image img { background: #0b0d10; }
#crrg-overlay, #crrg-box, #crrg-label-image { background: #0b0d10; }
.crrg-chip { --chip: #999; display: inline-flex; align-items: center; gap: 5px; padding: 1px 8px 1px 6px;
  border-radius: 999px; border: 1px solid var(--chip); font-size: 0.78rem; white-space: nowrap;
  background: color-mix(in srgb, var(--chip) 14%, transparent); font-weight: 600; }
.crrg-dot { width: 9px; height: 9px; border-radius: 2px; background: var(--chip); display: inline-block; }
.crrg-report h3 { margin: 0 0 8px 0; font-size: 1.05rem; }
.crrg-impression { margin: 0 0 8px 0; padding: 6px 10px; border-radius: 6px; line-height: 1.45;
  border-left: 3px solid var(--color-accent); background: color-mix(in srgb, var(--color-accent) 8%, transparent); }
.crrg-not-assessed { margin: 8px 0 0 0; padding: 6px 10px; border-radius: 6px; font-size: 0.9rem;
  border-left: 3px solid #d97706; background: color-mix(in srgb, #d97706 10%, transparent); }
.crrg-sentences { display: grid; grid-template-columns: max-content 1fr; column-gap: 12px; }
.crrg-sentence { display: grid; grid-column: 1 / -1; grid-template-columns: subgrid; cursor: pointer;
  border-bottom: 1px solid var(--border-color-primary); border-radius: 6px; }
.crrg-sentence:hover { background: color-mix(in srgb, var(--color-accent) 7%, transparent); }
.crrg-sentence:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 1px; }
.crrg-sentence[aria-pressed="true"] { background: color-mix(in srgb, var(--color-accent) 15%, transparent);
  box-shadow: inset 3px 0 0 var(--color-accent); }
.crrg-sentence > * { overflow-wrap: anywhere; padding: 6px 0 6px 4px; line-height: 1.45; }
.crrg-sentence > .crrg-chips { display: flex; flex-direction: column; align-items: flex-start; gap: 3px; }
.crrg-sentence:last-child { border-bottom: none; }
.crrg-said { display: flex; flex-direction: column; gap: 2px; }
.crrg-evidence { font-size: 0.8rem; color: var(--body-text-color-subdued); }
.crrg-evidence[data-kind="measurement"] { color: #0e7490; }
.dark .crrg-evidence[data-kind="measurement"] { color: #67e8f9; }
.crrg-hint, .crrg-note { font-size: 0.8rem; color: var(--body-text-color-subdued); margin: 6px 0 0 0; }
.crrg-line { width: 14px; height: 3px; border-radius: 1px; background: var(--chip); display: inline-block; }
.crrg-check { padding: 9px 12px; border-radius: 8px; background: #fdecec; color: #7f1d1d;
  border: 2px solid #f87171; font-size: 0.95rem; line-height: 1.45; overflow-wrap: anywhere; }
.crrg-check[data-forced="true"] { border-width: 1px; background: #fff4e5; color: #7a4100; border-color: #ffcc80; }
.dark .crrg-check { background: #3b1212; color: #fecaca; border-color: #b91c1c; }
.dark .crrg-check[data-forced="true"] { background: #3b2a12; color: #ffd699; border-color: #7a5312; }
.crrg-card { padding: 10px 12px; border-radius: 8px; border: 1px solid var(--border-color-primary);
  background: var(--block-background-fill); }
.crrg-stats { font-size: 0.82rem; color: var(--body-text-color-subdued); margin: 6px 0 2px 0; }
.crrg-quote { overflow-wrap: anywhere; margin: 6px 0 0 0; font-size: 1rem; line-height: 1.45; }
.crrg-muted, .crrg-empty { color: var(--body-text-color-subdued); }
.crrg-legend { display: flex; flex-wrap: wrap; gap: 4px 6px; padding: 6px 2px; }
.crrg-legend-item .crrg-chip { font-weight: 400; opacity: 0.8; }
.crrg-legend-item.crrg-selected .crrg-chip { font-weight: 700; opacity: 1; }
.crrg-legend-note { flex-basis: 100%; font-size: 0.8rem; color: var(--body-text-color-subdued); }
.crrg-warn { color: #e11d1d; font-weight: 700; margin-left: 2px; }
#crrg-show-all { padding: 2px 4px 0 4px; }
#crrg-status { font-size: 0.85rem; min-height: 1.2em; }
.crrg-foot { font-size: 0.8rem; color: var(--body-text-color-subdued); text-align: center;
  margin: 6px 0 0 0; }
"""


def header_html(disclaimer: str, subtitle: str) -> str:
    return (
        '<div id="crrg-header">'
        "<h1>crrg · region-guided chest X-ray reports</h1>"
        f'<p class="crrg-sub">{html.escape(subtitle)}</p>'
        f'<div class="crrg-banner" id="crrg-disclaimer"><b>⚠ Research use only.</b> '
        f"{html.escape(disclaimer)}</div></div>"
    )


def theme():
    import gradio as gr

    return gr.themes.Soft(
        primary_hue="blue", secondary_hue="slate", neutral_hue="slate",
        # System fonts only: a Google font would be fetched from the internet by every browser.
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )
