"""The training loop every stage shares (torchvision-style ``engine.py``).

A stage script builds a *stage module*: an ``nn.Module`` whose ``forward(batch)`` returns a dict
of scalar ``loss*`` tensors including the total ``"loss"`` (in eval mode it must return the same
dict without updating any statistics). :class:`Trainer` owns everything else: the resumable
(distributed) sampler, AdamW with warm-up + cosine decay, gradient clipping, DDP, tqdm, the log
file, periodic checkpoints, ``--max-steps`` / ``--max-minutes`` stops, validation losses, loss
curves, ``timing.json`` and the final ``save_pretrained`` of the whole model into ``OUT/model``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from crrg.config import to_dict
from train import distributed
from train.checkpoint import CHECKPOINT_NAME, restore_training_state, save_checkpoint
from train.distributed import DistInfo
from train.plots import plot_history

logger = logging.getLogger(__name__)

MODEL_DIR = "model"


@dataclass
class RunConfig:
    """Optimisation settings shared by every stage (stage configs subclass it).

    ``total_steps``: length of the LR schedule (``None``: ``epochs`` x batches per epoch).
    ``eval_every``: steps between validation passes (0: only when the schedule completes) over at most
    ``eval_batches`` batches. ``amp``: bfloat16 autocast on CUDA (ignored on CPU).
    """

    model_variant: str = "default"
    batch_size: int = 4
    epochs: int = 10
    total_steps: int | None = None
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    eval_every: int = 0
    eval_batches: int = 20
    amp: bool = False


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (also for one process) that can start part-way through an epoch.

    The order depends only on (seed, epoch), so skipping ``start`` samples after a resume gives
    exactly the batches the interrupted run had not seen yet.
    """

    def __init__(self, dataset: Dataset, info: DistInfo, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside dicts / lists / tuples go to ``device``; the rest is kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when enabled; a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(module: nn.Module, run: RunConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases and norm weights (1-D)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the stage has no trainable parameters: check which parts are frozen")
    groups = [{"params": decay, "weight_decay": run.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=run.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, run: RunConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_lr_ratio`` x lr."""
    warmup = max(0, min(run.warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return run.min_lr_ratio + (1 - run.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class StopRules:
    """Per-invocation limits: stop when the global step reaches ``max_steps`` or after
    ``max_minutes`` of wall time (checkpoint + model written either way, so runs can be chunked)."""

    max_steps: int | None = None
    max_minutes: float | None = None


class Trainer:
    """Runs one stage: ``Trainer(...).fit()``; see the module docstring."""

    def __init__(
        self,
        *,
        stage: str,
        model: nn.Module,
        module: nn.Module,
        dataset: Dataset,
        collate: Callable[[list[Any]], dict[str, Any]],
        run: RunConfig,
        out: Path,
        info: DistInfo,
        seed: int = 0,
        stop: StopRules | None = None,
        resume_state: dict[str, Any] | None = None,
        eval_dataset: Dataset | None = None,
        model_config: Callable[[], dict[str, Any]] | None = None,
        find_unused_parameters: bool = True,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError(f"{stage}: the training set is empty (check --prepared / --data and the split)")
        self.stage, self.model, self.run, self.out, self.info = stage, model, run, Path(out), info
        self.seed, self.stop = seed, stop or StopRules()
        self.module = module.to(info.device)
        self.collate, self.dataset, self.eval_dataset = collate, dataset, eval_dataset
        self.model_config = model_config or (lambda: to_dict(model.config))
        self.sampler = ResumableSampler(dataset, info, shuffle=True, seed=seed)
        self.loader = self._loader(dataset, self.sampler)
        self.steps_per_epoch = max(1, math.ceil(self.sampler.num_samples / run.batch_size))
        self.total_steps = run.total_steps or run.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(self.module, run)
        self.scheduler = build_scheduler(self.optimizer, run, self.total_steps)
        self.wrapped = distributed.wrap(self.module, info, find_unused_parameters)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.history: list[dict[str, float]] = []
        if resume_state is not None:
            restore_training_state(resume_state, self.optimizer, self.scheduler)
            self.step, self.epoch = resume_state["step"], resume_state["epoch"]
            self.batch_in_epoch = resume_state["batch_in_epoch"]
            self.history = list(resume_state["history"])
            logger.info("resumed %s at step %d (epoch %d, batch %d)", stage, self.step, self.epoch,
                        self.batch_in_epoch)

    def _loader(self, dataset: Dataset, sampler: ResumableSampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.run.batch_size, sampler=sampler,
                          collate_fn=self.collate, num_workers=self.run.num_workers,
                          persistent_workers=self.run.num_workers > 0,  # keeps per-worker image caches
                          pin_memory=self.info.device.type == "cuda")

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train until the schedule ends or a stop rule fires; returns the timing summary."""
        with logging_redirect_tqdm():  # log lines print above the progress bar, not through it
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        start = time.perf_counter()
        timed: list[tuple[float, int]] = []  # (seconds incl. data loading, images) per step
        done = self.step >= self.total_steps
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.info.is_main,
                   desc=self.stage, dynamic_ncols=True, mininterval=2.0)
        while not done:
            self.sampler.set_epoch(self.epoch)
            self.sampler.start = min(self.batch_in_epoch * self.run.batch_size, self.sampler.num_samples)
            t0 = time.perf_counter()
            for batch in self.loader:
                logs = self._train_step(batch)
                dt, t0 = time.perf_counter() - t0, time.perf_counter()  # data loading included
                self.step += 1
                self.batch_in_epoch += 1
                timed.append((dt, int(batch.get("n", 0))))
                bar.update(1)
                self._log(logs, bar)
                stop = self._should_stop(start)
                if self.run.eval_every and self.step % self.run.eval_every == 0:
                    self._evaluate()
                if self.step % self.run.checkpoint_every == 0 and not stop:
                    self._checkpoint(finished=False)
                t0 = time.perf_counter()  # evaluation and checkpoints are not training time
                if stop or self.step >= self.total_steps:
                    done = True
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
        bar.close()
        finished = self.step >= self.total_steps
        if finished and self.eval_dataset is not None:
            self._evaluate()
        self._checkpoint(finished=finished)
        timing = self._timing(timed[1:] or timed, time.perf_counter() - start)
        self._finish(finished, timing)
        return timing

    def _train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.wrapped.train()
        batch = move_to(batch, self.info.device)
        with autocast(self.info.device, self.run.amp):
            losses = self.wrapped(batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.stage}: non-finite loss {float(loss)} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.run.grad_clip > 0:
            params = [p for p in self.module.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.run.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss")}

    def _should_stop(self, start: float) -> bool:
        stop = self.stop.max_steps is not None and self.step >= self.stop.max_steps
        if self.stop.max_minutes is not None:
            stop = stop or (time.perf_counter() - start) / 60 >= self.stop.max_minutes
        return distributed.any_across(stop, self.info)

    def _log(self, logs: dict[str, float], bar: tqdm) -> None:
        logs = distributed.mean_across(logs, self.info)
        row = {"step": self.step, "epoch": self.epoch, "lr": self.scheduler.get_last_lr()[0], **logs}
        self.history.append(row)
        if self.info.is_main:
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if self.step % self.run.log_every == 0 or self.step == 1:
                text = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
                logger.info("step %d/%d epoch %d lr %.2e %s", self.step, self.total_steps,
                            self.epoch, row["lr"], text)

    # ------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        """Mean losses over at most ``eval_batches`` validation batches (all ranks)."""
        if self.eval_dataset is None or len(self.eval_dataset) == 0:
            return {}
        sampler = ResumableSampler(self.eval_dataset, self.info, shuffle=True, seed=self.seed)
        loader = self._loader(self.eval_dataset, sampler)
        self.module.eval()
        sums: dict[str, float] = {}
        count = 0
        for i, batch in enumerate(loader):
            if i >= self.run.eval_batches:
                break
            with autocast(self.info.device, self.run.amp):
                losses = self.module(move_to(batch, self.info.device))
            for k, v in losses.items():
                if k.startswith("loss"):
                    sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
        self.module.train()
        means = distributed.mean_across({k: v / max(1, count) for k, v in sums.items()}, self.info)
        val = {f"val_{k}": v for k, v in means.items()}
        if val:
            self.history.append({"step": self.step, "epoch": self.epoch, **val})
            if self.info.is_main:
                logger.info("validation at step %d: %s", self.step,
                            " ".join(f"{k}={v:.4f}" for k, v in sorted(val.items())))
        return val

    # ------------------------------------------------------------------------- outputs
    def _checkpoint(self, finished: bool) -> None:
        if self.info.is_main:
            save_checkpoint(
                self.out / CHECKPOINT_NAME, model=self.model, model_config=self.model_config(),
                optimizer=self.optimizer, scheduler=self.scheduler, step=self.step, epoch=self.epoch,
                batch_in_epoch=self.batch_in_epoch, run_config=to_dict(self.run), stage=self.stage,
                history=self.history, finished=finished,
            )
        distributed.barrier(self.info)

    def _timing(self, timed: list[tuple[float, int]], wall: float) -> dict[str, Any]:
        """Seconds per step / image; the first step of an invocation (warm-up) is left out."""
        steps, step_time = len(timed), sum(t for t, _ in timed)
        per_step = step_time / max(1, steps)
        images_total = sum(n for _, n in timed) * self.info.world_size
        return {
            "stage": self.stage, "steps_timed": steps, "seconds_per_step": round(per_step, 4),
            "seconds_per_image": round(step_time / images_total, 4) if images_total else None,
            "batch_size": self.run.batch_size, "world_size": self.info.world_size,
            "device": str(self.info.device), "threads": torch.get_num_threads(),
            "wall_seconds": round(wall, 2), "step": self.step, "total_steps": self.total_steps,
        }

    def _finish(self, finished: bool, timing: dict[str, Any]) -> None:
        if self.info.is_main:
            self.model.save_pretrained(self.out / MODEL_DIR)
            (self.out / "history.json").write_text(json.dumps(self.history) + "\n")
            (self.out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
            plot_history(self.history, self.out / "loss.png", title=self.stage)
            state = "finished" if finished else "stopped early (resume with --resume)"
            logger.info("%s %s at step %d/%d; model saved to %s; %.3f s/step, %s s/image",
                        self.stage, state, self.step, self.total_steps, self.out / MODEL_DIR,
                        timing["seconds_per_step"], timing["seconds_per_image"])
        distributed.barrier(self.info)
