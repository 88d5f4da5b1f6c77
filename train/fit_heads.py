"""Fit the small evidence heads on cached features: masked BCE, Adam, best epoch on validation.

Each head trains in seconds on a CPU, which is what makes the leave-one-source-out folds and the
shortcut comparisons of ``train.train_heads`` affordable.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class HeadFitConfig:
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    max_pos_weight: float = 20.0
    balance_sources: bool = False  # sample every source equally often
    seed: int = 0


def pos_weight(target: Tensor, known: Tensor, max_weight: float) -> Tensor:
    """Per output column (last axis): negatives / positives over known entries, in [1, max]."""
    dims = tuple(range(target.ndim - 1))
    pos = (target * known).sum(dims)
    neg = ((1 - target) * known).sum(dims)
    return (neg / pos.clamp(min=1)).clamp(1.0, max_weight)


def masked_bce(logits: Tensor, target: Tensor, known: Tensor, weight: Tensor | None = None) -> Tensor:
    known = known & torch.isfinite(logits)
    safe = torch.where(known, logits, torch.zeros_like(logits))
    loss = F.binary_cross_entropy_with_logits(safe, target, pos_weight=weight, reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def _sampler(n: int, groups: list[str] | None, cfg: HeadFitConfig, rng: random.Random) -> list[int]:
    if not cfg.balance_sources or groups is None:
        order = list(range(n))
        rng.shuffle(order)
        return order
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    per = max(len(v) for v in by.values())
    order = [rng.choice(v) for v in by.values() for _ in range(per)]
    rng.shuffle(order)
    return order[: max(n, len(by) * 64)]


def fit(model: nn.Module, forward: Callable[[nn.Module, Tensor], Tensor], train: Tensor, val: Tensor,
        target: Tensor, known: Tensor, cfg: HeadFitConfig, groups: list[str] | None = None
        ) -> tuple[nn.Module, dict[str, float]]:
    """Train ``model`` on rows ``train`` (indices), keep the epoch with the lowest val loss.

    ``forward(model, idx) -> logits`` shaped like ``target[idx]``; ``groups`` (source per row of
    the full data) for source-balanced sampling."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    weight = pos_weight(target[train], known[train], cfg.max_pos_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_loss, first_loss, last_loss = None, float("inf"), None, None
    train_groups = [groups[i] for i in train.tolist()] if groups is not None else None
    for _ in range(cfg.epochs):
        model.train()
        order = _sampler(len(train), train_groups, cfg, rng)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = train[torch.tensor(order[start:start + cfg.batch_size])]
            loss = masked_bce(forward(model, idx), target[idx], known[idx], weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        last_loss = total / max(1, len(order))
        first_loss = last_loss if first_loss is None else first_loss
        model.eval()
        with torch.no_grad():
            val_loss = float(masked_bce(forward(model, val), target[val], known[val], weight)) if len(val) else last_loss
        if val_loss < best_loss:
            best_loss, best = val_loss, copy.deepcopy(model.state_dict())
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return model, {"first_train_loss": first_loss or 0.0, "last_train_loss": last_loss or 0.0,
                   "best_val_loss": best_loss}
