"""Choose ``GroundingConfig.region_relative`` for opacity from validation evaluations.

    python -m train.tune_grounding --runs 0=VAL0/metrics.json 0.6=VAL6/metrics.json ... --out tuning.json

Each run is a ``train.evaluate --split val`` of the same model with
``grounding.region_relative={"opacity": SHARE}`` (``train.assemble --set``); its grounding
section gives, on TBX11K's boxed films, the share whose report names an opacity in a boxed zone
and the share of one-sided films also named on the clear side, and the opacity F1. The rule:
among the shares that keep the boxed-zone rate and the opacity F1 within ``--tolerance`` of the
run without a share (0), the one with the least clear-side naming (ties: the smaller share).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ShareResult:
    share: float
    boxed_zone: float  # TBX11K: opacity named in a boxed zone
    clear_side: float  # one-sided TBX11K films also named on the clear side
    opacity_f1: float

    @classmethod
    def from_metrics(cls, share: float, metrics: Mapping[str, Any]) -> ShareResult:
        if metrics.get("split") != "val":
            raise ValueError(f"share {share}: a {metrics.get('split')!r} evaluation; tune on 'val'")
        grounding = metrics["grounding"]
        tb = grounding["tb_areas"]
        return cls(share, tb["named_in_a_boxed_zone"], tb["one_sided_also_named_on_clear_side"],
                   grounding["per_finding"]["opacity"]["f1"])


def choose(results: list[ShareResult], tolerance: float) -> ShareResult:
    """The rule of the module docstring; ``results`` must hold share 0."""
    base = next((r for r in results if r.share == 0), None)
    if base is None:
        raise ValueError("the runs must include share 0 (no relative rule) as the reference")
    ok = [r for r in results if r.boxed_zone >= base.boxed_zone - tolerance
          and r.opacity_f1 >= base.opacity_f1 - tolerance]
    return min(ok, key=lambda r: (r.clear_side, r.share))


RULE = ("among the shares that keep the boxed-zone rate and the opacity F1 within the tolerance of "
        "share 0, the least clear-side naming (ties: the smaller share)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, metavar="SHARE=METRICS_JSON")
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--out", type=Path, required=True, help="JSON with every run and the choice")
    args = parser.parse_args(argv)
    results = []
    for item in args.runs:
        share, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--runs takes SHARE=METRICS_JSON, got {item!r}")
        results.append(ShareResult.from_metrics(float(share), json.loads(Path(path).read_text())))
    results.sort(key=lambda r: r.share)
    chosen = choose(results, args.tolerance)
    args.out.write_text(json.dumps({"finding": "opacity", "rule": RULE,
                                    "tolerance": args.tolerance, "runs": [asdict(r) for r in results],
                                    "chosen": chosen.share}, indent=2) + "\n")
    for r in results:
        print(f"share {r.share:.2f}: boxed zone {r.boxed_zone:.3f}, clear side {r.clear_side:.3f}, "
              f"opacity F1 {r.opacity_f1:.3f}{'  <- chosen' if r is chosen else ''}")


if __name__ == "__main__":
    main()
