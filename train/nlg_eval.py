"""The paper's NLG metrics on real pairs: generated report vs the image's own note sentences.

    python -m train.nlg_eval --weights assets/crrg-default --data ../shared/data \
        --out runs/nlg/metrics.json [--prepared PREP] [--split test] [--limit N] [--device cpu]

What is scored and how: :mod:`train.note_nlg`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from crrg.metrics.nlg import NLG_KEYS, SCORERS
from train.note_nlg import note_nlg, pipeline_callables
from train.note_pairs import note_pairs, pair_counts, read_note_records
from train.preparation import default_data_dir

logger = logging.getLogger("train.nlg_eval")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="model folder or hub repo id (crrg.load)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default: CRRG_DATA)")
    p.add_argument("--prepared", type=Path, default=None,
                   help="a train.prepare folder: read its images.jsonl instead of the data readers")
    p.add_argument("--out", type=Path, required=True, help="metrics JSON file to write")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--limit", type=int, default=None, help="at most N test pairs (seeded sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap rounds (0: none)")
    p.add_argument("--nlg-metrics", nargs="+", choices=SCORERS, default=list(SCORERS))
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    data = (args.data or default_data_dir()).resolve()
    if args.prepared is not None:
        from train.datasets import PreparedData

        prepared = PreparedData(args.prepared, data_root=data if args.data else None)
        records, root = prepared.images(None), prepared.data_root
    else:
        if not data.is_dir():
            p.error(f"--data {data} is not a folder (set CRRG_DATA or pass --data)")
        records, root = read_note_records(data), data
    pairs = note_pairs(records)
    logger.info("note pairs: %s", pair_counts(pairs))
    import crrg

    pipe = crrg.load(args.weights, device=args.device)
    generate, embed = pipeline_callables(pipe)
    result = note_nlg(pairs, generate, embed, root=root, split=args.split, limit=args.limit,
                      seed=args.seed, metrics=args.nlg_metrics, batch_size=args.batch_size,
                      bootstrap_rounds=args.bootstrap)
    result = {"weights": str(args.weights), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, scores in [("model", result.get("model")), *(result.get("baselines") or {}).items()]:
        if scores:
            logger.info("%-12s %s", name, " ".join(f"{k} {scores[k]:.3f}" for k in NLG_KEYS if k in scores))
    logger.info("wrote %s (%d test pairs, %d train pairs)", args.out, result["n_pairs"],
                result["n_train_pairs"])
    return result


if __name__ == "__main__":
    main()
