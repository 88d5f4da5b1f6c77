"""Silver region boxes: the 29 Chest ImaGenome regions derived from organ masks by fixed rules.

All rules live here, in this table and in :class:`SilverRules` (every number the rules use).
Images are frontal radiographs in the usual display: the patient's right is on the image's left.
Notation: for a lung, ``(x1, y1, x2, y2)`` is its box and ``w``, ``h`` its width and height;
"medial" is towards the midline (right lung: larger x; left lung: smaller x). ``top``/``bottom``/
``span`` are the top, bottom and height of both lungs together; ``W`` is the thorax width (right
lung x1 to left lung x2); ``mid`` is the midline x; ``UM``/``CS`` are the upper mediastinum and
cardiac silhouette boxes. A "crop" box is the bounding box of the mask pixels inside the stated
rows/columns, so it follows the organ's real outline.

=========================  =====  ==========================================================
region                     kind   rule
=========================  =====  ==========================================================
right / left lung          mask   bbox of the lung mask (or the expert lung box)
upper / mid / lower zone   rule   crop of the lung to rows y1 + [0, 1/3), [1/3, 2/3), [2/3, 1] h
apical zone                rule   crop of the lung to its top ``apical_fraction`` h (the apex,
                                  above the clavicle: the SCR clavicles end at 0.18 h on average)
costophrenic angle         rule   crop of the lung to its bottom ``cp_height`` h and lateral
                                  ``cp_width`` w
hemidiaphragm              rule   the lung's lower outline: x over the columns whose lowest lung
                                  pixel lies below y1 + ``diaphragm_depth`` h (so not the heart
                                  border); y from the highest to the lowest of those pixels in
                                  the lateral ``diaphragm_lateral`` w (dome to costophrenic
                                  angle), padded by ``diaphragm_pad`` h
hilar structures           rule   rows y1 + [``hilar_top``, ``hilar_bottom``] h; x from the
                                  median medial edge of the lung in those rows, ``hilar_lateral``
                                  w into the lung and ``hilar_medial`` w into the mediastinum
cardiac silhouette         mask   heart mask bbox; from a cardiomediastinum mask (rule): crop to
                                  the rows from the first row at least ``cardiac_width`` times
                                  the widest row, down to the bottom
mediastinum                mask   cardiomediastinum mask bbox; without it (rule): union of UM
                                  and CS
upper mediastinum          rule   cardiomediastinum crop above CS (CS's top row if the mask
                                  starts wide), extended up to top; without
                                  it: x between the median medial edges of the two lungs over
                                  the rows from top to CS.y1, y from top to CS.y1
trachea                    mask   airway mask crop above the carina; without airways (rule):
                                  width ``trachea_width`` W centred on mid, from
                                  top - ``trachea_above`` span to the carina
carina                     rule   square of side ``carina_size`` x tracheal width centred on the
                                  bifurcation (top of the gap between the main bronchi in the
                                  airway mask); without airways at top + ``carina_level`` span
spine                      rule   ``spine_width`` W wide, centred on mid, from top to bottom
aortic arch                rule   x from mid to UM.x2 + ``aortic_lateral`` x UM width (the
                                  knob bulges into the left lung); y from carina -
                                  ``aortic_above`` span to carina + ``aortic_below`` span
svc                        rule   x from UM.x1 to mid; y from top + ``svc_top`` span to CS.y1
cavoatrial junction        rule   x from UM.x1 to mid; y around CS.y1 (- ``caj_above`` span,
                                  + ``caj_below`` span)
right atrium               rule   x from CS.x1 to mid; y from CS.y1 + ``ra_top`` x CS height to
                                  CS.y2
abdomen                    rule   x over the thorax; y from the top of the higher hemidiaphragm
                                  box to bottom + ``abdomen_depth`` span
right / left clavicle      mask   clavicle mask bbox
=========================  =====  ==========================================================

The midline is the centre of the trachea (airway mask) when there is one, else the centre of UM.
Fractions were set from the data: the JSRT/SCR heart starts at 0.47 span and the SCR clavicles
end at 0.18 of the right lung's height; on the COVID-anatomy airway masks the carina lies at a
median 0.40 span (10-90 %: 0.34-0.47; mostly AP films) and the trachea is 0.061 W wide, so
``carina_level`` = 0.37 (nearer the visible carina on JSRT's erect PA films) and
``trachea_width`` = 0.06. Regions whose inputs are missing are left out (and
so not annotated). Boxes are clipped to the image; empty ones are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from crrg.data.records import Box, clip_box, ordered_regions

MASK_NAMES: tuple[str, ...] = (
    "right_lung", "left_lung", "heart", "right_clavicle", "left_clavicle",
    "cardiomediastinum", "airways",
)


@dataclass(frozen=True)
class SilverRules:
    """Every number the rules use (fractions as documented in the module table)."""

    zone_edges: tuple[float, float] = (1 / 3, 2 / 3)
    apical_fraction: float = 0.2
    cp_height: float = 0.2
    cp_width: float = 0.4
    diaphragm_depth: float = 0.7
    diaphragm_lateral: float = 0.5
    diaphragm_pad: float = 0.02
    hilar_top: float = 0.3
    hilar_bottom: float = 0.6
    hilar_lateral: float = 0.35
    hilar_medial: float = 0.05
    cardiac_width: float = 0.5
    carina_level: float = 0.37
    trachea_width: float = 0.06
    trachea_above: float = 0.05
    carina_size: float = 2.0
    spine_width: float = 0.12
    aortic_above: float = 0.12
    aortic_below: float = 0.02
    aortic_lateral: float = 0.2
    svc_top: float = 0.15
    caj_above: float = 0.05
    caj_below: float = 0.1
    ra_top: float = 0.15
    abdomen_depth: float = 0.25


@dataclass
class OrganMasks:
    """Boolean ``[H, W]`` masks in image pixels; any may be missing."""

    height: int
    width: int
    right_lung: np.ndarray | None = None
    left_lung: np.ndarray | None = None
    heart: np.ndarray | None = None
    right_clavicle: np.ndarray | None = None
    left_clavicle: np.ndarray | None = None
    cardiomediastinum: np.ndarray | None = None
    airways: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in MASK_NAMES:
            mask = getattr(self, name)
            if mask is None:
                continue
            if mask.shape != (self.height, self.width):
                raise ValueError(f"{name} mask is {mask.shape}, expected {(self.height, self.width)}")
            mask = mask.astype(bool, copy=False)
            setattr(self, name, mask if mask.any() else None)


@dataclass
class SilverBoxes:
    boxes: dict[str, Box] = field(default_factory=dict)
    derived: tuple[str, ...] = ()


def mask_bbox(mask: np.ndarray, rows: tuple[float, float] | None = None,
              cols: tuple[float, float] | None = None) -> Box | None:
    """Bbox (continuous xyxy) of the mask pixels inside ``rows`` x ``cols`` (half-open ranges)."""
    r0, r1 = (0, mask.shape[0]) if rows is None else (max(0, int(round(rows[0]))), int(round(rows[1])))
    c0, c1 = (0, mask.shape[1]) if cols is None else (max(0, int(round(cols[0]))), int(round(cols[1])))
    sub = mask[r0:r1, c0:c1]
    ys = np.flatnonzero(sub.any(axis=1))
    xs = np.flatnonzero(sub.any(axis=0))
    if ys.size == 0:
        return None
    return (float(c0 + xs[0]), float(r0 + ys[0]), float(c0 + xs[-1] + 1), float(r0 + ys[-1] + 1))


def box_mask(box: Box, height: int, width: int) -> np.ndarray:
    """A filled rectangle (for lungs known only by their box)."""
    mask = np.zeros((height, width), bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[max(0, y1):y2, max(0, x1):x2] = True
    return mask


def _medial_edge(lung: np.ndarray, r0: float, r1: float, side: str) -> float | None:
    """Median medial edge (continuous x) of a lung over rows [r0, r1)."""
    sub = lung[max(0, int(round(r0))):int(round(r1))]
    rows = sub[sub.any(axis=1)]
    if rows.shape[0] == 0:
        return None
    if side == "right":  # medial = last lung pixel + 1
        edges = rows.shape[1] - np.argmax(rows[:, ::-1], axis=1)
    else:
        edges = np.argmax(rows, axis=1)
    return float(np.median(edges))


def _lung_regions(lung: np.ndarray, box: Box, side: str, rules: SilverRules) -> dict[str, Box]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    out: dict[str, Box | None] = {}
    e1, e2 = rules.zone_edges
    out["upper lung zone"] = mask_bbox(lung, rows=(y1, y1 + e1 * h))
    out["mid lung zone"] = mask_bbox(lung, rows=(y1 + e1 * h, y1 + e2 * h))
    out["lower lung zone"] = mask_bbox(lung, rows=(y1 + e2 * h, y2))
    out["apical zone"] = mask_bbox(lung, rows=(y1, y1 + rules.apical_fraction * h))
    lateral = (x1, x1 + rules.cp_width * w) if side == "right" else (x2 - rules.cp_width * w, x2)
    out["costophrenic angle"] = mask_bbox(lung, rows=(y2 - rules.cp_height * h, y2), cols=lateral)
    out["hemidiaphragm"] = _hemidiaphragm(lung, box, side, rules)
    hy1, hy2 = y1 + rules.hilar_top * h, y1 + rules.hilar_bottom * h
    medial = _medial_edge(lung, hy1, hy2, side)
    if medial is not None:
        if side == "right":
            inward, outward = rules.hilar_lateral * w, rules.hilar_medial * w
        else:
            inward, outward = rules.hilar_medial * w, rules.hilar_lateral * w
        out["hilar structures"] = (medial - inward, hy1, medial + outward, hy2)
    return {f"{side} {name}": b for name, b in out.items() if b is not None}


def _hemidiaphragm(lung: np.ndarray, box: Box, side: str, rules: SilverRules) -> Box | None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cols = np.flatnonzero(lung.any(axis=0))
    lowest = lung.shape[0] - 1 - np.argmax(lung[::-1, cols], axis=0)  # [C] last lung row per column
    keep = lowest + 1 >= y1 + rules.diaphragm_depth * h
    if side == "right":
        lateral = cols + 1 <= x1 + rules.diaphragm_lateral * w
    else:
        lateral = cols >= x2 - rules.diaphragm_lateral * w
    dome = lowest[keep & lateral]
    if dome.size == 0:
        return None
    pad = rules.diaphragm_pad * h
    x_min, x_max = float(cols[keep].min()), float(cols[keep].max() + 1)
    return (x_min, float(dome.min()) - pad, x_max, float(dome.max() + 1) + pad)


def find_carina(airways: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the tracheal bifurcation: the top of the largest background region inside the
    airway bbox that opens downwards or sideways but not to the top (the gap between the bronchi)."""
    bbox = mask_bbox(airways)
    if bbox is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in bbox)
    background = ~airways[y1:y2, x1:x2]
    labels, count = ndimage.label(background)
    best, best_area = 0, 0
    touches_top = set(np.unique(labels[0])) - {0}
    border = set(np.unique(labels[-1])) | set(np.unique(labels[:, 0])) | set(np.unique(labels[:, -1]))
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    for lab in (border - touches_top - {0}):
        if areas[lab] > best_area:
            best, best_area = lab, int(areas[lab])
    if best == 0:
        return None
    ys, xs = np.nonzero(labels == best)
    top = ys.min()
    return float(x1 + xs[ys == top].mean() + 0.5), float(y1 + top)


