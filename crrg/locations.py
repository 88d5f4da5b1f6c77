"""Which locations a sentence names, and whether its evidence supports them (torch-free).

The evidence contract of a report (see :class:`crrg.types.Sentence`): a sentence may name a side
("right", "left", "bilateral", "both", "bibasilar"...) or a lobe or zone ("upper", "lower lobe",
"lingula", "apical", "base", "perihilar", ...) only when its evidence is ``region`` or
``measurement`` *for regions there*:

- every side it names is the side of one of its regions ("bilateral" needs both sides);
- every zone it names matches one of its regions (:data:`ZONE_REGIONS`: "upper" is matched by the
  upper lung zones and apical zones, "lower" / "base" by the lower zones, costophrenic angles and
  hemidiaphragms, ...);
- an ``image`` sentence names no location at all;
- the grouped phrases of a radiologist (:data:`PHRASES`) need evidence that covers the whole
  group: "diffuse bilateral" every zone of both lungs, "throughout the right lung" every zone of
  that lung (or the lung's own region), "bibasilar" / "bibasal" the base of each lung, "biapical"
  the apex of each lung, "both upper (and mid) lung zones" those zones on each side.

:func:`unsupported_locations` returns what a sentence names without support (empty = fine);
the pipeline drops such sentences and ``train.evaluate`` counts them (the target is 0).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

SIDE_WORDS: dict[str, frozenset[str]] = {
    "right": frozenset({"right"}),
    "left": frozenset({"left"}),
    "bilateral": frozenset({"right", "left"}),
    "bilaterally": frozenset({"right", "left"}),
    "both": frozenset({"right", "left"}),
    "bibasilar": frozenset({"right", "left"}),
    "bibasal": frozenset({"right", "left"}),
    "biapical": frozenset({"right", "left"}),
}
# zone word -> the region-name words that support it
ZONE_REGIONS: dict[str, tuple[str, ...]] = {
    "upper": ("upper lung zone", "apical zone"),
    "apical": ("apical zone", "upper lung zone"),
    "apex": ("apical zone", "upper lung zone"),
    "apices": ("apical zone", "upper lung zone"),
    "biapical": ("apical zone", "upper lung zone"),
    "mid": ("mid lung zone", "hilar structures"),
    "middle": ("mid lung zone", "hilar structures"),
    "lingula": ("left mid lung zone", "left lower lung zone"),
    "lingular": ("left mid lung zone", "left lower lung zone"),
    "lower": ("lower lung zone", "costophrenic angle", "hemidiaphragm"),
    "base": ("lower lung zone", "costophrenic angle", "hemidiaphragm"),
    "bases": ("lower lung zone", "costophrenic angle", "hemidiaphragm"),
    "basal": ("lower lung zone", "costophrenic angle", "hemidiaphragm"),
    "basilar": ("lower lung zone", "costophrenic angle", "hemidiaphragm"),
    "bibasilar": ("lower lung zone", "costophrenic angle", "hemidiaphragm"),
    "bibasal": ("lower lung zone", "costophrenic angle", "hemidiaphragm"),
    "hilar": ("hilar structures", "mid lung zone"),
    "hilum": ("hilar structures", "mid lung zone"),
    "perihilar": ("hilar structures", "mid lung zone"),
    "costophrenic": ("costophrenic angle", "lower lung zone"),
    "retrocardiac": ("left lower lung zone", "cardiac silhouette"),
}
# "upper" / "lower" / "mid" are zone words only before a lung word within five words ("upper lobe",
# "upper and mid lung zones"), not in "upper limits of normal" or "lower thoracic spine"
_NEEDS_LUNG_WORD = frozenset({"upper", "lower", "mid", "middle"})
_LUNG_WORDS = frozenset({"lobe", "lobes", "zone", "zones", "lung", "lungs", "field", "fields",
                         "lobar", "hemithorax"})


_ZONES = ("upper", "mid", "lower")
_BASE = ("lower lung zone", "costophrenic angle", "hemidiaphragm")
_APEX = ("apical zone", "upper lung zone")


def _whole_lung(side: str) -> tuple[tuple[str, ...], ...]:
    """Requirements for "all of the ``side`` lung": its own region, or each of its three zones."""
    return tuple((f"{side} lung", f"{side} {zone} lung zone") for zone in _ZONES)


def _each_side(parts: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(f"{side} {part}" for part in parts) for side in ("right", "left"))


def _both_zones(match: re.Match[str]) -> tuple[tuple[str, ...], ...]:
    zones = [z for z in match.groups() if z]
    return tuple((f"{side} {zone} lung zone",) for zone in zones for side in ("right", "left"))


#: grouped location phrases -> the evidence they need: every tuple of region names must have one
#: of its names among the sentence's regions (a tuple = "one of these")
PHRASES: tuple[tuple[str, object], ...] = (
    (r"\bdiffuse bilateral\b", lambda m: _whole_lung("right") + _whole_lung("left")),
    (r"\bthroughout (?:the )?(right|left) lung\b", lambda m: _whole_lung(m.group(1))),
    (r"\bbibas(?:ilar|al)\b", lambda m: _each_side(_BASE)),
    (r"\bbiapical\b", lambda m: _each_side(_APEX)),
    (r"\b(?:both|bilateral) (upper|mid|lower)(?: and (upper|mid|lower))? lung zones\b", _both_zones),
)
_PHRASE_RES = tuple((re.compile(pattern), need) for pattern, need in PHRASES)


@dataclass(frozen=True)
class Locations:
    """The sides (``right`` / ``left``), zone words and grouped phrases (:data:`PHRASES`, as
    written, lower case) a sentence names."""

    sides: frozenset[str]
    zones: frozenset[str]
    phrases: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.sides or self.zones or self.phrases)


def named_locations(text: str) -> Locations:
    words = re.findall(r"[a-z]+", text.lower())
    sides: set[str] = set()
    zones: set[str] = set()
    for i, word in enumerate(words):
        if word in SIDE_WORDS:
            sides |= SIDE_WORDS[word]
        if word in ZONE_REGIONS:
            if word in _NEEDS_LUNG_WORD and not _LUNG_WORDS & set(words[i + 1:i + 6]):
                continue
            zones.add(word)
    phrases = {m.group(0) for pattern, _ in _PHRASE_RES for m in pattern.finditer(" ".join(words))}
    return Locations(frozenset(sides), frozenset(zones), frozenset(phrases))


def _unsupported_phrases(text: str, regions: list[str]) -> frozenset[str]:
    """The grouped phrases of ``text`` whose evidence does not cover the whole group."""
    joined = " ".join(re.findall(r"[a-z]+", text.lower()))
    bad = set()
    for pattern, need in _PHRASE_RES:
        for match in pattern.finditer(joined):
            if not all(any(name in regions for name in options) for options in need(match)):
                bad.add(match.group(0))
    return frozenset(bad)


def region_side(region: str) -> str | None:
    """``"right"`` / ``"left"`` for a sided region name ("right upper lung zone"), else ``None``."""
    first = region.split()[0] if region else ""
    return first if first in ("right", "left") else None


def unsupported_locations(text: str, regions: Iterable[str], kind: str) -> Locations:
    """What ``text`` names that its evidence (``kind`` for ``regions``) does not support."""
    named = named_locations(text)
    if kind == "image":
        return named
    regions = list(regions)
    sides = {region_side(r) for r in regions} - {None}
    bad_sides = frozenset(s for s in named.sides if s not in sides)
    bad_zones = frozenset(
        z for z in named.zones
        if not any(part in region for part in ZONE_REGIONS[z] for region in regions)
    )
    return Locations(bad_sides, bad_zones, _unsupported_phrases(text, regions))


def is_supported(text: str, regions: Iterable[str], kind: str) -> bool:
    return not unsupported_locations(text, regions, kind)
