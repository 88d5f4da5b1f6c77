"""Cold start: how long until ``python app.py`` serves and ``python -m crrg report`` writes its
first line, beside a bare ``python -c "import torch, gradio"`` measured in the same run.

    .venv/bin/python benchmarks/bench_cold_start.py [--runs 3] [--weights assets/crrg-default]

Goals (issue 12): the demo serves within 5 s and within 1.5x the bare import; the CLI writes its
first report line within 5 s. Each figure is the median of ``--runs`` fresh processes. Also printed:
when the demo's first ``/report`` answer arrives (the model loads in the background after serving).
Figures depend on what else the machine is doing: compare the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.testing import OFFLINE_ENV, free_port, write_png  # noqa: E402

ENV = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1"}
POLL_S = 0.02


def bare_import() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, gradio"], check=True, env=ENV, cwd=ROOT)
    return time.perf_counter() - start


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def demo_start(weights: str, image: Path) -> tuple[float, float]:
    """(seconds until the page answers, seconds until the first /report answer)."""
    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "app.py", "--weights", weights, "--port", str(port)],
                                   cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        try:
            while not _answers(url):
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"app.py exited with {process.returncode}: {log.read()[-2000:]!r}")
                if time.perf_counter() - start > 120:
                    raise TimeoutError("app.py did not serve within 120 s")
                time.sleep(POLL_S)
            serving = time.perf_counter() - start
            Client(url, verbose=False).predict(handle_file(str(image)), "pneumonia", api_name="/report")
            first_report = time.perf_counter() - start
        finally:
            process.terminate()
            process.wait(timeout=20)
    return serving, first_report


def cli_first_line(weights: str, image: Path) -> float:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "crrg", "report", str(image), "--json", "--weights",
                                weights], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - start
    process.wait(timeout=60)
    if not line.startswith("{"):
        raise RuntimeError(f"unexpected first line from the CLI: {line!r}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--weights", default=str(ROOT / "assets" / "crrg-default"))
    args = parser.parse_args()
    image = write_png(Path(tempfile.mkdtemp(prefix="crrg-bench-")) / "chest.png", seed=1, height=1024,
                      width=1024)
    bare, serving, report, cli = [], [], [], []
    for _ in range(args.runs):  # interleaved, so load on the machine hits every figure alike
        bare.append(bare_import())
        s, r = demo_start(args.weights, image)
        serving.append(s)
        report.append(r)
        cli.append(cli_first_line(args.weights, image))
    med = statistics.median
    print(f"cold start on {os.cpu_count()} CPUs, median of {args.runs} fresh processes")
    print(f"  bare `python -c 'import torch, gradio'`   {med(bare):6.2f} s   (baseline)")
    print(f"  `python app.py` serving                   {med(serving):6.2f} s   "
          f"{med(serving) / med(bare):.2f}x baseline  (goal <= 5 s and <= 1.5x)")
    print(f"  app.py first /report answered             {med(report):6.2f} s   (model loads after serving)")
    print(f"  `python -m crrg report` first JSON line   {med(cli):6.2f} s   (goal <= 5 s)")
    ok = med(serving) <= 5.0 and med(serving) <= 1.5 * med(bare) and med(cli) <= 5.0
    print("goals met" if ok else "goals NOT met")


if __name__ == "__main__":
    main()
