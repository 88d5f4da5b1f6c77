"""Report sentences: splitting, anatomical regions, normal/abnormal status and finding labels.

Rule based and deterministic; every decision (which words mean which region, what counts as
abnormal, negation and uncertainty cues) is a table in :mod:`crrg.data.vocab_rules`, documented
there. Works on IU X-ray text (with its "XXXX" de-identification tokens), MIMIC-CXR text ("___",
section headings, wrapped lines) and lower-cased, pre-tokenised text ("the lungs are clear .").

    >>> split_sentences("Heart size normal. No effusion.")
    ['Heart size normal.', 'No effusion.']
    >>> sentence_regions("Small left pleural effusion.")
    ['left costophrenic angle']
    >>> is_abnormal("No evidence of focal consolidation, pneumothorax, or effusion.")
    False
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from crrg.data import vocab_rules as rules
from crrg.labels import FINDINGS
from crrg.regions import REGION_INDEX

__all__ = [
    "SentenceAnalysis",
    "analyse_sentence",
    "extract_findings",
    "is_abnormal",
    "is_chest_sentence",
    "label_report",
    "pool_rejection",
    "sentence_regions",
    "split_sentences",
]

# --------------------------------------------------------------------------- sentence splitting
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "a.m", "p.m", "fig"})
_TAG = re.compile(r"<[^>]*>")
_PARAGRAPH = re.compile(r"\n[ \t]*\n|\r\n[ \t]*\r\n")
_HEADING = re.compile(r"(?:(?<=^)|(?<=[\s.]))[A-Z][A-Z /&]{2,}:\s*")
_ENUMERATION = re.compile(r"(^|[.!?;:\x00]\s*)\(?\d{1,2}[.)]\s+(?=[A-Za-z(])")
_BOUNDARY = re.compile(r"\x00|[.!?]+(?=\s|$)|\.(?=[A-Z][a-z])")
_DEID = re.compile(r"X{2,}|_{2,}", re.IGNORECASE)


def split_sentences(text: str | None) -> list[str]:
    """Split a report (or one section of it) into sentences, keeping their final punctuation.

    Decimals ("1.5 cm"), "a.m."/"p.m."/"Dr."/"vs.", list numbers ("1. ... 2. ..."), HTML tags,
    missing spaces ("normal.Heart"), blank-line paragraph breaks and all-caps headings
    ("FINDINGS:") are handled. Sentences holding nothing but de-identification tokens ("XXXX.")
    or punctuation are dropped.
    """
    if not text:
        return []
    text = _TAG.sub(" ", html.unescape(text))
    text = _PARAGRAPH.sub(" \x00 ", text)
    text = re.sub(r"[ \t\r\n]+", " ", _HEADING.sub(" ", text)).strip()
    text = _ENUMERATION.sub(r"\1", text)
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        word = re.search(r"([\w.]+)$", text[start : match.start()])
        if match.group() == "." and word and word.group(1).lower() in _ABBREVIATIONS:
            continue
        sentences.append(text[start : match.end()])
        start = match.end()
    sentences.append(text[start:])
    return [s for s in (_clean_sentence(p) for p in sentences) if s]


def _clean_sentence(piece: str) -> str:
    piece = piece.replace("\x00", " ").strip(" ,;:")
    piece = re.sub(r"^[.!?\s]+", "", piece)
    if not re.search(r"[A-Za-z]", _DEID.sub("", piece)):
        return ""
    return piece


# --------------------------------------------------------------------------- normalisation
def _normalise(sentence: str) -> str:
    """Lower case, hyphens/slashes as spaces, "XXXX"/"___" -> "xxxx", laterality rewrites."""
    text = html.unescape(sentence).lower()
    text = _DEID.sub("xxxx", text)
    text = re.sub(r"[-/]", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    for pattern, replacement in rules.SIDE_REWRITES:
        text = re.sub(pattern, replacement, text)
    return text


def _alternation(patterns: list[str]) -> re.Pattern[str]:
    """One regex, group g<i> = pattern i; every pattern starts at a word boundary."""
    return re.compile(r"\b(?:" + "|".join(f"(?P<g{i}>{p})" for i, p in enumerate(patterns)) + ")")


_REGION_RE = _alternation([r.pattern for r in rules.REGION_RULES])
_TERM_RE = _alternation([t[0] for t in rules.TERMS])
_SIDE_AFTER_RE = re.compile(rules.SIDE_AFTER)
_CLAUSE_PUNCT = re.compile(r"[.;:,()]")


# --------------------------------------------------------------------------- regions
_PLURAL = re.compile(r"(?:lungs|bases|apices|diaphragms|angles|effusions|hila|sulci|clavicles"
                     r"|shoulders|zones|lobes|fields|ribs)$")
_NEGATION_CUE = re.compile(rules.PRE_NEGATION)
_LINE_TIPS = frozenset({"svc", "cavoatrial junction", "right atrium"})
_NODE_PLACES = frozenset({"right hilar structures", "left hilar structures", "mediastinum",
                          "upper mediastinum"})
_BONES = frozenset({"spine", "right clavicle", "left clavicle"})


def _side_at(text: str, start: int, end: int) -> str | None:
    """Laterality written at the structure ``text[start:end]``: "right", "left", "both" or None."""
    before = _CLAUSE_PUNCT.split(text[:start])[-1]
    for word in reversed(re.findall(r"[a-z]+", before)[-rules.SIDE_WINDOW_WORDS :]):
        if word in rules.SIDE_WORDS:
            return rules.SIDE_WORDS[word]
    after = _CLAUSE_PUNCT.split(text[end : end + 50])[0]
    match = _SIDE_AFTER_RE.match(after)
    if match:
        return match.group(1) or "both"
    return None


def _sentence_side(text: str) -> str | None:
    """The sentence's one side when it names exactly one ("right" or "left"), else None."""
    text = re.sub(rules.NOT_A_SIDE, " ", text)
    words = set(re.findall(r"\b(?:right|left|bilateral\w*|both|bibasi\w*|biapical)\b", text))
    return next(iter(words)) if len(words) == 1 and words <= {"right", "left"} else None


