"""train.assemble: CLIP from one model folder, everything else from another."""

from __future__ import annotations

from pathlib import Path

import torch

from crrg.model import CRRGModel
from pipeline_fixture import tiny_model
from train.assemble import assemble


def test_assemble_takes_clip_from_donor(tmp_path: Path) -> None:
    tiny_model(seed=1).save_pretrained(tmp_path / "base")
    tiny_model(seed=2).save_pretrained(tmp_path / "clip")
    assemble(tmp_path / "base", tmp_path / "clip", tmp_path / "out", variant="assembled")
    out = CRRGModel.from_pretrained(str(tmp_path / "out"))
    base = CRRGModel.from_pretrained(str(tmp_path / "base"))
    donor = CRRGModel.from_pretrained(str(tmp_path / "clip"))
    assert out.config.variant == "assembled"
    for key, value in out.state_dict().items():
        source = donor if key.startswith("clip.") else base
        assert torch.equal(value, source.state_dict()[key]), key
    # The two sources really differ, so the check above could fail.
    key = next(k for k, v in base.state_dict().items() if k.startswith("clip.") and v.is_floating_point()
               and v.numel() > 1)
    assert not torch.equal(base.state_dict()[key], donor.state_dict()[key])


def test_assemble_sets_inference_settings_only(tmp_path: Path) -> None:
    import pytest

    tiny_model(seed=1).save_pretrained(tmp_path / "base")
    model = assemble(tmp_path / "base", None, tmp_path / "out", settings={"detector__box_vote_iou": 0.5})
    assert model.detector.config.box_vote_iou == 0.5
    loaded = CRRGModel.from_pretrained(str(tmp_path / "out"))
    assert loaded.config.detector.box_vote_iou == 0.5 and loaded.detector.config.box_vote_iou == 0.5
    with pytest.raises(ValueError, match="shapes"):
        assemble(tmp_path / "base", None, tmp_path / "bad", settings={"decoder__n_layer": 3})


def test_assemble_puts_metrics_on_the_card_and_keeps_a_written_body(tmp_path: Path) -> None:
    import json

    from huggingface_hub import ModelCard

    tiny_model(seed=1).save_pretrained(tmp_path / "base")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("---\nlicense: mit\n---\n\n# Written by hand\n")
    from crrg import card as crrg_card

    shipped = Path(__file__).resolve().parents[1] / "assets" / "crrg-default" / "metrics.json"
    metrics = json.loads(shipped.read_text())  # a complete train.evaluate metrics.json (partial ones are refused)
    metrics["zero_shot"]["pneumonia_vs_normal"]["auc"] = 0.87654
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assemble(tmp_path / "base", None, tmp_path / "out", variant="assembled", metrics=tmp_path / "metrics.json")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.text == "\n# Written by hand\n"
    assert card.data.license == "other" and card.data.library_name == "crrg"
    assert card.data.model_name == "crrg-assembled"
    assert card.data.eval_results == crrg_card.eval_results(metrics)
    assert ("pneumonia_vs_normal", "AUC", 0.8765) in [(r.dataset_config, r.metric_name, r.metric_value)
                                                       for r in card.data.eval_results]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "out" / "LICENSE.md").is_file()
