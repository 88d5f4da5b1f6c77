"""Load the model after the demo serves: :class:`PipelineLoader` stands in for a
:class:`crrg.pipeline.Pipeline` and loads it in a background thread.

Cold start is dominated by imports (torchvision, transformers, open_clip) and by building the
model, none of which the page needs. ``app.py`` therefore checks the weights folder (cheap), builds
and serves the page, and only then calls :meth:`PipelineLoader.start`. A request that arrives
before the model is ready waits for it; a model that failed to load answers every request with
the reason. The page's defaults (prompts, beam width) come from ``config.json`` without loading.

    loader = PipelineLoader("assets/crrg-default")   # resolves + reads config.json only
    blocks = build_demo(loader); blocks.launch(prevent_thread_lock=True)
    loader.start()                                   # the model loads while the page is up
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crrg.calibration import Calibration

logger = logging.getLogger(__name__)


class ModelNotReadyError(RuntimeError):
    """The model failed to load (the message says why) or did not load within the wait."""


class PipelineLoader:
    """A :class:`crrg.pipeline.Pipeline` that loads on first need, or in the background after
    :meth:`start`. Thread-safe: the first caller loads, the others wait."""

    def __init__(self, source: str | Path, device: str | None = None) -> None:
        from crrg.hub import resolve

        self.source = str(source)
        self.folder = resolve(source)  # raises WeightsNotFoundError now, before the page serves
        self.device = device
        config = json.loads((self.folder / "config.json").read_text())
        if not isinstance(config, dict):
            raise ValueError(f"{self.source!r}: config.json is not a JSON object")
        self._prompts = [str(p) for p in config.get("prompts") or []]
        self.num_beams = int(config.get("num_beams") or 1)
        #: calibration fitted on the validation split (``CRRGConfig.calibration``), for the page's note
        self.calibration = Calibration.from_json(config.get("calibration"))
        self._pipeline: Any = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.load_s: float | None = None

    # --- what the page needs before the model exists -------------------------------------------
    @property
    def default_prompts(self) -> list[str]:
        return list(self._prompts)

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._error is None

    # --- loading -------------------------------------------------------------------------------
    def start(self) -> PipelineLoader:
        """Load in a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is None and not self._done.is_set():
                self._thread = threading.Thread(target=self._load_once, name="crrg-model-loader",
                                                daemon=True)
                self._thread.start()
        return self

    def _load_once(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            start = time.perf_counter()
            try:
                from crrg.model import CRRGModel
                from crrg.pipeline import Pipeline

                model = CRRGModel.from_pretrained(str(self.folder))
                self._pipeline = Pipeline(model, device=self.device)
                self._pipeline(_warmup_image(), prompts=self._prompts[:1])  # first-call costs, now
            except Exception as err:  # noqa: BLE001 - reported to every request, and logged
                logger.exception("cannot load crrg weights from %s", self.source)
                self._error = err
            finally:
                self.load_s = time.perf_counter() - start
                self._done.set()
        if self._error is None:
            logger.info("crrg model loaded in %.1f s (%s)", self.load_s, self.source)

    def get(self, timeout: float | None = None) -> Any:
        """The loaded pipeline; loads now when :meth:`start` was not called."""
        if self._thread is None and not self._done.is_set():
            self._load_once()
        if not self._done.wait(timeout):
            raise ModelNotReadyError(f"the model is still loading after {timeout:.0f} s; try again shortly")
        if self._error is not None:
            raise ModelNotReadyError(f"the model could not be loaded ({type(self._error).__name__}: "
                                     f"{self._error}); the server log has the details")
        return self._pipeline

    # --- the Pipeline interface the demo uses --------------------------------------------------
    @property
    def config(self) -> Any:
        return self.get().config

    def __call__(self, image: Any, **kwargs: Any) -> Any:
        return self.get()(image, **kwargs)

    def classify(self, image: Any, prompts: str | Sequence[str] | None = None) -> dict[str, float]:
        return self.get().classify(image, prompts)


def _warmup_image() -> Any:
    """A small smooth grey image: one pass through every stage, so the first request is not slow."""
    import numpy as np

    y, x = np.mgrid[0:256, 0:224].astype(np.float32)
    return 0.5 + 0.3 * np.sin(x / 17.0) * np.cos(y / 23.0)
