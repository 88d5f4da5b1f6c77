"""Evaluate a crrg model on held-out data: the ``test`` split of a ``train.prepare`` folder only
(``--split val`` evaluates the validation split instead, for choosing settings).

    python -m train.evaluate --weights SRC --data DIR --out OUT [--prepared PREP] [--limit N]
        [--report-limit 300] [--threads N] [--iu-images DIR] [--mimic DIR]

Without ``--prepared`` the data under ``--data`` is prepared into ``OUT/prepared`` first. Writes
``OUT/metrics.json``, ``OUT/roc_<task>.png`` and ``OUT/examples/*.png``. Sections of metrics.json:

- ``detector``: IoU (``torchvision.ops.box_iou``, original pixels through the preprocessing
  geometry) of each region's box with its ground truth, per region and pooled, on mask-backed
  boxes (``annotated`` minus ``derived``); ``mean_iou`` counts an undetected region as 0,
  ``mean_iou_detected`` leaves it out, ``detection_rate`` is the share detected, ``iou_50`` the
  share with IoU >= 0.5. ``derived``: the same on rule-derived boxes (informative only);
  ``detection_rate_annotated``: share of all annotated (image, region) pairs detected.
- ``abnormality`` / ``selection``: AUC and accuracy of the region classifiers against the targets
  of :func:`train.targets.region_targets` (abnormality: region statuses implied by the image
  labels; selection: abnormal OR one of the regions commonly described in train reports, or the
  regions the image's own report names when paired text exists); unknown targets are skipped.
  ``pooled`` scores every known (image, region) pair with the pipeline's probability (0 where the
  region is not detected), ``pooled_detected`` only detected regions (as training masks them).
- ``zero_shot``: CLIP "{label}" vs "no {label}" probability with the model's prompt patterns:
  pneumonia vs normal (Kermany), COVID-19 vs normal (COVID radiography), nodule vs none (JSRT).
- ``reports``: clinical efficacy (:func:`crrg.metrics.compute_clinical`) of findings extracted
  from generated reports against the image labels, on a sample stratified across sources. The
  headline is the paper's label space (CheXpert's 14 observations; COVID-19 scored as pneumonia,
  nodule as lung lesion), scoring only the labels the image's source assesses (a Kermany
  pneumonia label says nothing about consolidation); ``all_findings`` keeps COVID-19 and nodule
  as labels of their own and counts unassessed labels as absent. ``abnormal_vs_normal``: report
  states a pathology vs the image's abnormal flag.
- ``nlg``: BLEU-1..4, METEOR, ROUGE-L, CIDEr of generated vs real reports where test images come
  with their report (IU X-ray with ``--iu-images``, MIMIC-CXR); skipped with a note otherwise.
- ``counts``, ``timings_s``, ``seconds_per_image`` (detector + heads + CLIP, loading included),
  ``seconds_per_report`` (decoding), ``weights``, ``variant``, ``options``, ``disclaimer``.

``--limit N`` keeps a seeded random N test images per source (quick runs), ``--sources`` only
the named sources' images (e.g. to choose a setting on NIH's validation images); AUCs that are
undefined (one class) are written as null with a ``note``.

Inference runs the stages of :class:`crrg.pipeline.Pipeline` itself (``prepare``, ``detect``,
``zero_shot`` per batch of images; reports through ``Pipeline.batch``), so every score is what a
user gets: calibrated probabilities, 0 for an undetected region, the pipeline's region-selection
rule and the model's thresholds (``selection_threshold``, ``abnormal_threshold``; accuracy counts
a probability at or above the threshold as positive). ``tests/test_eval_parity.py`` checks this on
the shipped model and real images.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from crrg import DISCLAIMER
from crrg.calibration import expected_calibration_error
from crrg.data.sentences import extract_findings
from crrg.images import ImageError, load_image
from crrg.labels import CHEXPERT, FINDINGS
from crrg.metrics import (binary_metrics, chexpert_reference, compute_classification, compute_clinical,
                          compute_nlg, label_matrix, roc_curve_png)
from crrg.metrics.nlg import SCORERS
from crrg.model import CRRGConfig
from crrg.pipeline import Pipeline
from crrg.regions import REGION_INDEX, REGIONS
from crrg.types import ReportResult
from train.eval_grounding import grounding_metrics
from train.heads_data import image_finding_target, predicted_boxes
from train.finding_labels import FindingLabeler
from train.datasets import PreparedData, merge_records
from train.targets import common_regions, paired_sentences, region_targets
from train.tasks import NIH_ZERO_SHOT, ZERO_SHOT_TASKS, zero_shot_target

logger = logging.getLogger("train.evaluate")

CE_KEYS = ("micro_precision", "micro_recall", "micro_f1", "macro_f1", "example_f1", "n_reports")


@dataclass
class EvalOptions:
    """What to evaluate and how (see the module docstring and ``--help``)."""

    limit: int | None = None  # at most this many test images per source (seeded sample)
    report_limit: int = 300  # labelled test images that get a generated report (stratified)
    examples: int = 4  # overlay PNGs written to OUT/examples
    batch_size: int = 8  # images per detector / CLIP batch
    seed: int = 0
    nlg_metrics: tuple[str, ...] = SCORERS
    common_threshold: float = 0.3  # as train.train_detector / train.train_decoder
    split: str = "test"  # "val" to choose settings without looking at the test split
    sources: tuple[str, ...] | None = None  # only these sources' images (None: every source)


@dataclass
class Outputs:
    """The pipeline's outputs for one image (:meth:`crrg.pipeline.Pipeline.detect`): boxes in
    ORIGINAL pixels, calibrated probabilities, 0 for an undetected region."""

    width: int
    height: int
    boxes: np.ndarray  # [29, 4]
    detected: np.ndarray  # [29] bool
    selection: np.ndarray  # [29] probability x detected
    abnormality: np.ndarray  # [29] calibrated probability x detected
    zero_shot: dict[str, float]  # label -> calibrated probability
    findings: dict[str, np.ndarray] = field(default_factory=dict)  # finding -> [29] probability
    image_findings: dict[str, float] = field(default_factory=dict)  # finding -> probability
    report: str | None = None
    sentences: dict[str, str] = field(default_factory=dict)
    #: the findings the report's sentences state (their typed ``finding``, from the pipeline's
    #: result); None when only the text is known (then the label extractor reads it)
    stated: tuple[str, ...] | None = None


# ------------------------------------------------------------------------------ data
def test_records(prepared: PreparedData, limit: int | None, seed: int, split: str = "test",
                 sources: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Images of ``split`` (regions.jsonl and images.jsonl joined), at most ``limit`` per source,
    of ``sources`` only when given."""
    records = [r for r in merge_records(prepared.regions(split), prepared.images(split))
               if r.get("split") == split and (sources is None or r["source"] in sources)]
    if limit is None:
        return records
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_source[record["source"]].append(i)
    rng = random.Random(seed)
    keep = {i for idx in by_source.values()
            for i in (rng.sample(idx, limit) if len(idx) > limit else idx)}
    return [r for i, r in enumerate(records) if i in keep]


