"""train.train_image_tower: the CLIP image tower fine-tunes on within-source labels through the
pipeline's own tower input, resumes, and reports the frozen-vs-tuned comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pipeline_fixture import labelled_films

from crrg.labels import FINDINGS
from train import train_image_tower as ti


def _labels(positive: list[str]) -> dict[str, int]:
    if not positive:
        return {f: int(f == "no finding") for f in FINDINGS}
    return {"no finding": 0, **{p: 1 for p in positive}}


@pytest.fixture(scope="module")
def prepared_and_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 NIH films (cardiomegaly on every other one) and 6 Kermany films, train and val."""
    films = []
    for k in range(18):
        source = "nih_cxr14" if k < 12 else "kermany_pneumonia"
        positive = (["cardiomegaly"] if source == "nih_cxr14" else ["pneumonia"]) if k % 2 else []
        films.append((source, ("train", "val")[k % 3 == 0], _labels(positive)))
    return labelled_films(tmp_path_factory.mktemp("imagetower"), films)


def test_tower_rows_cap_the_large_sources_per_label_group() -> None:
    class Prepared:
        def images(self, splits):
            rows = [{"image": f"k/{i}.png", "source": "kermany_pneumonia", "split": "train",
                     "labels": _labels(["pneumonia"] if i % 2 else [])} for i in range(40)]
            rows += [{"image": f"k/v{i}.png", "source": "kermany_pneumonia", "split": "val",
                      "labels": _labels([])} for i in range(7)]
            rows += [{"image": f"n/{i}.png", "source": "nih_cxr14", "split": "train", "labels": _labels([])}
                     for i in range(9)]
            return [r for r in rows if r["split"] in splits]

    rows = ti.tower_rows(Prepared(), cap=5)
    kermany_train = [r for r in rows if r["source"] == "kermany_pneumonia" and r["split"] == "train"]
    assert len(kermany_train) == 10  # 5 pneumonia + 5 normal
    assert sum(r["split"] == "val" for r in rows) == 7 and sum(r["source"] == "nih_cxr14" for r in rows) == 9
    assert rows == ti.tower_rows(Prepared(), cap=5)  # a fixed draw


def test_augment_keeps_shape_and_only_moves_the_image_a_little() -> None:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blobs = [torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.2) for cx, cy in ((-0.3, 0.2), (0.4, -0.1), (0, 0.5), (0.2, 0.3))]
    images = torch.stack(blobs)[:, None]  # smooth images: a small shift moves them a little
    out = ti.augment(images, 0.05, g)
    assert out.shape == images.shape and not torch.equal(out, images)
    assert (out - images).abs().mean() < 0.5 * (images - images.flip(0)).abs().mean()
    assert torch.allclose(ti.augment(images, 0.0, g), images, atol=1e-5)  # no strength: the identity


def test_main_trains_both_towers_resumes_and_compares_with_the_frozen_one(prepared_and_weights, tmp_path: Path) -> None:
    from crrg.model import CRRGModel
    from crrg.pipeline import load
    from train.datasets import PreparedData

    prep, weights = prepared_and_weights
    out = tmp_path / "run"
    args = ["--prepared", str(prep), "--weights", str(weights), "--out", str(out), "--threads", "1",
            "--set", "batch_size=6", "--set", "eval_every=4", "--set", "lr=0.003", "--set", "text_lr=0.003"]
    ti.main(args + ["--set", "steps=4"])
    first = json.loads((out / "metrics.json").read_text())
    ti.main(args + ["--set", "steps=16"])  # resumes at step 4 from the checkpoint
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [0, 4, 8, 12, 16]
    assert metrics["losses"][:4] == first["losses"] and len(metrics["losses"]) == 16
    assert sum(metrics["losses"][-4:]) < sum(metrics["losses"][:4])  # the loss falls
    assert set(metrics["probe"]) == {"frozen", "tuned", "frozen_mean", "tuned_mean"}
    # the cached tower input is exactly what the pipeline's tower sees
    images = torch.load(out / "images.pt")
    pipe = load(str(weights), device="cpu")
    key = "nih_cxr14/img1.png"
    expected = pipe.model.clip._tower_input(pipe.stack([pipe.prepare(PreparedData(prep).path(key))]).float())[0]
    assert torch.allclose(images[key].float(), expected, atol=2e-3)
    base, new = CRRGModel.from_pretrained(str(weights)), CRRGModel.from_pretrained(str(out / "model"))
    for k, v in base.state_dict().items():  # only CLIP may change
        if not k.startswith("clip."):
            assert torch.equal(v, new.state_dict()[k]), k
