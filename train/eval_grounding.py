"""Is each report sentence true to its evidence? Metrics of issue #10 §5 and the per-source
specificity of issue #11, on pipeline results of held-out images.

Truth per image and finding comes from the same region-level rules the heads trained on
(:class:`train.finding_labels.FindingLabeler` over the silver region boxes): positive when a
region is positive, negative when every region that can carry the finding is known negative,
otherwise unknown (not scored). ``pneumonia`` is image-level (:func:`train.heads_data.image_target`).
A report *states* a finding when one of its sentences has that ``finding``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crrg.findings import FINDING_REGIONS, REGION_FINDINGS
from crrg.locations import region_side, unsupported_locations
from crrg.regions import REGION_INDEX
from crrg.types import ReportResult
from train.finding_labels import FindingLabeler
from train.heads_data import image_target

SCORED_FINDINGS = (*REGION_FINDINGS, "pneumonia")  # findings scored per sentence
REPORT_PATHOLOGY = ("nodule", "opacity", "pneumonia", "cardiomegaly")  # what makes a report abnormal


def truth(labeler: FindingLabeler, row: Mapping[str, Any], boxes: Mapping[str, Any] | None
          ) -> dict[str, dict[str, Any]]:
    """{finding: {"present": 1 | 0 | None, "regions": positive regions}} of one image."""
    target, known = labeler(row, boxes)
    out: dict[str, dict[str, Any]] = {}
    for j, finding in enumerate(labeler.findings):
        idx = [REGION_INDEX[r] for r in FINDING_REGIONS[finding]]
        positive = [r for r, i in zip(FINDING_REGIONS[finding], idx) if known[i, j] and target[i, j] == 1]
        all_known = bool(known[idx, j].all())
        present = 1 if positive else (0 if all_known else None)
        out[finding] = {"present": present, "regions": positive}
    out["pneumonia"] = {"present": image_target(dict(row)), "regions": []}
    return out


def _prf(said: Sequence[bool], true: Sequence[int]) -> dict[str, Any]:
    said_a, true_a = np.asarray(said, bool), np.asarray(true, int) == 1
    tp = int((said_a & true_a).sum())
    p = tp / max(1, int(said_a.sum()))
    r = tp / max(1, int(true_a.sum()))
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12), "n": len(true_a),
            "n_positive": int(true_a.sum())}


def _sides(regions: Sequence[str]) -> set[str]:
    return {region_side(r) for r in regions} - {None}


def grounding_metrics(rows: Sequence[Mapping[str, Any]], results: Mapping[str, ReportResult],
                      labeler: FindingLabeler, boxes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every figure of the grounded-report evaluation (see the module doc)."""
    rows = [r for r in rows if r["image"] in results]
    truths = {r["image"]: truth(labeler, r, boxes.get(r["image"])) for r in rows}
    stated = {k: {s.finding: s for s in res.sentences if s.finding} for k, res in results.items()}

    # the contract: no sentence names a location its evidence does not cover
    n_sentences = unsupported = 0
    for res in results.values():
        for s in res.sentences:
            n_sentences += 1
            unsupported += bool(unsupported_locations(s.text, s.regions, s.evidence.kind))
    out: dict[str, Any] = {"n_images": len(rows), "n_sentences": n_sentences,
                           "unsupported_locations": unsupported,
                           "unsupported_share": unsupported / max(1, n_sentences)}
    kinds: dict[str, int] = defaultdict(int)
    for res in results.values():
        for s in res.sentences:
            kinds[s.evidence.kind] += 1
    out["sentences_by_evidence"] = dict(kinds)

    # per finding, pooled and per source; macro F1 over the findings each source assesses
    per_finding, by_source = {}, {}
    for finding in SCORED_FINDINGS:
        scored = [r for r in rows if truths[r["image"]][finding]["present"] is not None]
        if scored:
            per_finding[finding] = _prf([finding in stated[r["image"]] for r in scored],
                                        [truths[r["image"]][finding]["present"] for r in scored])
    for source in sorted({r["source"] for r in rows}):
        part = [r for r in rows if r["source"] == source]
        scores = {}
        for finding in SCORED_FINDINGS:
            scored = [r for r in part if truths[r["image"]][finding]["present"] is not None]
            if scored and any(truths[r["image"]][finding]["present"] == 1 for r in scored):
                scores[finding] = _prf([finding in stated[r["image"]] for r in scored],
                                       [truths[r["image"]][finding]["present"] for r in scored])
        normal = [r for r in part if (r.get("labels") or {}).get("no finding") == 1
                  or (r["source"] == "jsrt_scr" and truths[r["image"]]["nodule"]["present"] == 0)]
        abnormal = [r for r in part if r.get("abnormal") is True]
        said = {r["image"]: any(f in stated[r["image"]] for f in REPORT_PATHOLOGY) for r in part}
        by_source[source] = {
            "n": len(part), "findings": scores,
            "macro_f1": float(np.mean([s["f1"] for s in scores.values()])) if scores else None,
            "specificity": float(np.mean([not said[r["image"]] for r in normal])) if normal else None,
            "n_normal": len(normal),
            "sensitivity": float(np.mean([said[r["image"]] for r in abnormal])) if abnormal else None,
            "n_abnormal": len(abnormal),
        }
    out["per_finding"] = per_finding
    out["macro_f1"] = float(np.mean([s["f1"] for s in per_finding.values()])) if per_finding else None
    out["by_source"] = by_source
    out["nodules"] = nodule_metrics(rows, stated, truths, labeler)
    out["opacity_side"] = side_accuracy(rows, stated, truths, "opacity")
    out["tb_areas"] = tb_area_metrics(rows, stated, truths)
    return out


