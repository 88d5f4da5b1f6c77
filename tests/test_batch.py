"""Batch reports (crrg.batch, ``python -m crrg report INPUT... --out``): discovery, resume,
errors, CSV, batch == single image, and torchrun sharding with 2 CPU processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crrg.batch import JsonlLog, default_workers, discover, output_file, shard
from demo.testing import write_dicom
from pipeline_fixture import chest_like_png, tiny_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crrg", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**ENV, **(env or {})})


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("w") / "tiny"
    tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """scans/ with 4 good images (PNG, JPEG, DICOM without extension, nested) and a bad PNG."""
    from PIL import Image

    root = tmp_path / "scans"
    (root / "b" / "deep").mkdir(parents=True)
    chest_like_png(root / "a.png", seed=1)
    Image.open(chest_like_png(tmp_path / "tmp.png", seed=2)).save(root / "b" / "c.jpg")
    write_dicom(root / "b" / "deep" / "IM0001", seed=3)  # DICOM found by content
    chest_like_png(root / "b" / "deep" / "z.png", size=(200, 260), seed=4)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is cut short")
    (root / "notes.txt").write_text("not an image")
    return root


def test_discover_folders_globs_files_in_a_stable_order(folder: Path, tmp_path: Path) -> None:
    found = discover([folder])
    names = [Path(p).relative_to(folder).as_posix() for p in found]
    assert names == ["a.png", "b/broken.png", "b/c.jpg", "b/deep/IM0001", "b/deep/z.png"]
    assert discover([str(folder / "**" / "*.png")]) == [str(folder / "a.png"), str(folder / "b" / "broken.png"),
                                                         str(folder / "b" / "deep" / "z.png")]
    # an explicit file is taken as given (even a text file: it gets an error line), a missing one too
    missing = str(tmp_path / "nope.png")
    assert discover([folder / "notes.txt", missing, folder / "a.png", folder]) == [
        str(folder / "notes.txt"), missing, str(folder / "a.png"), *[p for p in found if p != str(folder / "a.png")]]


def test_shards_are_disjoint_and_cover_every_input() -> None:
    paths = [f"{i}.png" for i in range(11)]
    parts = [shard(paths, rank, 3) for rank in range(3)]
    assert sorted(sum(parts, [])) == sorted(paths)
    assert sum(len(p) for p in parts) == len(paths)
    with pytest.raises(ValueError):
        shard(paths, 3, 3)


@pytest.mark.parametrize("cores,threads,local_ranks,expected", [
    (2, 2, None, 0),  # this machine: torch's threads take both cores, decoding stays in the process
    (8, 2, None, 2),  # spare cores: two decoding workers (never more)
    (4, 1, None, 2), (3, 2, None, 1),
    (4, 1, "2", 2), (4, 2, "2", 0),  # torchrun: every local rank's threads count
])
def test_default_workers_use_only_the_cores_torch_leaves_free(monkeypatch: pytest.MonkeyPatch, cores: int,
                                                              threads: int, local_ranks: str | None,
                                                              expected: int) -> None:
    import torch

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert default_workers() == expected


def test_output_file_for_a_folder_and_for_several_ranks(tmp_path: Path) -> None:
    assert output_file(f"{tmp_path}/out/", 1, 2) == tmp_path / "out" / "part-1.jsonl"
    assert output_file(tmp_path, 0, 1) == tmp_path / "part-0.jsonl"
    assert output_file(tmp_path / "r.jsonl", 0, 1) == tmp_path / "r.jsonl"
    with pytest.raises(ValueError, match="folder"):
        output_file(tmp_path / "r.jsonl", 0, 2)


def test_log_drops_a_cut_last_line_and_error_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"image": "a.png", "report": "x"}) + "\n"
                    + json.dumps({"image": "bad.png", "error": "unreadable"}) + "\n"
                    + '{"image": "b.png", "repo')  # the process died mid-line
    log = JsonlLog(path)
    assert log.done == {"a.png"}
    log.write({"image": "c.png", "report": "y"})
    log.close()
    assert [r["image"] for r in JsonlLog(path).records()] == ["a.png", "c.png"]


def test_out_resume_errors_and_csv(folder: Path, weights: Path, tmp_path: Path) -> None:
    out, table = tmp_path / "reports.jsonl", tmp_path / "reports.csv"
    args = ["report", str(folder), "--weights", str(weights), "--out", str(out), "--csv", str(table),
            "--prompts", "pneumonia,nodule", "--batch-size", "2"]
    first = _cli(*args)
    assert first.returncode == 1, first.stderr  # broken.png failed, the others were written
    assert "broken.png" in first.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["a.png", "broken.png", "c.jpg", "IM0001", "z.png"]
    good = [r for r in records if "error" not in r]
    assert len(good) == 4 and all(len(r["regions"]) == 29 and set(r["labels"]) == {"pneumonia", "nodule"}
                                  for r in good)
    assert next(r for r in good if r["image"].endswith("z.png"))[("width")] == 200
    rows = list(csv.DictReader(table.open()))
    assert [Path(r["image"]).name for r in rows] == [Path(r["image"]).name for r in records]
    assert set(rows[0]) == {"image", "report", "selected_regions", "label:pneumonia", "label:nodule", "error"}
    assert float(rows[0]["label:pneumonia"]) == pytest.approx(good[0]["labels"]["pneumonia"])
    assert rows[1]["error"] and not rows[0]["error"]

    chest_like_png(folder / "new.png", seed=7)  # one more image, the broken one still broken
    second = _cli(*args)
    assert second.returncode == 1
    assert "4 already in" in second.stderr and "1 reports, 1 failed" in second.stderr
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in again[:4]] == [r["image"] for r in good]  # kept as they were
    assert sorted(Path(r["image"]).name for r in again[4:]) == ["broken.png", "new.png"]
    assert len({r["image"] for r in again}) == len(again) == 6  # each image once
    assert len(list(csv.DictReader(table.open()))) == 6

    (folder / "b" / "broken.png").unlink()
    third = _cli(*args)
    assert third.returncode == 0, third.stderr
    assert "0 reports, 0 failed, 5 already in" in third.stderr


def test_batch_gives_the_same_reports_as_single_images(folder: Path, weights: Path) -> None:
    import crrg

    pipe = crrg.load(weights)
    images = [p for p in discover([folder]) if "broken" not in p]
    batched = pipe.batch(images, prompts="pneumonia,nodule,edema")
    single = [pipe(p, prompts="pneumonia,nodule,edema") for p in images]
    _assert_same(batched, single)


def test_the_embedded_model_batched_equals_single(data_dir: Path) -> None:
    import crrg

    weights = ROOT / "assets" / "crrg-default"
    if not (weights / "model.safetensors").is_file():
        pytest.skip("embedded weights assets/crrg-default not present")
    sources = ["jsrt_scr/images/*.jpg", "covid_radiography/COVID/*", "kermany_pneumonia/test/PNEUMONIA/*",
               "covid_lung_boxes/images/*"]
    images = [p for pattern in sources for p in discover([str(data_dir / pattern)])[:2]]
    assert len(images) == 8
    pipe = crrg.load(weights)
    batched = pipe.batch(images)
    single = [pipe(p) for p in images]
    _assert_same(batched, single)
    assert len({r.report for r in batched}) > 1  # the images really differ


def _assert_same(batched, single) -> None:
    assert len(batched) == len(single)
    for a, b in zip(batched, single):
        assert a.image == b.image and a.report == b.report
        assert [r.sentence for r in a.regions] == [r.sentence for r in b.regions]
        assert [r.selected for r in a.regions] == [r.selected for r in b.regions]
        assert a.label_regions == b.label_regions
        for key in b.labels:
            assert a.labels[key] == pytest.approx(b.labels[key], abs=1e-4)
        for ra, rb in zip(a.regions, b.regions):
            assert (ra.box is None) == (rb.box is None)
            if ra.box is not None:
                assert ra.box == pytest.approx(rb.box, abs=1e-2)
                assert ra.selection_prob == pytest.approx(rb.selection_prob, abs=1e-4)
                assert ra.abnormal_prob == pytest.approx(rb.abnormal_prob, abs=1e-4)


@pytest.mark.slow
def test_torchrun_two_processes_shard_and_resume(folder: Path, weights: Path, tmp_path: Path) -> None:
    (folder / "b" / "broken.png").unlink()
    out = tmp_path / "parts"
    from test_shards import _free_port

    # a real port: with --master-port 0 torchrun tells the workers MASTER_PORT=0 and they cannot meet
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()),
           "-m", "crrg", "report", str(folder), "--weights", str(weights), "--out", f"{out}/",
           "--batch-size", "2", "--prompts", "pneumonia"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    parts = {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in out.glob("*.jsonl")}
    assert set(parts) == {"part-0.jsonl", "part-1.jsonl"}
    images = [r["image"] for lines in parts.values() for r in lines]
    assert sorted(images) == sorted(discover([folder]))  # every image exactly once
    assert all(parts.values())  # both ranks did work
    single = _cli("report", str(folder), "--weights", str(weights), "--json", "--prompts", "pneumonia")
    expected = {r["image"]: r for r in map(json.loads, single.stdout.splitlines())}
    for lines in parts.values():
        for record in lines:
            assert record["report"] == expected[record["image"]]["report"]
            assert record["labels"]["pneumonia"] == pytest.approx(expected[record["image"]]["labels"]["pneumonia"],
                                                                  abs=1e-4)
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sum(len(p.read_text().splitlines()) for p in out.glob("*.jsonl")) == len(images)  # nothing redone


def _brightness_checked_pipeline():
    """The tiny model with an input checker that rejects bright images (mean intensity > 0.85 of
    the preprocessed image) and accepts the chest-like ones, run in this process."""
    import torch

    from crrg.input_check import InputCheckConfig, InputChecker
    from crrg.pipeline import Pipeline

    model = tiny_model()
    dim = model.config.clip.embed_dim + 29 + 8
    checker = InputChecker(InputCheckConfig(feature_dim=dim, hidden_dim=0, threshold=0.5))
    checker.norm = torch.nn.Identity()  # the hand-set weights read the raw features
    with torch.no_grad():
        checker.mlp.weight.zero_()
        checker.mlp.bias.copy_(torch.tensor([0.0, -20.0, -20.0, 0.0]))
        checker.mlp.weight[3, dim - 8] = 40.0  # not_radiograph <- the mean intensity statistic
        checker.mlp.bias[3] = -40.0 * 0.85
    model.input_check = checker
    return Pipeline(model, device="cpu")


def test_rejected_image_gets_an_error_line_the_others_reports_and_resume_retries_it(tmp_path: Path) -> None:
    from PIL import Image

    from crrg.batch import Failure, FailureKind, ReportOptions, run_reports
    from crrg.types import ReportResult

    pipe = _brightness_checked_pipeline()
    scans = tmp_path / "scans"
    scans.mkdir()
    chest_like_png(scans / "a.png", seed=1)
    bright = Image.new("L", (256, 256), 255)
    bright.paste(200, (100, 100, 140, 140))  # some contrast: a constant image is an unreadable input
    bright.save(scans / "blank.png")
    chest_like_png(scans / "c.png", seed=2)
    (scans / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    out = tmp_path / "r.jsonl"
    seen: list = []
    summary = run_reports(pipe, [scans], ReportOptions(out=out, batch_size=3, prompts=[]), on_record=seen.append)
    assert (summary.written, summary.failed, summary.rejected) == (2, 2, 1)
    # the lines stay typed until they are written: reports, and failures of a kind
    assert [type(line).__name__ for line in seen] == ["ReportResult", "Failure", "ReportResult", "Failure"]
    assert [(Path(f.image).name, f.kind) for f in summary.failures] == [("blank.png", FailureKind.REJECTED),
                                                                         ("d.png", FailureKind.UNREADABLE)]
    assert summary.failures[0].input_check is not None and not summary.failures[0].input_check.ok
    assert all(isinstance(line, (ReportResult, Failure)) and line.image.startswith(str(scans)) for line in seen)
    (scans / "d.png").unlink()
    records = {Path(r["image"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records["blank.png"]) == {"image", "error", "input_check", "disclaimer"}
    assert records["blank.png"]["input_check"]["ok"] is False
    assert all(records[n]["input_check"]["ok"] and "report" in records[n] for n in ("a.png", "c.png"))

    # a rerun keeps the two reports and tries the rejected image again; with force it is reported
    with pytest.raises(ValueError, match="batch size"):
        ReportOptions(batch_size=0)
    again = run_reports(pipe, [scans], out=out, prompts=[])
    assert (again.skipped, again.written, again.rejected) == (2, 0, 1)
    forced = run_reports(pipe, [scans], out=out, prompts=[], force=True)
    assert (forced.skipped, forced.written, forced.failed) == (2, 1, 0)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all("error" not in r for r in lines)
    blank = next(r for r in lines if r["image"].endswith("blank.png"))
    assert "report" in blank and blank["input_check"]["ok"] is False
