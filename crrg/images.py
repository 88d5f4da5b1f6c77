"""Reading chest X-rays (PNG/JPEG/TIFF/BMP/DICOM, bytes, arrays) into the model's input tensor.

Two steps, both pure functions:

1. :func:`load_image` turns any supported source into a :class:`LoadedImage`: grayscale float32
   pixels ``[H, W]`` in ``[0, 1]`` at the original resolution (EXIF orientation applied).
2. :func:`preprocess` resizes the longest side to ``size`` (antialiased), pads to a centred square
   with 0 (black, as RGRG) and normalises with :data:`IMAGE_MEAN` / :data:`IMAGE_STD`; it returns
   the ``[1, S, S]`` tensor and a :class:`Geometry` that maps boxes between tensor pixels and
   original pixels.

Intensity conventions (documented so that training and inference agree):

* 8-bit images are divided by 255 (no contrast stretching), as RGRG's ``A.Normalize`` does.
* Images with more than 8 bits (PIL modes ``I;16*``, ``I``, ``F``; uint16/float arrays outside
  ``[0, 1]``) are min-max stretched to ``[0, 1]``: the bit depth actually used (12, 14 or 16 bits)
  is not recorded in PNG/TIFF files.
* Colour images become ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B, PIL's own ``"L"`` weights).
* Transparency is composited over black: ``gray * alpha``.
* DICOM: Modality LUT (rescale), then VOI LUT or window centre/width (pydicom), mapped from the
  VOI output range to ``[0, 1]`` (so windowing is kept, not re-stretched); without a VOI the
  values are min-max stretched. ``MONOCHROME1`` is inverted so bone is bright; multi-frame
  files give their first frame.

Errors are :class:`ImageError` subclasses (themselves ``ValueError``) whose messages say what was
expected, so the CLI and demo can show them as they are.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_MEAN = 0.471
IMAGE_STD = 0.302
MIN_SIDE = 64  # px: shorter side below this is rejected
MAX_SIDE = 8192  # px: either side above this is rejected
MAX_PIXELS = 50_000_000  # width * height above this is rejected
MAX_FILE_BYTES = 512 * 1024 * 1024
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_SUPPORTED = "PNG, JPEG, TIFF, BMP (8/16-bit gray, RGB, RGBA, palette, CMYK) or DICOM"

ImageSource = Union[str, Path, bytes, bytearray, IO[bytes], Image.Image, np.ndarray]


class ImageError(ValueError):
    """Base class of every image-input error (a ``ValueError``)."""


class UnreadableImageError(ImageError):
    """Not an image, corrupt, or in a format/encoding this reader cannot decode."""


class ImageNotFoundError(UnreadableImageError, FileNotFoundError):
    """The path given does not exist (also a ``FileNotFoundError``)."""


class EmptyImageError(ImageError):
    """Zero bytes, zero pixels, or a constant image that carries no information."""


class ImageTooSmallError(ImageError):
    """Shorter side below :data:`MIN_SIDE` pixels."""


class ImageTooLargeError(ImageError):
    """A side above :data:`MAX_SIDE`, more than :data:`MAX_PIXELS` pixels, or a huge file."""


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded image: ``pixels`` float32 ``[H, W]`` in ``[0, 1]`` (read-only), original size."""

    pixels: np.ndarray
    source: str = "<array>"
    format: str = "array"
    view: str | None = None  # "PA" / "AP" when the file says so (DICOM ViewPosition), else unknown

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


# --------------------------------------------------------------------------------------- loading
def load_image(src: ImageSource, name: str | None = None) -> LoadedImage:
    """Read ``src`` (path, bytes, binary file object, PIL image or numpy array) as grayscale.

    Raises an :class:`ImageError` subclass when the input is unusable (see the module docstring).
    ``name`` overrides the source name kept for messages and results.
    """
    if isinstance(src, Image.Image):
        return _from_pil(src, name or "<PIL image>", src.format or "PIL")
    if isinstance(src, np.ndarray):
        return _from_array(src, name or "<array>")
    data, source = _read_bytes(src)
    source = name or source
    if not data:
        raise EmptyImageError(f"{source}: the file is empty (0 bytes); expected {_SUPPORTED}")
    if len(data) > MAX_FILE_BYTES:
        raise ImageTooLargeError(
            f"{source}: file of {len(data) / 2**20:.0f} MiB exceeds {MAX_FILE_BYTES // 2**20} MiB"
        )
    if _looks_like_dicom(data, source):
        return _from_dicom(data, source)
    return _from_encoded(data, source)


