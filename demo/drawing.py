"""Pictures for the demo: region colours, the interactive overlay (PIL) and the PNG download
(matplotlib, object API only: no pyplot, so it is safe in worker threads).

Everything here works on the JSON form of a result (``ReportResult.to_json()``): boxes are xyxy in
ORIGINAL image pixels; the display image is the original scaled by ``scale`` (display / original).
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crrg.measurements import Segment, ctr_widths
from crrg.regions import REGIONS
from demo.labels_layout import place_labels

DISPLAY_MAX_SIDE = 1024  # px: the overlay is drawn at most this large
DISPLAY_MIN_SIDE = 768  # px: and at least this large (small images are scaled up for drawing)
DOWNLOAD_MAX_SIDE = 2048  # px: the matplotlib PNG
Box = Sequence[float]


def _palette(n: int) -> tuple[str, ...]:
    """``n`` bright, distinct colours (golden-angle hues) that read well on a dark radiograph."""
    colours = []
    for i in range(n):
        hue = (0.05 + i * 0.381966) % 1.0
        sat = (0.55, 0.8, 0.95)[i % 3]
        val = (1.0, 0.92)[(i // 3) % 2]
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return tuple(colours)


REGION_COLORS: dict[str, str] = dict(zip(REGIONS, _palette(len(REGIONS)), strict=True))
USER_BOX_COLOR = "#ffffff"
ABNORMAL_COLOR = "#ff2d2d"  # frame and warning triangle of an abnormal region's tag
CARDIAC_WIDTH_COLOR = "#ff3df5"  # the cardiothoracic ratio's two widths (not region colours)
THORACIC_WIDTH_COLOR = "#00e5ff"


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def display_image(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE, min_side: int = 0
                  ) -> tuple[np.ndarray, float]:
    """Grayscale float ``[H, W]`` in [0, 1] -> (RGB uint8 ``[h, w, 3]``, scale): the longest side
    at most ``max_side`` and, when ``min_side`` is set, at least ``min_side`` (a 224 px image is
    drawn larger so that tags and lines stay thin relative to the anatomy)."""
    height, width = pixels.shape
    longest = max(height, width)
    scale = min(1.0, max_side / longest)
    if min_side and longest < min_side:
        scale = min(min_side, max_side) / longest
    gray = Image.fromarray(np.clip(np.asarray(pixels) * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        method = Image.Resampling.LANCZOS if scale < 1.0 else Image.Resampling.BICUBIC
        gray = gray.resize(size, method, reducing_gap=3.0 if scale < 1.0 else None)
        scale = gray.width / width
    return np.asarray(gray.convert("RGB")), scale


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _scaled(box: Box, scale: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    return x1, y1, x2, y2


def is_finding(region: Mapping[str, Any]) -> bool:
    """A detected region the model selected for a sentence or called abnormal (drawn by default)."""
    return region.get("box") is not None and bool(region.get("selected") or region.get("abnormal"))


def visible_regions(regions: Sequence[Mapping[str, Any]], highlight: str | None = None, show_all: bool = False,
                    show_findings: bool = True, tagged: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Which detected regions an overlay draws: ``(thick and named, thin without a name)``.

    Thick: the findings (selected or abnormal; unless ``show_findings`` is False), the highlighted
    region and the ``tagged`` ones. Thin: every other detected region when ``show_all``, else none.
    Both in the order of ``regions``.
    """
    extra = set(tagged) | ({highlight} if highlight else set())
    thick, thin = [], []
    for region in regions:
        if region.get("box") is None:
            continue
        if region["name"] in extra or (show_findings and is_finding(region)):
            thick.append(region["name"])
        elif show_all:
            thin.append(region["name"])
    return thick, thin


@dataclass(frozen=True)
class CTRWidths:
    """What the overlay draws for the cardiothoracic ratio: the cardiac and the thoracic width as
    horizontal segments in ORIGINAL pixels (:func:`crrg.measurements.ctr_widths`) and the ratio."""

    cardiac: Segment
    thoracic: Segment
    ratio: float


