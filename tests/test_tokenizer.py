from __future__ import annotations

import pytest
import torch

from crrg.tokenizer import (
    EOS_TOKEN_ID,
    GPT2_VOCAB_SIZE,
    UNK_COMPACT_ID,
    CompactVocab,
    build_token_ids,
    load_gpt2_tokenizer,
)

TEXTS = ["The heart is normal in size.", "No pleural effusion or pneumothorax.", "The lungs are clear."]


def test_real_gpt2_vocabulary():
    tok = load_gpt2_tokenizer()
    assert len(tok) == GPT2_VOCAB_SIZE == 50257
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == EOS_TOKEN_ID
    assert tok.decode(tok("No pleural effusion.")["input_ids"]) == "No pleural effusion."
    assert load_gpt2_tokenizer() is tok  # cached


def test_build_token_ids_counts_and_eos():
    tok = load_gpt2_tokenizer()
    ids = build_token_ids(TEXTS, tok)
    used = {i for row in tok(TEXTS, add_special_tokens=False)["input_ids"] for i in row}
    assert ids == sorted(used | {EOS_TOKEN_ID})
    # "The" (464) starts two sentences; "heart" appears once
    frequent = build_token_ids(TEXTS, tok, min_count=2)
    assert 464 in frequent and EOS_TOKEN_ID in frequent
    assert tok(" heart", add_special_tokens=False)["input_ids"][0] not in frequent
    assert set(frequent) < set(ids)
    assert build_token_ids([], tok) == [EOS_TOKEN_ID]
    with pytest.raises(ValueError, match="min_count"):
        build_token_ids(TEXTS, tok, min_count=0)


def test_compact_vocab_round_trip_and_unknown():
    tok = load_gpt2_tokenizer()
    vocab = CompactVocab(build_token_ids(TEXTS, tok))
    assert len(vocab) == len(vocab.token_ids) + 1
    gpt2 = torch.tensor(tok("The lungs are clear.", add_special_tokens=False)["input_ids"] + [EOS_TOKEN_ID])
    compact = vocab.to_compact(gpt2)
    assert compact.max() < len(vocab) and (compact != UNK_COMPACT_ID).all()
    assert torch.equal(vocab.to_gpt2(compact), gpt2)
    assert vocab.to_gpt2(torch.tensor([vocab.eos_id])).item() == EOS_TOKEN_ID
    unseen = torch.tensor(tok(" cardiomegaly", add_special_tokens=False)["input_ids"])
    assert (vocab.to_compact(unseen) == vocab.unk_id).all()
    assert vocab.to_gpt2(torch.tensor([vocab.unk_id])).item() == -1


def test_compact_vocab_adds_eos_and_rejects_bad_ids():
    vocab = CompactVocab([5, 3, 3])
    assert vocab.token_ids == [3, 5, EOS_TOKEN_ID] and len(vocab) == 4
    with pytest.raises(ValueError, match="GPT-2 ids"):
        CompactVocab([GPT2_VOCAB_SIZE])
