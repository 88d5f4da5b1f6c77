"""``python -m crrg`` as a user runs it: init, report --json, bad inputs, missing weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import crrg
from crrg import cli
from pipeline_fixture import chest_like_png, tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crrg", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("w") / "tiny"
    tiny_model().save_pretrained(folder)
    return folder


def test_init_writes_a_loadable_model(tmp_path: Path) -> None:
    proc = _run("init", str(tmp_path / "m"), "--variant", "tiny")
    assert proc.returncode == 0, proc.stderr
    assert "Research demo only" in proc.stdout
    pipe = crrg.load(tmp_path / "m")
    assert pipe.config.variant == "tiny"


def test_report_json_lines_and_bad_inputs(tmp_path: Path, weights: Path) -> None:
    good = chest_like_png(tmp_path / "a.png")
    second = chest_like_png(tmp_path / "b.png", size=(200, 260), seed=1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    proc = _run("report", str(good), str(bad), str(second), "--weights", str(weights), "--json",
                "--prompts", "pneumonia,nodule")
    assert proc.returncode != 0
    assert "bad.png" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(line["image"]).name for line in lines] == ["a.png", "bad.png", "b.png"]
    ok = [line for line in lines if "error" not in line]
    assert len(ok) == 2
    for line in ok:
        assert len(line["regions"]) == 29
        assert set(line["labels"]) == {"pneumonia", "nodule"}
        assert line["disclaimer"] == crrg.DISCLAIMER
        for region in line["regions"]:
            assert region["box"] is None or len(region["box"]) == 4
    assert (ok[1]["width"], ok[1]["height"]) == (200, 260)
    assert lines[1]["disclaimer"] == crrg.DISCLAIMER


def test_human_output_has_disclaimer(capsys: pytest.CaptureFixture, tmp_path: Path, weights: Path) -> None:
    image = chest_like_png(tmp_path / "c.png")
    assert cli.main(["report", str(image), "--weights", str(weights), "--prompts", "edema"]) == 0
    out = capsys.readouterr().out
    assert "Report:" in out and "edema" in out and crrg.DISCLAIMER in out


def test_missing_embedded_weights_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("CRRG_WEIGHTS", raising=False)
    monkeypatch.setattr(cli, "EMBEDDED_WEIGHTS", tmp_path / "nothing-here")
    assert cli.main(["report", str(chest_like_png(tmp_path / "d.png"))]) == 2
    err = capsys.readouterr().err
    assert "no embedded default weights" in err and "--weights" in err


def test_unknown_weights_source_is_explained(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert cli.main(["report", str(chest_like_png(tmp_path / "e.png")), "--weights", "org/none"]) == 2
    assert "org/none" in capsys.readouterr().err
