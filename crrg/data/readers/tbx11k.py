"""TBX11K tuberculosis radiographs with radiologist boxes of TB areas (``tbx11k/``).

Layout: ``images/*.jpg`` (512 x 512 as TBX11K publishes them, resized without keeping the aspect
ratio) and ``boxes.csv``: one row per box, ``image`` (path relative to the folder), ``finding``
(ActiveTuberculosis / ObsoletePulmonaryTuberculosis), ``x1, y1, x2, y2`` in the stored image and
``original_width`` / ``original_height``. Every image has TB (one image of the 600 has no box).

Decisions
---------
- **Which finding the boxes are: "opacity"** (the region-level finding of
  :data:`crrg.findings.REGION_FINDINGS`), not a new "opacity suspicious for tuberculosis".
  Every box, active or obsolete TB, is an area of increased density (consolidation, cavity,
  nodules, fibrotic or calcified scar), so "opacity" is true of each, and the project's report
  vocabulary already counts scar and fibrosis as opacity. A TB-specific finding would be trained
  on positives from this one source only (all 600 images have TB, no TB-negative image comes from
  the same hospital), so it would learn the source, which is the confound this data is meant to
  break; the within-image contrast (boxed zones vs the clear zones of the same film) is what
  TBX11K adds, and it is a contrast of opacity vs no opacity. The source's class stays on each
  box (:attr:`crrg.data.records.FindingBox.kind`) and the image carries ``tuberculosis`` = 1
  (:data:`crrg.labels.UNREPORTED`), so a TB finding can be added later without re-reading.
  The image gets no ``lung opacity`` label on purpose: that label feeds the image-level
  pneumonia-like target (``train.preparation.LUNG_DISEASE``), which would then have 600 positives
  and no negatives from this source.
- **Where the region boxes come from: the detector's boxes at feature-caching time.** TBX11K has
  no masks and no lung boxes, so the silver rules (:mod:`crrg.data.silver`, mask-based) give
  nothing, and the prepared records carry the TB boxes instead (``finding_boxes``). Region
  labels are made by :func:`region_labels` against the region boxes the model itself predicts
  on the image (cached with the features), the same boxes the heads read at inference, so
  training and use see the same regions. Until then every region of a TBX11K image is unknown
  (``train.prepare``), never background. Checked with the shipped detector on the 498 train/val
  images with boxes (six lung zones): every image and every one of the 744 boxes gets a positive
  zone, 743 boxes only on their own side of the film; per image 2.5 zones positive, 3.4
  negative, 0.12 unknown (2026-12-05).
- **Labels from boxes: the one overlap rule** (:func:`crrg.data.overlap.region_overlap_labels`),
  each box on its own as the finding mask (each box is one TB area, like a nodule), then
  combined per region: positive when any box makes it positive, negative when every box misses
  it (the radiologists boxed every TB area, so the rest of the image is negative), unknown
  otherwise (a sliver of overlap). The image without a box has TB somewhere: all unknown.
- Patients: TBX11K publishes no patient ids; each image is its own patient (split by a hash of
  the file name, :mod:`crrg.data.splits`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from crrg.data.overlap import box_mask, region_overlap_labels
from crrg.data.readers import image_size, limited, read_csv
from crrg.data.records import Box, FindingBox, Record, clip_box
from crrg.regions import LUNG_REGIONS

SOURCE = "tbx11k"
LICENCE = "TBX11K (Liu et al., CVPR 2020): research use; cite it"
REGION_FINDING = "opacity"
KINDS: tuple[str, ...] = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis")
LABELS: dict[str, int] = {"no finding": 0, "tuberculosis": 1}


def _box(row: dict[str, str], width: int, height: int, table: Path) -> FindingBox:
    kind = row["finding"].strip()
    if kind not in KINDS:
        raise ValueError(f"{table}: {row['image']}: unknown finding {kind!r}; expected one of {KINDS}")
    box = clip_box(tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2")), width, height)  # type: ignore[arg-type]
    if box is None:
        raise ValueError(f"{table}: {row['image']}: box outside the {width}x{height} image")
    return FindingBox(finding=REGION_FINDING, box=box, kind=kind)


def read_one(root: Path, image_rel: str, rows: list[dict[str, str]], table: Path) -> Record:
    path = root / image_rel
    width, height = image_size(path)
    return Record(
        source=SOURCE, patient=path.stem, image=path, width=width, height=height,
        labels=dict(LABELS), finding_boxes=tuple(_box(r, width, height, table) for r in rows),
        study=path.stem, licence=LICENCE,
    ).validate()


def read(root: Path, limit: int | None = None) -> Iterator[Record]:
    """Every image in ``images/`` (sorted), with its boxes from ``boxes.csv``."""
    table = root / "boxes.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{SOURCE}: expected {table} (image, finding, x1, y1, x2, y2)")
    by_image: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv(table):
        by_image[row["image"]].append(row)
    images = sorted(p.relative_to(root).as_posix() for p in (root / "images").glob("*.jpg"))
    unknown = sorted(set(by_image) - set(images))
    if unknown:
        raise FileNotFoundError(f"{SOURCE}: {table} names images not in {root / 'images'}: {unknown[:5]}")
    return limited((read_one(root, rel, by_image.get(rel, []), table) for rel in images), limit)


def region_labels(finding_boxes: Sequence[FindingBox], region_boxes: Mapping[str, Box], width: int,
                  height: int, regions: Iterable[str] = LUNG_REGIONS) -> dict[str, int | None]:
    """{region: 1 | 0 | None (unknown)} for one image's TB boxes over its ``region_boxes``
    (stored-image pixels; e.g. the detector's boxes): see the module docstring. No box -> {}
    (TB is present but not localised: every region unknown)."""
    regions = [r for r in regions if r in region_boxes]
    per_box = [region_overlap_labels(box_mask(f.box, height, width), region_boxes, regions)
               for f in finding_boxes if f.finding == REGION_FINDING]
    if not per_box:
        return {}
    out: dict[str, int | None] = {}
    for region in regions:
        values = [labels[region] for labels in per_box]
        out[region] = 1 if 1 in values else 0 if all(v == 0 for v in values) else None
    return out