def _read_bytes(src: ImageSource) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>"
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise ImageNotFoundError(2, f"image file not found: {path}", str(path))
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageTooLargeError(f"{path}: file larger than {MAX_FILE_BYTES // 2**20} MiB")
        return path.read_bytes(), str(path)
    if hasattr(src, "read"):
        data = src.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("expected a binary file object (opened with 'rb'), got text")
        return bytes(data), str(getattr(src, "name", "<file object>"))
    raise TypeError(
        "expected a path, bytes, a binary file object, a PIL.Image or a numpy array, "
        f"got {type(src).__name__}"
    )


def _looks_like_dicom(data: bytes, source: str) -> bool:
    if data[128:132] == b"DICM":
        return True
    return Path(source).suffix.lower() in (".dcm", ".dicom")


def _check_size(width: int, height: int, source: str) -> None:
    """Reject sizes from the header, before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise EmptyImageError(f"{source}: image has no pixels ({width}x{height})")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageTooLargeError(
            f"{source}: image is {width}x{height} px; expected at most {MAX_SIDE} px a side and "
            f"{MAX_PIXELS / 1e6:.0f} Mpx in all (downscale it first)"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(
            f"{source}: image is {width}x{height} px; expected at least {MIN_SIDE} px on the "
            "shorter side (a chest X-ray, typically 512-4000 px)"
        )


def _from_encoded(data: bytes, source: str) -> LoadedImage:
    try:
        img = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{source}: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(
            f"{source}: not a readable image ({err}); expected {_SUPPORTED}"
        ) from err
    with img:
        _check_size(img.width, img.height, source)
        fmt = img.format or "unknown"
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise UnreadableImageError(
                f"{source}: the {fmt} data is corrupt or truncated ({err})"
            ) from err
        return _from_pil(img, source, fmt)


def _from_pil(img: Image.Image, source: str, fmt: str) -> LoadedImage:
    _check_size(img.width, img.height, source)
    return _finish(_pil_to_gray(img), source, fmt)


def _pil_to_gray(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> float32 ``[H, W]`` in ``[0, 1]``."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES:
        return _minmax(np.asarray(img, dtype=np.float32))
    if mode in ("L", "1"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    has_alpha = "A" in mode or "a" in mode or "transparency" in img.info
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0  # [H, W, 4]
        return (rgba[..., :3] @ _LUMA) * rgba[..., 3]
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    return rgb @ _LUMA


def _from_array(arr: np.ndarray, source: str) -> LoadedImage:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise UnreadableImageError(
            f"{source}: array of shape {arr.shape}; expected [H, W], [H, W, 3] or [H, W, 4]"
        )
    _check_size(arr.shape[1], arr.shape[0], source)
    if arr.dtype == np.uint8 or arr.dtype == np.bool_:
        gray = arr.astype(np.float32) / (1.0 if arr.dtype == np.bool_ else 255.0)
    elif np.issubdtype(arr.dtype, np.number):
        gray = arr.astype(np.float32)
        if not np.isfinite(gray).all():
            raise UnreadableImageError(f"{source}: array contains NaN or infinite values")
        if gray.min() < 0.0 or gray.max() > 1.0 or not np.issubdtype(arr.dtype, np.floating):
            gray = _minmax(gray)
    else:
        raise UnreadableImageError(f"{source}: unsupported array dtype {arr.dtype}")
    if gray.ndim == 3:
        alpha = gray[..., 3] if gray.shape[-1] == 4 else 1.0
        gray = (gray[..., :3] @ _LUMA) * alpha
    return _finish(gray, source, "array")


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)  # constant: rejected by _finish
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def _finish(gray: np.ndarray, source: str, fmt: str, view: str | None = None) -> LoadedImage:
    gray = np.ascontiguousarray(np.clip(gray, 0.0, 1.0), dtype=np.float32)
    if float(gray.max() - gray.min()) < 1e-6:
        raise EmptyImageError(
            f"{source}: the image is constant (every pixel = {float(gray.flat[0]):.3f}); "
            "expected a radiograph with visible contrast"
        )
    gray.setflags(write=False)
    return LoadedImage(pixels=gray, source=source, format=fmt, view=view)


# ----------------------------------------------------------------------------------------- DICOM
def _from_dicom(data: bytes, source: str) -> LoadedImage:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
    except ImportError as err:  # pragma: no cover - pydicom is a requirement
        raise UnreadableImageError("reading DICOM needs pydicom: pip install pydicom") from err
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception as err:  # pydicom raises many types on malformed files
        raise UnreadableImageError(f"{source}: not a readable DICOM file ({err})") from err
    if "PixelData" not in ds:
        raise UnreadableImageError(
            f"{source}: DICOM file has no PixelData; expected an image (CR/DX radiograph)"
        )
    _check_size(cols, rows, source)
    try:
        arr = pixel_array(ds, index=0)  # first frame only
    except Exception as err:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise UnreadableImageError(
            f"{source}: cannot decode DICOM pixel data with transfer syntax {name} ({err}). "
            "Compressed syntaxes may need a decoder: pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg (or python-gdcm)"
        ) from err
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        values = apply_voi_lut(apply_modality_lut(arr, ds), ds, index=0)
        out_range = _voi_output_range(ds)
        if out_range is None:
            gray = _minmax(values.astype(np.float32))
        else:
            lo, hi = out_range
            gray = ((values.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
        if photometric == "MONOCHROME1":
            gray = 1.0 - np.clip(gray, 0.0, 1.0)
    elif arr.ndim == 3 and arr.shape[-1] == 3:  # RGB (pydicom converts YBR to RGB)
        bits = int(ds.get("BitsStored", 8))
        gray = (arr.astype(np.float32) / float(2**bits - 1)) @ _LUMA
    else:
        raise UnreadableImageError(
            f"{source}: DICOM photometric interpretation {photometric!r} is not supported; "
            "expected MONOCHROME1, MONOCHROME2 or RGB"
        )
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    return _finish(gray, source, "DICOM", view if view in ("PA", "AP") else None)


def _voi_output_range(ds: object) -> tuple[float, float] | None:
    """Output range of pydicom's VOI step (PS3.3 C.11.2), or None when no VOI was applied."""
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq:
        bits = int(voi_seq[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    lo, hi = min(lo, hi), max(lo, hi)
    return (lo, hi) if hi > lo else None


# ------------------------------------------------------------------------------------ preprocess
@dataclass(frozen=True)
class Geometry:
    """How an original image maps onto the ``size x size`` tensor.

    ``tensor_xy = original_xy * scale_{x,y} + pad_{x,y}``; ``scale`` is the nominal factor
    ``size / max(width, height)``; the per-axis factors use the rounded resized size exactly.
    """

    scale: float
    pad_x: int
    pad_y: int
    size: int
    width: int  # original
    height: int  # original
    resized_width: int
    resized_height: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height

    def to_original(self, boxes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Tensor-pixel xyxy boxes ``[..., 4]`` -> original-pixel boxes, clipped to the image."""
        x = (boxes[..., 0::2] - self.pad_x) / self.scale_x  # [..., 2]
        y = (boxes[..., 1::2] - self.pad_y) / self.scale_y  # [..., 2]
        return _interleave(_clip(x, self.width), _clip(y, self.height))

    def to_tensor(self, boxes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Original-pixel xyxy boxes ``[..., 4]`` -> tensor-pixel boxes."""
        x = boxes[..., 0::2] * self.scale_x + self.pad_x  # [..., 2]
        y = boxes[..., 1::2] * self.scale_y + self.pad_y  # [..., 2]
        return _interleave(x, y)


def _clip(v: torch.Tensor | np.ndarray, hi: int) -> torch.Tensor | np.ndarray:
    return v.clamp(0, hi) if isinstance(v, torch.Tensor) else np.clip(v, 0, hi)


def _interleave(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray):
    """x ``[..., 2]`` (x1, x2), y ``[..., 2]`` (y1, y2) -> ``[..., 4]`` (x1, y1, x2, y2)."""
    if isinstance(x, torch.Tensor):
        return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
    return np.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def preprocess(image: LoadedImage, size: int = 512) -> tuple[torch.Tensor, Geometry]:
    """``LoadedImage`` -> (normalised float32 tensor ``[1, size, size]``, :class:`Geometry`)."""
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    h, w = image.height, image.width
    scale = size / max(h, w)
    new_h = min(size, max(1, round(h * scale)))
    new_w = min(size, max(1, round(w * scale)))
    pixels = torch.from_numpy(np.array(image.pixels, dtype=np.float32))[None, None]  # [1,1,H,W]
    antialias = new_h < h or new_w < w
    resized = F.interpolate(
        pixels, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=antialias
    ).clamp_(0.0, 1.0)  # [1, 1, new_h, new_w]
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = torch.zeros(1, size, size, dtype=torch.float32)  # [1, S, S], 0 = black
    canvas[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized[0]
    tensor = (canvas - IMAGE_MEAN) / IMAGE_STD  # [1, S, S]
    geometry = Geometry(scale, pad_x, pad_y, size, w, h, new_w, new_h)
    return tensor, geometry


def preprocess_batch(
    images: Sequence[LoadedImage], size: int = 512
) -> tuple[torch.Tensor, list[Geometry]]:
    """Several images -> (tensor ``[B, 1, size, size]``, one :class:`Geometry` each)."""
    if not images:
        raise ValueError("preprocess_batch needs at least one image")
    pairs = [preprocess(image, size) for image in images]
    return torch.stack([t for t, _ in pairs]), [g for _, g in pairs]  # [B, 1, S, S]
