"""Helpers for testing and benchmarking the demo: run ``app.py`` in a subprocess on a free port,
and make synthetic chest-X-ray-like images (PNG / DICOM) so no real data is needed."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import numpy as np

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "TRANSFORMERS_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoServer:
    """``python app.py --weights W --port P`` in a subprocess; ``with DemoServer(w) as s: s.url``.

    ``ready_s`` is the time from start until the page answered. The log goes to a temporary file
    (``log()`` returns it while the server runs; removed by ``stop()``) so a failed start can say why.
    """

    def __init__(self, weights: str | Path, port: int | None = None, examples: str | Path | None = None,
                 timeout: float = 90.0, extra_env: dict[str, str] | None = None) -> None:
        self.weights, self.port = str(weights), port or free_port()
        self.examples, self.timeout = examples, timeout
        self.env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self.ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        cmd = [sys.executable, str(ROOT / "app.py"), "--weights", self.weights, "--port", str(self.port),
               "--host", "127.0.0.1"]
        return cmd + (["--examples", str(self.examples)] if self.examples else [])

    def start(self) -> DemoServer:
        self._log = tempfile.NamedTemporaryFile(prefix="crrg-demo-", suffix=".log", delete=False)
        start = time.perf_counter()
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        while time.perf_counter() - start < self.timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if _answers(self.url):
                self.ready_s = time.perf_counter() - start
                return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"app.py not ready after {self.timeout:.0f} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace") if self._log else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "gradio_api/info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def synthetic_xray(height: int = 640, width: int = 560, seed: int = 0) -> np.ndarray:
    """A chest-X-ray-like uint8 image: bright body, two dark lung fields, spine, heart, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = yy / height, xx / width
    img = 0.75 - 0.25 * ((x - 0.5) ** 2) * 4  # body
    for cx in (0.3, 0.7):  # lungs
        lung = ((x - cx) / 0.17) ** 2 + ((y - 0.48) / 0.3) ** 2 < 1
        img = np.where(lung, 0.25 + 0.1 * y, img)
    img = np.where(np.abs(x - 0.5) < 0.045, 0.85, img)  # spine
    heart = ((x - 0.56) / 0.14) ** 2 + ((y - 0.66) / 0.13) ** 2 < 1
    img = np.where(heart, 0.7, img)
    img = img + rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_png(path: str | Path, seed: int = 0, height: int = 640, width: int = 560) -> Path:
    from PIL import Image

    path = Path(path)
    Image.fromarray(synthetic_xray(height, width, seed)).save(path)
    return path


def write_dicom(path: str | Path, seed: int = 0) -> Path:
    """A minimal 12-bit MONOCHROME2 DX DICOM file of :func:`synthetic_xray` (pydicom)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = (synthetic_xray(seed=seed).astype(np.uint16) * 16)  # 12-bit range
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "DX", "Synthetic^Phantom", "0"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path
