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
from train.datasets import PreparedData
from train.heads_data import image_finding_target

MISS = 0.1
MIN_POSITIVES = 10


def rule_out_threshold(positives: Sequence[float], miss: float = MISS) -> float:
    """The largest probability with at most ``miss`` of ``positives`` strictly below it."""
    ordered = sorted(float(p) for p in positives)
    if not ordered:
        raise ValueError("no positive to set a rule-out probability on")
    return ordered[math.floor(miss * len(ordered))]


def choose(lines: Iterable[Mapping[str, Any]], rows: Mapping[str, Mapping[str, Any]], miss: float = MISS,
           min_positives: int = MIN_POSITIVES) -> dict[str, Any]:
    """Per finding: the rule-out probability (``None`` with too few positives) and what it does on
    these lines. ``lines``: report JSON lines; ``rows``: prepared rows by the lines' image path."""
    scored: dict[str, list[tuple[str, float, float]]] = {}
    for line in lines:
        row = rows.get(line.get("image", ""))
        if row is None or "error" in line:
            continue
        for finding, p in (line.get("image_findings") or {}).items():
            if IMAGE_TEMPLATES.get(finding, (None, None))[1] is None:
                continue
            y = image_finding_target(dict(row), finding)
            if y is not None:
                scored.setdefault(finding, []).append((row["source"], float(p), y))
    out: dict[str, Any] = {}
    for finding, items in sorted(scored.items()):
        by_source = {}
        for source in sorted({s for s, _, _ in items}):
            pos = [p for s, p, y in items if s == source and y == 1]
            by_source[source] = {"positives": len(pos),
                                 "rule_out": rule_out_threshold(pos, miss) if len(pos) >= min_positives else None}
        limits = [v["rule_out"] for v in by_source.values() if v["rule_out"] is not None]
        t = min(limits) if limits else None
        for source, v in by_source.items():
            pos = [p for s, p, y in items if s == source and y == 1]
            neg = [p for s, p, y in items if s == source and y == 0]
            v.update(negatives=len(neg), positives_below=None if t is None else sum(p < t for p in pos),
                     negatives_below=None if t is None else sum(p < t for p in neg))
        out[finding] = {"rule_out": t, "by_source": by_source,
                        "positives": sum(v["positives"] for v in by_source.values()),
                        "negatives": sum(v["negatives"] for v in by_source.values()),
                        "positives_below": None if t is None else sum(p < t for _, p, y in items if y == 1),
                        "negatives_below": None if t is None else sum(p < t for _, p, y in items if y == 0)}
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
    prepared = PreparedData(args.prepared)
    rows = {str(prepared.path(r["image"])): r for r in prepared.images(args.split) if r.get("image")}
    lines = [json.loads(text) for text in args.reports.read_text().splitlines() if text.strip()]
    figures = choose(lines, rows, args.miss, args.min_positives)
    chosen = {f: round(v["rule_out"], 4) for f, v in figures.items() if v["rule_out"] is not None}
    args.out.write_text(json.dumps({"split": args.split, "miss": args.miss, "min_positives": args.min_positives,
                                    "findings": figures, "chosen": chosen}, indent=2) + "\n")
    for finding, v in figures.items():
        print(f"{finding}: rule-out {v['rule_out']}, positives below {v['positives_below']} of {v['positives']}, "
              f"negatives below {v['negatives_below']} of {v['negatives']}")


if __name__ == "__main__":
    main()
