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

from crrg.calibration import apply_torch
from crrg.findings import pooled_inputs
from crrg.folding import FoldedTower
from crrg.grounding import ImageEvidence, compose, measurement_sentence
from crrg.images import load_image, preprocess
from crrg.input_check import input_features
from crrg.measurements import cardiothoracic_ratio, heart_size
from crrg.model import CRRGModel
from crrg.prompts import parse_prompts
from crrg.regions import NUM_REGIONS, REGIONS, region_index
from crrg.types import BoxSentence, InputCheck, RegionResult, ReportResult

logger = logging.getLogger(__name__)

ImageInput = Any  # path, bytes, file-like, PIL image or numpy array (see crrg.images.load_image)


@dataclass(frozen=True)
class Regions:
    """What :meth:`Pipeline.detect` finds in a batch of B images (region axis = crrg.regions order).

    Every probability is the one a user gets: calibrated (``config.calibration``) and 0 for a
    region that was not detected. Boxes are in the preprocessed tensor's pixels (see
    :meth:`crrg.images.Geometry.to_original`)."""

    boxes: torch.Tensor  # [B, 29, 4] tensor pixels, xyxy
    scores: torch.Tensor  # [B, 29] detector score
    detected: torch.Tensor  # [B, 29] bool
    features: torch.Tensor  # [B, 29, D] what the heads and the decoder read (CRRGModel.head_inputs)
    selection: torch.Tensor  # [B, 29] probability that the region gets a sentence
    abnormality: torch.Tensor  # [B, 29] calibrated abnormality probability
    feature_maps: Any  # the backbone maps (for a drawn box)
    embedding: torch.Tensor | None = None  # [B, E] CLIP image embedding
    crops: torch.Tensor | None = None  # [B, 29, E] CLIP embeddings of the region crops
    findings: torch.Tensor | None = None  # [B, 29, F] calibrated region-level finding probabilities
    image_findings: torch.Tensor | None = None  # [B, F'] calibrated image-level finding probabilities
    finding_names: tuple[str, ...] = ()  # the F names of ``findings``
    image_finding_names: tuple[str, ...] = ()  # the F' names of ``image_findings``
    input_checks: tuple[InputCheck, ...] | None = None  # per image (models with an input check)

    def maps_of(self, b: int) -> Any:
        """The backbone maps of image ``b`` alone (for a drawn box)."""
        return type(self.feature_maps)((k, v[b:b + 1]) for k, v in self.feature_maps.items())

    def region_findings(self, b: int) -> dict[str, list[float]]:
        """{finding: [29] probabilities} of image ``b`` (empty without region-level heads)."""
        if self.findings is None:
            return {}
        return dict(zip(self.finding_names, self.findings[b].T.tolist()))

    def image_findings_of(self, b: int) -> dict[str, float]:
        """{finding: probability} of image ``b`` (empty without an image-level head)."""
        if self.image_findings is None:
            return {}
        return dict(zip(self.image_finding_names, map(float, self.image_findings[b].tolist())))


@dataclass(frozen=True)
class PreparedImage:
    """One decoded, preprocessed image: what :meth:`Pipeline.batch` consumes (a DataLoader can
    make these in worker processes, see :mod:`crrg.batch`)."""

    source: str
    width: int
    height: int
    tensor: torch.Tensor  # [1, S, S] normalised
    geometry: Any  # crrg.images.Geometry
    preprocess_s: float = 0.0
    view: str | None = None  # "PA" / "AP" when the file says so (DICOM), else None


@dataclass(frozen=True)
class Composition:
    """The written report of one image: ``composed`` is what :func:`crrg.grounding.compose`
    returns (sentences with their evidence, the joined report, ...), ``measurements`` the values
    measured on the detected anatomy (``None`` where the anatomy was not found)."""

    composed: Any  # crrg.grounding.Composed
    measurements: dict[str, float | None]


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