def _airway_regions(airways: np.ndarray, rules: SilverRules) -> tuple[dict[str, Box], float] | None:
    """Trachea (mask crop), carina box and midline x from an airway mask."""
    carina = find_carina(airways)
    if carina is None:
        return None
    cx, cy = carina
    trachea = mask_bbox(airways, rows=(0, cy))
    if trachea is None:
        return None
    part = airways[: int(round(cy))]
    widths = part.sum(axis=1)
    rows = np.flatnonzero(widths)
    tw = float(np.median(widths[rows]))
    centres = [np.flatnonzero(part[r]).mean() + 0.5 for r in rows]
    half = rules.carina_size * tw / 2
    boxes = {"trachea": trachea, "carina": (cx - half, cy - half, cx + half, cy + half)}
    return boxes, float(np.median(centres))


def _mediastinal_regions(masks: OrganMasks, lungs: dict[str, Box], rules: SilverRules) -> dict[str, Box]:
    """Cardiac silhouette, upper mediastinum and mediastinum (mask-backed ones flagged by caller)."""
    out: dict[str, Box] = {}
    top = min((b[1] for b in lungs.values()), default=None)
    if masks.cardiomediastinum is not None:
        cm = masks.cardiomediastinum
        widths = cm.sum(axis=1)
        start = int(np.argmax(widths >= rules.cardiac_width * widths.max()))
        out["mediastinum"] = mask_bbox(cm)  # type: ignore[assignment]
        out["cardiac silhouette"] = mask_bbox(cm, rows=(start, cm.shape[0]))  # type: ignore[assignment]
        um = mask_bbox(cm, rows=(0, start)) or mask_bbox(cm, rows=(start, start + 1))
        if um is not None:  # the upper mediastinum reaches up to the lung apices
            um_top = min(um[1], top) if top is not None else um[1]
            out["upper mediastinum"] = (um[0], um_top, um[2], float(start))
        return out
    if masks.heart is not None:
        out["cardiac silhouette"] = mask_bbox(masks.heart)  # type: ignore[assignment]
    if "cardiac silhouette" in out and masks.right_lung is not None and masks.left_lung is not None:
        top = min(lungs["right lung"][1], lungs["left lung"][1])
        cs_top = out["cardiac silhouette"][1]
        rx = _medial_edge(masks.right_lung, top, cs_top, "right")
        lx = _medial_edge(masks.left_lung, top, cs_top, "left")
        if rx is not None and lx is not None and lx > rx and cs_top > top:
            out["upper mediastinum"] = (rx, top, lx, cs_top)
            cs = out["cardiac silhouette"]
            um = out["upper mediastinum"]
            out["mediastinum"] = (min(um[0], cs[0]), um[1], max(um[2], cs[2]), max(um[3], cs[3]))
    return out