def stratified_sample(records: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` records, round-robin over sources (each shuffled), so every source is seen."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record["source"]].append(record)
    rng = random.Random(seed)
    queues = [rng.sample(groups[s], len(groups[s])) for s in sorted(groups)]
    out: list[dict[str, Any]] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop())
    return out


# ------------------------------------------------------------------------------ inference
def _prepare_chunk(pipe: Pipeline, images: Sequence[tuple[str, Path]], failed: list[str]
                   ) -> list[tuple[str, Any]]:
    out = []
    for key, path in images:
        try:
            out.append((key, pipe.prepare(path)))
        except (ImageError, OSError) as err:
            logger.warning("skipped %s: %s", key, err)
            failed.append(key)
    return out


def run_inference(pipe: Pipeline, images: Sequence[tuple[str, Path]], labels: Sequence[str],
                  batch_size: int) -> tuple[dict[str, Outputs], list[str]]:
    """The pipeline's stages (prepare, detect, zero-shot) over ``images`` ((key, path) pairs), in
    batches. Unreadable images are logged and returned in the second list."""
    outputs: dict[str, Outputs] = {}
    failed: list[str] = []
    bar = tqdm(total=len(images), desc="detect + classify + CLIP", unit="img")
    for start in range(0, len(images), batch_size):
        chunk = _prepare_chunk(pipe, images[start:start + batch_size], failed)
        bar.update(min(batch_size, len(images) - start))
        if not chunk:
            continue
        prepared = [p for _, p in chunk]
        batch = pipe.stack(prepared)  # [B, 1, S, S]
        found = pipe.detect(batch)
        probs = pipe.zero_shot(batch, found, labels).cpu() if labels else None  # [B, L]
        boxes = pipe.original_boxes(found, prepared)
        for b, (key, item) in enumerate(chunk):
            outputs[key] = Outputs(
                width=item.width, height=item.height, boxes=np.asarray(boxes[b]),
                detected=found.detected[b].cpu().numpy(), selection=found.selection[b].cpu().numpy(),
                abnormality=found.abnormality[b].cpu().numpy(),
                zero_shot={} if probs is None else dict(zip(labels, probs[b].tolist())),
                findings={k: np.asarray(v) for k, v in found.region_findings(b).items()},
                image_findings=found.image_findings_of(b),
            )
    bar.close()
    return outputs, failed


def generate_reports(pipe: Pipeline, outputs: dict[str, Outputs], keys: Iterable[str],
                     prepared: PreparedData, batch_size: int) -> dict[str, ReportResult]:
    """Reports of ``keys`` as the pipeline writes them (:meth:`crrg.pipeline.Pipeline.batch`);
    fills ``report`` / ``sentences`` (the decoder's, per region) of ``outputs`` and returns the
    full results (sentences with their evidence)."""
    keys = [k for k in dict.fromkeys(keys) if k in outputs]
    results: dict[str, ReportResult] = {}
    for start in tqdm(range(0, len(keys), batch_size), desc="reports", unit="batch"):
        part = keys[start:start + batch_size]
        for key, result in zip(part, pipe.batch([prepared.path(k) for k in part], prompts=[])):
            outputs[key].report = result.findings_text  # scored without the impression line
            outputs[key].sentences = dict(result.region_sentences)
            outputs[key].stated = tuple(x.finding for x in result.sentences if x.finding is not None)
            results[key] = result
    return results


# ------------------------------------------------------------------------------ detector
def box_iou_pairs(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``pred[i]`` with ``target[i]``: [N, 4] xyxy each -> [N]."""
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != 4:
        raise ValueError(
            f"expected two [N, 4] box tensors, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    return box_iou(pred.float(), target.float()).diagonal() if len(pred) else pred.new_zeros(0)


def truth_boxes(prepared: PreparedData, split: str, records: Sequence[dict[str, Any]],
                outputs: dict[str, Outputs]) -> dict[str, dict[str, list[float]]]:
    """Region boxes the grounding truth is read on: the mask-backed ones of the prepared data, and
    for images whose expert boxes have no mask-backed zones (TBX11K) the detector's own boxes
    (stored-image pixels), as the heads were trained on them (:func:`train.heads_data.predicted_boxes`)."""
    boxes = {r["image"]: r["boxes"] for r in prepared.regions(split)}
    for r in records:
        out = outputs.get(r["image"])
        if r.get("finding_boxes") and r["image"] not in boxes and out is not None:
            boxes[r["image"]] = stored_pixel_boxes(r, out)
    return boxes


def stored_pixel_boxes(record: dict[str, Any], out: Outputs) -> dict[str, list[float]]:
    """{region: box} of the detected regions of ``out`` (original pixels) in the stored image's
    pixels of ``record``, where its expert boxes live."""
    scale = np.array([int(record["width"]) / out.width, int(record["height"]) / out.height] * 2)
    return predicted_boxes({"boxes": out.boxes * scale, "detected": out.detected})


def region_ious(record: dict[str, Any], out: Outputs) -> list[tuple[str, bool, bool, float]]:
    """(region, rule-derived, detected, IoU; 0 when undetected) for each annotated region."""
    boxes = record.get("boxes") or {}
    names = [n for n in REGIONS if n in boxes and n in record.get("annotated", boxes)]
    if not names:
        return []
    idx = [REGION_INDEX[n] for n in names]
    target = torch.tensor([record["boxes"][n] for n in names], dtype=torch.float64)  # [K, 4]
    sx, sy = out.width / record.get("width", out.width), out.height / record.get("height", out.height)
    target = target * torch.tensor([sx, sy, sx, sy], dtype=torch.float64)  # stored -> loaded pixels
    iou = box_iou_pairs(torch.as_tensor(out.boxes[idx], dtype=torch.float64), target)  # [K]
    derived = set(record.get("derived", ()))
    return [(n, n in derived, bool(out.detected[i]), float(v) if out.detected[i] else 0.0)
            for n, i, v in zip(names, idx, iou.tolist())]


def summarise_iou(rows: list[tuple[str, bool, float]]) -> dict[str, Any]:
    """rows (region, detected, IoU) -> pooled and per-region IoU statistics."""
    def stats(part: list[tuple[str, bool, float]]) -> dict[str, Any]:
        det = np.array([d for _, d, _ in part], dtype=bool)
        iou = np.array([v for _, _, v in part], dtype=np.float64)
        return {"n": len(part), "detection_rate": float(det.mean()), "mean_iou": float(iou.mean()),
                "mean_iou_detected": float(iou[det].mean()) if det.any() else math.nan,
                "iou_50": float((iou >= 0.5).mean())}

    if not rows:
        return {"n": 0, "note": "no test boxes of this kind"}
    present = {x[0] for x in rows}
    per_region = {r: stats([x for x in rows if x[0] == r]) for r in REGIONS if r in present}
    macro = float(np.mean([s["mean_iou"] for s in per_region.values()]))
    return {**stats(rows), "mean_iou_over_regions": macro, "per_region": per_region}


def detector_metrics(records: Sequence[dict[str, Any]], outputs: dict[str, Outputs]) -> dict[str, Any]:
    boxed = [r for r in records if r.get("boxes") and r["image"] in outputs]
    rows = [row for r in boxed for row in region_ious(r, outputs[r["image"]])]
    return {
        "n_images": len(boxed),
        "images_by_source": _count(r["source"] for r in boxed),
        "detection_rate_annotated": float(np.mean([d for _, _, d, _ in rows])) if rows else math.nan,
        "mask_backed": summarise_iou([(n, d, v) for n, derived, d, v in rows if not derived]),
        "derived": summarise_iou([(n, d, v) for n, derived, d, v in rows if derived]),
    }


# ------------------------------------------------------------------------------ classifiers
def _noted(metrics: dict[str, Any]) -> dict[str, Any]:
    if isinstance(metrics.get("auc"), float) and math.isnan(metrics["auc"]):
        metrics["note"] = "AUC undefined: fewer than two classes among the known targets"
    return metrics


def classifier_section(y: np.ndarray, score: np.ndarray, detected: np.ndarray, sources: list[str],
                       threshold: float) -> dict[str, Any]:
    """[N, 29] targets (NaN unknown), scores and detected flags -> pooled / per-region / per-source."""
    per_region = compute_classification(y, score, REGIONS, threshold)
    src = np.array(sources)
    return {
        "pooled": _noted(binary_metrics(y.ravel(), score.ravel(), threshold)),
        "pooled_detected": _noted(
            binary_metrics(np.where(detected, y, np.nan).ravel(), score.ravel(), threshold)),
        "mean_region_auc": per_region["mean_auc"],
        "per_region": {r: _noted(m) for r, m in per_region["tasks"].items() if m["n"]},
        "by_source": {s: _noted(binary_metrics(y[src == s].ravel(), score[src == s].ravel(), threshold))
                      for s in sorted(set(sources))},
    }


def classifier_metrics(records: Sequence[dict[str, Any]], outputs: dict[str, Outputs], config: CRRGConfig,
                       common: dict[str, float], paired: dict[str, list[dict[str, Any]]]
                       ) -> dict[str, Any]:
    """``{"abnormality": ..., "selection": ...}`` over the test images with labels."""
    rows = [r for r in records if r["image"] in outputs and (r.get("labels") or r.get("region_status"))]
    if not rows:
        return {name: {"note": "no labelled test images"} for name in ("abnormality", "selection")}
    targets = [region_targets(r, common, paired.get(r["image"])) for r in rows]
    outs = [outputs[r["image"]] for r in rows]
    detected = np.stack([o.detected for o in outs])  # [N, 29]
    sources = [r["source"] for r in rows]
    sections = {}
    for name, thr in (("abnormality", config.abnormal_threshold),
                      ("selection", config.selection_threshold)):
        y = np.stack([np.where(t[f"{name}_mask"].numpy(), t[name].numpy(), np.nan)
                      for t in targets])  # [N, 29], NaN = unknown
        score = np.stack([getattr(o, name) for o in outs])  # [N, 29]
        sections[name] = classifier_section(y, score, detected, sources, thr)
    image_y = [{True: 1.0, False: 0.0}.get(r.get("abnormal"), math.nan) for r in rows]
    image_s = [float(o.abnormality.max()) for o in outs]
    sections["abnormality"]["image_level"] = _noted(
        binary_metrics(image_y, image_s, config.abnormal_threshold))
    sections["abnormality"]["image_level"]["score"] = "max region abnormal probability vs image flag"
    sections["selection"]["common_regions"] = common
    sections["selection"]["paired_images"] = sum(r["image"] in paired for r in rows)
    return sections


# ------------------------------------------------------------------------------ zero-shot
def zero_shot_metrics(records: Sequence[dict[str, Any]], outputs: dict[str, Outputs], out_dir: Path
                      ) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for zs in ZERO_SHOT_TASKS:
        task, label, source = zs.name, zs.label, zs.source
        pairs = [(zero_shot_target(r.get("labels") or {}, label), outputs[r["image"]].zero_shot[label])
                 for r in records if r["source"] == source and r["image"] in outputs]
        pairs = [(y, s) for y, s in pairs if y is not None]
        y, s = [p[0] for p in pairs], [p[1] for p in pairs]
        metrics = _noted(binary_metrics(y, s))
        metrics.update(label=label, source=source)
        if y:  # calibration of the probability the pipeline returns (temperature-scaled)
            metrics["ece"] = expected_calibration_error(s, y).ece
        if 0 < sum(y) < len(y):
            path = roc_curve_png(y, s, out_dir / f"roc_{task}.png", title=f"{task} ({source} test)")
            metrics["roc_png"] = path.name
        result[task] = metrics
    return result


def nih_zero_shot_metrics(records: Sequence[dict[str, Any]], outputs: dict[str, Outputs]) -> dict[str, Any]:
    """Zero-shot AUC per NIH finding on the NIH test images (present vs NIH-labelled absent), and
    the mean over the findings with an AUC."""
    per: dict[str, Any] = {}
    nih = [r for r in records if r["source"] == "nih_cxr14" and r["image"] in outputs]
    for label in NIH_ZERO_SHOT:
        pairs = [(y, outputs[r["image"]].zero_shot[label]) for r in nih
                 if (y := zero_shot_target(r.get("labels") or {}, label)) is not None
                 and label in outputs[r["image"]].zero_shot]
        if pairs:
            per[label] = _noted(binary_metrics([p[0] for p in pairs], [p[1] for p in pairs]))
    aucs = [m["auc"] for m in per.values() if not math.isnan(m["auc"])]
    return {"per_finding": per, "mean_auc": float(np.mean(aucs)) if aucs else None, "n_findings": len(aucs)}


# ------------------------------------------------------------------------------ reports
def report_metrics(sample: Sequence[dict[str, Any]], outputs: dict[str, Outputs]) -> dict[str, Any]:
    """CE of the generated reports against the image labels, overall and per source.

    Headline (top-level keys, ``by_source``): the paper's label space, CheXpert's 14
    observations, image labels mapped into it (:func:`crrg.metrics.chexpert_reference`:
    COVID-19 -> pneumonia, nodule -> lung lesion), each (report, label) pair scored only where the
    image label assesses it (``unassessed="skip"``). ``all_findings``: every finding of
    crrg.labels.FINDINGS (COVID-19 and nodule as their own labels), labels a source does not give
    counted as absent (the stricter protocol). ``abnormal_vs_normal``: does the report state any
    pathology (a sentence with a typed finding other than a device, :func:`states_pathology`),
    against the image's flag; ``..._by_labeler``: the same read from the text by the extractor.
    ``hedged_as_stated``: the headline with hedged mentions of the generated text counted as
    stated (CheXpert's U-ones), which credits the image-level sentences ("Findings suggest ...")."""
    if not sample:
        return {"note": "no labelled test images"}
    reports = [outputs[r["image"]].report or "" for r in sample]
    labels = [r["labels"] for r in sample]
    mapped = [chexpert_reference(r["labels"]) for r in sample]

    def headline(idx: Sequence[int]) -> dict[str, Any]:
        return compute_clinical([reports[i] for i in idx], [mapped[i] for i in idx], labels=CHEXPERT,
                                unassessed="skip")

    result = headline(range(len(sample)))
    by_source = {}
    for source in sorted({r["source"] for r in sample}):
        idx = [i for i, r in enumerate(sample) if r["source"] == source]
        scores = headline(idx)
        by_source[source] = {k: scores[k] for k in CE_KEYS}
    strict = compute_clinical(reports, labels)
    # the report's hedged image-level sentences ("Findings suggest a pleural effusion.") as
    # stated: CheXpert's U-ones reading of the generated text, beside the headline's U-zeros
    hedged = compute_clinical(reports, mapped, labels=CHEXPERT, unassessed="skip",
                              extractor=partial(extract_findings, uncertain_as_positive=True))
    pathology = [i for i, f in enumerate(FINDINGS) if f not in ("no finding", "support devices")]
    by_labeler = label_matrix(reports)[:, pathology].any(axis=1)  # [N] the extractor reads a pathology
    said = np.array([states_pathology(outputs[r["image"]].stated) if outputs[r["image"]].stated is not None
                     else bool(by_labeler[i]) for i, r in enumerate(sample)], dtype=bool)  # [N]
    known = [i for i, r in enumerate(sample) if r.get("abnormal") in (True, False)]
    truth = [bool(sample[i]["abnormal"]) for i in known]
    result.update(
        by_source=by_source, empty_reports=sum(not t for t in reports),
        mean_sentences=float(np.mean([len(outputs[r["image"]].sentences) for r in sample])),
        abnormal_vs_normal=abnormal_scores(truth, said[known]),
        pathology_stated_by_source=stated_by_source(sample, said),
        # the same read by the label extractor, which takes a hedged sentence ("Findings suggest a
        # pleural effusion.") as uncertain, not stated: the protocol of the figures before 2026-12-06
        abnormal_vs_normal_by_labeler=abnormal_scores(truth, by_labeler[known]),
        pathology_stated_by_source_by_labeler=stated_by_source(sample, by_labeler),
        all_findings={**{k: strict[k] for k in CE_KEYS}, "per_label": strict["per_label"]},
        hedged_as_stated={**{k: hedged[k] for k in CE_KEYS}, "per_label": hedged["per_label"]},
        references=("headline: image labels in CheXpert's 14 observations (COVID-19 -> pneumonia, "
                    "nodule -> lung lesion), labels an image's source does not assess not scored; "
                    "all_findings: every finding, labels a source does not give counted as absent"),
    )
    return result


def image_finding_metrics(records: Sequence[dict[str, Any]], outputs: dict[str, Outputs], config: CRRGConfig
                          ) -> dict[str, Any]:
    """The image-level head's calibrated probabilities as the pipeline returns them, per finding,
    over the test images whose source assesses it (pneumonia: pneumonia-like vs normal,
    :func:`train.heads_data.image_target`; the others: :data:`train.heads_data.IMAGE_EXTRA`):
    AUC, and sensitivity / specificity at the model's own threshold, overall and per source."""
    thresholds = config.grounding.image_thresholds
    out: dict[str, Any] = {}
    found = [r for r in records if r["image"] in outputs]
    for finding in sorted({f for r in found for f in outputs[r["image"]].image_findings}):
        truth = [(r["source"], y, outputs[r["image"]].image_findings[finding]) for r in found
                 if (y := image_finding_target(r, finding)) is not None]
        if not truth:
            continue
        src, y, p = (np.array(x) for x in zip(*truth))
        threshold = thresholds.get(finding, 0.5)
        out[finding] = {"threshold": threshold, **_at_threshold(y, p, threshold),
                        "by_source": {s: _at_threshold(y[src == s], p[src == s], threshold)
                                      for s in sorted(set(src))}}
    return out


def ctr_vs_cardiomegaly(records: Sequence[dict[str, Any]], outputs: dict[str, Outputs],
                        threshold: float = 0.5) -> dict[str, Any]:
    """The measured cardiothoracic ratio (the detector's heart and lung boxes, as the report's
    heart-size sentence uses it) as a score for NIH's image-level cardiomegaly label: AUC, and
    sensitivity / specificity of CTR > ``threshold``. Views are not known (NIH holds AP films)."""
    from crrg.measurements import cardiothoracic_ratio
    y, ctr = [], []
    for r in records:
        out = outputs.get(r["image"])
        target = image_finding_target(r, "cardiomegaly")
        if out is None or target is None:
            continue
        ratio = cardiothoracic_ratio({name: (out.boxes[i].tolist() if out.detected[i] else None)
                                      for i, name in enumerate(REGIONS)})
        if ratio is not None:
            y.append(target)
            ctr.append(ratio)
    if not y:
        return {"n": 0, "note": "no test image with a cardiomegaly label and a measured CTR"}
    return {"ctr_threshold": threshold,
            **_at_threshold(np.array(y), np.array(ctr), threshold + 1e-9)}


def _at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    said = p >= threshold
    return {**_noted(binary_metrics(y, p, threshold)),
            "sensitivity": float(said[y == 1].mean()) if (y == 1).any() else None,
            "specificity": float((~said[y == 0]).mean()) if (y == 0).any() else None}


#: typed findings that are no pathology when a report states them
NOT_PATHOLOGY = frozenset({"support device"})


def states_pathology(stated: Iterable[str]) -> bool:
    """Does a report whose sentences state ``stated`` (their typed findings) state a pathology?

    The pipeline's own sentences, not a label extractor: the image-level findings are written
    hedged ("Findings suggest a pleural effusion."), which an extractor reads as uncertain, yet the
    report states them (the model's calibrated probability passed the finding's threshold)."""
    return any(finding not in NOT_PATHOLOGY for finding in stated)


def stated_by_source(sample: Sequence[dict[str, Any]], said: np.ndarray) -> dict[str, Any]:
    """Per source: the share of abnormal images whose report states a pathology, and of normal
    ("no finding") images whose report states one."""
    out: dict[str, Any] = {}
    for source in sorted({r["source"] for r in sample}):
        idx = [i for i, r in enumerate(sample) if r["source"] == source]
        abnormal = [i for i in idx if sample[i].get("abnormal") is True]
        normal = [i for i in idx if (sample[i].get("labels") or {}).get("no finding") == 1]
        out[source] = {"abnormal_stated": float(said[abnormal].mean()) if abnormal else None,
                       "n_abnormal": len(abnormal),
                       "normal_stated": float(said[normal].mean()) if normal else None, "n_normal": len(normal)}
    return out


def abnormal_scores(truth: Sequence[bool], said: Sequence[bool]) -> dict[str, Any]:
    """Precision / recall / F1 / accuracy of "the report states a pathology" vs the image flag."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    if not len(truth):
        return {"n": 0, "note": "no test image with a known abnormal flag in the sample"}
    p, r, f, _ = precision_recall_fscore_support(truth, said, average="binary", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f),
            "accuracy": float(accuracy_score(truth, said)), "n": len(truth), "n_abnormal": int(sum(truth))}


def nlg_metrics(paired: Sequence[dict[str, Any]], outputs: dict[str, Outputs], metrics: Sequence[str]
                ) -> dict[str, Any]:
    if not paired:
        return {"skipped": True, "note": "no test images paired with a report (IU X-ray images via "
                "--iu-images, MIMIC-CXR via --mimic): NLG metrics not computed"}
    refs = [r["text"] for r in paired]
    hyps = [outputs[r["image"]].report or "" for r in paired]
    return {"n": len(paired), "by_source": _count(r["source"] for r in paired),
            **compute_nlg(refs, hyps, metrics=metrics)}


def plot_example(path: Path, record: dict[str, Any], out: Outputs, prepared: PreparedData) -> Path:
    """Image with the detected boxes (selected regions in colour) beside the report text."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    pixels = load_image(prepared.path(record["image"])).pixels
    fig = Figure(figsize=(12, 6), dpi=90)
    FigureCanvasAgg(fig)
    ax, text_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.imshow(pixels, cmap="gray")
    ax.set_axis_off()
    for i in np.flatnonzero(out.detected):
        x1, y1, x2, y2 = out.boxes[i]
        chosen = REGIONS[i] in out.sentences
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.6 if chosen else 0.6,
                               ec="tab:orange" if chosen else "tab:cyan"))
        if chosen:
            ax.text(x1, y1, REGIONS[i], color="tab:orange", fontsize=6, va="bottom")
    labels = ", ".join(f"{k}={v}" for k, v in (record.get("labels") or {}).items() if v == 1)
    zero_shot = ", ".join(f"{t.label} {out.zero_shot[t.label]:.2f}" for t in ZERO_SHOT_TASKS)
    body = "\n".join(textwrap.fill(p, 70) for p in [
        f"{record['source']}: {Path(record['image']).name}", f"labels: {labels or '-'}",
        f"zero-shot CLIP: {zero_shot}", "",
        "Generated report (boxes: orange = sentence written, cyan = detected):",
        textwrap.shorten(out.report or "(no region selected)", 1600, placeholder=" [...]"), "",
        DISCLAIMER])
    text_ax.set_axis_off()
    text_ax.text(0, 1, body, va="top", ha="left", fontsize=9, family="monospace")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # glyphs the font lacks (e.g. from an untrained decoder)
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.tight_layout()
        fig.savefig(path, format="png")
    return path


# ------------------------------------------------------------------------------ driver
def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return dict(sorted(counts.items()))


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> null (strict JSON), numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def evaluate(weights: str, prepared: PreparedData, out: Path, options: EvalOptions | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Run every evaluation on the held-out split (``options.split``, default test) of
    ``prepared``; writes and returns metrics.json."""
    opts = options or EvalOptions()
    clock = [time.perf_counter()]
    times: dict[str, float] = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        times[name] = clock[-1] - clock[-2]

    from crrg.pipeline import load

    pipe = load(weights, device=device)  # the library's front door, as a user loads it
    model = pipe.model
    lap("load")
    labels = list(dict.fromkeys([*(t.label for t in ZERO_SHOT_TASKS), *NIH_ZERO_SHOT]))  # softmax is per label
    if opts.split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val' (never train), got {opts.split!r}")
    records = test_records(prepared, opts.limit, opts.seed, opts.split, opts.sources)
    paired_text = [r for r in records if r.get("text_kind") == "report" and r.get("text")]
    sample = stratified_sample([r for r in records if r.get("labels")], opts.report_limit, opts.seed)
    keep = list(dict.fromkeys(r["image"] for r in [*sample, *paired_text]))  # ordered: same batches
    logger.info("%d test images %s; %d get a report, %d paired with text", len(records),
                _count(r["source"] for r in records), len(sample), len(paired_text))
    outputs, failed = run_inference(pipe, [(r["image"], prepared.path(r["image"])) for r in records],
                                    labels, opts.batch_size)
    lap("inference")
    results = generate_reports(pipe, outputs, keep, prepared, opts.batch_size)
    lap("reports")
    sample = [r for r in sample if r["image"] in outputs]
    paired_text = [r for r in paired_text if r["image"] in outputs]
    out.mkdir(parents=True, exist_ok=True)
    common = common_regions(prepared.sentences("train"), opts.common_threshold)
    metrics: dict[str, Any] = {
        "disclaimer": DISCLAIMER, "weights": str(weights), "variant": model.config.variant,
        "image_size": model.config.image_size, "parameters": model.num_parameters(),
        "prepared": str(prepared.folder), "data_root": str(prepared.data_root), "split": opts.split,
        "options": vars(opts), "detector": detector_metrics(records, outputs),
        **classifier_metrics(records, outputs, model.config, common,
                             paired_sentences(prepared.sentences(None))),
        "zero_shot": zero_shot_metrics(records, outputs, out),
        "zero_shot_nih": nih_zero_shot_metrics(records, outputs),
        "image_findings": image_finding_metrics(records, outputs, model.config),
        "ctr_vs_cardiomegaly": ctr_vs_cardiomegaly(records, outputs),
        "zero_shot_prompts": {"positive": model.config.clip.positive,
                              "negative": model.config.clip.negative,
                              "templates": model.config.clip.templates,
                              "tasks_in_default_prompts": {t.label for t in ZERO_SHOT_TASKS} <= set(model.config.prompts)},
        "reports": report_metrics(sample, outputs),
        "grounding": grounding_metrics(sample, results, FindingLabeler(prepared.data_root),
                                       truth_boxes(prepared, opts.split, records, outputs)),
    }
    lap("metrics")
    metrics["nlg"] = nlg_metrics(paired_text, outputs, opts.nlg_metrics)
    # issue #10 §4: NLG on the COVID note pairs (model vs most-common and CLIP-retrieval
    # baselines), merged into "nlg" as n_pairs / n_train_pairs / model / baselines (train/note_nlg.py)
    from train.note_nlg import evaluate_note_pairs
    metrics["nlg"].update(evaluate_note_pairs(model, prepared, split=opts.split, limit=opts.limit,
                                              seed=opts.seed, metrics=opts.nlg_metrics))
    lap("nlg")
    metrics["examples"] = [plot_example(out / "examples" / f"example_{i}_{r['source']}.png", r,
                                        outputs[r["image"]], prepared).name
                           for i, r in enumerate(sample[:opts.examples])]
    lap("examples")
    metrics["counts"] = {
        "test_images": _count(r["source"] for r in records), "evaluated": len(outputs),
        "unreadable": failed, "detector_images": metrics["detector"]["n_images"],
        "zero_shot": {t: m["n"] for t, m in metrics["zero_shot"].items()},
        "reports": len(sample), "reports_by_source": _count(r["source"] for r in sample),
        "nlg_pairs": len(paired_text),
    }
    times["total"] = clock[-1] - clock[0]
    metrics["timings_s"] = {k: round(v, 2) for k, v in times.items()}
    metrics["seconds_per_image"] = round(times["inference"] / max(len(outputs), 1), 4)
    metrics["seconds_per_report"] = round(times["reports"] / max(len(set(keep) & set(outputs)), 1), 4)
    (out / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2) + "\n")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    from train.preparation import default_data_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="model folder or hub repo id (crrg.load)")
    p.add_argument("--data", type=Path, default=None,
                   help=f"shared data folder (default: CRRG_DATA or {default_data_dir()}); with "
                        "--prepared it overrides the data root recorded in meta.json")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--prepared", type=Path, default=None,
                   help="a train.prepare folder (default: prepare --data into OUT/prepared)")
    p.add_argument("--limit", type=int, default=None, help="at most N test images per source")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="held-out split to evaluate (val: for choosing settings; report test)")
    p.add_argument("--sources", nargs="+", default=None, metavar="SOURCE",
                   help="only these sources' images (e.g. nih_cxr14 jsrt_scr; default: all)")
    p.add_argument("--report-limit", type=int, default=300, help="labelled test images given a report")
    p.add_argument("--examples", type=int, default=4, help="example overlays written to OUT/examples")
    p.add_argument("--batch-size", type=int, default=8, help="images per detector / CLIP batch")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nlg-metrics", nargs="+", choices=SCORERS, default=list(SCORERS))
    p.add_argument("--iu-images", type=Path, default=None, help="IU X-ray images (for preparation)")
    p.add_argument("--mimic", type=Path, default=None,
                   help="MIMIC-CXR-JPG/ImaGenome root (for preparation)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from train.preparation import default_data_dir, prepare_data

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.prepared
    if folder is None:
        data = args.data or default_data_dir()
        if not data.is_dir():
            parser.error(f"--data {data} is not a folder (set CRRG_DATA or pass --data)")
        folder = args.out / "prepared"
        logger.info("preparing %s into %s", data, folder)
        prepare_data(data, folder, iu_images=args.iu_images, mimic=args.mimic)
    prepared = PreparedData(folder, data_root=args.data)
    options = EvalOptions(limit=args.limit, report_limit=args.report_limit, examples=args.examples,
                          batch_size=args.batch_size, seed=args.seed,
                          nlg_metrics=tuple(args.nlg_metrics), split=args.split,
                          sources=tuple(args.sources) if args.sources else None)
    metrics = evaluate(args.weights, prepared, args.out, options, device=args.device)
    logger.info("wrote %s in %.1f s (%.3f s per image)", args.out / "metrics.json",
                metrics["timings_s"]["total"], metrics["seconds_per_image"])
    return metrics


if __name__ == "__main__":
    main()
