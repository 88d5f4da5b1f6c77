"""Sharded report runs (crrg.shards): a rank whose shard fails waits for the busy one, and both
exit with the job's status. Two real ``python -m crrg report`` processes joined by gloo, set up as
torchrun sets them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so each rank's own exit code and
exit time can be checked."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crrg.shards import JobStatus, agree, shard
from pipeline_fixture import chest_like_png, tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _blank_rejecting_weights(folder: Path) -> Path:
    """The tiny model with a saved input checker that rejects over-exposed (mostly white) images
    and accepts the chest-like ones: P(not a radiograph) rises with the share of near-white
    pixels, the last input feature (after the checker's LayerNorm it is above 0 only for them)."""
    import torch

    from crrg.input_check import InputCheckConfig, InputChecker

    model = tiny_model()
    dim = model.config.clip.embed_dim + 29 + 8
    config = InputCheckConfig(feature_dim=dim, hidden_dim=0, threshold=0.5)
    checker = InputChecker(config)
    with torch.no_grad():
        checker.mlp.weight.zero_()
        checker.mlp.bias.copy_(torch.tensor([0.0, -20.0, -20.0, 0.0]))
        checker.mlp.weight[3, dim - 1] = 40.0  # not_radiograph <- share of near-white pixels
    model.config = dataclasses.replace(model.config, input_check=config)
    model.input_check = checker
    model.save_pretrained(folder)
    return folder


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _busy_and_broken_scans(root: Path, busy: int) -> tuple[list[str], list[str]]:
    """Files dealt (sorted, every 2nd) so that rank 0 holds ``busy`` chest-like images and rank 1
    one over-exposed image the input check rejects plus unreadable files only."""
    from PIL import Image

    from crrg.batch import discover

    root.mkdir()
    for i in range(busy):
        chest_like_png(root / f"{2 * i:02d}.png", seed=i)
    blank = Image.new("L", (256, 256), 255)
    blank.paste(200, (100, 100, 140, 140))  # some contrast: a constant image is unreadable
    blank.save(root / "01-overexposed.png")
    for i in range(1, busy):
        bad = root / f"{2 * i + 1:02d}-unreadable.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n cut short" if i % 2 else b"not an image at all")
    paths = discover([root])
    return shard(paths, 0, 2), shard(paths, 1, 2)


@pytest.mark.slow
def test_a_failing_shard_waits_for_the_busy_one_and_both_exit_1(tmp_path: Path) -> None:
    weights = _blank_rejecting_weights(tmp_path / "w")
    ranks = _busy_and_broken_scans(tmp_path / "scans", busy=24)
    assert all("unreadable" not in Path(p).name for p in ranks[0]) and len(ranks[0]) == 24
    assert sum("unreadable" in Path(p).name for p in ranks[1]) == 23 and len(ranks[1]) == 24
    out = tmp_path / "parts"
    port = _free_port()
    procs = []
    deadline = time.monotonic() + 300
    for rank in (1, 0):  # the failing rank starts first, and writes its whole shard before rank 0 starts
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        cmd = [sys.executable, "-m", "crrg", "report", str(tmp_path / "scans"), "--weights", str(weights),
               "--out", f"{out}/", "--batch-size", "1", "--workers", "0", "--prompts", "pneumonia"]
        procs.insert(0, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
        while rank == 1 and _lines(out / "part-1.jsonl") < len(ranks[1]) and procs[0].poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    ended: dict[int, float] = {}
    while len(ended) < 2 and time.monotonic() < deadline:
        for rank, proc in enumerate(procs):
            if rank not in ended and proc.poll() is not None:
                ended[rank] = time.time()
        time.sleep(0.05)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    errs = [proc.communicate()[1] for proc in procs]
    assert len(ended) == 2, errs

    lines = [[json.loads(line) for line in (out / f"part-{r}.jsonl").read_text().splitlines()] for r in range(2)]
    # the busy shard finished: every one of its images has its report line, in order
    assert [r["image"] for r in lines[0]] == ranks[0]
    assert all("report" in r and "error" not in r for r in lines[0]), errs[0][-2000:]
    # the failing shard wrote its error lines: the rejected image with its verdict, the others without
    assert [r["image"] for r in lines[1]] == ranks[1]
    assert all("error" in r and "report" not in r for r in lines[1])
    rejected = [r for r in lines[1] if "input_check" in r]
    assert [Path(r["image"]).name for r in rejected] == ["01-overexposed.png"]
    assert rejected[0]["input_check"]["ok"] is False
    # it was done while the busy shard still worked (24 reports against one), yet did not leave
    # before the busy shard's last line was written; both exit with the job's code
    last_write = [(out / f"part-{r}.jsonl").stat().st_mtime for r in range(2)]
    assert last_write[1] < last_write[0], "setup: the failing shard should finish first"
    assert ended[1] >= last_write[0]
    assert [proc.returncode for proc in procs] == [1, 1], errs
    assert "all 2 ranks: 24 reports, 24 failed (1 not a frontal chest radiograph) (of 48 images); exit code 1" \
        in errs[0]


def test_agree_outside_torchrun_is_the_rank_s_own_status(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    status = JobStatus(code=1, total=3, written=2, failed=1)
    assert agree(status) is status
    monkeypatch.setenv("WORLD_SIZE", "2")  # WORLD_SIZE without a rendezvous address: nothing to join
    assert agree(status) is status
