"""Region-level finding labels (targets + masks) for :class:`crrg.findings.RegionFindings`.

Sources that localise findings, each through :func:`crrg.data.overlap.region_overlap_labels`
over the image's region boxes (``regions.jsonl``, stored-image pixels):

- **nodule** (``jsrt_scr/nodules.csv``): the nodule's box is its centre ± size / 2 (size in mm at
  the stored images' 0.35 mm pitch). A nodule image whose nodule falls in no lung zone is unknown
  for nodules; a JSRT non-nodule image is negative in every zone.
- **opacity**, **support device** (``covid_anatomy/structure.csv``): Ground Glass Opacities +
  Consolidation masks, and the tube / line / probe masks. These images were annotated for both:
  an image without such a mask is negative for it.
- **the image's own note** (``covid_lung_boxes`` / ``covid_anatomy`` clinical notes): a radiograph
  sentence (the rules of :func:`train.targets.note_sentences`) stating an opacity in named lung
  zones makes those zones positive (other zones stay unknown: a note does not list normal zones).
- **TB areas** (``tbx11k``, the records' ``finding_boxes``): opacity in the lung zones a box
  overlaps, none in the zones every box misses (:func:`crrg.data.readers.tbx11k.region_labels`);
  the region boxes are the detector's own (cached with the features), as TBX11K has no masks.
- **normal images** (``no finding`` = 1, any source): negative for every finding in every region.

Everything else (Kermany pneumonia, COVID-radiography COVID-19: image labels only) is masked.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crrg.data.overlap import box_mask, region_overlap_labels
from crrg.data.readers import read_csv, tbx11k
from crrg.data.records import FindingBox
from crrg.data.readers.covid_anatomy import _place_mask
from crrg.findings import FINDING_REGIONS, LUNG_ZONES, REGION_FINDINGS
from crrg.regions import NUM_REGIONS, REGION_INDEX

JSRT_PITCH_MM = 0.35
OPACITY_MASKS = ("Ground Glass Opacities", "Consolidation")
DEVICE_MASKS = ("Endotracheal Tube", "Central Venous Line", "Nosogastric Tube", "Monitoring Probes",
                "Tubings")
OPACITY_WORDS = re.compile(r"opacit|consolidat|infiltrat|ground[- ]glass|air[- ]?space", re.IGNORECASE)


@dataclass(frozen=True)
class Nodule:
    image: str  # data-root relative path, as in the prepared files
    x: float
    y: float
    size_mm: float | None
    subtlety: int | None
    location: str

    @property
    def side(self) -> str:
        """The nodule's side from the patient's view (image column: a left nodule has a large x)."""
        return "left" if self.location.strip().lower().startswith("l") else "right"

    def box(self) -> tuple[float, float, float, float]:
        radius = (self.size_mm or 10.0) / JSRT_PITCH_MM / 2
        return (self.x - radius, self.y - radius, self.x + radius, self.y + radius)


def read_nodules(data_root: Path) -> dict[str, Nodule]:
    path = data_root / "jsrt_scr" / "nodules.csv"
    out: dict[str, Nodule] = {}
    if not path.is_file():
        return out
    for row in read_csv(path):
        if row.get("nodule") != "1" or not row.get("x"):
            continue
        out[f"jsrt_scr/{row['image']}"] = Nodule(
            image=f"jsrt_scr/{row['image']}", x=float(row["x"]), y=float(row["y"]),
            size_mm=float(row["size_mm"]) if row.get("size_mm") else None,
            subtlety=int(row["subtlety"]) if row.get("subtlety") else None,
            location=row.get("location", ""))
    return out


def anatomy_masks(data_root: Path) -> dict[str, dict[str, list[dict[str, str]]]]:
    """{image path: {"opacity" | "support device": [structure.csv rows]}} (all annotated images)."""
    root = data_root / "covid_anatomy"
    out: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: {"opacity": [], "support device": []})
    if not (root / "structure.csv").is_file():
        return {}
    for row in read_csv(root / "structure.csv"):
        key = f"covid_anatomy/{row['Image']}"
        out[key]  # every annotated image, with or without lesion masks
        if row["Template Name"] in OPACITY_MASKS:
            out[key]["opacity"].append(row)
        elif row["Template Name"] in DEVICE_MASKS:
            out[key]["support device"].append(row)
    return dict(out)


def note_zones(text: str | None) -> set[str]:
    """Lung zones that an image's own note places an opacity in (radiograph sentences only)."""
    from crrg.data.sentences import analyse_sentence, split_sentences
    from train.targets import CASE_HISTORY, IMAGING_WORDS, NOT_RADIOGRAPH

    zones: set[str] = set()
    for sentence in split_sentences(text or ""):
        if not IMAGING_WORDS.search(sentence) or NOT_RADIOGRAPH.search(sentence):
            continue
        if CASE_HISTORY.search(re.sub(r"\d", "", sentence)) or not OPACITY_WORDS.search(sentence):
            continue
        info = analyse_sentence(sentence)
        if info.abnormal and not info.negated:
            zones |= set(info.regions) & set(LUNG_ZONES)
    return zones


