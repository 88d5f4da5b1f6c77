from __future__ import annotations

import math

import pytest
import torch
from pipeline_fixture import one_thread  # noqa: F401  (the fixture, used by pytestmark)

from crrg.config import from_dict, to_dict
from crrg.decoder import DecoderConfig, ReportDecoder
from crrg.tokenizer import EOS_TOKEN_ID, build_token_ids

SENTENCES = ["The heart is normal in size.", "Small left pleural effusion is seen."]
D = 32


def tiny_config(**overrides) -> DecoderConfig:
    base = dict(
        feature_dim=D, n_layer=2, n_embd=64, n_head=2, n_positions=32, dropout=0.0, max_new_tokens=16,
        token_ids=build_token_ids(SENTENCES + ["No pneumothorax."]),
    )
    return DecoderConfig(**{**base, **overrides})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    """A tiny decoder fitted to write SENTENCES[i] for feature i (fixed seed, ~1 s)."""
    torch.manual_seed(0)
    model = ReportDecoder(tiny_config())
    feats = torch.randn(2, D)  # [2, D]
    tokens = model.encode(SENTENCES)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(40):
        loss = model(feats, tokens=tokens)["loss_lm"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), feats


def test_config_round_trip_and_validation():
    cfg = tiny_config()
    assert from_dict(DecoderConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="divisible"):
        ReportDecoder(tiny_config(n_head=3))
    with pytest.raises(ValueError, match="max_new_tokens"):
        ReportDecoder(tiny_config(max_new_tokens=31))


def test_default_size_with_compact_vocab():
    ids = sorted(set(range(0, 40000, 20)) | {EOS_TOKEN_ID})  # 2,001 ids, like the IU X-ray reports
    model = ReportDecoder(DecoderConfig(token_ids=ids))
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params <= 8_000_000, n_params
    assert model.gpt.lm_head.weight.shape[0] == len(ids) + 1


def test_encode_wraps_pads_and_truncates():
    model = ReportDecoder(tiny_config())
    batch = model.encode(["No pneumothorax.", "The heart is normal in size."])
    eos = model.eos_id
    lengths = batch.attention_mask.sum(1).tolist()
    assert lengths[0] < lengths[1] == batch.input_ids.shape[1]
    for row, n in zip(batch.input_ids.tolist(), lengths):
        assert row[0] == eos and row[n - 1] == eos and eos not in row[1 : n - 1]
    assert model.decode(batch.input_ids[:, 1:]) == ["No pneumothorax.", "The heart is normal in size."]
    long = model.encode([" ".join(["effusion"] * 100)])
    assert long.input_ids.shape[1] == model.config.n_positions - 1


def test_forward_loss_and_gradients_reach_prefix():
    torch.manual_seed(0)
    model = ReportDecoder(tiny_config())
    feats = torch.randn(2, D, requires_grad=True)  # [2, D]
    loss = model(feats, SENTENCES)["loss_lm"]
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert abs(loss.item() - math.log(len(model.vocab))) < 1.5  # near-uniform at init
    loss.backward()
    for proj in [*model.prefix_k, *model.prefix_v]:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert feats.grad.abs().sum() > 0
    other = model(torch.randn(2, D), SENTENCES)["loss_lm"]
    assert other.item() != pytest.approx(loss.item(), abs=1e-6)  # the feature conditions the LM
    with pytest.raises(ValueError, match="exactly one"):
        model(feats)
    with pytest.raises(ValueError, match="features must be"):
        model(torch.randn(2, D + 1), SENTENCES)


def test_overfit_follows_the_feature(trained):
    model, feats = trained
    assert model.generate(feats) == SENTENCES
    assert model.generate(feats.flip(0)) == SENTENCES[::-1]  # conditioning picks the sentence
    assert model.naive_generate(feats) == SENTENCES


def test_batched_generate_equals_one_by_one(trained):
    model, feats = trained
    torch.manual_seed(1)
    mixed = torch.cat([feats, torch.randn(4, D) * 2])  # [6, D]: rows end at different steps
    batched = model.generate(mixed, num_beams=1, max_new_tokens=12)
    assert batched == model.naive_generate(mixed, max_new_tokens=12)
    assert len(set(batched)) > 1
    for i in (0, 5):
        assert model.generate(mixed[i : i + 1], max_new_tokens=12) == [batched[i]]


def test_batched_equals_naive_untrained_and_full_vocab():
    torch.manual_seed(2)
    feats = torch.randn(3, D)  # [3, D]
    compact = ReportDecoder(tiny_config()).eval()
    assert compact.generate(feats, max_new_tokens=8) == compact.naive_generate(feats, max_new_tokens=8)
    full = ReportDecoder(tiny_config(token_ids=None, n_embd=32)).eval()
    assert full.gpt.lm_head.weight.shape[0] == 50257
    out = full.generate(feats, max_new_tokens=5)
    assert out == full.naive_generate(feats, max_new_tokens=5) and all(out)  # min_new_tokens=1


def test_greedy_equals_transformers_generate(trained):
    """The greedy loop that drops finished rows writes exactly transformers' greedy tokens."""
    model, feats = trained
    torch.manual_seed(4)
    mixed = torch.cat([feats, torch.randn(9, D) * 3])  # [11, D]: rows end at different steps
    fast = model.greedy_ids(mixed, 14, 1)  # [11, 14]
    slow = model.hf_generate_ids(mixed, 1, 14, 1)  # [11, <= 14]
    ends = [row.index(model.eos_id) + 1 if model.eos_id in row else len(row) for row in fast.tolist()]
    assert len(set(ends)) > 1  # some rows leave the batch before others
    for row, end, ref in zip(fast.tolist(), ends, slow.tolist()):
        assert row[:end] == ref[:end]
    assert model.decode(fast) == model.decode(slow)
    no_eos = model.greedy_ids(mixed, 6, 6)  # eos blocked for all 6 steps: every row runs to the end
    assert model.eos_id not in no_eos.tolist()[0] and no_eos.tolist() == model.hf_generate_ids(mixed, 1, 6, 6).tolist()


def test_beam_search(trained):
    model, feats = trained
    assert model.generate(feats, num_beams=3) == SENTENCES
    assert model.generate(feats.flip(0), num_beams=3) == SENTENCES[::-1]  # prefix per beam
    torch.manual_seed(3)
    noisy = torch.randn(3, D) * 2  # [3, D]
    beams = model.generate(noisy, num_beams=4, max_new_tokens=10)
    assert len(beams) == 3 and all(isinstance(s, str) and s for s in beams)
    assert model.generate(noisy, num_beams=1) == model.generate(noisy)


def test_empty_batch_and_bad_settings(trained):
    model, _ = trained
    empty = torch.zeros(0, D)
    assert model.generate(empty) == [] and model.naive_generate(empty) == []
    assert model(empty, [])["loss_lm"].item() == 0.0
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.randn(1, D), max_new_tokens=100)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(torch.randn(1, D), num_beams=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(trained):
    model, feats = trained
    gpu = ReportDecoder(model.config).cuda().eval()
    gpu.load_state_dict(model.state_dict())
    loss = gpu(feats.cuda(), SENTENCES)["loss_lm"]
    assert loss.device.type == "cuda" and loss.item() < 0.5
    assert gpu.generate(feats.cuda()) == SENTENCES
    assert gpu.generate(feats.cuda(), num_beams=2) == SENTENCES
