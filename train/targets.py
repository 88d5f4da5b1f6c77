"""Training targets built from the prepared data: region classifier targets, the sentence a
region should be trained to write, and label vectors for CLIP.

Region selection (stage 2)
    *Paired data* (an image whose own report sentences exist, e.g. MIMIC-CXR + Chest ImaGenome):
    a region is selected when one of the image's sentences names it (RGRG). *Open data* (labels,
    no report): selected = the region is abnormal OR it is one of the regions IU X-ray reports
    commonly describe: at least ``threshold`` (default 0.3) of the training reports have a sentence
    naming it. On the prepared IU data that is right/left lung (0.99), cardiac silhouette (0.98),
    both costophrenic angles (0.78), mediastinum (0.67) and spine (0.51); the next region, left
    lower lung zone, is at 0.13, so any threshold in 0.15-0.5 gives the same set. A region that is
    neither common nor known (status ``unknown``) is masked out.
Abnormality (stage 2)
    ``images.jsonl`` ``region_status``: normal -> 0, abnormal -> 1, unknown -> masked.
Target sentence (stage 3)
    *Paired*: the image's sentences naming the region, joined in report order (RGRG's reference).
    *Open data* (:class:`SentenceMatcher`): a real IU train sentence naming the region, drawn anew
    each time, that agrees with what the image's labels imply for it:
    - region ``normal``: a normal sentence whose findings are only "no finding" or findings the
      image is labelled positive for (so "pacemaker in place" only where devices are labelled);
    - region ``abnormal``: an abnormal sentence, all of its findings among the image's positive
      findings widened by :data:`COMPATIBLE` (the X-ray appearance of pneumonia / COVID-19 is
      opacity / consolidation, words IU reports use), that names at least one of the image's
      own positive findings (:func:`primary_findings`: COVID-19 is named by "covid-19" or
      "pneumonia"), so the sentence says what the image is labelled with, not only an
      appearance ("opacity") that the label extractor cannot tell from other diseases.
      ``require_primary=False`` drops that last condition (any compatible finding will do).
      When the region's abnormal status comes from image labels only (not from the source's
      own region-level truth, ``region_abnormal``), the sentence must name no side, lobe or
      zone (:func:`crrg.locations.named_locations`): the labels do not locate the finding.
      A sentence is never borrowed from another region or side;
    - region ``unknown``, or no agreeing sentence: skipped (no target).
    The pool: IU X-ray train sentences (``sentences.jsonl``) and, by default, the imaging
    sentences of the train images' clinical notes (:func:`note_sentences`); with
    ``standalone_only`` (default) only sentences that one radiograph can support
    (:func:`standalone`: no IU de-identification mask "XXXX", no comparison with a prior study
    or the patient's history), since the matched image is not the one the sentence described.
The pool filter (both paths, and :func:`sentence_pool`)
    Only sentences of a chest-radiograph report are targets: :func:`crrg.data.sentences.pool_rejection`
    drops other body parts and examinations (shoulder, humeral head, glenoid, limbs, free
    intraperitoneal air), image counts ("Right shoulder: 3 images.") and malformed sentences
    ("There is no evidence for mass lung apices."). The report (:mod:`crrg.grounding`) drops a
    decoder sentence by the same rule.
CLIP label vectors (:func:`label_vector`)
    over :data:`crrg.labels.FINDINGS`: +1 present, -1 absent, 0 unknown or uncertain; positives
    implied through :data:`COMPATIBLE` get +0.5. A prompt "{label}" is +1 on its label, "no {label}"
    -1, so ``crrg.clip_loss.label_similarity`` (cosine, negatives clipped) matches a normal image
    with "no pneumonia" and a pneumonia image with "pneumonia" and the opacity sentences.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from crrg.data.sentences import is_chest_sentence
from crrg.labels import FINDINGS
from crrg.locations import named_locations
from crrg.regions import NUM_REGIONS, REGION_INDEX, REGIONS

COMPATIBLE: dict[str, tuple[str, ...]] = {
    "pneumonia": ("pneumonia", "lung opacity", "consolidation"),
    "covid-19": ("pneumonia", "lung opacity", "consolidation"),
}
NORMAL_FINDINGS = frozenset({"no finding"})
# A clinical-note sentence joins the pool when it describes the radiograph (an imaging word or a
# radiographic appearance) and does not describe a CT.
IMAGING_WORDS = re.compile(
    r"x-?ray|radiogra|\bcxr\b|\bfilms?\b|opacit|opacif|consolidat|infiltrat|ground[- ]glass"
    r"|air[- ]?space|shadow|reticul|nodul|effusion", re.IGNORECASE)
NOT_RADIOGRAPH = re.compile(r"\bCT\b|computed tomograph|\bHRCT\b|\bscan\b", re.IGNORECASE)
# ... and reads as a report sentence, not case history (ages, days, figures, admission, diagnosis).
CASE_HISTORY = re.compile(
    r"\d|\byears?[- ]old\b|\bpatients?\b|\bfig\w*|\bcases?\b|\bdiagnos\w*|\bdays?\b|\bweeks?\b"
    r"|\badmi\w*|\bhospital\w*|\bdiscussion\b|\bhistory\b|\bprior\b|\bfollow", re.IGNORECASE)
NOTE_MAX_WORDS = 30
# Open-data targets describe another patient's radiograph: leave out IU's de-identification mask
# and wording that needs a prior study or the history ("stable", "new", "since", "unchanged").
NOT_STANDALONE = re.compile(
    r"xxxx|\b(?:prior|previous(?:ly)?|interval|stable|unchanged|improv\w*|worsen\w*|compar\w*|again"
    r"|since|history|follow-?up|redemonstrat\w*|persist\w*|resolv\w*|new)\b", re.IGNORECASE)
FINDING_INDEX = {f: i for i, f in enumerate(FINDINGS)}


def positive_findings(labels: dict[str, int]) -> frozenset[str]:
    return frozenset(f for f, v in labels.items() if v == 1 and f != "no finding")


def primary_findings(labels: dict[str, int]) -> frozenset[str]:
    """Findings a target sentence for an abnormal region must name (one of): the positive
    findings, with "pneumonia" naming COVID-19 too (its radiographic diagnosis)."""
    positives = positive_findings(labels)
    return positives | (frozenset({"pneumonia"}) if "covid-19" in positives else frozenset())


def implied_findings(labels: dict[str, int]) -> frozenset[str]:
    """Positive findings plus those compatible with them (:data:`COMPATIBLE`)."""
    positives = positive_findings(labels)
    return positives | frozenset(c for f in positives for c in COMPATIBLE.get(f, ()))


# ------------------------------------------------------------------------ region targets
def common_regions(sentences: Iterable[dict[str, Any]], threshold: float = 0.3) -> dict[str, float]:
    """Regions named in at least ``threshold`` of the reports: {region: share of reports}."""
    reports: set[str] = set()
    named: dict[str, set[str]] = defaultdict(set)
    for line in sentences:
        key = f"{line.get('source')}:{line.get('report')}"
        reports.add(key)
        for region in line.get("regions", []):
            named[region].add(key)
    if not reports:
        return {}
    share = {r: len(named[r]) / len(reports) for r in REGIONS if named[r]}
    return {r: s for r, s in share.items() if s >= threshold}


def region_status(record: dict[str, Any]) -> dict[str, str]:
    """normal / abnormal / unknown per region from a merged record."""
    status = dict.fromkeys(REGIONS, "unknown")
    status.update(record.get("region_status") or {})
    for region, abnormal in (record.get("region_abnormal") or {}).items():
        status[region] = "abnormal" if abnormal else "normal"
    return status


def region_targets(record: dict[str, Any], common: Iterable[str],
                   paired: list[dict[str, Any]] | None = None) -> dict[str, Tensor]:
    """Stage-2 targets [29], named as the heads: ``abnormality`` / ``abnormality_mask``,
    ``selection`` / ``selection_mask``."""
    status = region_status(record)
    abnormality = torch.tensor([status[r] == "abnormal" for r in REGIONS], dtype=torch.float32)  # [29]
    abnormality_mask = torch.tensor([status[r] != "unknown" for r in REGIONS])  # [29]
    if paired:
        named = {r for line in paired for r in line.get("regions", [])}
        selection = torch.tensor([r in named for r in REGIONS], dtype=torch.float32)  # [29]
        selection_mask = torch.ones(NUM_REGIONS, dtype=torch.bool)
    else:
        common = set(common)
        is_common = torch.tensor([r in common for r in REGIONS])  # [29]
        selection = ((abnormality > 0) | is_common).float()  # [29]
        selection_mask = is_common | abnormality_mask  # [29]
    return {"abnormality": abnormality, "abnormality_mask": abnormality_mask, "selection": selection,
            "selection_mask": selection_mask}


def auto_pos_weight(targets: Iterable[tuple[Tensor, Tensor]], max_weight: float = 20.0) -> float:
    """negatives / positives over the known entries, clamped to [1, max_weight]."""
    pos = neg = 0.0
    for target, mask in targets:
        pos += float((target * mask).sum())
        neg += float(((1 - target) * mask).sum())
    return float(min(max_weight, max(1.0, neg / max(pos, 1.0))))


# --------------------------------------------------------------------- sentence targets
def paired_sentences(sentences: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Sentences that belong to a known image: {image path: lines in report order}."""
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in sentences:
        if line.get("image"):
            by_image[line["image"]].append(line)
    for lines in by_image.values():
        lines.sort(key=lambda line: line.get("index", 0))
    return dict(by_image)


