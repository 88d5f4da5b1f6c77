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
    assert [p["label"] for p in endpoints["/report"]["parameters"]] == ["image", "prompts", "force"]
    force = endpoints["/report"]["parameters"][2]
    assert force["parameter_has_default"] and force["parameter_default"] is False  # optional


def test_report_returns_text_and_the_cli_json(client, images: dict[str, Path]) -> None:
    report, result = _report(client, images["png"], "pneumonia, nodule,  cardiomegaly")
    assert isinstance(report, str) and report == result["report"]
    assert [r["name"] for r in result["regions"]] == list(REGIONS)
    assert result["disclaimer"] == DISCLAIMER
    assert list(result["labels"]) == ["pneumonia", "nodule", "cardiomegaly"]
    assert all(0.0 <= p <= 1.0 for p in result["labels"].values())
    assert set(result["label_regions"]) == set(result["labels"])
    assert (result["image"], result["width"], result["height"]) == ("chest.png", 560, 640)
    findings = " ".join(s["text"] for s in result["sentences"])  # each sentence with its evidence
    assert isinstance(result["impression"], str) and bool(result["impression"]) == bool(findings)
    assert report == (f"{findings}\nImpression: {result['impression']}" if findings else "")
    assert all(s["evidence"]["kind"] in ("region", "measurement", "image") for s in result["sentences"])
    assert "cardiothoracic_ratio" in result["measurements"] and "input_check" in result
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


NOT_A_CXR = "This does not look like a frontal chest radiograph, so no report was written."


class _Rejecting:
    """The real tiny pipeline with every input answered 'not a chest radiograph' (the tiny model has
    no input checker); the reason names the server path, which no user may see."""

    def __init__(self, pipe) -> None:
        self.pipe, self.default_prompts, self.num_beams = pipe, pipe.default_prompts, 1

    def __call__(self, image, **kwargs):
        from dataclasses import replace

        from crrg.types import InputCheck

        check = InputCheck(ok=False, score=0.02, reason=f"{image}: {NOT_A_CXR}")
        return replace(self.pipe(image, **kwargs), input_check=check)

    def classify(self, image, prompts=None):
        return self.pipe.classify(image, prompts)


@pytest.fixture(scope="module")
def rejecting_client(tiny_weights: Path):
    """The demo served in this process over :class:`_Rejecting`."""
    import crrg
    from demo import build_demo, launch_options
    from demo.testing import free_port
    from gradio_client import Client

    blocks = build_demo(_Rejecting(crrg.load(tiny_weights, device="cpu")))
    blocks.launch(prevent_thread_lock=True, **launch_options(server_name="127.0.0.1", server_port=free_port()))
    try:
        yield Client(blocks.local_url, verbose=False)
    finally:
        blocks.close()


def test_api_writes_no_report_for_a_rejected_image_unless_forced(rejecting_client, images: dict[str, Path]) -> None:
    from gradio_client import handle_file

    report, record = _report(rejecting_client, images["png"], "pneumonia")
    assert report == "" and set(record) == {"image", "error", "input_check", "disclaimer"}
    assert record["input_check"]["ok"] is False and NOT_A_CXR in record["input_check"]["reason"]
    shown = json.dumps(record)
    assert "chest.png" in shown and str(images["png"].parent) not in shown and "/tmp" not in shown
    assert "gradio" not in shown
    forced_report, forced = rejecting_client.predict(handle_file(str(images["png"])), "pneumonia", True,
                                                     api_name="/report")
    assert forced_report == forced["report"] and forced["input_check"]["ok"] is False
    assert {"sentences", "measurements", "regions", "labels"} <= set(forced)
