"""Resolve a weights source (local folder or Hugging Face hub repo id) to a local folder.

Hub downloads use ``huggingface_hub.snapshot_download`` and honour ``HF_HUB_OFFLINE``, ``HF_HOME``
and ``HF_ENDPOINT``. An offline or unreachable hub fails within about a second with
:class:`WeightsNotFoundError` naming the source, never a minute-long hang.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("config.json", "model.safetensors", "README.md", "LICENSE.md", "metrics.json")
REACH_TIMEOUT_S = 0.8


class WeightsNotFoundError(FileNotFoundError):
    """The weights source is neither a crrg folder nor a reachable / cached hub repo."""


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _cache_dir() -> Path:
    """HF cache folder, read at call time (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def _reachable(endpoint: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """True when a TCP connection to the endpoint's host opens within ``timeout`` seconds."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.hostname or "", port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for family, kind, proto, _, address in infos[:2]:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return True
            except OSError:
                continue
    return False


def _check_folder(path: Path, source: str) -> Path:
    missing = [name for name in WEIGHT_FILES[:2] if not (path / name).is_file()]
    if missing:
        raise WeightsNotFoundError(
            f"{source!r} is a folder but not a crrg model: missing {', '.join(missing)} "
            "(expected config.json + model.safetensors, as written by save_pretrained / `crrg init`)"
        )
    return path


def resolve(source: str | Path, revision: str | None = None) -> Path:
    """Local folder holding config.json + model.safetensors for ``source``.

    ``source`` is a folder path, ``local-dir:PATH``, a hub repo id ``org/name`` or ``hf-hub:org/name``.
    """
    text = str(source)
    if text.startswith("local-dir:"):
        text = text[len("local-dir:"):]
        return _check_folder(Path(text).expanduser(), str(source))
    path = Path(text).expanduser()
    if path.is_dir():
        return _check_folder(path, str(source))
    repo_id = text[len("hf-hub:"):] if text.startswith("hf-hub:") else text
    if repo_id.count("/") != 1 or path.suffix or text.startswith((".", "/", "~")):
        raise WeightsNotFoundError(
            f"weights source {str(source)!r} is not a folder and not a hub repo id of the form 'org/name'"
        )
    return _download(repo_id, revision, str(source))


def _download(repo_id: str, revision: str | None, source: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _offline()
    if not offline and not _reachable(_endpoint()):
        logger.info("hub endpoint %s unreachable; trying the local cache for %s", _endpoint(), repo_id)
        offline = True
    try:
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=list(WEIGHT_FILES), cache_dir=_cache_dir(),
            endpoint=_endpoint(), local_files_only=offline, etag_timeout=5,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        why = "offline (HF_HUB_OFFLINE set or hub unreachable) and not in the local HF cache" if offline \
            else f"hub download failed: {type(err).__name__}: {err}"
        raise WeightsNotFoundError(f"cannot load crrg weights from {source!r}: {why}") from err
    return _check_folder(Path(folder), source)
