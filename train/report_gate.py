"""Which image-level findings a report may state: the within-source validation gate.

An image-level finding is stated in reports only when its validation AUC is at least
:data:`MIN_REPORT_AUC` **within every source** that assesses it with at least
:data:`MIN_VAL_CASES` validation positives and negatives. A pooled AUC can reward a head for
telling the sources apart: the image-level nodule head scored 0.80 pooled over NIH and JSRT
validation films because every JSRT film is a nodule study, and it wrote "nodule" on every JSRT
film while ranking NIH films at chance. Within one source, the source cannot be the cue.

A second rule, :func:`firing_check`, covers what no AUC can score: a head trained on one
hospital's labels (NIH) extrapolates to other hospitals' strongly abnormal films. The shipped head
of 2026-12-06 stated pneumothorax on 475 of 641 Kermany pneumonia test films, where NIH's own
pneumonia-like films have one in 2 %. A finding is stated only when, on the validation
pneumonia-like films of the sources that do not assess it, it is stated at most
:data:`MAX_EXCESS_FIRING` above its co-occurrence prior (its rate among the assessing sources'
pneumonia-like train films).

Used by ``train.train_heads`` (when it ships the image head), ``train.refit_image_findings`` and
``train.gate_findings`` (on a ``train.evaluate --split val`` run of a finished model, through the
pipeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

MIN_REPORT_AUC = 0.7  # an image-level finding is reported only at or above this validation AUC ...
MIN_VAL_CASES = 5  # ... within each source with at least this many validation positives and negatives
MAX_EXCESS_FIRING = 0.10  # stated share on unassessed pneumonia-like films above the co-occurrence prior
MIN_FIRING_SENSITIVITY = 0.2  # a threshold raised for the firing bound must still state this share of val positives


@dataclass(frozen=True)
class SourceScore:
    """One finding's validation figures within one source."""

    source: str
    n_positive: int
    n_negative: int
    auc: float | None  # None: one class only

    @property
    def scored(self) -> bool:
        return self.auc is not None and min(self.n_positive, self.n_negative) >= MIN_VAL_CASES

    def to_json(self) -> dict[str, object]:
        return {"n_positive": self.n_positive, "n_negative": self.n_negative, "auc": self.auc}


@dataclass(frozen=True)
class GateDecision:
    """Whether a finding is stated in reports, and why."""

    finding: str
    kept: bool
    auc: float | None  # the lowest within-source AUC among the scored sources
    by_source: tuple[SourceScore, ...]
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"kept": self.kept, "auc": self.auc, "reason": self.reason,
                "by_source": {s.source: s.to_json() for s in self.by_source}}


def source_scores(y: np.ndarray, p: np.ndarray, sources: Sequence[str]) -> tuple[SourceScore, ...]:
    """Per-source counts and AUC of probabilities ``p`` against 0/1 targets ``y``."""
    y, p, src = np.asarray(y), np.asarray(p), np.asarray(sources)
    out = []
    for source in sorted(set(src.tolist())):
        ys, ps = y[src == source], p[src == source]
        n_pos = int((ys == 1).sum())
        n_neg = int(len(ys) - n_pos)
        auc = float(roc_auc_score(ys, ps)) if n_pos and n_neg else None
        out.append(SourceScore(source, n_pos, n_neg, auc))
    return tuple(out)


def gate(finding: str, scores: Iterable[SourceScore]) -> GateDecision:
    """The decision for one finding from its per-source validation figures."""
    scores = tuple(scores)
    scored = [s for s in scores if s.scored]
    if not scored:
        counts = ", ".join(f"{s.source} {s.n_positive}+/{s.n_negative}-" for s in scores) or "no cases"
        return GateDecision(finding, False, None, scores,
                            f"no source with {MIN_VAL_CASES} validation positives and negatives ({counts})")
    worst = min(scored, key=lambda s: s.auc)
    kept = worst.auc >= MIN_REPORT_AUC
    return GateDecision(finding, kept, worst.auc, scores,
                        f"lowest within-source validation AUC {worst.auc:.3f} ({worst.source}) "
                        f"{'>=' if kept else '<'} {MIN_REPORT_AUC}")


def gate_from_metrics(image_findings: Mapping[str, Mapping[str, object]],
                      findings: Iterable[str]) -> dict[str, GateDecision]:
    """Decisions from the ``image_findings`` section of a ``train.evaluate`` metrics.json (its
    ``by_source`` entries: ``auc``, ``n``, ``n_positive``), for ``findings``; a finding the
    evaluation did not score is not kept."""
    out = {}
    for finding in findings:
        by_source = (image_findings.get(finding) or {}).get("by_source") or {}
        scores = [SourceScore(source, int(m["n_positive"]), int(m["n"]) - int(m["n_positive"]), m.get("auc"))
                  for source, m in sorted(by_source.items())]
        out[finding] = gate(finding, scores)
    return out


@dataclass(frozen=True)
class FiringCheck:
    """How often a finding is stated on the validation pneumonia-like films of the sources that do
    not assess it, against its co-occurrence prior."""

    finding: str
    films: int
    stated: int
    prior: float

    @property
    def rate(self) -> float | None:
        return self.stated / self.films if self.films else None

    @property
    def bound(self) -> float:
        return self.prior + MAX_EXCESS_FIRING

    @property
    def ok(self) -> bool:
        return self.films < MIN_VAL_CASES or self.stated / self.films <= self.bound

    def to_json(self) -> dict[str, object]:
        return {"films": self.films, "stated": self.stated, "rate": self.rate, "prior": self.prior,
                "bound": self.bound, "ok": self.ok}


def firing_check(finding: str, stated: np.ndarray, prior: float) -> FiringCheck:
    """``stated``: bool per validation pneumonia-like film of the sources that do not assess
    ``finding`` (probability at or above its threshold)."""
    stated = np.asarray(stated, dtype=bool)
    return FiringCheck(finding, int(len(stated)), int(stated.sum()), float(prior))


def firing_threshold(threshold: float, elsewhere: np.ndarray, prior: float) -> float:
    """The lowest threshold at or above ``threshold`` at which at most ``prior`` +
    :data:`MAX_EXCESS_FIRING` of the probabilities ``elsewhere`` (the validation pneumonia-like
    films of the sources that do not assess the finding) reach it."""
    p = np.sort(np.asarray(elsewhere, dtype=float))
    allowed = int(np.floor((prior + MAX_EXCESS_FIRING) * len(p)))
    if len(p) < MIN_VAL_CASES or allowed >= len(p) or int((p >= threshold).sum()) <= allowed:
        return float(threshold)
    return max(float(threshold), float(np.nextafter(p[len(p) - allowed - 1], np.inf)))
