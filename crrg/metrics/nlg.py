"""NLG metrics with pycocoevalcap, computed as RGRG (Tanida et al., CVPR 2023) computes them.

Protocol (``tokenization="rgrg"``, the default): each text becomes ``re.sub(" +", " ",
text.replace(".", " ."))`` (RGRG's ``convert_for_pycoco_scorer``; here also with newlines/tabs as
spaces and the ends stripped), case is kept, and pycocoevalcap's scorers run on the whole corpus:
``Bleu(4)`` (corpus-level BLEU-1..4, "closest" reference length), ``Meteor()`` (METEOR 1.5 jar,
``-l en -norm``), ``Rouge()`` (ROUGE-L, beta 1.2, mean over items) and ``Cider()`` (CIDEr-D,
document frequencies from the evaluated references, so it needs a corpus, not one pair).

``tokenization="ptb"`` is the COCO-caption protocol instead: Stanford PTBTokenizer (the jar that
pycocoevalcap ships; needs Java), lower-cased, punctuation removed. ``"none"`` scores the texts
as given. Numbers from different protocols (or from nltk's sentence-averaged BLEU) are not
comparable.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

logger = logging.getLogger(__name__)

NLG_KEYS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
SCORERS: tuple[str, ...] = ("bleu", "meteor", "rouge", "cider")
TOKENIZATIONS: tuple[str, ...] = ("rgrg", "ptb", "none")

Texts = Union[Mapping[object, Union[str, Sequence[str]]], Sequence[Union[str, Sequence[str]]]]


@dataclass(frozen=True)
class NLGScores:
    """Corpus scores (``NLG_KEYS`` subset) and per-item scores, items in input order (dict keys:
    insertion order)."""

    corpus: dict[str, float]
    items: dict[str, list[float]]
    keys: list[object]  # the input's dict keys, or 0..N-1 for lists


def compute_nlg(
    references: Texts,
    hypotheses: Texts,
    *,
    tokenization: str = "rgrg",
    metrics: Sequence[str] = SCORERS,
) -> dict[str, float]:
    """Corpus-level BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of ``hypotheses`` against ``references``.

    ``references`` and ``hypotheses`` are parallel lists, or dicts with the same keys; a reference
    may be one text or a list of texts (several references), a hypothesis is one text. ``metrics``
    picks scorers among ``("bleu", "meteor", "rouge", "cider")``; METEOR (and ``"ptb"``) need Java
    and METEOR's JVM takes ~10 s to start. Returns ``{"bleu_1", ..., "bleu_4", "meteor",
    "rouge_l", "cider"}`` for the scorers run.
    """
    return compute_nlg_detailed(
        references, hypotheses, tokenization=tokenization, metrics=metrics
    ).corpus


def compute_nlg_detailed(
    references: Texts,
    hypotheses: Texts,
    *,
    tokenization: str = "rgrg",
    metrics: Sequence[str] = SCORERS,
) -> NLGScores:
    """:func:`compute_nlg` plus each item's score (BLEU per item is pycocoevalcap's own)."""
    unknown = set(metrics) - set(SCORERS)
    if unknown or not metrics:
        raise ValueError(f"unknown NLG metrics {sorted(unknown)}; choose from {SCORERS}")
    keys, gts, res = _as_coco(references, hypotheses)
    gts, res = _tokenize(gts, tokenization), _tokenize(res, tokenization)
    corpus: dict[str, float] = {}
    items: dict[str, list[float]] = {}

    def keep(name: str, score: object, per_item: object) -> None:
        corpus[name] = float(score)  # type: ignore[arg-type]
        items[name] = [float(x) for x in per_item]  # type: ignore[attr-defined]

    if "bleu" in metrics:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            keep(f"bleu_{n + 1}", bleu[n], bleu_items[n])
    if "meteor" in metrics:
        with _meteor() as scorer:
            keep("meteor", *scorer.compute_score(gts, res))
    if "rouge" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        keep("rouge_l", *Rouge().compute_score(gts, res))
    if "cider" in metrics:
        from pycocoevalcap.cider.cider import Cider

        keep("cider", *Cider().compute_score(gts, res))
    ordered = {k: corpus[k] for k in NLG_KEYS if k in corpus}
    return NLGScores(corpus=ordered, items={k: items[k] for k in ordered}, keys=keys)


def _as_coco(
    references: Texts, hypotheses: Texts
) -> tuple[list[object], dict[str, list[str]], dict[str, list[str]]]:
    """Both inputs -> (keys, pycocoevalcap's ``{"0": [text, ...], ...}`` refs and hyps)."""
    if isinstance(references, Mapping) != isinstance(hypotheses, Mapping):
        raise ValueError("references and hypotheses must both be lists or both be dicts")
    if isinstance(references, Mapping):
        if set(references) != set(hypotheses):  # type: ignore[arg-type]
            missing = set(references) ^ set(hypotheses)  # type: ignore[arg-type]
            raise ValueError(f"references and hypotheses need the same keys; {len(missing)} differ")
        keys = list(references)
        refs = [references[k] for k in keys]
        hyps = [hypotheses[k] for k in keys]  # type: ignore[index]
    else:
        if isinstance(references, str) or isinstance(hypotheses, str):
            raise ValueError("expected lists of texts, got a single string")
        refs, hyps = list(references), list(hypotheses)
        if len(refs) != len(hyps):
            raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses; expected equal")
        keys = list(range(len(refs)))
    if not keys:
        raise ValueError("no texts to score: expected at least one reference/hypothesis pair")
    gts = {str(i): _text_list(r, "reference") for i, r in enumerate(refs)}
    res = {str(i): _text_list(h, "hypothesis") for i, h in enumerate(hyps)}
    if any(len(h) != 1 for h in res.values()):
        raise ValueError("each hypothesis must be exactly one text")
    return keys, gts, res


def _text_list(value: object, what: str) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"each {what} must be a text or a non-empty list of texts, got {value!r}")
    return texts


