"""Assemble one model folder from stage outputs: the report model of one run + the CLIP of another.

    python -m train.assemble --base runs/default/s3/model --clip runs/default/clip/model --out OUT

Stages can train in parallel (e.g. CLIP beside the detector); this copies the CLIP weights and
config into the base model and writes a hub-style folder (config.json + fp16 model.safetensors +
README.md). An existing OUT/README.md (a hand-written model card) is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from crrg.model import CRRGModel

logger = logging.getLogger(__name__)


def assemble(base: Path, clip: Path | None, out: Path, variant: str | None = None) -> CRRGModel:
    model = CRRGModel.from_pretrained(str(base))
    if clip is not None:
        donor = CRRGModel.from_pretrained(str(clip))
        model.config = dataclasses.replace(model.config, clip=donor.config.clip)
        model.clip = donor.clip
    if variant:
        model.config = dataclasses.replace(model.config, variant=variant)
    model.save_pretrained(out)
    sizes = model.num_parameters()
    logger.info("assembled %s (%.1f M parameters: %s)", out, sum(sizes.values()) / 1e6,
                ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in sizes.items()))
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="model folder with detector/heads/decoder")
    parser.add_argument("--clip", type=Path, default=None, help="model folder whose CLIP replaces the base's")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", default=None, help="name recorded in config.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    assemble(args.base, args.clip, args.out, args.variant)


if __name__ == "__main__":
    main()
