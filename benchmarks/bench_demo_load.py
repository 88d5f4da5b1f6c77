"""Load benchmark of the demo: N concurrent gradio_client clients x M ``/report`` requests each.

    python benchmarks/bench_demo_load.py                       # 8 clients x 10 requests
    python benchmarks/bench_demo_load.py --weights DIR --clients 4 --requests 5

Starts ``app.py`` in a subprocess on a free port (weights: ``--weights``, else the embedded
default when present, else a random model of ``--variant`` written to a temporary folder), sends
the requests on a synthetic image, and prints failures and latency percentiles. A benchmark, not
a test: it asserts nothing about time; it exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.testing import OFFLINE_ENV, DemoServer, write_png  # noqa: E402

logger = logging.getLogger("bench_demo_load")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="model folder or hub id (default: embedded, else a random model)")
    parser.add_argument("--variant", default="default", help="variant of the random model (default|tiny)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--prompts", default="pneumonia, pleural effusion, cardiomegaly, nodule")
    return parser.parse_args(argv)


def weights_for(args: argparse.Namespace, scratch: Path) -> str:
    from crrg.cli import EMBEDDED_WEIGHTS

    if args.weights:
        return args.weights
    if EMBEDDED_WEIGHTS.is_dir():
        return str(EMBEDDED_WEIGHTS)
    import os

    os.environ.update(OFFLINE_ENV)
    from crrg.cli import main

    folder = scratch / f"random-{args.variant}"
    logger.info("no embedded weights: benchmarking a random %s model in %s", args.variant, folder)
    main(["init", str(folder), "--variant", args.variant])
    return str(folder)


def client_loop(url: str, image: Path, prompts: str, count: int, start: threading.Barrier,
                latencies: list[float], failures: list[str]) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    start.wait()
    for _ in range(count):
        began = time.perf_counter()
        try:
            _, result = client.predict(handle_file(str(image)), prompts, api_name="/report")
            if len(result["regions"]) != 29:
                raise ValueError(f"expected 29 regions, got {len(result['regions'])}")
            latencies.append(time.perf_counter() - began)
        except Exception as err:  # noqa: BLE001 - a benchmark counts every failure
            failures.append(f"{type(err).__name__}: {err}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="crrg-bench-") as tmp:
        scratch = Path(tmp)
        weights = weights_for(args, scratch)
        image = write_png(scratch / "chest.png", seed=7, height=1024, width=896)
        latencies: list[float] = []
        failures: list[str] = []
        with DemoServer(weights, timeout=180) as server:
            barrier = threading.Barrier(args.clients + 1)
            work = (server.url, image, args.prompts, args.requests, barrier, latencies, failures)
            threads = [threading.Thread(target=client_loop, args=work) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            barrier.wait()
            began = time.perf_counter()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
    total = args.clients * args.requests
    print(f"weights: {weights}\napp ready in {server.ready_s:.1f} s")
    print(f"{args.clients} clients x {args.requests} requests = {total}; failures: {len(failures)}")
    if latencies:
        print(f"latency p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s, "
              f"max {max(latencies):.2f} s, mean {statistics.fmean(latencies):.2f} s")
        print(f"throughput {len(latencies) / wall:.2f} requests/s over {wall:.1f} s")
    for failure in failures[:5]:
        print("failure:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(run(parse_args()))