def paired_region_sentences(lines: list[dict[str, Any]]) -> list[str | None]:
    """[29] the image's sentences naming each region, joined in report order (None: none);
    sentences the pool filter rejects (:func:`crrg.data.sentences.pool_rejection`) are left out."""
    texts: list[list[str]] = [[] for _ in REGIONS]
    for line in lines:
        if not is_chest_sentence(line["text"]):
            continue
        for region in line.get("regions", []):
            if region in REGION_INDEX and line["text"] not in texts[REGION_INDEX[region]]:
                texts[REGION_INDEX[region]].append(line["text"])
    return [" ".join(t) if t else None for t in texts]


class SentenceMatcher:
    """Open-data target sentences: real report sentences that agree with an image's labels.

    See the module docstring for the rule. Candidate lists are cached per
    (region, status, positive findings), so the per-item cost is a dictionary look-up.
    """

    def __init__(self, sentences: Iterable[dict[str, Any]], require_primary: bool = True,
                 standalone_only: bool = True) -> None:
        self.require_primary = require_primary
        self.by_region: dict[str, list[tuple[str, bool, frozenset[str]]]] = defaultdict(list)
        for line in sentences:
            if (standalone_only and not standalone(line["text"])) or not is_chest_sentence(line["text"]):
                continue
            entry = (line["text"], bool(line.get("abnormal")), frozenset(line.get("findings", [])))
            for region in line.get("regions", []):
                self.by_region[region].append(entry)
        self._cache: dict[tuple[str, str, frozenset[str], bool], list[str]] = {}

    def candidates(self, region: str, status: str, labels: dict[str, int],
                   localised: bool = True) -> list[str]:
        """Agreeing sentences for ``region``; ``localised=False`` (an abnormal status known from
        image labels only): only sentences that name no location."""
        positives = positive_findings(labels)
        key = (region, status, positives, localised or status != "abnormal")
        if key not in self._cache:
            pool = self._match(region, status, labels)
            if status == "abnormal" and not localised:
                pool = [t for t in pool if not named_locations(t)]
            self._cache[key] = pool
        return self._cache[key]

    def _match(self, region: str, status: str, labels: dict[str, int]) -> list[str]:
        entries = self.by_region.get(region, [])
        if status == "normal":
            allowed = NORMAL_FINDINGS | positive_findings(labels)
            return [t for t, abnormal, f in entries if not abnormal and f <= allowed]
        if status == "abnormal":
            implied = implied_findings(labels)
            primary = primary_findings(labels) if self.require_primary else implied
            return [t for t, abnormal, f in entries if abnormal and f and f <= implied and f & primary]
        return []

    def sample(self, record: dict[str, Any], rng: random.Random) -> list[str | None]:
        """[29] one agreeing sentence per region (None where there is none)."""
        status, labels = region_status(record), record.get("labels") or {}
        localised = record.get("region_abnormal") or {}
        out: list[str | None] = []
        for region in REGIONS:
            pool = self.candidates(region, status[region], labels, region in localised)
            out.append(rng.choice(pool) if pool else None)
        return out

    def has_any(self, record: dict[str, Any]) -> bool:
        status, labels = region_status(record), record.get("labels") or {}
        localised = record.get("region_abnormal") or {}
        return any(self.candidates(r, status[r], labels, r in localised) for r in REGIONS)


