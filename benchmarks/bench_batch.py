"""Batch throughput: images/s of ``--batch-size 8`` vs ``--batch-size 1`` on the same 64 images.

    .venv/bin/python benchmarks/bench_batch.py [--weights assets/crrg-default] [--images 64] [--threads 2]

Runs :func:`crrg.batch.run_reports` (what ``python -m crrg report INPUT --out FILE`` runs, with
the CLI's default decoding workers, :func:`crrg.batch.default_workers`) once per batch size in one
process, after a warm-up, with the model's default prompts. Images: a mix of the shared data's
sources (``CRRG_DATA``) when present, else generated. Model loading is not counted. Goal (issue
12) on the 2-core machine: batch 8 >= 2x batch 1 and >= 10 images/s. Also prints the per-image
stage times of each mode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SOURCES = ("jsrt_scr/images", "covid_radiography/COVID", "covid_radiography/Normal",
           "kermany_pneumonia/test/PNEUMONIA", "kermany_pneumonia/test/NORMAL", "covid_lung_boxes/images",
           "covid_anatomy/images")


def pick_images(count: int, folder: Path) -> list[str]:
    data = Path(os.environ.get("CRRG_DATA", ROOT.parent / "shared" / "data"))
    per_source = [sorted(p for p in (data / s).glob("*") if p.is_file()) for s in SOURCES]
    mixed = [str(p) for group in zip(*[g for g in per_source if g]) for p in group][:count]
    if len(mixed) == count:
        return mixed
    from demo.testing import write_png

    return [str(write_png(folder / f"synthetic-{i:03d}.png", seed=i, height=1024, width=900)) for i in range(count)]


def measure(pipe, images: list[str], batch_size: int, workers: int, folder: Path) -> tuple[float, dict]:
    from crrg.batch import run_reports

    out = folder / f"b{batch_size}.jsonl"
    start = time.perf_counter()
    summary = run_reports(pipe, images, out=out, batch_size=batch_size, workers=workers)
    elapsed = time.perf_counter() - start
    assert summary.written == len(images), summary
    stages: dict[str, float] = {}
    for line in out.read_text().splitlines():
        for key, value in json.loads(line)["timings"].items():
            stages[key] = stages.get(key, 0.0) + value / len(images)
    return len(images) / elapsed, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(ROOT / "assets" / "crrg-default"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding worker processes (default: the CLI's, crrg.batch.default_workers)")
    args = parser.parse_args()
    import torch

    import crrg

    torch.set_num_threads(args.threads)
    if args.workers is None:
        from crrg.batch import default_workers

        args.workers = default_workers()
    folder = Path(tempfile.mkdtemp(prefix="crrg-bench-batch-"))
    images = pick_images(args.images, folder)
    pipe = crrg.load(args.weights, device="cpu")
    pipe.batch(images[:8])  # warm-up: first-call allocations, oneDNN kernels
    rates = {}
    for batch_size in (8, 1):
        rate, stages = measure(pipe, images, batch_size, args.workers, folder)
        rates[batch_size] = rate
        print(f"--batch-size {batch_size}: {rate:6.2f} images/s   per image: "
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stages.items() if k != "total"))
    ratio = rates[8] / rates[1]
    print(f"{len(images)} images, {args.threads} threads, {args.workers} decoding workers: "
          f"batch 8 / batch 1 = {ratio:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"goals: >= 2x ({'met' if ratio >= 2 else 'NOT met'}), >= 10 images/s "
          f"({'met' if rates[8] >= 10 else 'NOT met'}); peak RSS {peak:.0f} MB "
          f"({'met' if peak <= 1200 else 'NOT met'}: <= 1.2 GB; the main process, decoding workers apart)")


if __name__ == "__main__":
    main()
