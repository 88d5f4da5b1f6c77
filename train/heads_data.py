"""Tensors for training the evidence heads on cached tower outputs (:mod:`train.cache_features`).

One :class:`HeadData` holds, for N prepared images: the cached features, the region-level finding
targets and masks (:class:`train.finding_labels.FindingLabeler`), the region-level abnormality
target (any pathology finding; normal images: every region normal) and the image-level target
(pneumonia-like vs normal), plus source / split / label metadata for splits and LOSO folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from crrg.findings import REGION_FINDINGS
from crrg.regions import NUM_REGIONS, REGION_INDEX, REGIONS
from train.datasets import PreparedData
from train.finding_labels import FindingLabeler
from train.preparation import LUNG_DISEASE

REGION_PATHOLOGY = ("nodule", "opacity")  # region findings that make a region abnormal


def image_target(row: dict[str, Any]) -> int | None:
    """1 pneumonia-like, 0 normal (or a JSRT screening image), None unknown."""
    labels = row.get("labels") or {}
    if any(labels.get(k) == 1 for k in LUNG_DISEASE):
        return 1
    if labels.get("no finding") == 1 or row["source"] == "jsrt_scr":
        return 0
    return None


#: image-level findings beyond "pneumonia-like" and the sources that assess each. Only those
#: sources give targets (others are masked, even their normal images), so a head cannot learn
#: "which source" for them: NIH ChestX-ray14 holds normals and abnormals of one hospital; JSRT
#: holds nodule and non-nodule films of one screening set.
IMAGE_EXTRA: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("nih_cxr14",), "pleural effusion": ("nih_cxr14",), "atelectasis": ("nih_cxr14",),
    "edema": ("nih_cxr14",), "pneumothorax": ("nih_cxr14",), "consolidation": ("nih_cxr14",),
    "infiltration": ("nih_cxr14",), "nodule": ("nih_cxr14", "jsrt_scr"), "mass": ("nih_cxr14",),
}


def extra_targets(row: dict[str, Any]) -> tuple[list[float], list[bool]]:
    """Targets and known flags of :data:`IMAGE_EXTRA` for one prepared image: the image's own
    label, or absent on a "No Finding" image, from an assessing source only."""
    labels = row.get("labels") or {}
    values, known = [], []
    for finding, sources in IMAGE_EXTRA.items():
        value = labels.get(finding)
        if value is None and labels.get("no finding") == 1:
            value = 0
        ok = row["source"] in sources and value is not None
        values.append(float(value or 0) if ok else 0.0)
        known.append(ok)
    return values, known


def image_finding_target(row: dict[str, Any], finding: str) -> float | None:
    """One image-level finding's target for a prepared image (None: not assessed)."""
    if finding == "pneumonia":
        y = image_target(row)
        return None if y is None else float(y)
    if finding not in IMAGE_EXTRA:
        return None
    values, known = extra_targets(row)
    j = list(IMAGE_EXTRA).index(finding)
    return values[j] if known[j] else None


@dataclass
class HeadData:
    keys: list[str]
    rows: list[dict[str, Any]]
    fused: Tensor  # [N, 29, D]
    crops: Tensor  # [N, 29, E]
    embedding: Tensor  # [N, E]
    detected: Tensor  # [N, 29] bool
    boxes: Tensor  # [N, 29, 4] stored-image pixels (predicted)
    findings: Tensor  # [N, 29, F]
    findings_known: Tensor  # [N, 29, F] bool
    abnormality: Tensor  # [N, 29]
    abnormality_known: Tensor  # [N, 29] bool
    image: Tensor  # [N] 0/1
    image_known: Tensor  # [N] bool
    extra: Tensor  # [N, len(IMAGE_EXTRA)] 0/1
    extra_known: Tensor  # [N, len(IMAGE_EXTRA)] bool

    @property
    def sources(self) -> list[str]:
        return [r["source"] for r in self.rows]

    @property
    def splits(self) -> list[str]:
        return [r["split"] for r in self.rows]

    def index(self, split: str | None = None, sources: set[str] | None = None,
              exclude: set[str] | None = None) -> Tensor:
        keep = [i for i, r in enumerate(self.rows)
                if (split is None or r["split"] == split)
                and (sources is None or r["source"] in sources)
                and (exclude is None or r["source"] not in exclude)]
        return torch.tensor(keep, dtype=torch.long)

    def known_image_test_by_source(self) -> list[tuple[str, Tensor]]:
        """Per source (sorted), the test indices with a known image-level label; sources with
        none are left out."""
        out = []
        for source in sorted(set(self.sources)):
            idx = self.index("test", sources={source})
            idx = idx[self.image_known[idx]]
            if len(idx):
                out.append((source, idx))
        return out


def predicted_boxes(cached: dict[str, Any]) -> dict[str, list[float]]:
    """{region: box} of the detector's detected regions in a feature-cache entry (stored-image
    pixels): the region boxes of an image the prepared data has none for (TBX11K)."""
    return {REGIONS[i]: cached["boxes"][i].tolist() for i in range(NUM_REGIONS) if bool(cached["detected"][i])}