def _central_regions(out: dict[str, Box], lungs: dict[str, Box], mid: float, carina_y: float,
                     rules: SilverRules) -> dict[str, Box]:
    """Spine, abdomen and the vessels/heart parts that hang off UM, CS and the carina."""
    r, left = lungs["right lung"], lungs["left lung"]
    top, bottom = min(r[1], left[1]), max(r[3], left[3])
    span, thorax = bottom - top, left[2] - r[0]
    new: dict[str, Box] = {}
    half = rules.spine_width * thorax / 2
    new["spine"] = (mid - half, top, mid + half, bottom)
    domes = [out[k][1] for k in ("right hemidiaphragm", "left hemidiaphragm") if k in out]
    if domes:
        new["abdomen"] = (r[0], min(domes), left[2], bottom + rules.abdomen_depth * span)
    um, cs = out.get("upper mediastinum"), out.get("cardiac silhouette")
    if um is not None:
        x2 = um[2] + rules.aortic_lateral * (um[2] - um[0])
        new["aortic arch"] = (mid, carina_y - rules.aortic_above * span, x2,
                              carina_y + rules.aortic_below * span)
    if um is not None and cs is not None:
        new["svc"] = (um[0], top + rules.svc_top * span, mid, cs[1])
        new["cavoatrial junction"] = (um[0], cs[1] - rules.caj_above * span, mid,
                                      cs[1] + rules.caj_below * span)
        new["right atrium"] = (cs[0], cs[1] + rules.ra_top * (cs[3] - cs[1]), mid, cs[3])
    return new