def tb_area_metrics(rows: Sequence[Mapping[str, Any]], stated: Mapping[str, Mapping[str, Any]],
                    truths: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """TBX11K (images with expert ``finding_boxes``): the share whose report names an opacity in a
    zone a TB box overlaps, and of the one-sided ones (boxes on one side only), the share whose
    opacity sentence also names the clear side. Zones: the detector's boxes (TBX11K has no masks)."""
    hit, other_side = [], []
    for r in rows:
        if not r.get("finding_boxes"):
            continue
        t = truths[r["image"]]["opacity"]
        if t["present"] != 1:
            continue
        s = stated[r["image"]].get("opacity")
        named = set(s.regions) if s is not None else set()
        hit.append(bool(named & set(t["regions"])))
        boxed = _sides(t["regions"])
        if len(boxed) == 1:
            other_side.append(bool(_sides(sorted(named)) - boxed))
    return {"named_in_a_boxed_zone": float(np.mean(hit)) if hit else None, "n": len(hit),
            "one_sided_also_named_on_clear_side": float(np.mean(other_side)) if other_side else None,
            "n_one_sided": len(other_side)}


def nodule_metrics(rows: Sequence[Mapping[str, Any]], stated: Mapping[str, Mapping[str, Any]],
                   truths: Mapping[str, Mapping[str, Any]], labeler: FindingLabeler) -> dict[str, Any]:
    """Sensitivity by subtlety; side and zone accuracy of the nodule sentence; the share of
    non-nodule images that get one."""
    by_subtlety: dict[str, list[bool]] = defaultdict(list)
    side_ok, zone_ok = [], []
    for r in rows:
        nodule = labeler.nodules.get(r["image"])
        if nodule is None:
            continue
        s = stated[r["image"]].get("nodule")
        by_subtlety[str(nodule.subtlety)].append(s is not None)
        by_subtlety["3+" if (nodule.subtlety or 0) >= 3 else "1-2"].append(s is not None)
        if s is not None:
            side_ok.append(_sides(s.regions) == {nodule.side})
            true_zones = set(truths[r["image"]]["nodule"]["regions"])
            zone_ok.append(bool(true_zones & set(s.regions)))
    negatives = [r for r in rows if truths[r["image"]]["nodule"]["present"] == 0]
    false = [("nodule" in stated[r["image"]]) for r in negatives]
    return {
        "sensitivity_by_subtlety": {k: {"sensitivity": float(np.mean(v)), "n": len(v)}
                                    for k, v in sorted(by_subtlety.items())},
        "side_accuracy": float(np.mean(side_ok)) if side_ok else None,
        "zone_accuracy": float(np.mean(zone_ok)) if zone_ok else None,
        "n_with_sentence": len(side_ok),
        "non_nodule_with_sentence": float(np.mean(false)) if false else None,
        "n_non_nodule": len(false),
    }


def side_accuracy(rows: Sequence[Mapping[str, Any]], stated: Mapping[str, Mapping[str, Any]],
                  truths: Mapping[str, Mapping[str, Any]], finding: str) -> dict[str, Any]:
    """Of the images with a ``finding`` sentence and region-level truth: every side the sentence
    names has a positive region there."""
    ok = []
    for r in rows:
        s = stated[r["image"]].get(finding)
        t = truths[r["image"]][finding]
        if s is None or t["present"] is None:
            continue
        ok.append(_sides(s.regions) <= _sides(t["regions"]))
    return {"side_accuracy": float(np.mean(ok)) if ok else None, "n": len(ok)}
