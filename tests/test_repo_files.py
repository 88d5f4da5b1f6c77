"""The repository as the Hugging Face hub takes it (a Space): every tracked file over 10 MB is
covered by a Git LFS rule in .gitattributes, while here the weights stay ordinary git blobs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HUB_LIMIT = 10_000_000  # bytes: the hub refuses larger files outside LFS (10 MB, or 10 MiB: the smaller)
WEIGHTS = "assets/crrg-default/model.safetensors"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        _git("rev-parse", "--is-inside-work-tree")
    except subprocess.CalledProcessError:
        pytest.skip(f"{ROOT} is not a git checkout (e.g. an unpacked archive): nothing is tracked")
    return [p for p in _git("ls-files", "-z").split("\0") if p]


def _lfs_filtered(paths: list[str]) -> dict[str, bool]:
    if not paths:
        return {}
    lines = _git("check-attr", "-z", "filter", "--", *paths).split("\0")
    # -z: path, attribute, value triples
    return {lines[i]: lines[i + 2] == "lfs" for i in range(0, len(lines) - 2, 3)}


def test_every_tracked_file_over_10_mb_has_an_lfs_rule(tracked: list[str]) -> None:
    big = [p for p in tracked if (ROOT / p).is_file() and (ROOT / p).stat().st_size > HUB_LIMIT]
    covered = _lfs_filtered(big)
    assert sorted(covered) == sorted(big)
    missing = [p for p, ok in covered.items() if not ok]
    assert not missing, f"over 10 MB without a Git LFS rule in .gitattributes (the hub refuses them): {missing}"
    # the rule is by type, so new weights anywhere are covered too
    assert _lfs_filtered(["weights/new-model.safetensors"]) == {"weights/new-model.safetensors": True}


def test_the_weights_here_are_real_blobs_not_lfs_pointers(tracked: list[str]) -> None:
    if WEIGHTS not in tracked:
        pytest.skip(f"{WEIGHTS} is not tracked in this checkout")
    blob = _git("ls-files", "-s", "--", WEIGHTS).split()[1]
    size = int(_git("cat-file", "-s", blob))
    assert size == (ROOT / WEIGHTS).stat().st_size > HUB_LIMIT  # the whole file, not a ~130-byte pointer
    with (ROOT / WEIGHTS).open("rb") as handle:
        assert not handle.read(40).startswith(b"version https://git-lfs")
