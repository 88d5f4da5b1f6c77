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
from typing import TYPE_CHECKING

from crrg import DISCLAIMER

if TYPE_CHECKING:
    from crrg.batch import Line
    from crrg.shards import JobStatus

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
    """This rank's shard, then the job's exit status: under torchrun every rank waits for the
    others and all exit with the same code (:func:`crrg.shards.agree`), even when this one failed."""
    from crrg.shards import JobStatus, agree, dist_rank

    try:
        status = _report_shard(args)
    except Exception:  # noqa: BLE001 - logged; this rank still waits for the others below
        logging.getLogger("crrg.cli").exception("the report run failed")
        status = JobStatus(code=1)
    job = agree(status)
    if job.ranks > 1 and dist_rank()[0] == 0:
        rejected = f" ({job.rejected} not a frontal chest radiograph)" if job.rejected else ""
        print(f"all {job.ranks} ranks: {job.written} reports, {job.failed} failed{rejected} "
              f"(of {job.total} images); exit code {job.code}", file=sys.stderr)
    if job.total == 0 and job.code == 0:  # no rank found an image
        print("error: no images found in " + ", ".join(args.images), file=sys.stderr)
        return 1
    return job.code


def _report_shard(args: argparse.Namespace) -> JobStatus:
    from crrg.batch import Failure, ReportOptions, default_workers, run_reports
    from crrg.hub import WeightsNotFoundError
    from crrg.prompts import parse_prompts
    from crrg.shards import JobStatus

    try:
        pipe = _load_pipeline(args.weights)
    except (WeightsNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return JobStatus(code=2)

    def show(line: Line) -> None:
        name = Path(line.image).name  # the base name only, never a folder
        if isinstance(line, Failure):
            print(f"error: {name}: {line.message}", file=sys.stderr)
        elif line.input_check is not None and not line.input_check.ok and (args.json or args.out is not None):
            print(f"warning: {name}: reported anyway (--force): {line.input_check.reason}", file=sys.stderr)
        if args.json:
            print(json.dumps(line.to_json()))
        elif not isinstance(line, Failure) and args.out is None:
            print(_human(line))
        sys.stdout.flush()

    try:
        options = ReportOptions(
            out=args.out, csv_path=args.csv, batch_size=args.batch_size,
            workers=default_workers() if args.workers is None else args.workers,
            prompts=None if args.prompts is None else tuple(parse_prompts(args.prompts)),
            regions=tuple(parse_prompts(args.regions)) if args.regions else None,
            box=tuple(float(v) for v in args.box.split(",")) if args.box else None,
            num_beams=args.beams, force=args.force, progress=args.progress)
        summary = run_reports(pipe, args.images, options, on_record=show)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return JobStatus(code=2)
    if args.out is not None:
        rejected = f" ({summary.rejected} not a frontal chest radiograph)" if summary.rejected else ""
        print(f"{summary.written} reports, {summary.failed} failed{rejected}, {summary.skipped} already in "
              f"{summary.out} (of {summary.total} images)", file=sys.stderr)
    return JobStatus(code=1 if summary.failed else 0, total=summary.total, written=summary.written,
                     failed=summary.failed, rejected=summary.rejected)


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
    rep.add_argument("--workers", type=int, default=None,
                     help="DataLoader worker processes decoding images (0 = in this process; default: the "
                          "cores torch's threads leave free, at most 2)")
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
