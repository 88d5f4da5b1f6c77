"""Command-line options, logging, seeding and model start-up shared by every stage script.

Every script takes the same options (``--config --set --prepared --data --out --init --seed
--resume --max-steps --max-minutes --threads --device``); see :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any, TypeVar

import torch

from crrg.config import from_dict, load_json, to_dict
from crrg.model import CRRGConfig, CRRGModel, get_config
from train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from train.distributed import DistInfo, init_distributed
from train.engine import StopRules, Trainer

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
C = TypeVar("C")
#: run-config keys renamed since checkpoints were written (issue #19: the heads' vocabulary)
RENAMED_KEYS = {"abnormal_loss_weight": "abnormality_loss_weight",
                "pos_weight_abnormal": "pos_weight_abnormality"}


def build_parser(script: str, description: str, default_config: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m train.{script}", description=description)
    p.add_argument("--config", type=Path, default=None,
                   help=f"run config JSON (default: train/configs/{default_config})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run config field (VALUE parsed as JSON when possible); repeatable")
    p.add_argument("--prepared", type=Path, default=None,
                   help="folder written by `python -m train.prepare` (regions.jsonl, images.jsonl, ...)")
    p.add_argument("--data", type=Path, default=None,
                   help="data root the image paths are relative to (default: the one in meta.json)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint.pt, model/, log, plots")
    p.add_argument("--init", type=Path, default=None,
                   help="start from a saved CRRGModel folder (a previous stage's OUT/model, fp16 "
                        "weights) or a previous stage's OUT/checkpoint.pt (exact fp32 weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop when the global step reaches this (checkpoint + model are written)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--log-level", default="INFO")
    return p


def clip_run_parser(doc: str, config: str, example: str) -> argparse.ArgumentParser:
    """The options of the CLIP runs on a finished model (``train.train_text_tower``,
    ``train.train_image_tower``): prepared folder, base weights, output, data root, threads and
    ``--set`` overrides of their ``config`` dataclass (``example``: one override)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=Path("assets/crrg-default"), help="model folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None, help="data root (default: the prepared folder's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help=f"{config} field, e.g. {example} (repeatable)")
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


CARD_FILES = ("README.md", "LICENSE.md", "metrics.json")


def save_with_card(model: CRRGModel, base: str | Path, out: str | Path) -> None:
    """``model.save_pretrained(out)`` keeping the card, licence and metrics of the model folder
    ``base`` it was derived from (the card's front matter is refreshed, its body kept)."""
    import shutil

    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in CARD_FILES:
        if (base / name).is_file() and base.resolve() != out.resolve():
            shutil.copy(base / name, out / name)
    model.save_pretrained(out)


def load_run_config(cls: type[C], stage: str, args: argparse.Namespace,
                    saved: dict[str, Any] | None = None) -> C:
    """The run config: the checkpoint's when resuming (keys renamed since it was written are
    read under their new name, :data:`RENAMED_KEYS`), else ``--config`` / the stage default;
    ``--set`` overrides apply on top. Unknown keys raise ``ValueError``."""
    if saved is not None:
        data = {RENAMED_KEYS.get(k, k): v for k, v in saved.items()}
        if args.config is not None:
            logger.warning("--resume: using the run config saved in the checkpoint, not %s", args.config)
    else:
        path = args.config or CONFIG_DIR / f"{stage}_default.json"
        if not Path(path).is_file():
            raise FileNotFoundError(f"run config {path} not found")
        data = to_dict(load_json(cls, path))
    data.update(parse_overrides(args.overrides))
    return from_dict(cls, data)


def setup(args: argparse.Namespace) -> DistInfo:
    """Threads, process group, output folder, logging (file on rank 0) and seeds."""
    if args.threads:
        torch.set_num_threads(args.threads)
    info = init_distributed(args.device)
    out = Path(args.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    level = getattr(logging, str(args.log_level).upper(), logging.INFO) if info.is_main else logging.WARNING
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    handlers: list[logging.Handler] = [console]
    if info.is_main:  # the log file always gets INFO, whatever the console shows
        handlers.append(logging.FileHandler(out / "train.log"))
        handlers[-1].setLevel(logging.INFO)
    logging.basicConfig(level=min(level, logging.INFO), handlers=handlers, force=True,
                        format=f"%(asctime)s [rank {info.rank}] %(name)s %(levelname)s: %(message)s")
    seed_everything(args.seed + info.rank)
    logger.info("command: %s", " ".join(sys.argv))
    return info


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def resume_state(args: argparse.Namespace, stage: str) -> dict[str, Any] | None:
    """The checkpoint dict when ``--resume`` (error if missing), else ``None``."""
    if not args.resume:
        return None
    return load_checkpoint(Path(args.out) / CHECKPOINT_NAME, stage=stage)


def load_saved(path: str | Path) -> CRRGModel:
    """A model from a saved CRRGModel folder (fp16 weights, cast to fp32) or from a stage's
    ``checkpoint.pt`` (exact fp32 weights), in training mode."""
    path = Path(path)
    if path.is_file():
        state = load_checkpoint(path)
        model = CRRGModel(from_dict(CRRGConfig, state["model_config"]))
        model.load_state_dict(state["model"], strict=True)
        logger.info("model loaded from %s (step %d of stage %r)", path, state["step"], state["stage"])
        return model.train()
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a saved CRRGModel folder nor a checkpoint.pt")
    model = CRRGModel.from_pretrained(str(path))
    logger.info("model loaded from %s", path)
    return model.float().train()


def load_model(args: argparse.Namespace, variant: str, state: dict[str, Any] | None) -> CRRGModel:
    """The model to train: from the checkpoint (resume), ``--init``, or a fresh variant."""
    if state is not None:
        model = CRRGModel(from_dict(CRRGConfig, state["model_config"]))
        model.load_state_dict(state["model"], strict=True)
        return model.train()
    if args.init is not None:
        return load_saved(args.init)
    logger.info("fresh model of variant %r", variant)
    return CRRGModel(get_config(variant)).train()


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse a stage script's options; ``--prepared`` is required."""
    args = parser.parse_args(argv)
    if args.prepared is None:
        parser.error("--prepared is required (the folder written by `python -m train.prepare`)")
    return args


def resume_or_configure(args: argparse.Namespace, stage: str, cls: type[C]) -> tuple[dict[str, Any] | None, C]:
    """The checkpoint state (None unless ``--resume``) and the run config: a resumed run keeps
    the settings it started with (plus ``--set``), see :func:`load_run_config`."""
    state = resume_state(args, stage)
    return state, load_run_config(cls, stage, args, state["run_config"] if state else None)


def fit(args: argparse.Namespace, info: DistInfo, state: dict[str, Any] | None, **trainer: Any) -> None:
    """Train with the options every script shares (``--out --seed --max-steps --max-minutes``,
    the resumed ``state``); ``trainer``: the stage's own :class:`train.engine.Trainer` arguments
    (stage, model, module, dataset, collate, run, eval_dataset, ...)."""
    Trainer(out=args.out, info=info, seed=args.seed, stop=StopRules(args.max_steps, args.max_minutes),
            resume_state=state, **trainer).fit()


def freeze(module: torch.nn.Module, frozen: bool = True) -> None:
    for p in module.parameters():
        p.requires_grad_(not frozen)


def cleanup_distributed() -> None:
    from train.distributed import cleanup

    cleanup()
