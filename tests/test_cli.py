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
        findings = " ".join(s["text"] for s in line["sentences"])
        assert isinstance(line["impression"], str) and bool(line["impression"]) == bool(findings)
        open_lines = "".join(f"\n{name}: {', '.join(line[key])}." for name, key in (
            ("Indeterminate (neither stated nor ruled out)", "indeterminate"),
            ("Not assessed by this model", "not_assessed")) if line[key])
        assert line["report"] == (f"{findings}\nImpression: {line['impression']}{open_lines}" if findings else "")
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


def _rejecting_weights(folder: Path) -> Path:
    """The tiny model with an input checker that calls every image "not a radiograph"."""
    import dataclasses

    import torch

    from crrg.input_check import InputCheckConfig, InputChecker

    model = tiny_model()
    config = InputCheckConfig(feature_dim=model.config.clip.embed_dim + 29 + 8, hidden_dim=0, threshold=0.5)
    checker = InputChecker(config)
    with torch.no_grad():
        checker.mlp.weight.zero_()
        checker.mlp.bias.copy_(torch.tensor([-5.0, 0.0, 0.0, 5.0]))
    model.config = dataclasses.replace(model.config, input_check=config)
    model.input_check = checker
    model.save_pretrained(folder)
    return folder


def test_rejected_images_get_an_error_line_and_force_reports_them(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from crrg.input_check import REASONS

    weights = _rejecting_weights(tmp_path / "w")
    scans = tmp_path / "upload" / "scans"
    scans.mkdir(parents=True)
    images = [chest_like_png(scans / f"{i}.png", seed=i) for i in range(2)]
    code = cli.main(["report", *map(str, images), "--weights", str(weights), "--json"])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1 and len(lines) == 2  # both tried, both rejected
    for line, image in zip(lines, images):
        assert set(line) == {"image", "error", "input_check", "disclaimer"} and "report" not in line
        assert line["input_check"] == {"ok": False, "score": pytest.approx(line["input_check"]["score"]),
                                       "reason": REASONS["not_radiograph"]}
        assert line["input_check"]["score"] < 0.5
        assert f"error: {image.name}: " in captured.err
    assert str(scans) not in captured.err  # base names only on stderr

    code = cli.main(["report", *map(str, images), "--weights", str(weights), "--json", "--force"])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 0 and len(lines) == 2
    assert all("report" in line and "error" not in line and line["input_check"]["ok"] is False for line in lines)
    assert "warning: 0.png: reported anyway (--force)" in captured.err

    cli.main(["report", str(images[0]), "--weights", str(weights), "--force"])  # human output warns
    assert "WARNING (input check" in capsys.readouterr().out


def test_a_model_without_an_input_check_reports_as_before(tmp_path: Path, weights: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    image = chest_like_png(tmp_path / "f.png")
    assert cli.main(["report", str(image), "--weights", str(weights), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["input_check"] is None and "error" not in line and "report" in line
