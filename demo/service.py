"""The demo's model-facing side: one shared :class:`crrg.pipeline.Pipeline` (or a
:class:`demo.loader.PipelineLoader` that loads it after the page serves), inference under a
lock, the per-session :class:`Analysis` (what the UI shows) and the files it offers for download.

No gradio here: errors are the library's own (``crrg.images.ImageError`` and other ``ValueError``s);
``demo.ui`` turns them into ``gr.Error`` messages.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from crrg import DISCLAIMER
from crrg.calibration import Calibration
from crrg.images import load_image
from crrg.prompts import parse_prompts
from crrg.regions import REGIONS
from crrg.types import ReportResult
from demo.drawing import DISPLAY_MIN_SIDE, display_image, overlay_png
from demo.messages import public_message
from demo.views import withheld

logger = logging.getLogger(__name__)

EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
MAX_EXAMPLES = 12


@dataclass
class Analysis:
    """One analysed image as the UI shows it (kept in a ``gr.State`` per browser session).

    ``report_result`` is the pipeline's typed result with ``image`` set to the file's name;
    :attr:`result` its JSON (``ReportResult.to_json``: what the views show and the user downloads).
    ``base`` is the display image (RGB uint8) and ``scale`` = display pixels / original pixels.
    ``forced``: the user ticked "Analyse anyway" for an image the input check rejected
    (:attr:`withheld` is then false: the result is shown, with the warning).
    """

    path: str
    report_result: ReportResult
    base: np.ndarray
    scale: float
    mode: str = "model"  # "model": regions the model selected; "custom": regions the user ticked
    extra: dict[str, str] = field(default_factory=dict)  # region -> sentence written on request
    forced: bool = False

    @cached_property
    def result(self) -> dict[str, Any]:
        """The result's JSON (the boundary to the page; computed once per analysis)."""
        return self.report_result.to_json()

    @property
    def withheld(self) -> bool:
        """The input check rejected the image and the user has not ticked "Analyse anyway"."""
        return withheld(self.result, self.forced)

    def shown(self) -> dict[str, Any]:
        """The JSON the user gets (JSON tab, download): the result, or, while withheld, the CLI's
        line for a rejected image (``{"image", "error", "input_check"}``, no report)."""
        return withheld_record(self.result, "tick Analyse anyway to report it") if self.withheld else self.result

    @property
    def name(self) -> str:
        return self.report_result.image or Path(self.path).name

    def detected(self) -> list[str]:
        return [r.name for r in self.report_result.regions if r.box is not None]

    def selected(self) -> list[str]:
        return [r.name for r in self.report_result.regions if r.selected]


