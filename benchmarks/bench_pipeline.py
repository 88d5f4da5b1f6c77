"""Benchmark: per-stage and whole-pipeline latency on CPU, against a naive baseline.

The naive baseline is the same model and image with the decoder run one region at a time
without a KV cache (``ReportDecoder.naive_generate``). Each mode runs in its own subprocess so
that peak memory (max RSS) is measured separately.

    python benchmarks/bench_pipeline.py [--weights SRC] [--image PATH] [--runs 10] [--threads 2]

Goal for the default model on a 2-core machine: whole pipeline p50 <= 1.0 s per image,
>= 3x faster than the naive baseline, peak memory <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _synthetic_image(path: Path) -> None:
    """A chest-radiograph-like test image (two dark lungs, bright mediastinum), 1024 x 1024."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    img = 0.75 - 0.1 * yy
    for cx in (0.3, 0.7):
        lung = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.33) ** 2 < 1
        img = np.where(lung, 0.25 + 0.05 * np.sin(40 * yy), img)
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    Image.fromarray((img * 255).astype("uint8")).save(path)


def _pick_image(arg: str | None, tmp: Path) -> str:
    if arg:
        return arg
    data = Path(os.environ.get("CRRG_DATA", ROOT.parent / "shared" / "data"))
    jsrt = sorted((data / "jsrt_scr" / "images").glob("*"))[:1]
    if jsrt:
        return str(jsrt[0])
    path = tmp / "synthetic.png"
    _synthetic_image(path)
    return str(path)


def run_mode(weights: str, image: str, runs: int, naive: bool, threads: int) -> dict:
    """Time one mode in this process; returns per-stage medians, p50/p95 total, peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from crrg.pipeline import Pipeline, load

    pipe: Pipeline = load(weights, device="cpu")
    if naive:
        decoder = pipe.model.decoder

        def naive_generate(features, num_beams=None):  # one region at a time, no KV cache
            return [decoder.naive_generate(f[None])[0] for f in features]

        decoder.generate = naive_generate  # type: ignore[method-assign]  # what Pipeline.write calls
    for _ in range(2):
        pipe(image)
    totals, stages = [], {}
    for _ in range(runs):
        start = time.perf_counter()
        result = pipe(image)
        totals.append(time.perf_counter() - start)
        for key, value in result.timings.items():
            stages.setdefault(key, []).append(value)
    totals.sort()
    return {
        "mode": "naive" if naive else "pipeline",
        "p50_s": statistics.median(totals),
        "p95_s": totals[min(len(totals) - 1, int(0.95 * len(totals)))],
        "stages_p50_s": {k: statistics.median(v) for k, v in stages.items()},
        "sentences": sum(1 for r in result.regions if r.sentence),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="model folder or hub id (default: embedded, else a random default model)")
    parser.add_argument("--image")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--_mode", choices=["pipeline", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._mode:
        print(json.dumps(run_mode(args.weights, args.image, args.runs, args._mode == "naive", args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or str(ROOT / "assets" / "crrg-default")
        if not Path(weights).is_dir() and args.weights is None:
            weights = str(Path(tmp) / "random")
            subprocess.run([sys.executable, "-m", "crrg", "init", weights], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
            print(f"(no embedded weights: benchmarking a randomly initialised default model)")
        image = _pick_image(args.image, Path(tmp))
        results = {}
        for mode in ("pipeline", "naive"):
            cmd = [sys.executable, __file__, "--weights", weights, "--image", image, "--runs", str(args.runs),
                   "--threads", str(args.threads), "--_mode", mode]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
    fast, slow = results["pipeline"], results["naive"]
    print(f"weights: {weights}\nimage: {image}\nthreads: {args.threads}, runs: {args.runs}")
    for r in (fast, slow):
        stages = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["stages_p50_s"].items())
        print(f"{r['mode']:>8}: p50 {r['p50_s']:.3f} s, p95 {r['p95_s']:.3f} s, peak RSS {r['peak_rss_mb']:.0f} MB,"
              f" {r['sentences']} sentences | {stages}")
    print(f"speed-up (naive p50 / pipeline p50): {slow['p50_s'] / fast['p50_s']:.2f}x")
    gen = fast["stages_p50_s"].get("generate", 0.0)
    gen_naive = slow["stages_p50_s"].get("generate", 0.0)
    if gen:
        print(f"generation stage speed-up: {gen_naive / gen:.2f}x")
    ok = fast["p50_s"] <= 1.0 and slow["p50_s"] / fast["p50_s"] >= 3 and fast["peak_rss_mb"] <= 1536
    print("goals (p50 <= 1.0 s, >= 3x, peak <= 1.5 GB):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