def build(prepared: PreparedData, features: dict[str, dict[str, Any]],
          findings: tuple[str, ...] = REGION_FINDINGS) -> HeadData:
    labeler = FindingLabeler(prepared.data_root, findings)
    boxes = {r["image"]: r["boxes"] for r in prepared.regions(None)}
    rows = [r for r in prepared.images(None) if r.get("image") in features]
    rows.sort(key=lambda r: r["image"])
    targets, knowns, abn, abn_known, img, img_known, extra, extra_known = [], [], [], [], [], [], [], []
    path_idx = [findings.index(f) for f in REGION_PATHOLOGY if f in findings]
    for row in rows:
        t, k = labeler(row, boxes.get(row["image"]) or predicted_boxes(features[row["image"]]))
        targets.append(t)
        knowns.append(k)
        a = (t[:, path_idx] * k[:, path_idx]).amax(dim=1)  # [29]
        ak = k[:, path_idx].any(dim=1)
        normal = (row.get("labels") or {}).get("no finding") == 1 or (
            row["source"] == "jsrt_scr")
        if normal:
            ak = torch.ones_like(ak)
        for region, value in (row.get("region_abnormal") or {}).items():
            i = REGION_INDEX[region]
            a[i], ak[i] = max(float(a[i]), float(bool(value))), True
        abn.append(a)
        abn_known.append(ak)
        y = image_target(row)
        img.append(float(y or 0))
        img_known.append(y is not None)
        values, known = extra_targets(row)
        extra.append(values)
        extra_known.append(known)
    f = [features[r["image"]] for r in rows]
    return HeadData(
        keys=[r["image"] for r in rows], rows=rows,
        fused=torch.stack([x["fused"] for x in f]).float(),
        crops=torch.stack([x["crops"] for x in f]).float(),
        embedding=torch.stack([x["embedding"] for x in f]).float(),
        detected=torch.stack([x["detected"] for x in f]).bool(),
        boxes=torch.stack([x["boxes"] for x in f]).float(),
        findings=torch.stack(targets), findings_known=torch.stack(knowns),
        abnormality=torch.stack(abn), abnormality_known=torch.stack(abn_known),
        image=torch.tensor(img), image_known=torch.tensor(img_known),
        extra=torch.tensor(extra).reshape(len(rows), len(IMAGE_EXTRA)),
        extra_known=torch.tensor(extra_known).reshape(len(rows), len(IMAGE_EXTRA)),
    )


def cooccurrence_priors(data: HeadData) -> Tensor:
    """[len(IMAGE_EXTRA)] P(finding | pneumonia-like film) over the train films of the sources that
    assess each finding (NIH: pneumothorax on 2 % of its pneumonia-like films, infiltration on 45 %),
    from labels only. What the best guess for a finding is on a pneumonia-like film of a source that
    never labels it."""
    train = data.index("train")
    out = []
    for j, sources in enumerate(IMAGE_EXTRA.values()):
        idx = train[torch.tensor([data.rows[i]["source"] in sources for i in train.tolist()], dtype=torch.bool)]
        idx = idx[data.image_known[idx] & (data.image[idx] == 1) & data.extra_known[idx, j]]
        out.append(float(data.extra[idx, j].mean()) if len(idx) else 0.0)
    return torch.tensor(out)


def unassessed_pneumonia(data: HeadData) -> Tensor:
    """[N, len(IMAGE_EXTRA)] bool: pneumonia-like films of a source that does not assess the
    finding (a Kermany pneumonia film for pneumothorax), where NIH-trained heads extrapolate."""
    pneumonia = data.image_known & (data.image == 1)
    return torch.stack([pneumonia & torch.tensor([r["source"] not in sources for r in data.rows], dtype=torch.bool)
                        for sources in IMAGE_EXTRA.values()], dim=1)


def prior_targets(data: HeadData, priors: Tensor) -> tuple[Tensor, Tensor]:
    """Training targets and known flags of :data:`IMAGE_EXTRA`: the labels where a source assesses
    the finding, and the co-occurrence prior (:func:`cooccurrence_priors`) as a soft target on
    :func:`unassessed_pneumonia` films, so that a head cannot call every strongly abnormal film of
    another hospital a pneumothorax. Evaluation keeps to ``extra`` / ``extra_known``."""
    soft = unassessed_pneumonia(data) & ~data.extra_known
    return torch.where(soft, priors.expand_as(data.extra), data.extra), data.extra_known | soft


def concat(a: HeadData, b: HeadData, tag: str = "augmented") -> HeadData:
    """``a`` then ``b`` (e.g. augmented copies of training images; their keys get ``#tag``)."""
    rows = list(a.rows) + [dict(r, **{tag: True}) for r in b.rows]
    keys = list(a.keys) + [f"{k}#{tag}" for k in b.keys]
    fields = {name: torch.cat([getattr(a, name), getattr(b, name)])
              for name in ("fused", "crops", "embedding", "detected", "boxes", "findings", "findings_known",
                           "abnormality", "abnormality_known", "image", "image_known", "extra", "extra_known")}
    return HeadData(keys=keys, rows=rows, **fields)