class DemoService:
    """Thread-safe facade over one pipeline for every session of the demo."""

    def __init__(self, pipeline: Any, workdir: str | Path | None = None) -> None:
        self.pipeline = pipeline
        self._lock = threading.Lock()
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="crrg-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def default_prompts(self) -> list[str]:
        return list(self.pipeline.default_prompts)

    @property
    def calibration(self) -> Calibration:
        """The model's ``config.calibration`` (without loading it when the pipeline is a loader)."""
        calibration = getattr(self.pipeline, "calibration", None)
        if calibration is None:
            calibration = getattr(getattr(self.pipeline, "config", None), "calibration", None)
        return calibration if isinstance(calibration, Calibration) else Calibration.from_json(calibration)

    @property
    def default_beams(self) -> int:
        """The model's beam width, without loading it when the pipeline is a loader."""
        beams = getattr(self.pipeline, "num_beams", None)
        if beams is None:
            beams = getattr(getattr(self.pipeline, "config", None), "num_beams", 1)
        return int(beams or 1)

    # --- inference (serialised: torch on a couple of cores) ----------------------------------
    def _run(self, path: str, **kwargs: Any) -> ReportResult:
        with self._lock:
            result = self.pipeline(path, **kwargs)
        return replace(result, image=Path(path).name)

    def prompts(self, prompts: str | Sequence[str] | None) -> list[str]:
        """Prompt string/list -> clean list; empty -> the model's default prompts."""
        return parse_prompts(prompts) or self.default_prompts

    def analyse(self, path: str, prompts: str | Sequence[str] | None, num_beams: int | None = None
                ) -> Analysis:
        """Full analysis: regions, the model's report, zero-shot labels."""
        pixels = load_image(path).pixels  # fails fast, with a typed error, on a bad file
        result = self._run(path, prompts=self.prompts(prompts), num_beams=num_beams)
        base, scale = display_image(pixels, min_side=DISPLAY_MIN_SIDE)
        return Analysis(path=path, report_result=result, base=base, scale=scale)

    def for_regions(self, analysis: Analysis, regions: Sequence[str], num_beams: int | None = None
                    ) -> Analysis:
        """Sentences for exactly ``regions`` (RGRG's interactive mode); labels are kept."""
        unknown = [r for r in regions if r not in REGIONS]
        if unknown:
            raise ValueError(f"unknown regions {unknown}; valid regions: {', '.join(REGIONS)}")
        result = self._run(analysis.path, prompts=[], regions=list(regions), num_beams=num_beams)
        kept = analysis.report_result
        result = replace(result, labels=kept.labels, label_regions=kept.label_regions)
        return replace(analysis, report_result=result, mode="custom", extra={})

    def relabel(self, analysis: Analysis, prompts: str | Sequence[str] | None) -> Analysis:
        """New zero-shot labels (and best-matching regions) for the same image; the rest is kept."""
        result = self._run(analysis.path, prompts=self.prompts(prompts), regions=[])
        merged = replace(analysis.report_result, labels=result.labels, label_regions=result.label_regions)
        return replace(analysis, report_result=merged)

    def describe(self, analysis: Analysis, region: str, num_beams: int | None = None) -> str:
        """A sentence for one region on request (not merged into the report)."""
        result = self._run(analysis.path, prompts=[], regions=[region], num_beams=num_beams)
        sentence = next((r.sentence for r in result.regions if r.name == region), None)
        if sentence is None:
            raise ValueError(f"region {region!r} was not detected in this image, so it has no sentence")
        return sentence

    def for_box(self, analysis: Analysis, box: Sequence[float], num_beams: int | None = None
                ) -> dict[str, Any]:
        """A sentence for a user box (x1, y1, x2, y2 in original pixels): the ``box`` JSON entry."""
        result = self._run(analysis.path, prompts=[], regions=[], box=tuple(box), num_beams=num_beams)
        return result.to_json()["box"]

    def classify(self, path: str, prompts: str | Sequence[str] | None) -> dict[str, float]:
        with self._lock:
            probs = self.pipeline.classify(path, self.prompts(prompts))
        return {label: round(float(p), 4) for label, p in probs.items()}

    def report(self, path: str, prompts: str | Sequence[str] | None, force: bool = False
               ) -> tuple[str, dict[str, Any]]:
        """The ``/report`` API: (report text, the CLI's JSON). An image the input check rejects
        gets ``("", {"image", "error", "input_check", "disclaimer"})`` as the CLI writes it,
        unless ``force`` (then the full result, which keeps ``input_check``)."""
        result = self._run(path, prompts=self.prompts(prompts)).to_json()
        if withheld(result, force):
            return "", withheld_record(result, "pass force=True to report it anyway")
        return result["report"], result

    # --- files -------------------------------------------------------------------------------
    def downloads(self, analysis: Analysis) -> tuple[str, str | None]:
        """(JSON path, PNG overlay path) for the download buttons, named after the image; no PNG
        while the result is withheld (:attr:`Analysis.withheld`)."""
        folder = self.workdir / uuid.uuid4().hex[:12]
        folder.mkdir()
        stem = Path(analysis.name).stem or "crrg"
        json_path = folder / f"{stem}.crrg.json"
        json_path.write_text(json.dumps(analysis.shown(), indent=2))
        if analysis.withheld:
            return str(json_path), None
        png_path = folder / f"{stem}.crrg.png"
        png_path.write_bytes(overlay_png(load_image(analysis.path).pixels, analysis.result))
        return str(json_path), str(png_path)


def withheld_record(result: dict[str, Any], how: str) -> dict[str, Any]:
    """The line of an image the input check rejected, as the CLI writes it (no report, no labels,
    no regions); ``how``: how to report it anyway. Names the file by its base name only."""
    check = result["input_check"]
    reason = public_message(check.get("reason") or "the input check rejected this image")
    return {"image": Path(str(result.get("image", ""))).name,
            "error": f"not analysed: {reason} ({how})",
            "input_check": dict(check, reason=public_message(check["reason"]) if check.get("reason") else None),
            "disclaimer": result.get("disclaimer", DISCLAIMER)}


def example_files(folder: str | Path | None) -> list[Path]:
    """Image files directly in ``folder`` (sorted by name, at most :data:`MAX_EXAMPLES`), as resolved
    absolute paths (symlinks followed: gradio checks the real path); [] when unset."""
    if not folder:
        return []
    path = Path(folder).expanduser()
    if not path.is_dir():
        logger.warning("examples folder %s does not exist; no examples shown", path)
        return []
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES)
    return [p.resolve() for p in files[:MAX_EXAMPLES]]


def thumbnails(files: Sequence[Path], side: int = 192) -> list[tuple[np.ndarray, str]]:
    """(RGB thumbnail, file name) for each readable example; unreadable files are skipped."""
    out = []
    for path in files:
        try:
            thumb, _ = display_image(load_image(path).pixels, side)
        except (ValueError, OSError) as err:
            logger.warning("skipping example %s: %s", path, err)
            continue
        out.append((thumb, path.name))
    return out
