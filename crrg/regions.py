"""The 29 Chest ImaGenome anatomical regions, in RGRG's order.

Index ``i`` of every ``[..., 29]`` tensor in crrg is ``REGIONS[i]``; detector class ``i + 1`` is
``REGIONS[i]`` (class 0 is background).
"""

from __future__ import annotations

REGIONS: tuple[str, ...] = (
    "right lung",
    "right upper lung zone",
    "right mid lung zone",
    "right lower lung zone",
    "right hilar structures",
    "right apical zone",
    "right costophrenic angle",
    "right hemidiaphragm",
    "left lung",
    "left upper lung zone",
    "left mid lung zone",
    "left lower lung zone",
    "left hilar structures",
    "left apical zone",
    "left costophrenic angle",
    "left hemidiaphragm",
    "trachea",
    "spine",
    "right clavicle",
    "left clavicle",
    "aortic arch",
    "mediastinum",
    "upper mediastinum",
    "svc",
    "cardiac silhouette",
    "cavoatrial junction",
    "right atrium",
    "carina",
    "abdomen",
)
NUM_REGIONS = len(REGIONS)
REGION_INDEX: dict[str, int] = {name: i for i, name in enumerate(REGIONS)}

LUNG_REGIONS: tuple[str, ...] = tuple(r for r in REGIONS[:16] if "hemidiaphragm" not in r)


def region_index(name: str) -> int:
    """Index of a region name (case-insensitive); raises ``ValueError`` listing valid names."""
    key = name.strip().lower()
    if key not in REGION_INDEX:
        raise ValueError(f"unknown region {name!r}; valid regions: {', '.join(REGIONS)}")
    return REGION_INDEX[key]
