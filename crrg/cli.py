"""Command line: ``python -m crrg init DIR`` and
``python -m crrg report INPUT ... [--json] [--out FILE.jsonl|DIR/] [--csv FILE] [--batch-size N]``
(batched, resumable, sharded under torchrun: :mod:`crrg.batch`)."""

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
    from crrg.batch import run_reports
    from crrg.hub import WeightsNotFoundError
    from crrg.prompts import parse_prompts

    try:
        pipe = _load_pipeline(args.weights)
    except (WeightsNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prompts = None if args.prompts is None else parse_prompts(args.prompts)
    regions = parse_prompts(args.regions) if args.regions else None
    box = [float(v) for v in args.box.split(",")] if args.box else None

    def show(record: dict, result) -> None:
        name = Path(record["image"]).name  # the base name only, never a folder
        check = getattr(result, "input_check", None)
        if result is None:
            print(f"error: {name}: {record['error']}", file=sys.stderr)
        elif check is not None and not check.ok and (args.json or args.out is not None):
            print(f"warning: {name}: reported anyway (--force): {check.reason}", file=sys.stderr)
        if args.json:
            print(json.dumps(record))
        elif result is not None and args.out is None:
            print(_human(result))
        sys.stdout.flush()

    try:
        summary = run_reports(pipe, args.images, out=args.out, batch_size=args.batch_size,
                              workers=args.workers, prompts=prompts, regions=regions, box=box,
                              num_beams=args.beams, csv_path=args.csv, progress=args.progress,
                              on_record=show, force=args.force)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out is not None:
        rejected = f" ({summary.rejected} not a frontal chest radiograph)" if summary.rejected else ""
        print(f"{summary.written} reports, {summary.failed} failed{rejected}, {summary.skipped} already in "
              f"{summary.out} (of {summary.total} images)", file=sys.stderr)
    if summary.total == 0:
        print("error: no images found in " + ", ".join(args.images), file=sys.stderr)
        return 1
    return 1 if summary.failed else 0


def _evidence(sentence) -> str:
    ev = sentence.evidence
    where = ", ".join(sentence.regions) if sentence.regions else "whole image"
    what = f"p={ev.probability:.2f}" if ev.probability is not None else ""
    if ev.value is not None:
        what = f"value {ev.value:.2f}"
    return f"  - {sentence.text}  [{ev.kind}: {where}{'; ' + what if what else ''}]"


def _human(result) -> str:
    lines = [f"== {result.image} ({result.width}x{result.height})"]
    check = getattr(result, "input_check", None)
    if check is not None and not check.ok:
        lines.append(f"WARNING (input check, score {check.score:.2f}): {check.reason}")
    lines += ["Report:", result.report or "(no sentence)"]
    if result.sentences:
        lines += ["Evidence:", *(_evidence(s) for s in result.sentences)]
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
    rep = sub.add_parser("report", help="write reports for images, folders or glob patterns")
    rep.add_argument("images", nargs="+", metavar="INPUT",
                     help="image files (PNG/JPEG/TIFF/WebP/DICOM), folders (searched recursively) or "
                     "glob patterns such as 'scans/**/*.dcm'")
    rep.add_argument("--weights", help="local folder or hub repo id (default: embedded assets/crrg-default)")
    rep.add_argument("--prompts", help='comma-separated zero-shot labels, e.g. "pneumonia,cardiomegaly"')
    rep.add_argument("--regions", help="comma-separated region names: write sentences for exactly these")
    rep.add_argument("--box", help="x1,y1,x2,y2 in image pixels: write a sentence for this box")
    rep.add_argument("--beams", type=int, default=None, help="beam search width (default: the model's)")
    rep.add_argument("--force", action="store_true",
                     help="report images that fail the input check (not a frontal chest radiograph) anyway; "
                          "their lines keep input_check")
    rep.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    rep.add_argument("--out", help="write JSON lines to this file (or DIR/ -> DIR/part-RANK.jsonl); a rerun "
                     "skips the images already in it and appends the rest")
    rep.add_argument("--csv", help="also write a one-row-per-image summary CSV")
    rep.add_argument("--batch-size", type=int, default=8,
                     help="images per detector/CLIP pass and per generate call (default 8; 1 = one at a time)")
    rep.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                     help="DataLoader worker processes decoding images (0 = in this process)")
    rep.add_argument("--progress", action="store_true",
                     help="show the progress bar even when stderr is not a terminal")
    rep.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    for key, value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