def _probe(size: int, device: torch.device) -> torch.Tensor:
    """A fixed [1, 1, size, size] input on which a folded tower must match its original."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, 1, size, size, generator=generator).to(device)


def prepare(image: ImageInput, size: int) -> PreparedImage:
    """Decode and preprocess one image (raises :class:`crrg.images.ImageError` on a bad input)."""
    start = time.perf_counter()
    loaded = load_image(image)
    tensor, geometry = preprocess(loaded, size=size)
    return PreparedImage(loaded.source, loaded.width, loaded.height, tensor, geometry,
                    time.perf_counter() - start, loaded.view)


class Pipeline:
    """Callable inference pipeline over a loaded :class:`CRRGModel` (CPU or CUDA).

    ``pipe(image)`` is ``pipe.batch([image])[0]``: one code path, so a batch gives the same
    reports as single images (probabilities equal up to float rounding).
    """

    #: images per backbone pass and region crops per CLIP image-tower pass inside a batch: on a
    #: CPU, small passes keep activations in cache and are faster per image than one big pass
    #: (the outputs are the same); ``None`` = all at once.
    backbone_batch: int | None = 2
    crop_batch: int | None = 16

    def __init__(self, model: CRRGModel, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = model.config
        # channels-last convolutions are ~20 % faster on CPU (oneDNN) for both conv towers;
        # outputs agree to ~1e-6, and the weights are unchanged (save_pretrained makes them contiguous)
        for tower in (self.model.detector.backbone, self.model.clip.model.visual):
            tower.to(memory_format=torch.channels_last)
        # batch norm folded into the convolutions of both towers, in inference copies (crrg.folding)
        size = self.config.image_size
        self._body = FoldedTower(self.model.detector.backbone.body, lambda device: _probe(size, device))
        trunk = getattr(self.model.clip.model.visual, "trunk", None)  # open_clip's timm tower
        clip_size = self.model.clip.config.image_size
        self._trunk = None if trunk is None else FoldedTower(trunk, lambda device: _probe(clip_size, device))

    @property
    def default_prompts(self) -> list[str]:
        return list(self.config.prompts)

    # --- the stages, public: the pipeline and train.evaluate run exactly these -------------
    def prepare(self, image: ImageInput) -> PreparedImage:
        """Decode and preprocess one image (raises :class:`crrg.images.ImageError` on a bad input)."""
        return prepare(image, self.config.image_size)

    def stack(self, prepared: Sequence[PreparedImage]) -> torch.Tensor:
        """[B, 1, S, S] batch of prepared images on the pipeline's device."""
        return torch.stack([p.tensor for p in prepared]).to(self.device)

    def original_boxes(self, found: Regions, prepared: Sequence[PreparedImage]) -> list[list[list[float]]]:
        """[B][29][4] boxes of ``found`` in each image's original pixels."""
        return [torch.as_tensor(p.geometry.to_original(found.boxes[b].cpu())).tolist()
                for b, p in enumerate(prepared)]

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
        return self.batch([image], prompts=prompts, regions=regions, box=box, num_beams=num_beams)[0]

    @torch.inference_mode()
    def batch(
        self,
        images: Sequence[ImageInput | PreparedImage],
        prompts: str | Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        box: Sequence[float] | None = None,
        num_beams: int | None = None,
    ) -> list[ReportResult]:
        """Reports for several images: one detector and CLIP pass over the batch, and the
        sentences of every image decoded in one ``generate`` call. Arguments as :meth:`__call__`
        (``box`` applies to every image). The ``timings`` of each result are its share of the
        batch (stage time / B), plus its own decoding in ``preprocess``."""
        if not images:
            return []
        if box is not None and (len(box) != 4 or not (box[2] > box[0] and box[3] > box[1])):
            raise ValueError(f"box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {tuple(box)}")
        timer = _Timer()
        prepared = [item if isinstance(item, PreparedImage) else self.prepare(item) for item in images]
        with timer("preprocess"):
            batch = self.stack(prepared)  # [B, 1, S, S]
        with timer("detect"):
            found = self.detect(batch)
        chosen = self.choose(found, regions)  # [B, 29]
        beams = num_beams or self.config.num_beams
        with timer("generate"):
            written = self.write(found, chosen, beams)
            box_sentences = [self._box_sentence(found, b, p.geometry, box, beams) if box is not None else None
                             for b, p in enumerate(prepared)]
        with timer("report"):
            original = self.original_boxes(found, prepared)
            composed = [self.compose(found, b, original[b], written[b], p.view) for b, p in enumerate(prepared)]
        labels, label_regions = self._labels(batch, found, prompts, timer)
        shared = {name: seconds / len(prepared) for name, seconds in timer.times.items()}
        results = []
        for b, item in enumerate(prepared):
            times = dict(shared, preprocess=shared["preprocess"] + item.preprocess_s)
            times["total"] = sum(times.values())
            results.append(ReportResult(
                image=item.source, width=item.width, height=item.height,
                regions=self._region_results(found, b, original[b], chosen[b], written[b]),
                report=composed[b].composed.report, impression=composed[b].composed.impression,
                not_assessed=composed[b].composed.not_assessed, indeterminate=composed[b].composed.indeterminate,
                labels=labels[b], label_regions=label_regions[b],
                box_sentence=box_sentences[b], timings=times, sentences=composed[b].composed.sentences,
                measurements=composed[b].measurements,
                input_check=None if found.input_checks is None else found.input_checks[b],
                image_findings=found.image_findings_of(b),
            ))
        return results

    def classify(self, image: ImageInput, prompts: str | Sequence[str] | None = None) -> dict[str, float]:
        """Zero-shot label probabilities only (no detection, no report)."""
        labels = parse_prompts(prompts) or self.default_prompts
        tensor, _ = preprocess(load_image(image), size=self.config.image_size)
        with torch.inference_mode():
            probs = self.calibrated_zero_shot(self.model.clip.zero_shot(tensor.unsqueeze(0).to(self.device), labels))[0]
        return {label: float(p) for label, p in zip(labels, probs.tolist())}

    @torch.inference_mode()
    def detect(self, batch: torch.Tensor) -> Regions:
        """Detector, CLIP image tower, region heads and input check over a [B, 1, S, S] batch:
        every per-region output, with calibrated probabilities (:class:`Regions`)."""
        m = self.model
        out = m.detector.infer(batch, backbone_batch=self.backbone_batch, body=self._body.get())
        embedding = feature_map = None
        if m.fusion is not None or m.image_findings is not None or m.input_check is not None:
            embedding, feature_map = self.embed(batch)
        fused = m.head_inputs(batch, out.features, embedding)  # [B, 29, D]
        detected = out.detected
        crops = None
        if m.findings is not None or m.image_findings is not None:
            crops = m.clip.region_embeddings(batch, out.boxes, detected, crop_batch=self.crop_batch,
                                             feature_map=feature_map)
        findings, image = self._finding_probs(fused, crops, embedding, detected)
        checks = None
        if m.input_check is not None:
            checks = tuple(m.input_check.check(input_features(embedding, out.scores, batch)))
        return Regions(
            boxes=out.boxes, scores=out.scores, detected=detected, features=fused,
            selection=torch.sigmoid(m.selection(fused)) * detected,
            abnormality=apply_torch(self.config.calibration.abnormality, m.abnormality(fused)) * detected,
            feature_maps=out.feature_maps, embedding=embedding, crops=crops, findings=findings,
            image_findings=image, input_checks=checks,
            finding_names=tuple(m.findings.config.findings) if m.findings is not None else (),
            image_finding_names=tuple(m.image_findings.config.findings) if m.image_findings is not None else (),
        )

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CLIP image tower over a [B, 1, S, S] batch, as :meth:`detect` runs it: the image
        embedding [B, E] (what zero-shot prompts are scored against) and the tower's feature map."""
        trunk = None if self._trunk is None else self._trunk.get()
        parts = [self.model.clip.encode_image_map(chunk, trunk)
                 for chunk in batch.split(self.backbone_batch or len(batch))]
        embedding, feature_map = (torch.cat(x) for x in zip(*parts))
        return embedding, feature_map

    def _finding_probs(self, fused: torch.Tensor, crops: torch.Tensor | None, embedding: torch.Tensor | None,
                       detected: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Calibrated region-level [B, 29, F] (0 where undetected) and image-level [B, F']
        finding probabilities (``None`` without the head)."""
        findings = image = None
        calibration = self.config.calibration
        if self.model.findings is not None:
            logits = self.model.findings(fused, crops)  # [B, 29, F]
            findings = torch.stack([apply_torch(calibration.findings.get(name), logits[..., j])
                                    for j, name in enumerate(self.model.findings.config.findings)], dim=-1)
            findings = findings * detected[..., None]
        if self.model.image_findings is not None:
            head = self.model.image_findings
            logits = head(pooled_inputs(head.config.inputs, embedding, fused, crops, detected))
            image = torch.stack([apply_torch(calibration.image_findings.get(name), logits[:, j])
                                 for j, name in enumerate(head.config.findings)], dim=-1)  # [B, F']
        return findings, image

    @torch.inference_mode()
    def zero_shot(self, batch: torch.Tensor, found: Regions, labels: Sequence[str]) -> torch.Tensor:
        """[B, L] calibrated zero-shot probabilities of ``labels`` ("{label}" vs "no {label}")."""
        probs = self.model.clip.zero_shot(batch, list(labels), image_features=found.embedding)  # [B, L]
        return self.calibrated_zero_shot(probs)

    def choose(self, found: Regions, regions: Sequence[str] | None = None) -> torch.Tensor:
        """[B, 29] bool: regions that get a sentence (never an undetected one): the model's
        selection rule, or exactly the named ``regions``."""
        if regions is None:
            return self.model.select_regions(found.selection, found.detected)
        wanted = torch.zeros(NUM_REGIONS, dtype=torch.bool, device=found.detected.device)
        for name in regions:
            wanted[region_index(name)] = True
        missing = sorted({REGIONS[i] for i in (wanted & ~found.detected).nonzero()[:, 1].tolist()})
        if missing:
            logger.info("requested regions not detected, no sentence: %s", ", ".join(missing))
        return wanted & found.detected

    @torch.inference_mode()
    def write(self, found: Regions, chosen: torch.Tensor, num_beams: int | None = None) -> list[dict[str, str]]:
        """{region: generated sentence} per image for the ``chosen`` [B, 29] regions, every image's
        sentences decoded in one ``generate`` call."""
        written: list[dict[str, str]] = [{} for _ in range(chosen.shape[0])]
        index = chosen.nonzero()  # [K, 2] (image, region), image-major
        if not len(index):
            return written
        texts = self.model.decoder.generate(found.features[chosen], num_beams=num_beams or self.config.num_beams)
        for (b, r), text in zip(index.tolist(), texts):
            written[b][REGIONS[r]] = text
        return written

    def compose(self, found: Regions, b: int, boxes: list[list[float]], written: dict[str, str],
                view: str | None = None) -> Composition:
        """The grounded report of image ``b`` (``boxes``: its 29 boxes in original pixels;
        ``written``: the decoder's sentences) through :func:`crrg.grounding.compose`."""
        detected = found.detected[b].tolist()
        named = {name: (boxes[i] if detected[i] else None) for i, name in enumerate(REGIONS)}
        ratio = cardiothoracic_ratio(named)
        measured = [] if ratio is None else [measurement_sentence(heart_size(ratio, view=view))]
        grounding = self.config.grounding
        evidence = ImageEvidence(detected=detected, abnormal=found.abnormality[b].tolist(),
                                 region_findings=found.region_findings(b),
                                 image_findings=found.image_findings_of(b),
                                 generated=written, measurements=measured)
        composed = compose(evidence, grounding.region_thresholds, grounding.image_thresholds,
                           self.config.abnormal_threshold, grounding.decoder_findings, grounding.region_relative,
                           grounding.abnormality_topics, grounding.rule_out)
        return Composition(composed, {"cardiothoracic_ratio": ratio})

    def calibrated_zero_shot(self, probs: torch.Tensor) -> torch.Tensor:
        """Zero-shot softmax probabilities with the validation-fitted temperature on their logit
        (the positive-minus-negative prompt logit); unchanged without one."""
        scaling = self.config.calibration.zero_shot
        if scaling is None:
            return probs
        return apply_torch(scaling, torch.logit(probs.clamp(1e-6, 1 - 1e-6)))

    # --- internal steps of batch() ------------------------------------------------------------
    def _box_sentence(self, found: Regions, b: int, geometry: Any, box: Sequence[float],
                      beams: int) -> BoxSentence:
        original = torch.tensor([list(map(float, box))])
        scaled = torch.as_tensor(geometry.to_tensor(original), dtype=torch.float32).to(self.device)
        feature = self.model.detector.box_features(found.maps_of(b), [scaled])  # [1, D]
        embedding = None if found.embedding is None else found.embedding[b:b + 1]
        feature = self.model.head_inputs(None, feature.unsqueeze(0), embedding)[0]  # [1, D]
        sentence = self.model.decoder.generate(feature, num_beams=beams)[0]
        abnormal = apply_torch(self.config.calibration.abnormality, self.model.abnormality.score_any(feature))[0]
        return BoxSentence(box=tuple(float(v) for v in original[0].tolist()), sentence=sentence,
                           abnormal_prob=float(abnormal))

    def _labels(self, batch: torch.Tensor, found: Regions, prompts: Any, timer: _Timer
                ) -> tuple[list[dict[str, float]], list[dict[str, str | None]]]:
        count = batch.shape[0]
        labels = self.default_prompts if prompts is None else parse_prompts(prompts)
        if not labels:
            return [{} for _ in range(count)], [{} for _ in range(count)]
        with timer("clip"):
            probs = self.zero_shot(batch, found, labels)  # [B, L]
            scores = self.model.clip.region_scores(batch, found.boxes, found.detected, labels,
                                                   crop_batch=self.crop_batch,
                                                   embeddings=found.crops)  # [B, L, 29]
        valid = torch.isfinite(scores)
        best = torch.where(valid, scores, -torch.inf).argmax(dim=-1).tolist()  # [B, L]
        any_valid = valid.any(dim=-1).tolist()  # [B, L]
        out_probs, out_regions = [], []
        for b, row in enumerate(probs.tolist()):
            out_probs.append(dict(zip(labels, map(float, row))))
            out_regions.append({label: REGIONS[best[b][i]] if any_valid[b][i] else None
                                for i, label in enumerate(labels)})
        return out_probs, out_regions

    def _region_results(self, found: Regions, b: int, boxes: list[list[float]], chosen: torch.Tensor,
                        written: dict[str, str]) -> tuple[RegionResult, ...]:
        detected, scores = found.detected[b].tolist(), found.scores[b].tolist()
        selection, abnormal, chosen_ = found.selection[b].tolist(), found.abnormality[b].tolist(), chosen.tolist()
        findings = found.region_findings(b)
        results = []
        for i, name in enumerate(REGIONS):
            results.append(RegionResult(
                name=name,
                box=tuple(boxes[i]) if detected[i] else None,
                score=float(scores[i]),
                selection_prob=float(selection[i]) if detected[i] else None,
                abnormal_prob=float(abnormal[i]) if detected[i] else None,
                selected=bool(chosen_[i]),
                abnormal=bool(detected[i]) and abnormal[i] > self.config.abnormal_threshold,
                sentence=written.get(name),
                findings={f: float(p[i]) for f, p in findings.items()} if detected[i] else {},
            ))
        return tuple(results)


def load(source: str | Path, device: str | torch.device | None = None) -> Pipeline:
    """Pipeline from a local folder or a hub repo id (see :func:`crrg.hub.resolve`)."""
    from crrg.hub import resolve

    folder = resolve(source)
    model = CRRGModel.from_pretrained(str(folder))
    return Pipeline(model, device=device)
