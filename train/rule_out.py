"""Choose ``GroundingConfig.rule_out`` on the validation split: for each image-level finding with
an absent statement ("There is no pleural effusion.", ``crrg.grounding.IMAGE_TEMPLATES``), the
calibrated probability below which at most ``--miss`` (a tenth) of the validation positives fall,
**in every source** with at least ``--min-positives`` positives (the lowest of the per-source
probabilities: the pneumonia head ranks NIH's pneumonia-like films far worse than Kermany's, and
a rule-out that holds only on the pooled films would tell NIH's sick films they are clear).
A report states the finding's absence only below it, so at most that share of any source's
validation films with the finding would be told it is absent; between it and the finding's
threshold the report leaves the finding indeterminate. A finding with no source of enough
positives gets none (its absence is never stated).

    python -m crrg report $(cat val_images.txt) --out val.jsonl --force
    python -m train.rule_out val.jsonl --prepared runs/prepared --out rule_out.json
    python -m train.assemble --base W --out W2 --set "grounding.rule_out=$(jq -c .chosen rule_out.json)"

Positives and negatives are the image-level targets the heads are trained on
(:func:`train.heads_data.image_finding_target`: only sources that assess the finding count).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crrg.grounding import IMAGE_TEMPLATES
from train.datasets import report_records
from train.heads_data import image_finding_target

MISS = 0.1
MIN_POSITIVES = 10


def rule_out_threshold(positives: Sequence[float], miss: float = MISS) -> float:
    """The largest probability with at most ``miss`` of ``positives`` strictly below it."""
    ordered = sorted(float(p) for p in positives)
    if not ordered:
        raise ValueError("no positive to set a rule-out probability on")
    return ordered[math.floor(miss * len(ordered))]


def choose(records: Iterable[Mapping[str, Any]], miss: float = MISS, min_positives: int = MIN_POSITIVES
           ) -> dict[str, Any]:
    """Per finding: the rule-out probability (``None`` when no source has enough positives) and
    what it does, per source and overall. ``records``: report lines with their prepared row's
    ``source`` and ``labels`` (:func:`train.datasets.report_records`)."""
    scores: dict[str, dict[str, tuple[list[float], list[float]]]] = {}  # finding -> source -> (pos, neg)
    for record in records:
        if not record.get("source") or not record.get("labels"):
            continue
        for finding, p in (record.get("image_findings") or {}).items():
            if IMAGE_TEMPLATES.get(finding, (None, None))[1] is None:
                continue
            y = image_finding_target({"source": record["source"], "labels": record["labels"]}, finding)
            if y is not None:
                pos, neg = scores.setdefault(finding, {}).setdefault(record["source"], ([], []))
                (pos if y == 1 else neg).append(float(p))
    out: dict[str, Any] = {}
    for finding, by_source in sorted(scores.items()):
        limits = {s: rule_out_threshold(pos, miss) if len(pos) >= min_positives else None
                  for s, (pos, _) in sorted(by_source.items())}
        t = min((v for v in limits.values() if v is not None), default=None)

        def below(values: list[float]) -> int | None:
            return None if t is None else sum(p < t for p in values)

        sources = {s: {"positives": len(pos), "rule_out": limits[s], "negatives": len(neg),
                       "positives_below": below(pos), "negatives_below": below(neg)}
                   for s, (pos, neg) in sorted(by_source.items())}
        every_pos = [p for pos, _ in by_source.values() for p in pos]
        every_neg = [p for _, neg in by_source.values() for p in neg]
        out[finding] = {"rule_out": t, "by_source": sources, "positives": len(every_pos),
                        "negatives": len(every_neg), "positives_below": below(every_pos),
                        "negatives_below": below(every_neg)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, help="`crrg report --out` JSON lines of validation images")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--split", default="val", help="the split the lines must come from")
    parser.add_argument("--miss", type=float, default=MISS)
    parser.add_argument("--min-positives", type=int, default=MIN_POSITIVES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    records = [r for r in report_records(args.reports, args.prepared) if r["split"] == args.split]
    figures = choose(records, args.miss, args.min_positives)
    chosen = {f: round(v["rule_out"], 4) for f, v in figures.items() if v["rule_out"] is not None}
    args.out.write_text(json.dumps({"split": args.split, "miss": args.miss, "min_positives": args.min_positives,
                                    "findings": figures, "chosen": chosen}, indent=2) + "\n")
    for finding, v in figures.items():
        print(f"{finding}: rule-out {v['rule_out']}, positives below {v['positives_below']} of {v['positives']}, "
              f"negatives below {v['negatives_below']} of {v['negatives']}")


if __name__ == "__main__":
    main()