def _expand(region: str, side: str) -> list[str]:
    if "{side}" not in region:
        return [region]
    sides = ("right", "left") if side == "both" else (side,)
    return [region.format(side=s) for s in sides]


def _parenchyma(side: str) -> tuple[str, ...]:
    zones = ("lung", "upper lung zone", "mid lung zone", "lower lung zone", "apical zone", "hilar structures")
    return tuple(f"{side} {z}" for z in zones)


def _matches(text: str) -> list[tuple[rules.RegionRule, str | None]]:
    """Every region rule hit with its side (None: no side written or inherited)."""
    sentence_side = _sentence_side(text)
    hits = []
    for match in _REGION_RE.finditer(text):
        rule = rules.REGION_RULES[int(match.lastgroup[1:])]
        side = rule.side or _side_at(text, match.start(), match.end())
        if (side is None and sentence_side and rule.inherit and not _PLURAL.search(match.group())
                and not _NEGATION_CUE.search(text, 0, match.start())):
            side = sentence_side
        hits.append((rule, side))
    return hits


def _regions_of(text: str) -> list[str]:
    found: set[str] = set()
    hits = _matches(text)
    for rule, side in hits:
        if rule.kind == "anatomy":
            found.update(r for region in rule.regions for r in _expand(region, side or "both"))
    kinds = {rule.kind for rule, _ in hits}
    for rule, side in hits:  # lungs named by a finding only: sided first, then unsided
        if rule.kind in ("lung", "rib") and side is not None:
            for s in ("right", "left") if side == "both" else (side,):
                if not found.intersection(_parenchyma(s)):
                    found.add(f"{s} lung")
    unsided = any(rule.kind in ("lung", "rib") and side is None for rule, side in hits)
    if unsided and not found.intersection(_parenchyma("right") + _parenchyma("left")):
        found.update(("right lung", "left lung"))
    if "bone" in kinds and "rib" not in kinds and not found.intersection(_BONES):
        found.add("spine")
    if "node" in kinds and not found.intersection(_NODE_PLACES):
        found.add("mediastinum")
    if "line" in kinds and not found.intersection(_LINE_TIPS):
        found.add("svc")
    return sorted(found, key=REGION_INDEX.__getitem__)


def sentence_regions(sentence: str) -> list[str]:
    """Names from :data:`crrg.regions.REGIONS` the sentence talks about, in anatomical order."""
    return _regions_of(_normalise(sentence))