def _tokenize(texts: dict[str, list[str]], tokenization: str) -> dict[str, list[str]]:
    if tokenization == "rgrg":
        return {k: [_rgrg_text(t) for t in v] for k, v in texts.items()}
    if tokenization == "none":
        return {k: [_one_line(t) for t in v] for k, v in texts.items()}
    if tokenization == "ptb":
        return _ptb_tokenize(texts)
    raise ValueError(f"unknown tokenization {tokenization!r}; choose from {TOKENIZATIONS}")


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _rgrg_text(text: str) -> str:
    """RGRG's ``re.sub(" +", " ", text.replace(".", " ."))`` with all whitespace as spaces."""
    return re.sub(" +", " ", _one_line(text).replace(".", " .")).strip()


def _require_java(what: str) -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            f"{what} needs Java (a JRE 8+ on PATH), which was not found: install one "
            "(e.g. apt-get install default-jre-headless) or leave it out "
            "(metrics=('bleu', 'rouge', 'cider'), tokenization='rgrg')"
        )
    return java


def _ptb_tokenize(texts: dict[str, list[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTBTokenizer protocol, with its temp file outside site-packages."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    java = _require_java("PTB tokenization")
    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    order = [(k, i) for k, v in texts.items() for i in range(len(v))]
    lines = "\n".join(_one_line(texts[k][i]) for k, i in order)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(lines)
    try:
        cmd = [java, "-Dfile.encoding=UTF-8", "-cp", str(jar),
               "edu.stanford.nlp.process.PTBTokenizer", "-encoding", "utf-8",
               "-preserveLines", "-lowerCase", f.name]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=600).stdout
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"PTBTokenizer failed: {err.stderr.decode()[-500:]}") from err
    finally:
        os.unlink(f.name)
    tokenized = out.decode("utf-8").split("\n")[: len(order)]
    if len(tokenized) != len(order):
        raise RuntimeError(f"PTBTokenizer returned {len(tokenized)} lines for {len(order)} texts")
    result: dict[str, list[str]] = {k: [] for k in texts}
    for (k, _), line in zip(order, tokenized):
        words = [w for w in line.rstrip().split(" ") if w not in ptbtokenizer.PUNCTUATIONS]
        result[k].append(" ".join(words))
    return result


@contextmanager
def _meteor() -> Iterator[object]:
    """pycocoevalcap's ``Meteor`` (one JVM), always shut down, even after an error."""
    _require_java("METEOR")
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        yield scorer
    except (ValueError, OSError) as err:  # the JVM died or answered something not a number
        stderr = _stop_jvm(scorer)
        raise RuntimeError(f"METEOR (java) failed: {err}; java said: {stderr[-500:]}") from err
    finally:
        _stop_jvm(scorer)


def _stop_jvm(scorer: object) -> str:
    proc = scorer.meteor_p  # type: ignore[attr-defined]
    stderr = ""
    try:
        proc.stdin.close()  # flushes: raises BrokenPipeError when the JVM is gone
    except OSError:
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stderr is not None and not proc.stderr.closed:
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    proc.stdout.close()
    # Meteor.__del__ takes this lock; after a failed compute_score it is still held -> fresh one
    scorer.lock = threading.Lock()  # type: ignore[attr-defined]
    return stderr