def derive_boxes(masks: OrganMasks, lung_boxes: dict[str, Box] | None = None,
                 rules: SilverRules | None = None) -> SilverBoxes:
    """All regions the masks allow, with rule-derived ones listed in ``derived``.

    ``lung_boxes`` ("right lung"/"left lung") replace the lung mask bboxes where the source gives
    expert boxes; the lung masks are then used only to shape zones (pass box pseudo-masks).
    """
    rules = rules or SilverRules()
    lungs: dict[str, Box] = {}
    rule_out: dict[str, Box] = {}
    mask_out: dict[str, Box] = {}
    for side in ("right", "left"):
        lung = getattr(masks, f"{side}_lung")
        if lung is None:
            continue
        box = (lung_boxes or {}).get(f"{side} lung") or mask_bbox(lung)
        lungs[f"{side} lung"] = box  # type: ignore[assignment]
        rule_out.update(_lung_regions(lung, box, side, rules))  # type: ignore[arg-type]
    mask_out.update(lungs)
    for side in ("right", "left"):
        clavicle = getattr(masks, f"{side}_clavicle")
        if clavicle is not None:
            mask_out[f"{side} clavicle"] = mask_bbox(clavicle)  # type: ignore[assignment]
    med = _mediastinal_regions(masks, lungs, rules)
    mask_kind = {"mediastinum"} if masks.cardiomediastinum is not None else {"cardiac silhouette"}
    for name, box in med.items():
        (mask_out if name in mask_kind else rule_out)[name] = box
    if len(lungs) == 2:
        _add_midline_regions(masks, lungs, mask_out, rule_out, rules)
    return _finish(mask_out, rule_out, masks.width, masks.height)