def standalone(text: str) -> bool:
    """True when one radiograph can support ``text`` (see :data:`NOT_STANDALONE`)."""
    return NOT_STANDALONE.search(text) is None


def sentence_pool(prepared: Any, split: str, sources: Iterable[str]) -> list[dict[str, Any]]:
    """Report sentence lines of ``split`` from ``sources``: sources of ``sentences.jsonl``
    ("iu_xray", "mimic_cxr") and "clinical_notes" (:func:`note_sentences` of the split's images),
    without the sentences the pool filter rejects (:func:`crrg.data.sentences.pool_rejection`)."""
    sources = set(sources)
    lines = [s for s in prepared.sentences(split) if s.get("source") in sources]
    if "clinical_notes" in sources:
        lines += note_sentences(prepared.images(split))
    return [s for s in lines if is_chest_sentence(s["text"])]


def note_sentences(records: Iterable[dict[str, Any]], paired: bool = False) -> list[dict[str, Any]]:
    """Imaging sentences of clinical notes (``text_kind == "clinical_notes"``) as sentence lines
    (the fields of ``train.prepare``'s ``sentences.jsonl``, ``source`` "clinical_notes",
    ``image`` None: a case's notes cover several radiographs taken days apart, so they are
    pooled, not paired; ``paired=True``: each image keeps its own note's sentences, ``image`` set,
    for RGRG's paired stage-3 path and CLIP pairs). A sentence is kept when it names a region and describes a radiograph
    (:data:`IMAGING_WORDS`, not :data:`NOT_RADIOGRAPH`) in a report's words (no
    :data:`CASE_HISTORY`, at most :data:`NOTE_MAX_WORDS` words); each distinct text once. Pass only
    train-split records."""
    from crrg.data.sentences import analyse_sentence, extract_findings, split_sentences

    seen: set[str] = set()
    lines: list[dict[str, Any]] = []
    for record in records:
        if record.get("text_kind") != "clinical_notes" or not record.get("text"):
            continue
        if paired:
            seen = set()
        for text in split_sentences(record["text"]):
            if text in seen:
                continue
            seen.add(text)
            info = analyse_sentence(text)
            if (not info.regions or not IMAGING_WORDS.search(text) or NOT_RADIOGRAPH.search(text)
                    or CASE_HISTORY.search(text) or len(text.split()) > NOTE_MAX_WORDS):
                continue
            lines.append({"report": f"notes:{record.get('patient') or record['image']}",
                          "source": "clinical_notes", "split": record.get("split"),
                          "image": record["image"] if paired else None, "index": len(lines),
                          "text": text, "regions": list(info.regions), "abnormal": info.abnormal,
                          "findings": extract_findings(text)})
    return lines


