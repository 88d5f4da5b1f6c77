"""crrg web demo: ``python app.py [--weights DIR_OR_REPO] [--port 7860] [--share] [--examples DIR]``.

Serves the embedded default weights on http://127.0.0.1:7860 (0.0.0.0 on a Hugging Face Space).
Environment: CRRG_WEIGHTS, CRRG_EXAMPLES, GRADIO_SERVER_PORT. Research use only.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

START = time.perf_counter()
logger = logging.getLogger("crrg.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="crrg web demo (research use only)")
    parser.add_argument("--weights", default=os.environ.get("CRRG_WEIGHTS"),
                        help="model folder or hub repo id org/name "
                        "(env CRRG_WEIGHTS; default: assets/crrg-default)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME"),
                        help="bind address (default 127.0.0.1; 0.0.0.0 on a Space)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--examples", default=os.environ.get("CRRG_EXAMPLES"),
                        help="folder of example images (env CRRG_EXAMPLES)")
    return parser.parse_args(argv)


HUB_ID = re.compile(r"^(hf-hub:)?[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(weights: str | None) -> bool:
    """True for ``org/name`` or ``hf-hub:org/name`` that is not an existing local path."""
    return bool(weights) and bool(HUB_ID.match(weights)) and not Path(weights).expanduser().exists()


def offline_env(weights: str | None) -> None:
    """Offline, no-telemetry defaults (only a hub id may go online); set BEFORE gradio /
    huggingface_hub are imported. Values already in the environment win."""
    if not is_hub_id(weights):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    """Serve first, load the model second: the page is up after the gradio import and the page
    build; the model (torchvision, transformers, open_clip, weights) loads in a background thread
    and requests that come sooner wait for it (:mod:`demo.loader`)."""
    args = parse_args(argv)
    offline_env(args.weights)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from crrg.cli import default_weights
    from crrg.hub import WeightsNotFoundError
    from demo.loader import PipelineLoader

    weights = args.weights or default_weights()
    try:
        loader = PipelineLoader(weights)  # checks the folder / hub repo and reads config.json only
    except (WeightsNotFoundError, FileNotFoundError, ValueError) as err:
        print(f"error: cannot load crrg weights from {weights!r}: {err}\n"
              "Get weights: pass --weights (or CRRG_WEIGHTS) a model folder or a hub repo id 'org/name', "
              "or write a random test model with `python -m crrg init /tmp/crrg-random`.", file=sys.stderr)
        return 2
    from demo import build_demo, launch_options

    host = args.host or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    blocks = build_demo(loader, examples=args.examples)
    options = launch_options(args.examples, server_name=host, server_port=args.port, share=args.share)
    blocks.launch(prevent_thread_lock=True, **options)
    logger.info("crrg demo serving on %s in %.1f s (weights: %s; the model loads in the background)",
                blocks.local_url, time.perf_counter() - START, weights)
    loader.start()
    blocks.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
