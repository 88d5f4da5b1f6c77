"""The paper's NLG metrics on real pairs: generated report vs the image's own note sentences
(:func:`note_nlg`; the script is :mod:`train.nlg_eval`, ``train.evaluate`` calls
:func:`evaluate_note_pairs`).

The pairs are :func:`train.note_pairs.note_pairs` (COVID sets, radiograph sentences of each
image's clinical note), on the project's patient-disjoint split (checked with
:func:`train.note_pairs.assert_patient_disjoint`). On the test pairs three systems are scored
with pycocoevalcap (:func:`crrg.metrics.compute_nlg`, RGRG's protocol: corpus BLEU-1..4,
METEOR, ROUGE-L, CIDEr-D):

- ``model``: the generated report of each test image;
- ``baselines.most_common``: the most frequent training-pair reference (counted per image; ties:
  the alphabetically first), given to every test image;
- ``baselines.retrieval``: the reference of the nearest training image by CLIP image embedding
  (cosine; ties: the first training pair in :func:`note_pairs` order).

With a few dozen test pairs the numbers move a lot with the sample: ``bootstrap`` gives 95 %
intervals (resampling test images, BLEU-4 and ROUGE-L) and how often the model beats each
baseline. Texts from the data are never written into the result (only scores and counts).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crrg.metrics.nlg import SCORERS, compute_nlg
from train.note_pairs import REFERENCE, NotePair, assert_patient_disjoint, note_pairs, pair_counts, split_pairs


ImagesToReports = Callable[[Sequence[Path]], Sequence[str]]
ImagesToEmbeddings = Callable[[Sequence[Path]], Any]  # -> [N, E] tensor or array
BOOTSTRAP_KEYS: tuple[str, ...] = ("bleu_4", "rouge_l")
ANCHORS = ("CRRG-CLIP on MIMIC-CXR: BLEU-4 0.078, ROUGE-L 0.239; RGRG (MIMIC-CXR): BLEU-4 0.126, "
           "ROUGE-L 0.264: other data (full radiology reports), not comparable with these pairs")


# ----------------------------------------------------------------------------- baselines
def most_common_report(train_pairs: Sequence[NotePair]) -> str:
    """The reference text most training images have (ties: alphabetically first)."""
    if not train_pairs:
        raise ValueError("no training pairs: the most-common baseline needs at least one")
    counts = Counter(p.reference for p in train_pairs)
    return min(counts, key=lambda text: (-counts[text], text))


def nearest_indices(train_embeddings: Any, test_embeddings: Any) -> list[int]:
    """For each test row the index of the training row with the highest cosine similarity
    ([M, E], [N, E] -> N indices; ties: the lowest index)."""
    train = F.normalize(torch.as_tensor(np.asarray(train_embeddings), dtype=torch.float64), dim=-1)  # [M, E]
    test = F.normalize(torch.as_tensor(np.asarray(test_embeddings), dtype=torch.float64), dim=-1)  # [N, E]
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1] or not len(train):
        raise ValueError(f"expected embeddings [M, E] and [N, E], got {tuple(train.shape)} and "
                         f"{tuple(test.shape)}")
    return (test @ train.T).argmax(dim=1).tolist()  # [N]; argmax returns the first maximum


def retrieval_reports(train_pairs: Sequence[NotePair], test_pairs: Sequence[NotePair],
                      train_embeddings: Any, test_embeddings: Any) -> list[str]:
    """The reference of each test image's nearest training image."""
    if len(train_embeddings) != len(train_pairs) or len(test_embeddings) != len(test_pairs):
        raise ValueError("one embedding per pair expected")
    return [train_pairs[i].reference for i in nearest_indices(train_embeddings, test_embeddings)]


# ----------------------------------------------------------------------------- scoring
def score(references: Sequence[str], hypotheses: Sequence[str],
          metrics: Sequence[str] = SCORERS) -> dict[str, float]:
    """pycocoevalcap corpus scores (``NLG_KEYS`` of the scorers run). An empty hypothesis (no
    region selected) is scored as an empty text, i.e. it earns nothing."""
    return compute_nlg(list(references), [h or "" for h in hypotheses], metrics=metrics)


