"""Cache what the frozen towers of a model say about each prepared image, for training the heads
that sit on top of them (findings, image-level, abnormality, calibration) in seconds.

    python -m train.cache_features --prepared runs/prepared --weights assets/crrg-default \
        --out runs/features [--cap 500] [--threads 2]

Per image (one ``.pt`` shard per 256 images, resumable: finished shards are skipped):
``key`` (the prepared image path), ``fused`` [29, D] region features (detector RoI features fused
with the CLIP image embedding, what the region heads see), ``crops`` [29, E] CLIP embeddings of
the region crops, ``embedding`` [E] CLIP image embedding, ``scores`` / ``detected`` [29],
``boxes`` [29, 4] in stored-image pixels. ``--cap N`` keeps at most N train images per (source, image
label) of the large image-label-only sources (all val / test images are kept).
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path
from typing import Any

import torch

from crrg.pipeline import load, prepare
from train.datasets import PreparedData, capped_sample

logger = logging.getLogger("train.cache_features")
CAPPED_SOURCES = ("kermany_pneumonia", "covid_radiography")
SHARD = 256


def select_images(prepared: PreparedData, cap: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """The prepared images to cache, deterministic order (sorted by path)."""
    rows = [r for r in prepared.images(None) if r.get("split") in ("train", "val", "test")
            and r.get("image")]
    return capped_sample(rows, lambda r: (r["source"], str(r.get("abnormal")))
                         if r["source"] in CAPPED_SOURCES and r["split"] == "train" else None, cap, seed)


def _augmented(path: Path, key: str) -> Any:
    from PIL import Image

    from train.source_augment import erase_source_cues

    with Image.open(path) as image:
        return erase_source_cues(image, random.Random(key))


@torch.inference_mode()
def extract(pipe: Any, prepared: PreparedData, rows: list[dict[str, Any]], batch_size: int = 8,
            augment: bool = False) -> list[dict[str, Any]]:
    model = pipe.model
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        items = [prepare(_augmented(prepared.path(r["image"]), r["image"]) if augment else prepared.path(r["image"]),
                         model.config.image_size) for r in chunk]
        batch = pipe.stack(items)
        found = pipe.detect(batch)  # the pipeline's own detection pass
        crops = found.crops if found.crops is not None else model.clip.region_embeddings(
            batch, found.boxes, found.detected, crop_batch=16)
        for b, (row, item) in enumerate(zip(chunk, items)):
            boxes = torch.as_tensor(item.geometry.to_original(found.boxes[b].cpu()), dtype=torch.float32)
            out.append({
                "key": row["image"], "fused": found.features[b].half(), "crops": crops[b].half(),
                "embedding": found.embedding[b].half(), "scores": found.scores[b].float(),
                "detected": found.detected[b].clone(), "boxes": boxes,
                "width": item.width, "height": item.height,
            })
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--weights", default="assets/crrg-default")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cap", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--augment", action="store_true",
                        help="train images only, through train.source_augment (erases source cues)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    prepared = PreparedData(args.prepared)
    rows = select_images(prepared, args.cap)
    if args.augment:
        rows = [r for r in rows if r["split"] == "train"]
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = load(args.weights, device="cpu")
    logger.info("%d images to cache in %d shards", len(rows), -(-len(rows) // SHARD))
    for index, start in enumerate(range(0, len(rows), SHARD)):
        path = args.out / f"shard-{index:03d}.pt"
        if path.is_file():
            continue
        items = extract(pipe, prepared, rows[start:start + SHARD], augment=args.augment)
        torch.save(items, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        logger.info("shard %d: %d images", index, len(items))


if __name__ == "__main__":
    main()
