"""Image -> regions -> sentences -> report, plus zero-shot labels. The one inference entry point.

    pipe = crrg.load("assets/crrg-default")          # or a hub repo id
    result = pipe("cxr.png", prompts=["pneumonia", "cardiomegaly"])
    print(result.report, result.labels)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crrg.images import load_image, preprocess
from crrg.model import CRRGModel
from crrg.regions import NUM_REGIONS, REGIONS, region_index
from crrg.report import assemble_report
from crrg.types import BoxSentence, RegionResult, ReportResult

logger = logging.getLogger(__name__)

ImageInput = Any  # path, bytes, file-like, PIL image or numpy array (see crrg.images.load_image)


@dataclass
class _Regions:
    """Per-region tensors of one image (index = crrg.regions order)."""

    boxes: torch.Tensor  # [29, 4] tensor pixels
    scores: torch.Tensor  # [29]
    detected: torch.Tensor  # [29] bool
    features: torch.Tensor  # [29, D]
    selection: torch.Tensor  # [29] probability
    abnormal: torch.Tensor  # [29] probability
    feature_maps: Any
    embedding: torch.Tensor | None = None  # [1, E] CLIP image embedding (clip_fusion models)


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


def parse_prompts(prompts: str | Sequence[str] | None) -> list[str]:
    """Comma-separated string or list -> unique, stripped, non-empty prompts (order kept)."""
    if prompts is None:
        return []
    items = prompts.split(",") if isinstance(prompts, str) else list(prompts)
    return list(dict.fromkeys(p.strip() for p in items if p and p.strip()))


class Pipeline:
    """Callable inference pipeline over a loaded :class:`CRRGModel` (CPU or CUDA)."""

    def __init__(self, model: CRRGModel, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = model.config

    @property
    def default_prompts(self) -> list[str]:
        return list(self.config.prompts)

    @torch.inference_mode()
    def __call__(
        self,
        image: ImageInput,
        prompts: str | Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        box: Sequence[float] | None = None,
        num_beams: int | None = None,
    ) -> ReportResult:
        """Report for one image.

        prompts: zero-shot labels (None -> the model's defaults; [] -> none).
        regions: write sentences for exactly these region names (RGRG interactive mode).
        box: (x1, y1, x2, y2) in original pixels -> a sentence for that box.
        """
        timer = _Timer()
        with timer("preprocess"):
            loaded = load_image(image)
            tensor, geometry = preprocess(loaded, size=self.config.image_size)
            batch = tensor.unsqueeze(0).to(self.device)  # [1, 1, S, S]
        with timer("detect"):
            found = self._detect(batch)
        chosen = self._choose(found, regions)
        beams = num_beams or self.config.num_beams
        with timer("generate"):
            sentences = self._generate(found.features[chosen], beams) if chosen.any() else []
            box_sentence = self._box_sentence(found, geometry, box, beams) if box is not None else None
        with timer("report"):
            written = dict(zip([REGIONS[i] for i in chosen.nonzero().flatten().tolist()], sentences))
            report, _ = assemble_report(list(written.items()))
        labels, label_regions = self._labels(batch, found, prompts, timer)
        region_results = self._region_results(found, geometry, chosen, written)
        timer.times["total"] = sum(timer.times.values())
        return ReportResult(
            image=loaded.source, width=loaded.width, height=loaded.height,
            regions=region_results, report=report, labels=labels, label_regions=label_regions,
            box_sentence=box_sentence, timings=dict(timer.times),
        )

    def classify(self, image: ImageInput, prompts: str | Sequence[str] | None = None) -> dict[str, float]:
        """Zero-shot label probabilities only (no detection, no report)."""
        labels = parse_prompts(prompts) or self.default_prompts
        tensor, _ = preprocess(load_image(image), size=self.config.image_size)
        with torch.inference_mode():
            probs = self.model.clip.zero_shot(tensor.unsqueeze(0).to(self.device), labels)[0]
        return {label: float(p) for label, p in zip(labels, probs.tolist())}

    # --- stages ---------------------------------------------------------------------------

    def _detect(self, batch: torch.Tensor) -> _Regions:
        out = self.model.detector(batch)
        embedding = self.model.clip.encode_image(batch) if self.model.fusion is not None else None
        fused = self.model.region_features(batch, out.features, embedding)  # [1, 29, D]
        selection = torch.sigmoid(self.model.selection(fused))[0]  # [29]
        abnormal = torch.sigmoid(self.model.abnormality(fused))[0]  # [29]
        detected = out.detected[0]
        return _Regions(
            boxes=out.boxes[0], scores=out.scores[0], detected=detected, features=fused[0],
            selection=selection * detected, abnormal=abnormal * detected, feature_maps=out.feature_maps,
            embedding=embedding,
        )

    def _choose(self, found: _Regions, regions: Sequence[str] | None) -> torch.Tensor:
        """[29] bool: regions that get a sentence (never an undetected one)."""
        if regions is None:
            return self.model.select_regions(found.selection, found.detected)
        chosen = torch.zeros(NUM_REGIONS, dtype=torch.bool, device=found.detected.device)
        for name in regions:
            chosen[region_index(name)] = True
        missing = [REGIONS[i] for i in (chosen & ~found.detected).nonzero().flatten().tolist()]
        if missing:
            logger.info("requested regions not detected, no sentence: %s", ", ".join(missing))
        return chosen & found.detected

    def _generate(self, features: torch.Tensor, beams: int) -> list[str]:
        return self.model.decoder.generate(features, num_beams=beams)

    def _box_sentence(self, found: _Regions, geometry: Any, box: Sequence[float], beams: int) -> BoxSentence:
        if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {tuple(box)}")
        original = torch.tensor([list(map(float, box))])
        scaled = torch.as_tensor(geometry.to_tensor(original), dtype=torch.float32).to(self.device)
        feature = self.model.detector.box_features(found.feature_maps, [scaled])  # [1, D]
        feature = self.model.region_features(None, feature.unsqueeze(0), found.embedding)[0]  # [1, D]
        sentence = self.model.decoder.generate(feature, num_beams=beams)[0]
        abnormal = torch.sigmoid(self.model.abnormality.score_any(feature))[0]
        return BoxSentence(box=tuple(float(v) for v in original[0].tolist()), sentence=sentence,
                           abnormal_prob=float(abnormal))

    def _labels(self, batch: torch.Tensor, found: _Regions, prompts: Any, timer: _Timer
                ) -> tuple[dict[str, float], dict[str, str | None]]:
        labels = self.default_prompts if prompts is None else parse_prompts(prompts)
        if not labels:
            return {}, {}
        with timer("clip"):
            probs = self.model.clip.zero_shot(batch, labels, image_features=found.embedding)[0]  # [L]
            scores = self.model.clip.region_scores(batch, found.boxes, found.detected, labels)  # [L, 29]
        best: dict[str, str | None] = {}
        for label, row in zip(labels, scores):
            valid = torch.isfinite(row)
            best[label] = REGIONS[int(torch.where(valid, row, -torch.inf).argmax())] if valid.any() else None
        return {label: float(p) for label, p in zip(labels, probs.tolist())}, best

    def _region_results(self, found: _Regions, geometry: Any, chosen: torch.Tensor,
                        written: dict[str, str]) -> tuple[RegionResult, ...]:
        boxes = torch.as_tensor(geometry.to_original(found.boxes.cpu())).tolist()
        results = []
        for i, name in enumerate(REGIONS):
            detected = bool(found.detected[i])
            abnormal = float(found.abnormal[i])
            results.append(RegionResult(
                name=name,
                box=tuple(boxes[i]) if detected else None,
                score=float(found.scores[i]),
                selection_prob=float(found.selection[i]) if detected else None,
                abnormal_prob=abnormal if detected else None,
                selected=bool(chosen[i]),
                abnormal=detected and abnormal > self.config.abnormal_threshold,
                sentence=written.get(name),
            ))
        return tuple(results)


def load(source: str | Path, device: str | torch.device | None = None) -> Pipeline:
    """Pipeline from a local folder or a hub repo id (see :func:`crrg.hub.resolve`)."""
    from crrg.hub import resolve

    folder = resolve(source)
    model = CRRGModel.from_pretrained(str(folder))
    return Pipeline(model, device=device)
