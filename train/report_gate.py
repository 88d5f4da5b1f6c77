"""Which image-level findings a report may state: the within-source validation gate.

An image-level finding is stated in reports only when its validation AUC is at least
:data:`MIN_REPORT_AUC` **within every source** that assesses it with at least
:data:`MIN_VAL_CASES` validation positives and negatives. A pooled AUC can reward a head for
telling the sources apart: the image-level nodule head scored 0.80 pooled over NIH and JSRT
validation films because every JSRT film is a nodule study, and it wrote "nodule" on every JSRT
film while ranking NIH films at chance. Within one source, the source cannot be the cue.

Used by ``train.train_heads`` (when it ships the image head) and ``train.gate_findings`` (on a
``train.evaluate --split val`` run of a finished model, through the pipeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

MIN_REPORT_AUC = 0.7  # an image-level finding is reported only at or above this validation AUC ...
MIN_VAL_CASES = 5  # ... within each source with at least this many validation positives and negatives


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