def ctr_of(result: Mapping[str, Any]) -> CTRWidths | None:
    """The CTR widths of a result (JSON form), or ``None`` when the result has no measured CTR or
    the boxes it rests on are missing."""
    ratio = (result.get("measurements") or {}).get("cardiothoracic_ratio")
    if ratio is None:
        return None
    segments = ctr_widths({r["name"]: r.get("box") for r in result.get("regions") or []})
    if segments is None:
        return None
    return CTRWidths(segments[0], segments[1], float(ratio))


@dataclass(frozen=True)
class _Tag:
    text: str
    colour: str
    box: tuple[float, float, float, float]  # display pixels
    abnormal: bool = False
    highlighted: bool = False


class _TagStyle:
    """Font and paddings of the name tags at one image size (shared by layout and drawing)."""

    def __init__(self, side: int) -> None:
        self.font = _font(max(14, side // 44))
        self.pad_x, self.pad_y = 4, 2
        self.icon = max(10, self.font.size * 4 // 5)  # the abnormal warning triangle

    def size(self, tag: _Tag) -> tuple[float, float]:
        left, top, right, bottom = self.font.getbbox(tag.text)
        ascent, descent = self.font.getmetrics()
        width = right - left + 2 * self.pad_x + (self.icon + self.pad_x if tag.abnormal else 0)
        return float(width), float(ascent + descent + 2 * self.pad_y)


def draw_regions(
    base: np.ndarray,
    regions: Sequence[Mapping[str, Any]],
    scale: float,
    highlight: str | None = None,
    show_all: bool = False,
    show_findings: bool = True,
    user_box: Box | None = None,
    marker: tuple[float, float] | None = None,
    tags: Mapping[str, str] | None = None,
    lit: Iterable[str] = (),
    ctr: CTRWidths | None = None,
) -> np.ndarray:
    """The display image with region boxes (see :func:`visible_regions` for which).

    Findings, the ``highlight`` and the ``tags`` keys are drawn thick in their colour with a name
    tag (abnormal ones: a red-framed tag with a warning triangle); with ``show_all`` every other
    detected region is drawn thin, untagged. Tags never overlap (:func:`demo.labels_layout.place_labels`;
    a tag away from its box gets a leader line). ``highlight`` also gets a tinted fill and a white
    halo; ``user_box`` (original pixels) is drawn dashed white; ``marker`` (original pixels) is a
    cross for a pending corner; ``tags`` overrides a region's tag text (e.g. the matching prompt).
    ``lit``: more regions drawn like ``highlight`` (the regions a chosen report sentence rests on).
    ``ctr``: the cardiothoracic ratio's cardiac and thoracic widths, drawn as horizontal segments
    with end ticks and tagged with the ratio.
    """
    image = Image.fromarray(base).convert("RGBA")
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    side = max(image.size)
    thin, thick = max(1, side // 450), max(2, side // 240)
    tags = dict(tags or {})
    by_name = {r["name"]: r for r in regions}
    lit = [n for n in lit if by_name.get(n, {}).get("box") is not None]
    glow = set(lit) | ({highlight} if highlight else set())
    named, plain = visible_regions(regions, highlight, show_all, show_findings, set(tags) | set(lit))
    for name in plain:
        rgb = hex_to_rgb(REGION_COLORS.get(name, "#ff0000"))
        draw.rectangle(_scaled(by_name[name]["box"], scale), outline=(*rgb, 170), width=thin)
    labels: list[_Tag] = []
    if user_box is not None:
        _dashed_rectangle(draw, _scaled(user_box, scale), USER_BOX_COLOR, thick)
        labels.append(_Tag("your box", USER_BOX_COLOR, _scaled(user_box, scale)))
    for name in sorted(named, key=lambda n: n in glow):  # the highlighted boxes on top
        colour = REGION_COLORS.get(name, "#ff0000")
        xyxy = _scaled(by_name[name]["box"], scale)
        if name in glow:
            draw.rectangle(xyxy, fill=(*hex_to_rgb(colour), 60))
            draw.rectangle(xyxy, outline=(255, 255, 255, 255), width=thick + 2)
        draw.rectangle(xyxy, outline=(*hex_to_rgb(colour), 255), width=thick)
    # Tags in region order, a highlighted non-finding last: clicking a region does not move the others.
    for name in sorted(named, key=lambda n: n in glow and n not in tags and not is_finding(by_name[n])):
        labels.append(_Tag(tags.get(name, name), REGION_COLORS.get(name, "#ff0000"),
                           _scaled(by_name[name]["box"], scale), bool(by_name[name].get("abnormal")),
                           name in glow))
    lines: list[tuple[float, float, float, float]] = []
    if ctr is not None:
        ctr_tags, lines = _draw_ctr(draw, ctr, scale, thick, max(5, side // 90))
        labels += ctr_tags
    _draw_tags(draw, labels, _TagStyle(side), thin, blocked=lines)
    if marker is not None:
        x, y = marker[0] * scale, marker[1] * scale
        arm = max(6, side // 60)
        for dx, dy in ((arm, 0), (0, arm)):
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=(255, 255, 255, 255), width=thick)
    return np.asarray(Image.alpha_composite(image, layer).convert("RGB"))


def _draw_ctr(draw: ImageDraw.ImageDraw, ctr: CTRWidths, scale: float, width: int, arm: int
              ) -> tuple[list[_Tag], list[tuple[float, float, float, float]]]:
    """The two widths as segments (a dark casing under the colour, end ticks): (their tags, the
    rectangles the segments cover, which no tag may hide)."""
    tags, covered = [], []
    pad = arm + 4  # a tag touches its segment's rectangle grown by this, clear of the line itself
    for segment, colour, text in ((ctr.cardiac, CARDIAC_WIDTH_COLOR, "cardiac width"),
                                  (ctr.thoracic, THORACIC_WIDTH_COLOR, f"thoracic width · CTR {ctr.ratio:.2f}")):
        x1, x2, y = segment.x1 * scale, segment.x2 * scale, segment.y * scale
        for fill, extra in (((0, 0, 0, 200), 2), ((*hex_to_rgb(colour), 255), 0)):
            draw.line((x1, y, x2, y), fill=fill, width=width + extra)
            for x in (x1, x2):
                draw.line((x, y - arm, x, y + arm), fill=fill, width=width + extra)
        tags.append(_Tag(text, colour, (x1, y - pad, x2, y + pad)))
        covered.append((x1 - width, y - arm, x2 + width, y + arm))
    return tags, covered


def _draw_tags(draw: ImageDraw.ImageDraw, labels: Sequence[_Tag], style: _TagStyle, line: int,
               blocked: Sequence[tuple[float, float, float, float]] = ()) -> None:
    """Place the tags without overlaps (and off ``blocked``), then draw leader lines first and the
    tags over them."""
    sizes = [style.size(tag) for tag in labels]
    spots = place_labels([tag.box for tag in labels], sizes, draw.im.size, gap=2.0, blocked=blocked)
    for tag, spot in zip(labels, spots, strict=True):
        if spot is not None and spot.leader is not None:
            (ax, ay), (bx, by) = spot.leader
            draw.line((ax, ay, bx, by), fill=(*hex_to_rgb(tag.colour), 255), width=max(2, line + 1))
            draw.ellipse((bx - 3, by - 3, bx + 3, by + 3), fill=(*hex_to_rgb(tag.colour), 255))
    for tag, spot in zip(labels, spots, strict=True):
        if spot is not None:
            _tag(draw, spot.rect, tag, style)


def _tag(draw: ImageDraw.ImageDraw, rect: tuple[float, float, float, float], tag: _Tag, style: _TagStyle) -> None:
    """A filled chip with dark text; abnormal: a red frame and a red warning triangle before the text."""
    x1, y1, x2, y2 = rect
    draw.rectangle(rect, fill=tag.colour)
    if tag.abnormal:
        draw.rectangle(rect, outline=ABNORMAL_COLOR, width=2)
    elif tag.highlighted:
        draw.rectangle(rect, outline="#ffffff", width=2)
    x = x1 + style.pad_x
    if tag.abnormal:
        size, top = style.icon, y1 + (y2 - y1 - style.icon) / 2
        draw.polygon(((x, top + size), (x + size / 2, top), (x + size, top + size)), fill=ABNORMAL_COLOR)
        bar = max(1, size // 8)
        cx = x + size / 2
        draw.rectangle((cx - bar / 2, top + size * 0.35, cx + bar / 2, top + size * 0.7), fill="#ffffff")
        draw.rectangle((cx - bar / 2, top + size * 0.78, cx + bar / 2, top + size * 0.9), fill="#ffffff")
        x += size + style.pad_x
    left = style.font.getbbox(tag.text)[0]
    draw.text((x - left, y1 + style.pad_y), tag.text, fill="#111111", font=style.font)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, xyxy: Box, colour: str, width: int) -> None:
    x1, y1, x2, y2 = xyxy
    dash = max(4, width * 3)
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False),
                                    (y1, y2, x2, False)):
        start = a
        while start < b:
            end = min(b, start + dash)
            line = (start, fixed, end, fixed) if horizontal else (fixed, start, fixed, end)
            draw.line(line, fill=colour, width=width)
            start += 2 * dash


def region_at(regions: Sequence[Mapping[str, Any]], x: float, y: float,
              prefer: Iterable[str] | None = None) -> str | None:
    """Name of the smallest detected region whose box (original pixels) contains ``(x, y)``.

    With ``prefer`` (e.g. the regions an overlay draws), the smallest of those containing the point
    wins; only when none does, any detected region may.
    """
    preferred = set(prefer) if prefer is not None else None
    best: tuple[bool, float, str] | None = None
    for region in regions:
        box = region.get("box")
        if box is None or not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
            continue
        key = (preferred is not None and region["name"] not in preferred,
               (box[2] - box[0]) * (box[3] - box[1]), region["name"])
        if best is None or key[:2] < best[:2]:
            best = key
    return None if best is None else best[2]


def overlay_png(pixels: np.ndarray, result: Mapping[str, Any], max_side: int = DOWNLOAD_MAX_SIDE) -> bytes:
    """A publication-style PNG (matplotlib): the radiograph, every detected region, a legend, the
    report and the disclaimer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    base, scale = display_image(pixels, max_side)
    height, width = base.shape[:2]
    fig = Figure(figsize=(12, 12 * height / width * 0.72 + 1.6), dpi=max(100, min(200, width // 8)))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.16, 0.72, 0.80))
    ax.imshow(base, interpolation="none")
    ax.set_axis_off()
    handles = []
    for region in result["regions"]:
        if region.get("box") is None:
            continue
        x1, y1, x2, y2 = _scaled(region["box"], scale)
        colour = REGION_COLORS.get(region["name"], "#ff0000")
        selected = bool(region.get("selected"))
        patch = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour,
                          linewidth=2.2 if selected else 0.8, alpha=1.0 if selected else 0.6,
                          label=region["name"] + (" *" if selected else ""))
        ax.add_patch(patch)
        handles.append(patch)
    ctr = ctr_of(result)
    if ctr is not None:
        for segment, colour, label in ((ctr.cardiac, CARDIAC_WIDTH_COLOR, "cardiac width"),
                                       (ctr.thoracic, THORACIC_WIDTH_COLOR, f"thoracic width (CTR {ctr.ratio:.2f})")):
            y = segment.y * scale
            [line] = ax.plot([segment.x1 * scale, segment.x2 * scale], [y, y], color=colour, linewidth=2.4,
                             marker="|", markersize=12, markeredgewidth=2.4, label=label)
            handles.append(line)
    if handles:
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.73, 0.96), fontsize=7,
                   frameon=False, title="regions (* = selected)", title_fontsize=8)
    fig.text(0.01, 0.97, f"crrg report: {result.get('image', '')}", fontsize=11, weight="bold")
    report = result.get("report") or "(no sentence)"
    fig.text(0.01, 0.145, "Report", fontsize=9, weight="bold", va="top")
    fig.text(0.01, 0.12, _wrap(report, 140), fontsize=8, va="top")
    fig.text(0.01, 0.01, result.get("disclaimer", ""), fontsize=8, color="#b00020")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white", pil_kwargs={"compress_level": 3})
    return buffer.getvalue()


def _wrap(text: str, width: int, max_lines: int = 9) -> str:
    import textwrap

    # one paragraph per line of the text: "Impression: ..." starts a line of its own
    lines = [line for paragraph in text.splitlines() for line in textwrap.wrap(paragraph, width)]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + ["…"]
    return "\n".join(lines)