# ----------------------------------------------------------------------- CLIP labels
def label_vector(labels: dict[str, int]) -> Tensor:
    """[K = len(FINDINGS)]: +1 present, -1 absent, 0 unknown/uncertain, +0.5 implied."""
    vec = torch.zeros(len(FINDINGS))
    for finding, value in labels.items():
        if finding in FINDING_INDEX and value in (0, 1):
            vec[FINDING_INDEX[finding]] = 1.0 if value == 1 else -1.0
    for finding in implied_findings(labels) - positive_findings(labels):
        if vec[FINDING_INDEX[finding]] <= 0 and labels.get(finding) != 0:
            vec[FINDING_INDEX[finding]] = 0.5
    return vec


def sentence_label_vector(findings: Iterable[str]) -> Tensor:
    """[K] +1 on each finding a report sentence names ("no finding" for normal sentences)."""
    vec = torch.zeros(len(FINDINGS))
    for finding in findings:
        if finding in FINDING_INDEX:
            vec[FINDING_INDEX[finding]] = 1.0
    return vec


def prompt_texts(positive: str = "{}", negative: str = "no {}") -> tuple[list[str], Tensor]:
    """Label prompts: "{label}" (+1 on it) and "no {label}" (-1) per finding, and "no finding"."""
    texts, vectors = [], []
    for finding in FINDINGS:
        vec = torch.zeros(len(FINDINGS))
        vec[FINDING_INDEX[finding]] = 1.0
        texts.append(positive.replace("{}", finding))
        vectors.append(vec)
        if finding != "no finding":
            texts.append(negative.replace("{}", finding))
            vectors.append(-vec)
    return texts, torch.stack(vectors)  # [P, K]