# --------------------------------------------------------------------------- mentions
@dataclass(frozen=True)
class _Mention:
    labels: tuple[str, ...]
    kind: str  # "abnormal" | "device"
    status: str  # "positive" | "negated" | "uncertain"


_PSEUDO_RE = re.compile(rules.PSEUDO_NEGATION)
_PRE_NEG_RE = re.compile(rules.PRE_NEGATION)
_PRE_UNC_RE = re.compile(rules.PRE_UNCERTAIN)
_POST_NEG_RE = re.compile(rules.POST_NEGATION)
_POST_UNC_RE = re.compile(rules.POST_UNCERTAIN)
_BREAK_RE = re.compile(rules.SCOPE_BREAK)
_NEG_BREAK_RE = re.compile(rules.SCOPE_BREAK + "|" + rules.NEGATION_ONLY_BREAK)
_CONTEXT_BREAK_RE = re.compile(rules.CONTEXT_CLAUSE_BREAK)
_HEART_RE = re.compile(rules.HEART_CONTEXT)
_MEDIASTINUM_RE = re.compile(rules.MEDIASTINUM_CONTEXT)
_CARDIOMEDIASTINUM_RE = re.compile(rules.CARDIOMEDIASTINUM_CONTEXT)


def _context_labels(text: str, start: int, end: int) -> tuple[str, ...] | None:
    """Label of an enlargement word from its clause; None when it means nothing on its own."""
    left = _CONTEXT_BREAK_RE.split(text[:start])[-1]
    clause = left + text[start:end] + _CONTEXT_BREAK_RE.split(text[end:])[0]
    if _CARDIOMEDIASTINUM_RE.search(clause):
        return (rules.ECM,)
    if _HEART_RE.search(clause):
        return ("cardiomegaly",)
    if _MEDIASTINUM_RE.search(clause):
        return (rules.ECM,)
    if re.fullmatch(r"large|wide", text[start:end]):
        return None
    return ()


def _status(text: str, start: int, end: int, negations: list[tuple[int, int]],
            hedges: list[tuple[int, int]]) -> str:
    neg_from = max((m.end() for m in _NEG_BREAK_RE.finditer(text, 0, start)), default=0)
    unc_from = max((m.end() for m in _BREAK_RE.finditer(text, 0, start)), default=0)
    after = text[end:]
    stop = _BREAK_RE.search(after)
    after = after[: stop.start()] if stop else after
    if any(neg_from <= s and e <= start for s, e in negations):
        return "negated"
    if any(unc_from <= s and e <= start for s, e in hedges) or _POST_UNC_RE.search(after):
        return "uncertain"
    if _POST_NEG_RE.search(after):
        return "negated"
    return "positive"


def _mentions(text: str) -> list[_Mention]:
    text = _PSEUDO_RE.sub(lambda m: "#" * len(m.group()), text)
    hedges = [m.span() for m in _PRE_UNC_RE.finditer(text)]
    negations = [m.span() for m in _PRE_NEG_RE.finditer(text)
                 if not any(s <= m.start() < e for s, e in hedges)]
    mentions = []
    for match in _TERM_RE.finditer(text):
        pattern, labels, kind = rules.TERMS[int(match.lastgroup[1:])]
        if kind == "context":
            context = _context_labels(text, match.start(), match.end())
            if context is None:
                continue
            labels, kind = context, "abnormal"
        status = _status(text, match.start(), match.end(), negations, hedges)
        mentions.append(_Mention(labels, kind, status))
    return mentions


# --------------------------------------------------------------------------- public analysis
@dataclass(frozen=True)
class SentenceAnalysis:
    """Everything the rules say about one sentence.

    regions: region names (crrg.regions order). abnormal: status (see vocab_rules' conventions).
    findings / uncertain / negated: finding labels (crrg.labels.FINDINGS order, never "no finding")
    mentioned positively, with a hedge, or negated; a label can be both positive and negated when
    two mentions disagree ("No pneumothorax; small hydropneumothorax").
    """

    text: str
    regions: tuple[str, ...]
    abnormal: bool
    findings: tuple[str, ...]
    uncertain: tuple[str, ...]
    negated: tuple[str, ...]


def _ordered(labels: set[str]) -> tuple[str, ...]:
    return tuple(f for f in FINDINGS if f in labels)


