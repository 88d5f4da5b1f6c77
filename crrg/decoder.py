"""Region-conditioned sentence decoder: a small GPT-2 with pseudo self-attention.

Pseudo self-attention (Ziegler et al. 2019, used by RGRG, Tanida et al. 2023): in every layer
``i`` the region feature is projected to one extra key and one extra value,
``W_k[i](f), W_v[i](f)`` shaped ``[N, heads, 1, head_dim]``, that every token can attend to. That
is exactly a length-1 prefix in GPT-2's key/value cache, so the prefix is passed to an unmodified
``transformers.GPT2LMHeadModel`` as a ``DynamicCache`` with an attention mask one longer than the
tokens. Token positions therefore start at 1, the same in training and in generation.

Sentences are ``<|endoftext|> tokens <|endoftext|>`` (GPT-2's bos = eos = pad). With
``DecoderConfig.token_ids`` set, the model works in a compact vocabulary (see
:class:`crrg.tokenizer.CompactVocab`); with ``None`` it uses all 50,257 GPT-2 tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import DynamicCache, GenerationConfig, GPT2Config, GPT2LMHeadModel

from crrg.tokenizer import EOS_TOKEN_ID, GPT2_VOCAB_SIZE, CompactVocab, load_gpt2_tokenizer

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class DecoderConfig:
    feature_dim: int = 256  # D of the region features
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 64  # position 0 is the feature prefix; tokens use 1..n_positions-1
    dropout: float = 0.1
    feature_norm: bool = True  # LayerNorm on the feature before the k/v projections
    token_ids: list[int] | None = None  # compact vocabulary (kept GPT-2 ids); None = full
    max_new_tokens: int = 40
    min_new_tokens: int = 1  # eos is blocked before this many tokens (1: no empty sentence)
    num_beams: int = 1
    attn_implementation: str = "sdpa"  # "sdpa" | "eager"


@dataclass
class TokenBatch:
    """Model-vocabulary ids of wrapped sentences, right-padded."""

    input_ids: torch.Tensor  # [N, T] int64
    attention_mask: torch.Tensor  # [N, T] int64, 1 = real token


class ReportDecoder(nn.Module):
    """GPT-2 that writes one sentence per region feature.

    ``forward(features [N, D], texts)`` -> ``{"loss_lm": scalar}``;
    ``generate(features [N, D])`` -> ``N`` sentences (batched, KV cache, greedy or beam search).
    """

    def __init__(self, config: DecoderConfig | None = None):
        super().__init__()
        self.config = config = config or DecoderConfig()
        self._validate(config)
        self.vocab = CompactVocab(config.token_ids) if config.token_ids is not None else None
        vocab_size = len(self.vocab) if self.vocab is not None else GPT2_VOCAB_SIZE
        self.eos_id = self.vocab.eos_id if self.vocab is not None else EOS_TOKEN_ID
        gpt_config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            bos_token_id=self.eos_id,
            eos_token_id=self.eos_id,
            pad_token_id=None,  # padding is always masked; None also silences a pad heuristic
            activation_function="gelu_pytorch_tanh",  # = GPT-2 "gelu_new", one fused op
            attn_implementation=config.attn_implementation,
        )
        self.gpt = GPT2LMHeadModel(gpt_config)
        self.gpt.loss_type = "ForCausalLM"  # the class name does not tell transformers which loss
        d = config.feature_dim
        self.feature_norm = nn.LayerNorm(d) if config.feature_norm else nn.Identity()
        self.prefix_k = nn.ModuleList(nn.Linear(d, config.n_embd) for _ in range(config.n_layer))
        self.prefix_v = nn.ModuleList(nn.Linear(d, config.n_embd) for _ in range(config.n_layer))
        self.head_dim = config.n_embd // config.n_head

    @staticmethod
    def _validate(config: DecoderConfig) -> None:
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        if not 1 <= config.max_new_tokens <= config.n_positions - 2:
            raise ValueError(
                f"max_new_tokens must be in [1, n_positions - 2 = {config.n_positions - 2}], "
                f"got {config.max_new_tokens}"
            )
        if not 0 <= config.min_new_tokens <= config.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in [0, max_new_tokens = {config.max_new_tokens}], "
                f"got {config.min_new_tokens}"
            )
        if config.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {config.num_beams}")
        if config.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"attn_implementation must be 'sdpa' or 'eager', got {config.attn_implementation!r}"
            )

    @property
    def tokenizer(self):
        return load_gpt2_tokenizer()

    # ---- vocabulary -------------------------------------------------------------------------

    def encode(self, texts: list[str]) -> TokenBatch:
        """Tokenise sentences as ``eos + tokens + eos`` in model ids, right-padded with eos.

        Sequences longer than ``n_positions - 1`` are cut (and then carry no final eos).
        """
        max_len = self.config.n_positions - 1
        texts = [t.strip() for t in texts]
        gpt2 = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        rows = [[EOS_TOKEN_ID, *ids, EOS_TOKEN_ID][:max_len] for ids in gpt2]
        width = max((len(r) for r in rows), default=1)
        input_ids = torch.full((len(rows), width), EOS_TOKEN_ID, dtype=torch.long)  # [N, T]
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [N, T]
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        if self.vocab is not None:
            input_ids = self.vocab.to_compact(input_ids)
        return TokenBatch(input_ids, attention_mask)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Model ids ``[N, L]`` of generated tokens (no leading bos) -> text up to the first eos."""
        texts = []
        for row in ids.tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            if self.vocab is not None:
                gpt2 = self.vocab.to_gpt2(torch.tensor(row, dtype=torch.long)).tolist()
                row = [i for i in gpt2 if i >= 0]  # drop <unk>
            texts.append(self.tokenizer.decode(row).strip())
        return texts

    # ---- pseudo self-attention prefix -------------------------------------------------------

    def prefix_cache(self, features: torch.Tensor, repeat: int = 1) -> DynamicCache:
        """One key/value slot per layer from the features: a length-1 ``DynamicCache``.

        ``repeat`` repeats each region's prefix consecutively (beam search: N * beams rows).
        """
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"features must be [N, {self.config.feature_dim}], got {tuple(features.shape)}"
            )
        feats = self.feature_norm(features)  # [N, D]
        if repeat > 1:
            feats = feats.repeat_interleave(repeat, dim=0)  # [N * repeat, D]
        n, heads = feats.shape[0], self.config.n_head
        layers = []
        for proj_k, proj_v in zip(self.prefix_k, self.prefix_v):
            k = proj_k(feats).view(n, heads, 1, self.head_dim)  # [N, heads, 1, head_dim]
            v = proj_v(feats).view(n, heads, 1, self.head_dim)  # [N, heads, 1, head_dim]
            layers.append((k, v))
        return DynamicCache(layers)

    # ---- training ---------------------------------------------------------------------------

    def forward(
        self,
        features: torch.Tensor,
        texts: list[str] | None = None,
        tokens: TokenBatch | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced LM loss (mean over real target tokens) -> ``{"loss_lm": scalar}``.

        Give either ``texts`` (N sentences) or pre-tokenised ``tokens`` (from :meth:`encode`).
        """
        if (texts is None) == (tokens is None):
            raise ValueError("give exactly one of texts (list of N sentences) or tokens (TokenBatch)")
        if tokens is None:
            tokens = self.encode(texts)
        device = features.device
        input_ids = tokens.input_ids.to(device)  # [N, T]
        mask = tokens.attention_mask.to(device)  # [N, T]
        if input_ids.shape[0] != features.shape[0]:
            raise ValueError(f"{features.shape[0]} features but {input_ids.shape[0]} sentences")
        if input_ids.shape[0] == 0:
            return {"loss_lm": features.sum() * 0.0}
        labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)  # [N, T]
        cache = self.prefix_cache(features)
        prefix_mask = torch.ones_like(mask[:, :1])  # [N, 1]
        out = self.gpt(
            input_ids=input_ids,
            attention_mask=torch.cat([prefix_mask, mask], dim=1),  # [N, 1 + T]
            cache=cache,
            labels=labels,
            use_cache=False,
        )
        return {"loss_lm": out.loss}

    # ---- generation -------------------------------------------------------------------------

    def _settings(
        self, num_beams: int | None, max_new_tokens: int | None, min_new_tokens: int | None
    ) -> tuple[int, int, int]:
        """Fill ``None`` from the config and check the generation settings."""
        cfg = self.config
        num_beams = cfg.num_beams if num_beams is None else num_beams
        max_new_tokens = cfg.max_new_tokens if max_new_tokens is None else max_new_tokens
        min_new_tokens = cfg.min_new_tokens if min_new_tokens is None else min_new_tokens
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        if not 1 <= max_new_tokens <= cfg.n_positions - 2:
            raise ValueError(
                f"max_new_tokens must be in [1, {cfg.n_positions - 2}] (n_positions - 2), "
                f"got {max_new_tokens}"
            )
        return num_beams, max_new_tokens, max(0, min(min_new_tokens, max_new_tokens))

    def _generation_config(
        self, num_beams: int, max_new_tokens: int, min_new_tokens: int
    ) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            use_cache=True,
            bos_token_id=self.eos_id,
            eos_token_id=self.eos_id,
            # fills finished rows; any id other than eos works since decode() cuts at the first eos,
            # and it avoids transformers' false "right-padding detected" warning on the bos input
            pad_token_id=0,
            suppress_tokens=[self.vocab.unk_id] if self.vocab is not None else None,
        )

    @torch.no_grad()
    def generate(
        self,
        features: torch.Tensor,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
    ) -> list[str]:
        """One sentence per region feature ``[N, D]``, all ``N`` regions in one batch, with the
        KV cache. Greedy (``num_beams == 1``): :meth:`greedy_ids`, which drops finished rows;
        beam search: transformers ``generate`` (the feature prefix repeated per beam). ``None``
        settings come from the config. Call ``eval()`` first (dropout stays active in train mode).
        """
        num_beams, max_new_tokens, min_new_tokens = self._settings(
            num_beams, max_new_tokens, min_new_tokens
        )
        if features.shape[0] == 0:
            return []
        if num_beams == 1:
            return self.decode(self.greedy_ids(features, max_new_tokens, min_new_tokens))
        return self.decode(self.hf_generate_ids(features, num_beams, max_new_tokens, min_new_tokens))

    @torch.no_grad()
    def hf_generate_ids(
        self, features: torch.Tensor, num_beams: int, max_new_tokens: int, min_new_tokens: int
    ) -> torch.Tensor:
        """Generated ids ``[N, L]`` (no leading bos) from transformers ``generate``."""
        n = features.shape[0]
        cache = self.prefix_cache(features, repeat=num_beams)  # batch N * beams
        bos = torch.full((n, 1), self.eos_id, dtype=torch.long, device=features.device)  # [N, 1]
        mask = torch.ones((n, 2), dtype=torch.long, device=features.device)  # [N, 1 + 1]
        out = self.gpt.generate(
            input_ids=bos,
            attention_mask=mask,
            cache=cache,
            generation_config=self._generation_config(num_beams, max_new_tokens, min_new_tokens),
        )  # [N, 1 + L]
        return out[:, 1:]

    @torch.no_grad()
    def greedy_ids(self, features: torch.Tensor, max_new_tokens: int, min_new_tokens: int) -> torch.Tensor:
        """Greedy ids ``[N, max_new_tokens]`` (eos-filled after each row's eos), the tokens of
        transformers' greedy ``generate`` with the same settings (tested), but a row leaves the
        batch and the KV cache (``DynamicCache.batch_select_indices``) as soon as it writes eos.

        Why not ``generate``: it keeps finished rows until the longest sentence ends and grows the
        cache by concatenation, so a batch of region sentences (7 to 33 tokens, measured) pays
        the longest one for every row. On the 2-core CPU, 115 sentences of 8 images: 640 ms with
        ``generate``, 300 ms here. All rows share one length (the prefix plus the tokens so far),
        so no attention mask is needed and positions start at 1 as in training."""
        n, device = features.shape[0], features.device
        cache = self.prefix_cache(features)
        out = torch.full((n, max_new_tokens), self.eos_id, dtype=torch.long, device=device)  # [N, L]
        rows = torch.arange(n, device=device)  # rows of ``out`` still writing
        ids = torch.full((n, 1), self.eos_id, dtype=torch.long, device=device)  # [n, 1] bos
        for step in range(max_new_tokens):
            logits = self.gpt(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            if self.vocab is not None:
                logits[:, self.vocab.unk_id] = -torch.inf
            if step < min_new_tokens:
                logits[:, self.eos_id] = -torch.inf
            tokens = logits.argmax(dim=-1)  # [n]
            out[rows, step] = tokens
            going = tokens != self.eos_id  # [n]
            if not bool(going.any()):
                break
            if not bool(going.all()):
                keep = going.nonzero()[:, 0]
                cache.batch_select_indices(keep)
                rows, tokens = rows[keep], tokens[keep]
            ids = tokens[:, None]  # [n, 1]
        return out

    @torch.no_grad()
    def naive_generate(
        self,
        features: torch.Tensor,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
    ) -> list[str]:
        """Reference greedy decoding: one region at a time, no KV cache (the whole sequence is
        recomputed at every step). Slow; for tests and benchmarks."""
        _, max_new_tokens, min_new_tokens = self._settings(1, max_new_tokens, min_new_tokens)
        texts = []
        for feature in features:
            ids = features.new_full((1, 1), self.eos_id, dtype=torch.long)  # [1, 1]
            for step in range(max_new_tokens):
                cache = self.prefix_cache(feature[None])  # fresh length-1 prefix
                mask = torch.ones_like(F.pad(ids, (1, 0)))  # [1, 1 + T]
                out = self.gpt(input_ids=ids, attention_mask=mask, cache=cache, use_cache=False)
                next_logits = out.logits[0, -1]  # [V]
                if self.vocab is not None:
                    next_logits[self.vocab.unk_id] = float("-inf")
                if step < min_new_tokens:
                    next_logits[self.eos_id] = float("-inf")
                next_id = int(next_logits.argmax())
                ids = torch.cat([ids, ids.new_tensor([[next_id]])], dim=1)  # [1, T + 1]
                if next_id == self.eos_id:
                    break
            texts.extend(self.decode(ids[:, 1:]))
        return texts
