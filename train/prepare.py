"""Read every dataset under ``--data`` into the jsonl files training uses.

    python -m train.prepare --data ../shared/data --out out/data [--preview 4] [--limit 50]

The files and their formats: :mod:`train.preparation`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from crrg.data.readers import READER_MODULES
from train.preparation import default_data_dir, prepare_data

logger = logging.getLogger("train.prepare")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="shared data folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--preview", type=int, default=0, help="render N overlays per box source")
    parser.add_argument("--limit", type=int, default=None, help="read at most N records per source")
    parser.add_argument("--sources", nargs="+", choices=list(READER_MODULES), default=None)
    parser.add_argument("--iu-images", type=Path, default=None, help="IU X-ray image folder, if any")
    parser.add_argument("--mimic", type=Path, default=None, help="MIMIC-CXR-JPG/ImaGenome root, if any")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder (set CRRG_DATA or pass --data)")
    start = time.perf_counter()
    summary = prepare_data(args.data, args.out, args.sources, args.limit, args.preview, args.iu_images, args.mimic)
    logger.info("%s\nwrote %s in %.1f s", summary.text(), args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
