"""Pictures for the demo: region colours, the interactive overlay (PIL) and the PNG download
(matplotlib, object API only: no pyplot, so it is safe in worker threads).

Everything here works on the JSON form of a result (``ReportResult.to_json()``): boxes are xyxy in
ORIGINAL image pixels; the display image is the original scaled by ``scale`` (display / original).
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crrg.regions import REGIONS

DISPLAY_MAX_SIDE = 1024  # px: the overlay is drawn at most this large
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


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def display_image(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> tuple[np.ndarray, float]:
    """Grayscale float ``[H, W]`` in [0, 1] -> (RGB uint8 ``[h, w, 3]`` at most ``max_side``, scale)."""
    height, width = pixels.shape
    scale = min(1.0, max_side / max(height, width))
    gray = Image.fromarray(np.clip(np.asarray(pixels) * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        scale = gray.width / width
    return np.asarray(gray.convert("RGB")), scale


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _scaled(box: Box, scale: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    return x1, y1, x2, y2


def _tag(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: str, size: int) -> None:
    """A small filled label with dark text at ``xy`` (top-left), kept inside the image."""
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0.0, xy[0]), draw.im.size[0] - w)
    y = min(max(0.0, xy[1] - h), draw.im.size[1] - h)
    draw.rectangle((x, y, x + w, y + h), fill=colour)
    draw.text((x + 3 - left, y + 2 - top), text, fill="#111111", font=font)


def draw_regions(
    base: np.ndarray,
    regions: Sequence[Mapping[str, Any]],
    scale: float,
    highlight: str | None = None,
    show_unselected: bool = True,
    show_selected: bool = True,
    user_box: Box | None = None,
    marker: tuple[float, float] | None = None,
    tags: Mapping[str, str] | None = None,
) -> np.ndarray:
    """The display image with region boxes: selected regions thick and tagged, others thin
    (``show_selected`` / ``show_unselected`` hide either group; highlighted and tagged regions stay).

    ``highlight`` (a region name) is drawn with a tinted fill and a white halo; ``user_box`` (original
    pixels) is drawn dashed white; ``marker`` (original pixels) is a cross for a pending corner;
    ``tags`` overrides a region's tag text (e.g. the prompt that matched it best).
    """
    image = Image.fromarray(base).convert("RGBA")
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    side = max(image.size)
    thin, thick = max(1, side // 600), max(2, side // 240)
    font_size = max(14, side // 44)
    tags = dict(tags or {})
    ordered = sorted(regions, key=lambda r: (r["name"] == highlight, r.get("selected", False)))
    for region in ordered:
        name, box = region["name"], region.get("box")
        emphasised = name == highlight or name in tags
        selected = bool(region.get("selected")) and show_selected
        if box is None or not (emphasised or selected or (show_unselected and not region.get("selected"))):
            continue
        rgb = hex_to_rgb(REGION_COLORS.get(name, "#ff0000"))
        xyxy = _scaled(box, scale)
        if name == highlight:
            draw.rectangle(xyxy, fill=(*rgb, 60))
            draw.rectangle(xyxy, outline=(255, 255, 255, 255), width=thick + 2)
        if emphasised or selected:
            draw.rectangle(xyxy, outline=(*rgb, 255), width=thick)
            colour = REGION_COLORS.get(name, "#ff0000")
            _tag(draw, (xyxy[0], xyxy[1]), tags.get(name, name), colour, font_size)
        else:
            draw.rectangle(xyxy, outline=(*rgb, 150), width=thin)
    if user_box is not None:
        _dashed_rectangle(draw, _scaled(user_box, scale), USER_BOX_COLOR, thick)
        _tag(draw, _scaled(user_box, scale)[:2], "your box", USER_BOX_COLOR, font_size)
    if marker is not None:
        x, y = marker[0] * scale, marker[1] * scale
        arm = max(6, side // 60)
        for dx, dy in ((arm, 0), (0, arm)):
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=(255, 255, 255, 255), width=thick)
    return np.asarray(Image.alpha_composite(image, layer).convert("RGB"))


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


def region_at(regions: Sequence[Mapping[str, Any]], x: float, y: float) -> str | None:
    """Name of the smallest detected region whose box (original pixels) contains ``(x, y)``."""
    best: tuple[float, str] | None = None
    for region in regions:
        box = region.get("box")
        if box is None or not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
            continue
        area = (box[2] - box[0]) * (box[3] - box[1])
        if best is None or area < best[0]:
            best = (area, region["name"])
    return None if best is None else best[1]


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

    lines = textwrap.wrap(text, width)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + ["…"]
    return "\n".join(lines)
