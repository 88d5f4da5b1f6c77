"""End to end: ``python app.py`` in a subprocess on a free port with a tiny random model written by
``python -m crrg init DIR --variant tiny``; gradio_client calls the named endpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crrg import DISCLAIMER
from crrg.regions import REGIONS
from demo.testing import OFFLINE_ENV, ROOT, DemoServer, write_dicom, write_png

pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m crrg init DIR --variant tiny`` (in-process: saves a torch import)."""
    from crrg.cli import main

    folder = tmp_path_factory.mktemp("crrg-tiny")
    assert main(["init", str(folder), "--variant", "tiny"]) == 0
    return folder


@pytest.fixture(scope="module")
def server(tiny_weights: Path):
    with DemoServer(tiny_weights) as running:
        print(f"\ndemo ready in {running.ready_s:.1f} s at {running.url}")
        yield running


@pytest.fixture(scope="module")
def client(server: DemoServer):
    from gradio_client import Client

    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    bad = folder / "notes.png"
    bad.write_text("this is not an image")
    return {"png": write_png(folder / "chest.png", seed=2), "dcm": write_dicom(folder / "chest.dcm", seed=3),
            "bad": bad, "huge": write_png(folder / "wide.png", height=64, width=8200)}


def _report(client, path: Path, prompts: str):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), prompts, api_name="/report")


def test_api_lists_exactly_report_and_classify(client) -> None:
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/report", "/classify"}
    assert [p["label"] for p in endpoints["/report"]["parameters"]] == ["image", "prompts"]


def test_report_returns_text_and_the_cli_json(client, images: dict[str, Path]) -> None:
    report, result = _report(client, images["png"], "pneumonia, nodule,  cardiomegaly")
    assert isinstance(report, str) and report == result["report"]
    assert [r["name"] for r in result["regions"]] == list(REGIONS)
    assert result["disclaimer"] == DISCLAIMER
    assert list(result["labels"]) == ["pneumonia", "nodule", "cardiomegaly"]
    assert all(0.0 <= p <= 1.0 for p in result["labels"].values())
    assert set(result["label_regions"]) == set(result["labels"])
    assert (result["image"], result["width"], result["height"]) == ("chest.png", 560, 640)
    for region in result["regions"]:
        assert region["box"] is not None or not region["selected"]
        assert bool(region["sentence"]) == region["selected"]
    json.dumps(result)


def test_report_reads_dicom(client, images: dict[str, Path]) -> None:
    _, result = _report(client, images["dcm"], "edema")
    assert (result["image"], result["width"], result["height"]) == ("chest.dcm", 560, 640)
    assert list(result["labels"]) == ["edema"]


def test_classify_returns_probabilities_for_the_prompts(client, images: dict[str, Path],
                                                        tiny_weights: Path) -> None:
    from gradio_client import handle_file

    probs = client.predict(handle_file(str(images["png"])), "edema,pleural effusion", api_name="/classify")
    assert list(probs) == ["edema", "pleural effusion"] and all(0 <= p <= 1 for p in probs.values())
    defaults = json.loads((tiny_weights / "config.json").read_text())["prompts"]
    assert list(client.predict(handle_file(str(images["png"])), "", api_name="/classify")) == list(defaults)


@pytest.mark.parametrize(("name", "message"), [("bad", "not a readable image"), ("huge", "at most 8192 px")])
def test_bad_files_give_clear_errors_and_the_app_keeps_serving(client, images: dict[str, Path], name: str,
                                                               message: str) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message) as caught:
        _report(client, images[name], "pneumonia")
    shown = str(caught.value)
    assert images[name].name in shown  # the file the user gave, by its base name ...
    assert str(images[name].parent) not in shown and "/tmp" not in shown and "gradio" not in shown  # ... only
    report, result = _report(client, images["png"], "pneumonia")  # still serving
    assert result["report"] == report


def test_app_without_weights_says_how_to_get_some(tmp_path: Path) -> None:
    import os

    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "--weights", str(tmp_path / "missing")],
                          cwd=ROOT, env={**os.environ, **OFFLINE_ENV}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "cannot load crrg weights" in done.stderr and "python -m crrg init" in done.stderr
