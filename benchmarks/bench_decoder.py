"""Decoder size and speed: batched + KV-cache generation vs the naive one-by-one loop.

    python benchmarks/bench_decoder.py [--threads 2] [--regions 10] [--tokens 30] [--vocab 2048]

Random weights, a synthetic compact vocabulary of ``--vocab`` GPT-2 ids (about what the IU X-ray
training reports use), every sentence forced to exactly ``--tokens`` tokens.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch

from crrg.decoder import DecoderConfig, ReportDecoder
from crrg.regions import REGIONS
from crrg.report import MiniLMEmbedder, ReportConfig, assemble_report
from crrg.tokenizer import EOS_TOKEN_ID

logger = logging.getLogger("bench_decoder")


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--regions", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--vocab", type=int, default=2048, help="compact vocabulary size; 0 = full GPT-2")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embd", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minilm", action="store_true", help="also time MiniLM de-duplication")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    token_ids = None
    if args.vocab:
        token_ids = sorted(set(torch.randperm(EOS_TOKEN_ID)[: args.vocab - 1].tolist()) | {EOS_TOKEN_ID})
    config = DecoderConfig(n_layer=args.layers, n_embd=args.embd, token_ids=token_ids)
    model = ReportDecoder(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("decoder %dx%d, vocab %s: %.2f M params (%.1f MB fp16)", args.layers, args.embd,
                args.vocab or "full", n_params / 1e6, n_params * 2 / 1e6)

    feats = torch.randn(args.regions, config.feature_dim)  # [N, D]
    fixed = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    batched = _median_seconds(lambda: model.generate(feats, num_beams=1, **fixed), args.repeats)
    beam3 = _median_seconds(lambda: model.generate(feats, num_beams=3, **fixed), args.repeats)
    naive = _median_seconds(lambda: model.naive_generate(feats, **fixed), max(1, args.repeats // 2))
    logger.info("%d regions x %d tokens, %d threads:", args.regions, args.tokens, args.threads)
    logger.info("  batched + KV cache, greedy: %.3f s", batched)
    logger.info("  batched + KV cache, beam 3: %.3f s", beam3)
    logger.info("  naive one-by-one, no cache: %.3f s (%.1fx batched greedy)", naive, naive / batched)

    model.train()
    texts = ["There is no focal consolidation, pleural effusion or pneumothorax."] * 64
    train_feats = torch.randn(64, config.feature_dim)  # [64, D]
    tokens = model.encode(texts)

    def train_step() -> None:
        loss = model(train_feats, tokens=tokens)["loss_lm"]
        loss.backward()

    step = _median_seconds(train_step, args.repeats)
    width = tokens.input_ids.shape[1]
    logger.info("  training forward+backward, batch 64 x %d tokens: %.3f s", width, step)
    _bench_report(args)


def _bench_report(args: argparse.Namespace) -> None:
    """assemble_report on 12 region sentences with repeats (lexical, optionally MiniLM)."""
    said = ["No pleural effusion is seen.", "There is no pleural effusion.", "The lungs are clear.",
            "Heart size is normal.", "The heart is normal in size.", "No pneumothorax."]
    pairs = [(REGIONS[i], said[i % len(said)]) for i in range(0, 24, 2)]
    lexical = _median_seconds(lambda: assemble_report(pairs), args.repeats)
    logger.info("assemble_report, %d sentences: lexical %.2f ms", len(pairs), lexical * 1e3)
    if args.minilm:
        start = time.perf_counter()
        embedder = MiniLMEmbedder()
        logger.info("  MiniLM load: %.2f s", time.perf_counter() - start)
        config = ReportConfig(method="minilm")
        minilm = _median_seconds(lambda: assemble_report(pairs, config, embedder), args.repeats)
        logger.info("  MiniLM: %.1f ms per report", minilm * 1e3)


if __name__ == "__main__":
    main()
