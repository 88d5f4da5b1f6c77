"""Every training stage on a tiny generated prepared folder: loss falls, the model saves and
loads, --resume continues, the paired-data path works, 2-process gloo DDP works.

The stages chain as in a real run: stage 1 -> stage 2 -> LM (vocabulary) -> stage 3; CLIP.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crrg.model import CRRGModel
from crrg.regions import REGIONS
from train import pretrain_lm, train_clip, train_decoder, train_detector
from train.assemble import assemble
from train.datasets import PreparedData, merge_records
from train.train_decoder import DecoderRunConfig, SentenceFields

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fixture import make_prepared, save_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train" / "configs"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread per run: on a busy 2-core machine two threads per process thrash."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    prepared = make_prepared(root / "open")
    paired = make_prepared(root / "paired", paired=True, boxed=4, unboxed=0, seed=1)
    return {"root": root, "prepared": prepared, "paired": paired, "init": save_tiny_model(root / "init")}


def run(main, config: str, prepared: Path, out: Path, *extra: str) -> list[dict]:
    main(["--config", str(CONFIGS / config), "--prepared", str(prepared), "--out", str(out),
          "--threads", "1", "--device", "cpu", "--log-level", "WARNING", *extra])
    return json.loads((out / "history.json").read_text())


def series(history: list[dict], *keys: str) -> list[float]:
    return [sum(row[k] for k in keys) for row in history if all(k in row for k in keys)]


def falls(values: list[float], window: int = 4) -> bool:
    return sum(values[-window:]) / window < sum(values[:window]) / window


def loads(folder: Path) -> CRRGModel:
    model = CRRGModel.from_pretrained(str(folder))
    assert not model.training
    return model


@pytest.fixture(scope="module")
def stage1(work: dict[str, Path]) -> Path:
    out = work["root"] / "stage1"
    history = run(train_detector.main, "detector_tiny.json", work["prepared"], out, "--stage", "1",
                  "--init", str(work["init"]), "--max-steps", "20")
    assert falls(series(history, "loss"), 5), series(history, "loss")
    return out


def test_stage1_detector(stage1: Path) -> None:
    model = loads(stage1 / "model")
    with torch.no_grad():
        found = model.detector(torch.randn(1, 1, 128, 128))
    assert found.features.shape == (1, len(REGIONS), 32)
    timing = json.loads((stage1 / "timing.json").read_text())
    assert timing["step"] == 20 and timing["seconds_per_image"] > 0
    assert (stage1 / "loss.png").stat().st_size > 0 and (stage1 / "train.log").stat().st_size > 0


@pytest.fixture(scope="module")
def stage2(work: dict[str, Path], stage1: Path) -> Path:
    out = work["root"] / "stage2"
    history = run(train_detector.main, "region_heads_tiny.json", work["prepared"], out, "--stage", "2",
                  "--init", str(stage1 / "checkpoint.pt"), "--max-steps", "12")  # exact fp32 start
    heads = series(history, "loss_selection", "loss_abnormality")
    assert len(heads) == 12 and falls(heads), heads
    assert any("loss_classifier" in row for row in history)  # boxed images keep detector losses
    return out


def test_stage2_region_heads(stage2: Path, stage1: Path) -> None:
    before, after = loads(stage1 / "model"), loads(stage2 / "model")
    assert not torch.equal(before.selection.mlp[0].weight, after.selection.mlp[0].weight)


@pytest.fixture(scope="module")
def lm(work: dict[str, Path], stage2: Path) -> Path:
    out = work["root"] / "lm"
    history = run(pretrain_lm.main, "lm_tiny.json", work["prepared"], out, "--init", str(stage2 / "model"),
                  "--max-steps", "4")
    history = run(pretrain_lm.main, "lm_tiny.json", work["prepared"], out, "--resume", "--max-steps", "15")
    steps = [row["step"] for row in history if "loss" in row]
    assert steps == list(range(1, 16))  # resumed at step 5, no step repeated or lost
    assert falls(series(history, "loss_lm")), series(history, "loss_lm")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 15 and state["stage"] == "lm"
    return out


def test_lm_builds_vocabulary(lm: Path, stage2: Path) -> None:
    model = loads(lm / "model")
    ids = model.config.decoder.token_ids
    assert ids is not None and 20 < len(ids) < 200  # only the fixture sentences' tokens
    assert torch.equal(model.detector.rpn.head.conv[0][0].weight,
                       loads(stage2 / "model").detector.rpn.head.conv[0][0].weight)  # rest untouched


def test_stage3_open_data(work: dict[str, Path], stage2: Path, lm: Path) -> None:
    out = work["root"] / "stage3"
    history = run(train_decoder.main, "decoder_tiny.json", work["prepared"], out, "--init", str(stage2 / "model"),
                  "--decoder-from", str(lm / "model"), "--max-steps", "10", "--set", "cache_features=true")
    assert falls(series(history, "loss_lm"), 3), series(history, "loss_lm")
    model = loads(out / "model")
    assert model.config.decoder.token_ids == loads(lm / "model").config.decoder.token_ids
    text = model.decoder.generate(torch.randn(2, 32))
    assert len(text) == 2 and all(isinstance(t, str) for t in text)


def test_stage3_paired_data(work: dict[str, Path], stage2: Path, lm: Path) -> None:
    prepared = PreparedData(work["paired"])
    fields = SentenceFields(prepared, DecoderRunConfig())
    records = merge_records(prepared.regions("train"), prepared.images("train"))
    record = records[0]
    own = [s for s in prepared.sentences(None) if s["image"] == record["image"]]
    sentences = fields(record, random.Random(0))["sentences"]
    for region, text in zip(REGIONS, sentences):  # the image's own sentences, never matched ones
        expected = " ".join(s["text"] for s in own if region in s["regions"]) or None
        assert text == expected
    out = work["root"] / "stage3_paired"
    history = run(train_decoder.main, "decoder_tiny.json", work["paired"], out, "--init", str(stage2 / "model"),
                  "--decoder-from", str(lm / "model"), "--max-steps", "8",
                  "--set", "open_matching=false", "--set", "train_classifiers=true")
    assert falls(series(history, "loss_lm"), 3), series(history, "loss_lm")
    assert all("loss_selection" in row for row in history if "loss" in row)
    loads(out / "model")


def test_clip_fusion_trains_in_stage2_and_feeds_stage3(work: dict[str, Path], stage1: Path, lm: Path) -> None:
    init = work["root"] / "fusion_init"
    assemble(stage1 / "model", None, init, clip_fusion=True)
    out = work["root"] / "stage2_fusion"
    history = run(train_detector.main, "region_heads_tiny.json", work["prepared"], out, "--stage", "2",
                  "--init", str(init), "--max-steps", "6", "--set", "train_detector=false")
    assert len(series(history, "loss_abnormality")) == 6
    before, after = loads(init), loads(out / "model")
    assert float(before.fusion.net[-1].weight.detach().abs().sum()) == 0.0
    assert float(after.fusion.net[-1].weight.detach().abs().sum()) > 0.0  # the fusion trained
    for key, value in before.clip.state_dict().items():  # CLIP never trains through the fusion
        assert torch.equal(value, after.clip.state_dict()[key]), key
    out3 = work["root"] / "stage3_fusion"
    history = run(train_decoder.main, "decoder_tiny.json", work["prepared"], out3, "--init", str(out / "model"),
                  "--decoder-from", str(lm / "model"), "--max-steps", "3")
    assert len(series(history, "loss_lm")) == 3
    final = loads(out3 / "model")
    assert final.config.clip_fusion and torch.equal(final.fusion.net[-1].weight, after.fusion.net[-1].weight)


def test_clip(work: dict[str, Path]) -> None:
    prepared = PreparedData(work["prepared"])
    records = train_clip.clip_records(prepared, "train", pair_repeat=3)
    test_images = {r["image"] for r in prepared.images(None) if r["split"] != "train"}
    assert test_images and not test_images & {r["image"] for r in records}  # never a test image
    paired = sum(1 for r in prepared.images("train") if r.get("text"))
    assert len(records) == len(prepared.images("train")) + 2 * paired
    out = work["root"] / "clip"
    history = run(train_clip.main, "clip_tiny.json", work["prepared"], out, "--init", str(work["init"]),
                  "--max-steps", "12")
    assert falls(series(history, "loss_label")), series(history, "loss_label")
    assert any("loss_pair" in row for row in history)
    model = loads(out / "model")
    probs = model.clip.zero_shot(torch.randn(1, 1, 64, 64), ["pneumonia"])
    assert probs.shape == (1, 1)


def test_two_process_gloo_ddp(work: dict[str, Path], stage1: Path) -> None:
    """torchrun, 2 CPU processes on gloo, stage 2 (mixed boxed / unboxed batches, so ranks log
    different loss keys and leave different parameters unused)."""
    out = work["root"] / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29500 + os.getpid() % 1000), "-m", "train.train_detector", "--stage", "2",
           "--config", str(CONFIGS / "region_heads_tiny.json"), "--prepared", str(work["prepared"]),
           "--init", str(stage1 / "model"), "--out", str(out), "--max-steps", "3", "--threads", "1",
           "--device", "cpu", "--log-level", "WARNING"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and [r["step"] for r in state["history"] if "loss" in r] == [1, 2, 3]
    timing = json.loads((out / "timing.json").read_text())
    assert timing["world_size"] == 2 and timing["total_steps"] == 50 * 2  # 14 images / 2 ranks / 4
    model = loads(out / "model")
    before = loads(stage1 / "model").selection.mlp[0].weight
    assert not torch.equal(model.selection.mlp[0].weight, before)


def test_lm_fresh_model_gets_vocabulary_first(work: dict[str, Path]) -> None:
    out = work["root"] / "lm_fresh"  # no --init: the run config's model_variant ("tiny")
    run(pretrain_lm.main, "lm_tiny.json", work["prepared"], out, "--max-steps", "2")
    model = loads(out / "model")
    ids = model.config.decoder.token_ids
    assert model.config.variant == "tiny" and ids is not None and 20 < len(ids) < 200


def test_fresh_detector_backbone_from_imagenet() -> None:
    from train_fixture import tiny_config

    from crrg.backbones import lite0_imagenet_state_dict

    model = CRRGModel(tiny_config())
    train_detector.init_backbone(model)
    stem = lite0_imagenet_state_dict(in_chans=1)["conv_stem.weight"]
    weights = [p for n, p in model.detector.backbone.named_parameters() if p.shape == stem.shape]
    assert any(torch.equal(w, stem) for w in weights)
