"""crrg.images on inputs generated at test time (no data files in the repository)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from crrg import images
from crrg.images import (
    IMAGE_MEAN,
    IMAGE_STD,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnreadableImageError,
    load_image,
    preprocess,
    preprocess_batch,
)


def _gradient(h: int = 120, w: int = 160) -> np.ndarray:
    """uint8 [H, W] with a horizontal ramp 0..255."""
    return np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` but carries no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + body + iend


def _dicom(pixels: np.ndarray, path: Path, photometric: str = "MONOCHROME2", bits: int = 16,
           **tags) -> Path:
    """Write an uncompressed single-frame grayscale DICOM with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for key, value in tags.items():
        setattr(ds, key, value)
    dtype = np.uint16 if bits > 8 else np.uint8
    ds.PixelData = pixels.astype(dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------- raster formats
def test_png_8bit_is_divided_by_255_and_keeps_size(tmp_path: Path) -> None:
    arr = _gradient()
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert (img.height, img.width) == (120, 160) and img.format == "PNG"
    assert img.pixels.dtype == np.float32 and not img.pixels.flags.writeable
    np.testing.assert_allclose(img.pixels, arr / 255.0, atol=1e-6)
    assert img.source == str(path)


def test_png_16bit_is_minmax_stretched() -> None:
    arr = np.tile(np.linspace(1000, 5000, 100), (80, 1)).astype(np.uint16)
    img = load_image(_encode(Image.fromarray(arr), "PNG"))
    assert img.pixels.min() == 0.0 and img.pixels.max() == 1.0
    np.testing.assert_allclose(img.pixels, (arr - 1000.0) / 4000.0, atol=1e-5)


def test_rgb_and_rgba(tmp_path: Path) -> None:
    rgb = np.zeros((100, 100, 3), np.uint8)
    rgb[..., 0] = 200  # pure red: luma = 0.299 * 200 / 255
    rgb[:50, :, 1] = 100
    img = load_image(_encode(Image.fromarray(rgb), "PNG"))
    assert img.pixels[80, 10] == pytest.approx(0.299 * 200 / 255, abs=1e-5)
    assert img.pixels[10, 10] == pytest.approx((0.299 * 200 + 0.587 * 100) / 255, abs=1e-5)

    rgba = np.full((100, 100, 4), 255, np.uint8)
    rgba[:, :30, 3] = 0  # transparent strip -> black (composited over black)
    rgba[:, 30:60, 3] = 128
    img = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.all(img.pixels[:, :30] == 0.0)
    assert img.pixels[0, 40] == pytest.approx(128 / 255, abs=1e-4)
    assert img.pixels[0, 80] == pytest.approx(1.0, abs=1e-5)


def test_palette_and_cmyk_jpeg() -> None:
    pal = Image.fromarray(_gradient()).convert("P")
    img = load_image(_encode(pal, "PNG"))
    assert img.pixels[:, -1].mean() > 0.9 and img.pixels[:, 0].mean() < 0.1

    cmyk = Image.fromarray(_gradient()).convert("CMYK")
    data = _encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = load_image(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255.0
    np.testing.assert_allclose(img.pixels, expected @ np.array([0.299, 0.587, 0.114]), atol=1e-4)


def test_exif_orientation_is_applied() -> None:
    stored = np.zeros((200, 100), np.uint8)  # H=200, W=100 as stored
    stored[:20, :20] = 255  # bright marker top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95)
    img = load_image(data)
    assert (img.height, img.width) == (100, 200)  # displayed landscape
    assert img.pixels[:20, -20:].mean() > 0.9  # marker now at the top-right
    assert img.pixels[:20, :20].mean() < 0.1


def test_pil_array_fileobj_inputs(tmp_path: Path) -> None:
    arr = _gradient()
    from_pil = load_image(Image.fromarray(arr))
    from_u8 = load_image(arr)
    from_float = load_image(arr / 255.0, name="scan")
    path = tmp_path / "x.bmp"
    Image.fromarray(arr).save(path)
    with open(path, "rb") as f:
        from_file = load_image(f)
    for img in (from_u8, from_float, from_file):
        np.testing.assert_allclose(img.pixels, from_pil.pixels, atol=1e-6)
    assert from_float.source == "scan" and from_file.format == "BMP"
    u16 = load_image((arr.astype(np.uint16) * 100 + 7).astype(np.uint16))
    np.testing.assert_allclose(u16.pixels, from_pil.pixels, atol=1e-5)
    with pytest.raises(UnreadableImageError, match="expected"):
        load_image(np.zeros((100, 100, 2), np.uint8))
    with pytest.raises(TypeError, match="path, bytes"):
        load_image(12345)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- DICOM
def test_dicom_monochrome1_is_inverse_of_monochrome2(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(96, 80))
    m2 = load_image(_dicom(pixels, tmp_path / "m2.dcm", "MONOCHROME2", bits=12))
    m1 = load_image(_dicom(pixels, tmp_path / "m1.dcm", "MONOCHROME1", bits=12))
    assert m2.format == "DICOM" and (m2.height, m2.width) == (96, 80)
    np.testing.assert_allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-6)
    expected = (pixels - pixels.min()) / (pixels.max() - pixels.min())  # no VOI: min-max
    np.testing.assert_allclose(m2.pixels, expected, atol=1e-5)


def test_dicom_window_and_rescale_applied(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(1800, 2300, 100).round(), (70, 1))  # all inside the window
    path = _dicom(ramp, tmp_path / "w.dcm", bits=12, WindowCenter=2048, WindowWidth=1024)
    img = load_image(path.read_bytes())  # detected by the DICM preamble, not the suffix
    # a ramp inside the window keeps its place in the window (not re-stretched to 0..1)
    assert 0.2 < img.pixels.min() < 0.30 and 0.70 < img.pixels.max() < 0.8
    wide = np.tile(np.linspace(0, 4095, 100).round(), (70, 1))
    wide[:, 0] = 1200  # below the window -> 0; right edge (4095) above -> 1
    rescaled = _dicom(wide, tmp_path / "r.dcm", bits=12, WindowCenter=2048 * 2 - 1000,
                      WindowWidth=2048, RescaleSlope=2, RescaleIntercept=-1000)
    img = load_image(rescaled)  # window in rescaled units: centre 3096 -> stored 2048
    assert img.pixels[0, 0] == 0.0 and img.pixels[0, -1] == 1.0
    mid = np.argmin(np.abs(wide[0] - 2048))
    assert img.pixels[0, mid] == pytest.approx(0.5, abs=0.03)


def test_dicom_16bit_and_rle_compressed(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(0, 65535, 90).round(), (64, 1)).astype(np.uint16)
    path = _dicom(pixels, tmp_path / "b16.dcm", bits=16)
    img = load_image(path)
    np.testing.assert_allclose(img.pixels, pixels / 65535.0, atol=1e-5)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless, pixels)
    rle = tmp_path / "rle.dcm"
    ds.save_as(rle)
    np.testing.assert_allclose(load_image(rle).pixels, img.pixels, atol=1e-6)


