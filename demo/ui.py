"""``build_demo(pipeline) -> gr.Blocks`` and the ``launch()`` options that go with it.

    blocks = build_demo(crrg.load("assets/crrg-default"), examples="my-xrays/")
    blocks.launch(**launch_options(examples="my-xrays/"))
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from crrg import DISCLAIMER
from demo import layout, views
from demo.events import api, wire
from demo.service import DemoService, example_files, thumbnails
from demo.style import CSS, header_html, theme

logger = logging.getLogger(__name__)

MAX_FILE_SIZE = "64mb"  # uploads above this are refused by gradio with a message
QUEUE_SIZE = 64  # waiting requests beyond this are refused ("queue full"), not left to time out


def build_demo(pipeline: Any, examples: str | Path | None = None, workdir: str | Path | None = None
               ) -> gr.Blocks:
    """The demo page over one :class:`crrg.pipeline.Pipeline` (shared by all sessions), or a
    :class:`demo.loader.PipelineLoader` that loads it later (building the page never loads it).

    examples: a folder of PNG/JPEG/DICOM files shown as clickable thumbnails (none when None).
    workdir: where downloads are written (a fresh temporary folder when None).
    """
    service = DemoService(pipeline, workdir)
    readable = [(path, thumb) for path in example_files(examples) for thumb in thumbnails([path])]
    gallery = [(thumb, name) for _, (thumb, name) in readable]
    with gr.Blocks(title=layout.TITLE, analytics_enabled=False) as blocks:
        gr.HTML(header_html(DISCLAIMER, layout.SUBTITLE), padding=False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=270):
                parts = layout.inputs(gallery, service.default_beams)
            parts |= layout.main_panels()
        parts |= layout.tabs(service.default_prompts, views.probability_note(service.calibration))
        # focus: the clicked region; sentence: the index of the chosen report sentence
        c = SimpleNamespace(**parts, state=gr.State(None), focus=gr.State(None), corner=gr.State(None),
                            sentence=gr.State(None))
        wire(c, service, [path for path, _ in readable])
        api(service)
        gr.HTML(f'<p class="crrg-foot">{html.escape(DISCLAIMER)}</p>', padding=False)
    blocks.queue(default_concurrency_limit=2, max_size=QUEUE_SIZE)
    return blocks


def launch_options(examples: str | Path | None = None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``blocks.launch()``: theme, CSS, upload limit, and access to exactly the
    example files (not their whole folder)."""
    options: dict[str, Any] = {
        "theme": theme(), "css": CSS, "max_file_size": MAX_FILE_SIZE, "show_error": True,
        "footer_links": ["api"],
    }
    allowed = [str(path) for path in example_files(examples)]
    if allowed:
        options["allowed_paths"] = allowed
    options.update(overrides)
    return options
