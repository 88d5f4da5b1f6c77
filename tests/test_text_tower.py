"""train.train_text_tower and train.label_decisions: the text tower learns the label decisions on frozen image embeddings,
the image side stays bit-identical, the embedding cache is the pipeline's and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pipeline_fixture import labelled_films, tiny_model

from crrg.labels import FINDINGS
from train import label_decisions as ld
from train import train_text_tower as tt


def _labels(positive: list[str]) -> dict[str, int]:
    if not positive:
        return {f: int(f == "no finding") for f in FINDINGS}
    return {"no finding": 0, **{p: 1 for p in positive}}


def _synthetic(clip, n: int = 160, seed: int = 0) -> tuple[ld.EmbeddingSet, ld.EmbeddingSet]:
    """NIH images whose cardiomegaly / effusion truth is a direction in embedding space, and
    Kermany images whose pneumonia truth is another; train and val halves."""
    g = torch.Generator().manual_seed(seed)
    dim = clip.config.embed_dim
    u, v, w = F.normalize(torch.randn(3, dim, generator=g), dim=-1)
    rows, emb = [], []
    for i in range(n):
        e = F.normalize(torch.randn(dim, generator=g), dim=-1)
        split = "train" if (i // 4) % 2 else "val"
        if i % 4 < 3:
            positive = [name for name, d in (("cardiomegaly", u), ("pleural effusion", v)) if float(e @ d) > 0.05]
            rows.append({"image": f"nih/{i}.png", "source": "nih_cxr14", "split": split, "labels": _labels(positive)})
        else:
            positive = ["pneumonia"] if float(e @ w) > 0 else []
            rows.append({"image": f"k/{i}.png", "source": "kermany_pneumonia", "split": split,
                         "labels": _labels(positive)})
        emb.append(e)
    data = ld.EmbeddingSet.build(rows, {r["image"]: e for r, e in zip(rows, emb)}, ld.TRAIN_LABELS)
    return data.where("train"), data.where("val")


def test_text_tower_learns_the_label_decisions_and_keeps_the_image_tower(tmp_path: Path) -> None:
    torch.manual_seed(0)
    clip = tiny_model().clip.float()
    visual = {k: v.clone() for k, v in clip.model.state_dict().items() if k.startswith("visual.")}
    train, val = _synthetic(clip)
    with torch.no_grad():
        before = ld.label_loss(ld.decision_logits(clip, train.embedding, train.labels), train.target, train.known)
    start = ld.validation_scores(clip, val)
    cfg = tt.TextTowerConfig(steps=60, lr=2e-3, eval_every=20, images_per_step=64, max_task_drop=1.0)
    best, state = tt.train_text_tower(clip, train, val, cfg, tmp_path / "checkpoint.pt")
    with torch.no_grad():
        after = ld.label_loss(ld.decision_logits(clip, train.embedding, train.labels), train.target, train.known)
    assert float(after) < float(before)
    assert [h["step"] for h in state.history] == [0, 20, 40, 60]
    assert state.best_step > 0 and state.best_score > start["nih_mean_auc"] + 0.1
    assert set(start["nih"]) == {"cardiomegaly", "pleural effusion"}
    assert "pneumonia_vs_normal" in start["tasks"]
    for k, v in clip.model.state_dict().items():
        if k.startswith("visual."):
            assert torch.equal(v, visual[k]), k  # the image side is untouched
    assert not any(k.startswith("visual.") for k in best)
    # resume: the checkpoint holds step 60; asking for 80 trains 20 more steps, not 80
    cfg2 = tt.TextTowerConfig(**{**cfg.__dict__, "steps": 80})
    _, resumed = tt.train_text_tower(clip, train, val, cfg2, tmp_path / "checkpoint.pt")
    assert [h["step"] for h in resumed.history] == [0, 20, 40, 60, 80]  # step 60 is not evaluated twice


def test_a_task_that_falls_makes_a_step_inadmissible() -> None:
    start = {"tasks": {"pneumonia_vs_normal": 0.95, "covid-19_vs_normal": 0.9}}
    assert ld.admissible({"tasks": {"pneumonia_vs_normal": 0.94, "covid-19_vs_normal": 0.95}}, start, 0.02)
    assert not ld.admissible({"tasks": {"pneumonia_vs_normal": 0.92, "covid-19_vs_normal": 0.95}}, start, 0.02)
    assert not ld.admissible({"tasks": {"pneumonia_vs_normal": 0.99}}, start, 0.02)  # a task not scored


@pytest.fixture(scope="module")
def prepared_and_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    films = []
    for k in range(10):
        source = "nih_cxr14" if k < 6 else "kermany_pneumonia"
        positive = (["cardiomegaly"] if source == "nih_cxr14" else ["pneumonia"]) if k % 2 else []
        films.append((source, ("train", "val")[k % 3 == 0], _labels(positive)))
    prep, weights = labelled_films(tmp_path_factory.mktemp("texttower"), films)
    lines = [json.loads(x) for x in (prep / "images.jsonl").read_text().splitlines()]
    lines[1].update(text="Patchy opacity in the right lower lobe.", text_kind="note")
    lines.append({**lines[0], "image": "nih_cxr14/missing.png", "patient": "gone"})  # unreadable: left out
    (prep / "images.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return prep, weights


def test_embedding_cache_is_the_pipelines_embedding_and_resumes(prepared_and_weights, tmp_path: Path,
                                                              monkeypatch) -> None:
    from crrg.pipeline import load
    from train.datasets import PreparedData

    prep, weights = prepared_and_weights
    prepared = PreparedData(prep)
    rows = ld.embedding_rows(prepared)
    assert len(rows) == 11
    found = tt.cache_embeddings(weights, prepared, rows, tmp_path / "emb", batch_size=4, workers=0)
    assert len(found) == 10 and "nih_cxr14/missing.png" not in found
    pipe = load(str(weights), device="cpu")
    key = rows[3]["image"]
    expected, _ = pipe.embed(pipe.stack([pipe.prepare(prepared.path(key))]))
    assert torch.allclose(found[key], expected[0].float(), atol=1e-5)

    def no_model(*args, **kwargs):
        raise AssertionError("a finished shard was recomputed")

    monkeypatch.setattr("crrg.pipeline.load", no_model)
    again = tt.cache_embeddings(weights, prepared, rows, tmp_path / "emb")
    assert again.keys() == found.keys()


def test_main_writes_a_model_whose_image_side_is_unchanged(prepared_and_weights, tmp_path: Path) -> None:
    from crrg.model import CRRGModel

    prep, weights = prepared_and_weights
    out = tmp_path / "run"
    tt.main(["--prepared", str(prep), "--weights", str(weights), "--out", str(out), "--threads", "1",
             "--set", "steps=4", "--set", "eval_every=2", "--set", "lr=0.01"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [0, 2, 4]
    assert metrics["train_images"] + metrics["val_images"] == 10
    base, new = CRRGModel.from_pretrained(str(weights)), CRRGModel.from_pretrained(str(out / "model"))
    old_state, new_state = base.state_dict(), new.state_dict()
    assert old_state.keys() == new_state.keys()
    for k, v in old_state.items():
        if not k.startswith("clip.model.") or k.startswith("clip.model.visual."):
            assert torch.equal(v, new_state[k]), k
    assert new.config.calibration.zero_shot is not None


def test_label_truth_comes_only_from_sources_that_assess_the_label() -> None:
    rows = [{"image": "n1", "source": "nih_cxr14", "split": "train", "labels": _labels(["cardiomegaly"])},
            {"image": "n2", "source": "nih_cxr14", "split": "train", "labels": _labels([])},
            {"image": "k1", "source": "kermany_pneumonia", "split": "train", "labels": _labels([])},
            {"image": "k2", "source": "kermany_pneumonia", "split": "train", "labels": _labels(["pneumonia"])}]
    assert {p for p in ld.assessed(rows) if p[1] != "no finding"} == {("nih_cxr14", "cardiomegaly"),
                                                                      ("kermany_pneumonia", "pneumonia")}
    emb = {r["image"]: torch.zeros(4) for r in rows}
    labels = ("cardiomegaly", "pneumonia")
    masked = ld.EmbeddingSet.build(rows, emb, labels)
    # the Kermany normal says nothing about cardiomegaly; NIH says nothing about pneumonia here
    assert masked.known.tolist() == [[True, False], [True, False], [False, True], [False, True]]
    assert masked.target[:, 0].tolist()[:2] == [1.0, 0.0]
    pooled = ld.EmbeddingSet.build(rows, emb, labels, within_source=False)
    assert pooled.known[2].tolist() == [True, True]  # every normal is a negative for every label