def test_dicom_multiframe_gives_first_frame(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(100), (70, 1))
    path = _dicom(ramp, tmp_path / "mf.dcm", bits=12)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = np.stack([ramp, ramp[:, ::-1]]).astype(np.uint16).tobytes()  # [2, H, W]
    ds.save_as(path)
    img = load_image(path)
    assert img.pixels.shape == (70, 100)
    assert img.pixels[0, 0] == 0.0 and img.pixels[0, -1] == 1.0  # frame 0 rises left to right


def test_dicom_undecodable_syntax_and_missing_pixels(tmp_path: Path) -> None:
    path = _dicom(np.arange(64 * 64).reshape(64, 64) % 4096, tmp_path / "j.dcm", bits=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds.save_as(path)
    with pytest.raises(UnreadableImageError, match="JPEG-LS"):
        load_image(path)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path)
    with pytest.raises(UnreadableImageError, match="no PixelData"):
        load_image(path)


# ---------------------------------------------------------------------------------------- errors
def test_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match="expected PNG, JPEG"):
        load_image(b"this is a text file, not an X-ray" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(EmptyImageError, match="0 bytes"):
        load_image(empty)
    with pytest.raises(ImageTooSmallError, match="at least 64"):
        load_image(_encode(Image.fromarray(_gradient(32, 200)), "PNG"))
    with pytest.raises(EmptyImageError, match="constant"):
        load_image(_encode(Image.new("L", (100, 100), 128), "PNG"))
    truncated = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300),
                                                                          np.uint8)), "PNG")
    with pytest.raises(UnreadableImageError, match="corrupt or truncated"):
        load_image(truncated[: len(truncated) // 2])
    with pytest.raises(images.ImageNotFoundError) as info:
        load_image(tmp_path / "missing.png")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    for cls in (UnreadableImageError, EmptyImageError, ImageTooSmallError, ImageTooLargeError):
        assert issubclass(cls, ImageError) and issubclass(cls, ValueError)


def test_too_large_is_rejected_from_the_header() -> None:
    # 100000 x 100000: PIL's decompression-bomb guard fires at open -> ImageTooLargeError
    with pytest.raises(ImageTooLargeError):
        load_image(_png_header_only(100_000, 100_000))
    # header-only files (no pixel data at all): decoding would fail, so the size check came first
    with pytest.raises(ImageTooLargeError, match="at most 8192 px a side"):
        load_image(_png_header_only(9000, 100))
    with pytest.raises(ImageTooLargeError, match="50 Mpx"):
        load_image(_png_header_only(8000, 8000))
    with pytest.raises(ImageTooSmallError):
        load_image(_png_header_only(63, 5000))


# ------------------------------------------------------------------------------------ preprocess
@pytest.mark.parametrize("shape", [(300, 200), (150, 400), (256, 256)])
def test_preprocess_shape_padding_and_marker(shape: tuple[int, int]) -> None:
    h, w = shape
    arr = np.full((h, w), 0.5, np.float32)
    arr[: h // 10, : w // 10] = 1.0  # bright marker in the top-left corner
    tensor, geo = preprocess(load_image(arr), size=128)
    assert tensor.shape == (1, 128, 128) and tensor.dtype == torch.float32
    img01 = tensor[0] * IMAGE_STD + IMAGE_MEAN  # back to [0, 1]
    assert (geo.resized_width == 128) or (geo.resized_height == 128)
    assert geo.pad_x == (128 - geo.resized_width) // 2
    assert geo.pad_y == (128 - geo.resized_height) // 2
    if geo.pad_x > 0:
        assert torch.allclose(img01[:, : geo.pad_x], torch.zeros(1), atol=1e-6)
    if geo.pad_y > 0:
        assert torch.allclose(img01[: geo.pad_y], torch.zeros(1), atol=1e-6)
    # the marker's box maps onto bright tensor pixels
    box = geo.to_tensor(np.array([1, 1, w // 10 - 2, h // 10 - 2], np.float32))
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    assert img01[y1:y2, x1:x2].mean() > 0.95
    centre = img01[geo.pad_y + geo.resized_height // 2, geo.pad_x + geo.resized_width // 2]
    assert float(centre) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("shape", [(1000, 600), (480, 1280)])
def test_geometry_round_trip(shape: tuple[int, int]) -> None:
    h, w = shape
    rng = np.random.default_rng(1)
    _, geo = preprocess(load_image(rng.random((h, w)).astype(np.float32)), size=512)
    xy1 = rng.random((29, 2)) * [w / 2, h / 2]
    boxes = np.concatenate([xy1, xy1 + rng.random((29, 2)) * [w / 2, h / 2]], axis=1)  # [29, 4]
    back = geo.to_original(geo.to_tensor(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-6)
    tboxes = geo.to_tensor(torch.tensor(boxes, dtype=torch.float64))
    assert isinstance(tboxes, torch.Tensor) and tboxes.max() <= 512
    assert torch.allclose(geo.to_original(tboxes), torch.tensor(boxes), atol=1e-6)
    outside = geo.to_original(torch.tensor([[0.0, 0.0, 512.0, 512.0]]))  # whole padded canvas
    assert torch.allclose(outside, torch.tensor([[0.0, 0.0, w, h]]), atol=1e-3)
    assert outside[0, 2] <= w and outside[0, 3] <= h  # clipped to the image


def test_preprocess_batch() -> None:
    a = load_image(_gradient(100, 200))
    b = load_image(_gradient(300, 90))
    batch, geos = preprocess_batch([a, b], size=64)
    assert batch.shape == (2, 1, 64, 64) and [g.width for g in geos] == [200, 90]
    assert torch.equal(batch[1], preprocess(b, size=64)[0])
    with pytest.raises(ValueError, match="at least one"):
        preprocess_batch([])