def bootstrap(references: Sequence[str], systems: dict[str, Sequence[str]], rounds: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """Resample test images with replacement ``rounds`` times; per system the 2.5 / 97.5 %
    percentiles of corpus BLEU-4 and ROUGE-L, and the share of rounds in which ``model`` scores
    higher than each other system (same resample for all systems)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    from crrg.metrics.nlg import _rgrg_text

    n = len(references)
    refs = [_rgrg_text(r) for r in references]
    hyps = {name: [_rgrg_text(h or "") for h in texts] for name, texts in systems.items()}
    rouge_items = {name: np.asarray(Rouge().compute_score({str(i): [r] for i, r in enumerate(refs)},
                                                          {str(i): [h] for i, h in enumerate(texts)})[1])
                   for name, texts in hyps.items()}  # [N] per system: ROUGE-L is a mean of items
    rng = random.Random(seed)
    draws: dict[str, dict[str, list[float]]] = {name: {k: [] for k in BOOTSTRAP_KEYS} for name in systems}
    for _ in range(rounds):
        idx = [rng.randrange(n) for _ in range(n)]
        gts = {str(j): [refs[i]] for j, i in enumerate(idx)}
        for name, texts in hyps.items():
            res = {str(j): [texts[i]] for j, i in enumerate(idx)}
            draws[name]["bleu_4"].append(float(Bleu(4).compute_score(gts, res, verbose=0)[0][3]))
            draws[name]["rouge_l"].append(float(rouge_items[name][idx].mean()))
    interval = {name: {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
                       for k, v in d.items()} for name, d in draws.items()}
    better = {name: {k: float(np.mean(np.asarray(draws["model"][k]) > np.asarray(draws[name][k])))
                     for k in BOOTSTRAP_KEYS}
              for name in systems if name != "model" and "model" in systems}
    return {"rounds": rounds, "resampled": "test images, with replacement", "interval_95": interval,
            "share_model_better": better}


def _batched(fn: Callable[[Sequence[Path]], Any], paths: Sequence[Path], batch_size: int) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(paths), batch_size):
        out.append(fn(paths[start:start + batch_size]))
    return out


def _embed(fn: ImagesToEmbeddings, paths: Sequence[Path], batch_size: int) -> np.ndarray:
    parts = [torch.as_tensor(np.asarray(e.detach().cpu() if isinstance(e, torch.Tensor) else e),
                             dtype=torch.float32) for e in _batched(fn, paths, batch_size)]
    return torch.cat(parts).numpy()  # [N, E]


def note_nlg(pairs: Sequence[NotePair], generate: ImagesToReports, embed: ImagesToEmbeddings, *,
             root: Path | None = None, split: str = "test", limit: int | None = None, seed: int = 0,
             metrics: Sequence[str] = SCORERS, batch_size: int = 8, bootstrap_rounds: int = 1000
             ) -> dict[str, Any]:
    """Score the model and both baselines on the ``split`` pairs (see the module docstring).

    ``generate`` maps image paths to report texts, ``embed`` image paths to CLIP image
    embeddings [N, E]; both are called on chunks of ``batch_size`` paths, each pair's ``image``
    joined to ``root`` (absolute paths stay as they are). ``limit``: at most this many
    ``split`` pairs (seeded sample, in pair order). Raises :class:`SplitLeakError` when a
    patient has pairs in two splits. Returns ``{"n_pairs", "n_train_pairs", "model",
    "baselines": {"most_common", "retrieval"}, ...}``; with no test or no training pair,
    ``n_pairs``/``n_train_pairs`` and a ``pairs_note`` only. Key names never clash with
    ``train.evaluate``'s report-pair ``nlg`` section, which this result is merged into."""
    assert_patient_disjoint(pairs)
    train, test = split_pairs(pairs, "train"), split_pairs(pairs, split)
    if limit is not None and len(test) > limit:
        keep = set(random.Random(seed).sample(range(len(test)), limit))
        test = [p for i, p in enumerate(test) if i in keep]
    result: dict[str, Any] = {"n_pairs": len(test), "n_train_pairs": len(train), "split": split,
                              "reference": REFERENCE}
    if not test or not train:
        return {**result, "pairs_note": f"no {split} or no train note pairs: NLG on note pairs not computed"}
    path = (lambda p: Path(p.image)) if root is None else (lambda p: Path(root) / p.image)
    result.update(n_patients=len({p.patient_key for p in test}),
                  pairs_by_source=dict(sorted(Counter(p.source for p in test).items())),
                  pairs=pair_counts(pairs), protocol="pycocoevalcap, RGRG tokenization "
                  "(crrg.metrics.nlg): corpus BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D")
    test_paths = [path(p) for p in test]
    reports = [str(t) for part in _batched(generate, test_paths, batch_size) for t in part]
    if len(reports) != len(test):
        raise ValueError(f"generate returned {len(reports)} reports for {len(test)} images")
    train_emb = _embed(embed, [path(p) for p in train], batch_size)  # [M, E]
    test_emb = _embed(embed, test_paths, batch_size)  # [N, E]
    common = most_common_report(train)
    systems = {"model": reports, "most_common": [common] * len(test),
               "retrieval": retrieval_reports(train, test, train_emb, test_emb)}
    refs = [p.reference for p in test]
    scores = {name: score(refs, hyps, metrics) for name, hyps in systems.items()}
    result.update(model=scores["model"],
                  baselines={"most_common": scores["most_common"], "retrieval": scores["retrieval"]},
                  baseline_notes={
                      "most_common": f"one training reference, shared by "
                                     f"{sum(p.reference == common for p in train)} training images, "
                                     "given to every test image",
                      "retrieval": "the reference of the nearest training image by CLIP image "
                                   "embedding (cosine)"},
                  empty_model_reports=sum(not r.strip() for r in reports), anchors=ANCHORS)
    if bootstrap_rounds and "bleu" in metrics and "rouge" in metrics:
        result["bootstrap"] = bootstrap(refs, systems, bootstrap_rounds, seed)
    return result


# ----------------------------------------------------------------------------- model glue
def pipeline_callables(pipe: Any) -> tuple[ImagesToReports, ImagesToEmbeddings]:
    """``generate`` and ``embed`` for :func:`note_nlg` from a :class:`crrg.pipeline.Pipeline`:
    its reports (no zero-shot prompts) and its CLIP image embeddings of the same preprocessed
    images (:meth:`Pipeline.prepare` -> ``model.clip.encode_image``)."""

    def generate(paths: Sequence[Path]) -> list[str]:
        return [r.findings_text for r in pipe.batch([str(p) for p in paths], prompts=[])]

    @torch.inference_mode()
    def embed(paths: Sequence[Path]) -> torch.Tensor:
        batch = torch.stack([pipe.prepare(str(p)).tensor for p in paths]).to(pipe.device)  # [B, 1, S, S]
        return pipe.model.clip.encode_image(batch).float().cpu()  # [B, E]

    return generate, embed


def evaluate_note_pairs(model: Any, prepared: Any, *, split: str = "test", limit: int | None = None,
                        seed: int = 0, metrics: Sequence[str] = SCORERS,
                        bootstrap_rounds: int = 1000) -> dict[str, Any]:
    """:func:`note_nlg` for ``train.evaluate``: pairs from a ``train.prepare`` folder's
    ``images.jsonl`` (all splits), the model wrapped in a :class:`crrg.pipeline.Pipeline`."""
    pairs = note_pairs(prepared.images(None))
    if not split_pairs(pairs, split) or not split_pairs(pairs, "train"):
        return note_nlg(pairs, lambda p: [], lambda p: [], split=split)  # counts + note, no model call
    from crrg.pipeline import Pipeline

    generate, embed = pipeline_callables(Pipeline(model, device=next(model.parameters()).device))
    return note_nlg(pairs, generate, embed, root=prepared.data_root, split=split, limit=limit,
                    seed=seed, metrics=metrics, bootstrap_rounds=bootstrap_rounds)
