"""Cold start: the demo page is built and served before the model is loaded (demo.loader), and
requests that arrive early wait for the model, or get the reason it could not load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from demo.testing import OFFLINE_ENV, ROOT, write_png

HEAVY = ("torchvision", "transformers", "open_clip", "timm", "matplotlib")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crrg.cli import main

    folder = tmp_path_factory.mktemp("crrg-tiny")
    assert main(["init", str(folder), "--variant", "tiny"]) == 0
    return folder


@pytest.fixture()
def broken_weights(tiny_weights: Path, tmp_path: Path) -> Path:
    """A folder that looks like a model (config.json, model.safetensors) but cannot load."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_weights / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    return broken


def test_building_the_page_loads_no_model_and_imports_no_model_library(tiny_weights: Path) -> None:
    """What app.py does before it serves, in a fresh interpreter: resolve the weights, build the
    page. None of the model's libraries may be imported yet, and the model must not be loaded."""
    code = f"""
import json, sys
from demo.loader import PipelineLoader
loader = PipelineLoader({str(tiny_weights)!r})
from demo import build_demo, launch_options
blocks = build_demo(loader)
launch_options()
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"heavy": heavy, "ready": loader.ready, "prompts": loader.default_prompts}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **OFFLINE_ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert out["ready"] is False
    config = json.loads((tiny_weights / "config.json").read_text())
    assert out["prompts"] == config["prompts"]


def test_app_module_import_does_nothing(tiny_weights: Path) -> None:
    code = "import sys; import app; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'gradio', 'crrg', 'demo')))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, **OFFLINE_ENV})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_requests_before_the_model_is_ready_wait_and_get_the_same_result(tiny_weights: Path,
                                                                          tmp_path: Path) -> None:
    import crrg
    from demo.loader import PipelineLoader

    image = write_png(tmp_path / "chest.png", seed=4)
    loader = PipelineLoader(tiny_weights)
    assert not loader.ready
    results: list[dict] = []
    early = threading.Thread(target=lambda: results.append(loader(str(image), prompts="pneumonia").to_json()))
    early.start()  # before start(): the request loads the model itself (or waits for the loader)
    loader.start()
    early.join(timeout=300)
    assert loader.ready and loader.load_s is not None
    direct = crrg.load(tiny_weights)(str(image), prompts="pneumonia").to_json()
    assert results[0]["report"] == direct["report"]
    assert results[0]["labels"] == direct["labels"]
    assert loader.classify(str(image), "pneumonia") == pytest.approx(direct["labels"], abs=1e-4)
    assert loader.config.variant == "tiny"


def test_a_model_that_cannot_load_answers_with_the_reason(broken_weights: Path, tmp_path: Path) -> None:
    from demo.loader import ModelNotReadyError, PipelineLoader

    loader = PipelineLoader(broken_weights).start()  # the folder looks right: serving starts
    with pytest.raises(ModelNotReadyError, match="could not be loaded"):
        loader(str(write_png(tmp_path / "x.png")))
    assert not loader.ready
    with pytest.raises(ModelNotReadyError):  # every later request too, without retrying forever
        loader.classify(str(tmp_path / "x.png"))


def test_a_missing_weights_folder_fails_before_serving(tmp_path: Path) -> None:
    from crrg.hub import WeightsNotFoundError
    from demo.loader import PipelineLoader

    with pytest.raises(WeightsNotFoundError):
        PipelineLoader(tmp_path)  # exists, but holds no config.json / model.safetensors


def test_the_demo_shows_a_load_failure_as_a_message(broken_weights: Path, tmp_path: Path) -> None:
    import gradio as gr

    from demo.events import user_errors
    from demo.loader import PipelineLoader
    from demo.service import DemoService

    service = DemoService(PipelineLoader(broken_weights).start(), tmp_path / "work")
    image = str(write_png(tmp_path / "chest.png"))
    with pytest.raises(gr.Error) as caught:
        user_errors(service.report)(image, "")
    assert caught.value.title == "The model is not available"
    assert "could not be loaded" in str(caught.value)