class FindingLabeler:
    """[29, F] targets and known-masks for a prepared image (see the module doc)."""

    def __init__(self, data_root: Path, findings: tuple[str, ...] = REGION_FINDINGS) -> None:
        self.root = Path(data_root)
        self.findings = findings
        self.nodules = read_nodules(self.root)
        self.anatomy = anatomy_masks(self.root)

    def _set(self, target: Tensor, known: Tensor, finding: str, labels: Mapping[str, int | None]) -> None:
        j = self.findings.index(finding)
        for region, value in labels.items():
            if region not in FINDING_REGIONS[finding] or value is None:
                continue
            i = REGION_INDEX[region]
            target[i, j], known[i, j] = float(value), True

    def _all(self, target: Tensor, known: Tensor, finding: str, value: int) -> None:
        self._set(target, known, finding, {r: value for r in FINDING_REGIONS[finding]})

    def __call__(self, image: Mapping[str, Any], boxes: Mapping[str, Any] | None) -> tuple[Tensor, Tensor]:
        target = torch.zeros(NUM_REGIONS, len(self.findings))
        known = torch.zeros(NUM_REGIONS, len(self.findings), dtype=torch.bool)
        labels = image.get("labels") or {}
        key, source = image["image"], image["source"]
        boxes = boxes or {}
        if labels.get("no finding") == 1:
            for finding in self.findings:
                self._all(target, known, finding, 0)
        if source == "jsrt_scr" and "nodule" in self.findings:
            nodule = self.nodules.get(key)
            if nodule is None:
                self._all(target, known, "nodule", 0)
            else:
                h, w = int(image["height"]), int(image["width"])
                found = region_overlap_labels(box_mask(nodule.box(), h, w), boxes, LUNG_ZONES)
                if any(v == 1 for v in found.values()):
                    self._set(target, known, "nodule", found)
                for finding in ("opacity", "support device"):  # a screening set: none besides nodules
                    if finding in self.findings:
                        self._all(target, known, finding, 0)
                if "opacity" in self.findings:  # a nodule is a focal opacity: do not call it clear
                    j = self.findings.index("opacity")
                    for region, value in found.items():
                        if value != 0:
                            known[REGION_INDEX[region], j] = False
        if key in self.anatomy:
            h, w = int(image["height"]), int(image["width"])
            for finding, rows in self.anatomy[key].items():
                if finding not in self.findings:
                    continue
                mask = np.zeros((h, w), dtype=bool)
                for row in rows:
                    placed = _place_mask(self.root / "covid_anatomy", row, w, h)
                    if placed is not None:
                        mask |= placed
                self._set(target, known, finding, region_overlap_labels(mask, boxes, FINDING_REGIONS[finding]))
        if image.get("finding_boxes") and "opacity" in self.findings:  # TBX11K: TB areas boxed
            h, w = int(image["height"]), int(image["width"])
            drawn = [FindingBox(b["finding"], tuple(b["box"]), b.get("kind", "")) for b in image["finding_boxes"]]
            self._set(target, known, "opacity", tbx11k.region_labels(drawn, boxes, w, h, FINDING_REGIONS["opacity"]))
        if image.get("text_kind") == "clinical_notes" and "opacity" in self.findings:
            self._set(target, known, "opacity", {z: 1 for z in note_zones(image.get("text"))})
        return target, known