def _add_midline_regions(masks: OrganMasks, lungs: dict[str, Box], mask_out: dict[str, Box],
                         rule_out: dict[str, Box], rules: SilverRules) -> None:
    r, left = lungs["right lung"], lungs["left lung"]
    top, bottom = min(r[1], left[1]), max(r[3], left[3])
    span, thorax = bottom - top, left[2] - r[0]
    airway = _airway_regions(masks.airways, rules) if masks.airways is not None else None
    um = rule_out.get("upper mediastinum")
    if airway is not None:
        boxes, mid = airway
        mask_out["trachea"] = boxes["trachea"]
        rule_out["carina"] = boxes["carina"]
        carina_y = (boxes["carina"][1] + boxes["carina"][3]) / 2
    elif um is not None:
        mid = (um[0] + um[2]) / 2
        carina_y = top + rules.carina_level * span
        half = rules.trachea_width * thorax / 2
        rule_out["trachea"] = (mid - half, max(0.0, top - rules.trachea_above * span), mid + half, carina_y)
        rule_out["carina"] = (mid - rules.carina_size * half, carina_y - rules.carina_size * half,
                              mid + rules.carina_size * half, carina_y + rules.carina_size * half)
    else:
        return
    both = {**mask_out, **rule_out}
    rule_out.update(_central_regions(both, lungs, mid, carina_y, rules))


def _finish(mask_out: dict[str, Box], rule_out: dict[str, Box], width: int, height: int) -> SilverBoxes:
    boxes: dict[str, Box] = {}
    derived: list[str] = []
    for kind, found in (("mask", mask_out), ("rule", rule_out)):
        for name, box in found.items():
            clipped = clip_box(box, width, height, min_size=2.0)
            if clipped is None:
                continue
            boxes[name] = clipped
            if kind == "rule":
                derived.append(name)
    order = ordered_regions(boxes)
    return SilverBoxes(boxes={k: boxes[k] for k in order}, derived=ordered_regions(derived))