def analyse_sentence(sentence: str) -> SentenceAnalysis:
    """Regions, status and findings of one sentence (see :func:`split_sentences` for reports)."""
    text = _normalise(sentence)
    mentions = _mentions(text)
    by_status: dict[str, set[str]] = {"positive": set(), "uncertain": set(), "negated": set()}
    for mention in mentions:
        by_status[mention.status].update(mention.labels)
    abnormal = any(m.kind == "abnormal" and m.status != "negated" for m in mentions)
    return SentenceAnalysis(
        text=sentence,
        regions=tuple(_regions_of(text)),
        abnormal=abnormal,
        findings=_ordered(by_status["positive"]),
        uncertain=_ordered(by_status["uncertain"] - by_status["positive"]),
        negated=_ordered(by_status["negated"]),
    )


def is_abnormal(sentence: str) -> bool:
    """True when the sentence reports an abnormality that is not negated (hedged ones count)."""
    return analyse_sentence(sentence).abnormal


_PATHOLOGIES = frozenset(FINDINGS) - {"no finding", "support devices"}


def label_report(text: str) -> dict[str, int]:
    """CheXpert-style labels of a report: 1 positive, -1 uncertain, 0 negative; unmentioned
    labels are absent. "no finding" is 1 when no pathology is positive or uncertain and no
    sentence is abnormal (support devices do not count), as CheXpert's labeler; an empty text
    gives an empty dict."""
    analyses = [analyse_sentence(s) for s in split_sentences(text)]
    if not analyses:
        return {}
    labels: dict[str, int] = {}
    for a in analyses:
        for name in a.negated:
            labels.setdefault(name, 0)
        for name in a.uncertain:
            if labels.get(name) != 1:
                labels[name] = -1
        for name in a.findings:
            labels[name] = 1
    hit = any(labels.get(name) in (1, -1) for name in _PATHOLOGIES)
    if not hit and not any(a.abnormal for a in analyses):
        labels["no finding"] = 1
    return {name: labels[name] for name in FINDINGS if name in labels}


def extract_findings(text: str, uncertain_as_positive: bool = False) -> list[str]:
    """Finding names (crrg.labels.FINDINGS order) mentioned positively in a report.

    Negated mentions are left out; hedged ones ("possible", "may represent", "cannot exclude")
    too unless ``uncertain_as_positive`` (CheXpert's U-ones policy). "no finding" when the text is
    entirely normal (see :func:`label_report`); [] for an empty text.
    """
    keep = (1, -1) if uncertain_as_positive else (1,)
    return [name for name, value in label_report(text).items() if value in keep]


# --------------------------------------------------------------------------- the pool filter
_POOL_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("not about the chest", re.compile(rules.NON_CHEST)),
    ("image count or examination", re.compile(rules.IMAGE_COUNT)),
    ("malformed", re.compile(rules.MALFORMED)),
)


def pool_rejection(text: str) -> str | None:
    """Why ``text`` is no sentence of a chest-radiograph report, or ``None`` when it is one.

    One rule for the decoder's training pool (:mod:`train.targets`) and the report
    (:mod:`crrg.grounding`): other body parts and examinations (:data:`~crrg.data.vocab_rules.NON_CHEST`:
    shoulder, humerus, glenoid, limbs, pelvis, free intraperitoneal air), image counts and
    examination descriptions (:data:`~crrg.data.vocab_rules.IMAGE_COUNT`), and sentences a
    radiology-vocabulary check calls malformed (:data:`~crrg.data.vocab_rules.MALFORMED`).
    Matched on the lower-cased text, hyphens and slashes as spaces, masks as "xxxx" (no
    laterality rewrites: "right greater than left bilateral" is not a word typed twice).

    >>> pool_rejection("Right shoulder: 3 images.")
    'not about the chest'
    >>> pool_rejection("There is no evidence for mass lung apices.")
    'malformed'
    >>> pool_rejection("No pleural effusion or pneumothorax.") is None
    True
    """
    normalised = re.sub(r"\s+", " ", re.sub(r"[-/]", " ", _DEID.sub("xxxx", html.unescape(text).lower())))
    for reason, pattern in _POOL_RULES:
        if pattern.search(normalised):
            return reason
    return None


def is_chest_sentence(text: str) -> bool:
    """True when :func:`pool_rejection` keeps ``text``."""
    return pool_rejection(text) is None
