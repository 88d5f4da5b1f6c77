"""Self-describing training checkpoints (nanoGPT style) for ``--resume``.

``OUT/checkpoint.pt`` holds everything needed to continue a run exactly where it stopped: the
whole model's weights (fp32) and its ``CRRGConfig`` as a dict, optimizer and scheduler state,
step, epoch, position inside the epoch, the run config, the loss history and the RNG states.
Only plain containers, numbers, strings and tensors are stored, so it loads with
``torch.load(weights_only=True)`` (no arbitrary unpickling).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_config: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    epoch: int,
    batch_in_epoch: int,
    run_config: dict[str, Any],
    stage: str,
    history: list[dict[str, float]],
    finished: bool = False,
) -> Path:
    """Write the checkpoint atomically (temporary file + rename)."""
    path = Path(path)
    state = {
        "format": FORMAT_VERSION,
        "stage": stage,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": model_config,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "batch_in_epoch": int(batch_in_epoch),
        "run_config": run_config,
        "history": history,
        "finished": bool(finished),
        "rng": rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    logger.info("checkpoint saved: %s (step %d, epoch %d)", path, step, epoch)
    return path


def load_checkpoint(path: str | Path, stage: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises ``FileNotFoundError`` when missing and ``ValueError`` when it belongs to another stage.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path} (run without --resume first)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT_VERSION}")
    if stage is not None and state.get("stage") != stage:
        raise ValueError(f"{path} is a {state.get('stage')!r} checkpoint, not {stage!r}: "
                         "resume with the script that wrote it or choose another --out")
    return state


def restore_training_state(
    state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    """Load optimizer / scheduler / RNG state from a checkpoint (the model is loaded separately)."""
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
