"""Command line: ``python -m crrg init DIR`` and ``python -m crrg report IMAGE ... [--json]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from crrg import DISCLAIMER

EMBEDDED_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "crrg-default"


def default_weights() -> str:
    """``CRRG_WEIGHTS`` when set, else the embedded default under ``assets/``."""
    return os.environ.get("CRRG_WEIGHTS") or str(EMBEDDED_WEIGHTS)


def _init(args: argparse.Namespace) -> int:
    import torch

    from crrg.model import CRRGModel, get_config

    torch.manual_seed(args.seed)
    model = CRRGModel(get_config(args.variant))
    model.save_pretrained(args.dir)
    sizes = model.num_parameters()
    print(f"wrote a randomly initialised crrg model ({args.variant}, "
          f"{sum(sizes.values()) / 1e6:.1f} M parameters) to {args.dir}")
    print("Random weights: outputs are meaningless. " + DISCLAIMER)
    return 0


def _load_pipeline(weights: str | None):
    from crrg.hub import WeightsNotFoundError
    from crrg.pipeline import load

    source = weights or default_weights()
    if weights is None and not os.environ.get("CRRG_WEIGHTS") and not EMBEDDED_WEIGHTS.is_dir():
        raise WeightsNotFoundError(
            f"no embedded default weights at {EMBEDDED_WEIGHTS} yet; pass --weights DIR_OR_REPO "
            "(e.g. one written by `python -m crrg init DIR`)"
        )
    return load(source)


def _report(args: argparse.Namespace) -> int:
    from crrg.hub import WeightsNotFoundError
    from crrg.images import ImageError
    from crrg.pipeline import parse_prompts

    try:
        pipe = _load_pipeline(args.weights)
    except (WeightsNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prompts = None if args.prompts is None else parse_prompts(args.prompts)
    regions = parse_prompts(args.regions) if args.regions else None
    box = [float(v) for v in args.box.split(",")] if args.box else None
    failures = 0
    for image in args.images:
        try:
            result = pipe(image, prompts=prompts, regions=regions, box=box, num_beams=args.beams)
        except (ImageError, FileNotFoundError, ValueError) as err:
            failures += 1
            print(f"error: {image}: {err}", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": str(image), "error": str(err), "disclaimer": DISCLAIMER}))
            continue
        print(result.to_json_line() if args.json else _human(result))
        sys.stdout.flush()
    return 1 if failures else 0


def _human(result) -> str:
    lines = [f"== {result.image} ({result.width}x{result.height})", "Report:", result.report or "(no sentence)"]
    if result.box_sentence is not None:
        lines += ["Drawn box:", result.box_sentence.sentence]
    found = [r for r in result.regions if r.box is not None]
    lines.append(f"Regions detected: {len(found)}/29; selected: "
                 + (", ".join(r.name for r in found if r.selected) or "none"))
    if result.labels:
        lines.append("Labels: " + ", ".join(f"{k} {v:.2f}" for k, v in result.labels.items()))
    lines.append(result.disclaimer)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crrg", description=f"crrg: CRRG-CLIP. {DISCLAIMER}")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a randomly initialised full model folder")
    init.add_argument("dir")
    init.add_argument("--variant", default="default", help="model variant (crrg/configs/crrg_*.json)")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=_init)
    rep = sub.add_parser("report", help="write reports for images")
    rep.add_argument("images", nargs="+")
    rep.add_argument("--weights", help="local folder or hub repo id (default: embedded assets/crrg-default)")
    rep.add_argument("--prompts", help='comma-separated zero-shot labels, e.g. "pneumonia,cardiomegaly"')
    rep.add_argument("--regions", help="comma-separated region names: write sentences for exactly these")
    rep.add_argument("--box", help="x1,y1,x2,y2 in image pixels: write a sentence for this box")
    rep.add_argument("--beams", type=int, default=None, help="beam search width (default: the model's)")
    rep.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    rep.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
