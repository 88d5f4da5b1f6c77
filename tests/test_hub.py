"""Weights sources: local folders, a hand-built HF cache, a local HF_ENDPOINT server, failures.

Hub calls run in subprocesses with a clean environment, because huggingface_hub reads its
settings (offline mode, endpoint, cache) at import time, as a user's fresh process would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crrg.hub import WeightsNotFoundError, resolve
from hubserver import COMMIT, HubServer

ROOT = Path(__file__).resolve().parents[1]


def _fake_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"marker": path.name}))
    (path / "model.safetensors").write_bytes(os.urandom(256))
    (path / "README.md").write_text("card")
    return path


def _resolve_in_subprocess(source: str, env: dict[str, str]) -> tuple[int, str, str, float]:
    code = "import sys; from crrg.hub import resolve; print(resolve(sys.argv[1]))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, source], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout.strip(), proc.stderr, time.perf_counter() - start


def test_local_folder_resolves(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path / "m")
    assert resolve(repo) == repo
    assert resolve(f"local-dir:{repo}") == repo


def test_folder_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsNotFoundError, match="model.safetensors"):
        resolve(tmp_path)


@pytest.mark.parametrize("source", ["no/such/path/x", "./missing-folder", "weights.safetensors"])
def test_bad_source_string_is_a_clear_error(source: str) -> None:
    with pytest.raises(WeightsNotFoundError, match="not a folder"):
        resolve(source)


def test_hand_built_hf_cache_offline(tmp_path: Path) -> None:
    repo_cache = tmp_path / "hf" / "hub" / "models--org--cxr"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(COMMIT)
    snapshot = _fake_repo(repo_cache / "snapshots" / COMMIT)
    rc, out, err, _ = _resolve_in_subprocess("org/cxr", {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert rc == 0, err
    assert Path(out) == snapshot


def test_offline_missing_repo_fails_fast_naming_source(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="org/absent"):
        resolve("org/absent")  # conftest sets HF_HUB_OFFLINE=1
    assert time.perf_counter() - start < 1.0


def test_unreachable_endpoint_fails_within_a_second(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on 9
    code = ("import time, sys; from crrg.hub import resolve\n"
            "t = time.perf_counter()\n"
            "try:\n    resolve('org/unreachable')\n"
            "except FileNotFoundError as e:\n    print(round(time.perf_counter() - t, 3)); print(e)\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2, proc.stderr
    assert float(lines[0]) < 1.0
    assert "org/unreachable" in lines[1]


def test_download_from_local_endpoint_then_offline_cache(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path / "served")
    env = {"HF_HOME": str(tmp_path / "hf")}
    with HubServer({"org/served": repo}) as server:
        rc, out, err, _ = _resolve_in_subprocess("org/served", {**env, "HF_ENDPOINT": server.endpoint})
        assert rc == 0, err
        assert any("/resolve/" in r and "model.safetensors" in r for r in server.requests)
    folder = Path(out)
    assert (folder / "model.safetensors").read_bytes() == (repo / "model.safetensors").read_bytes()
    # The server is gone: offline mode finds the cached snapshot.
    rc, out2, err, _ = _resolve_in_subprocess("hf-hub:org/served", {**env, "HF_HUB_OFFLINE": "1"})
    assert rc == 0, err
    assert Path(out2) == folder


def test_full_model_from_local_endpoint_via_cli(tmp_path: Path) -> None:
    from pipeline_fixture import chest_like_png, tiny_model

    tiny_model().save_pretrained(tmp_path / "repo")
    image = chest_like_png(tmp_path / "x.png")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    with HubServer({"crrg/tiny": tmp_path / "repo"}) as server:
        env = {**clean, "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": server.endpoint}
        proc = subprocess.run([sys.executable, "-m", "crrg", "report", str(image), "--weights", "crrg/tiny",
                               "--json", "--prompts", "edema"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(data["regions"]) == 29 and list(data["labels"]) == ["edema"]
    # The model card came down with the weights and parses as a hub card with crrg's metadata.
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "hf" / "hub" / "models--crrg--tiny" / "snapshots" / COMMIT / "README.md")
    assert card.data.library_name == "crrg" and card.data.license == "other"
    assert card.data.license_link == "LICENSE.md" and (tmp_path / "repo" / "LICENSE.md").is_file()
