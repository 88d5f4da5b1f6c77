"""Write a report whose every sentence carries its evidence (the contract of :mod:`crrg.types`),
in the words and order a radiologist would sign.

Sentences come from three kinds of evidence, never from text alone:

- ``region``: the region-level finding heads (:class:`crrg.findings.RegionFindings`: nodule,
  opacity, support device), one sentence per finding naming the detected regions whose calibrated
  probability passes the finding's threshold; and the decoder's sentences for selected regions,
  kept only as *normal* statements (a negation or a word that says normal: :data:`NORMAL_WORDS`)
  of regions that the abnormality head calls normal (a finding or an observation the decoder
  writes has no region-level evidence of its own, so it is not reported), and only on topics
  region-level evidence in the image assesses (:func:`assessed_topics`: "No pneumothorax." needs
  a pneumothorax head; topics nothing speaks to are listed in ``not_assessed`` and the report's
  last line, "Not assessed by this model: ...");
- ``measurement``: sentences built from values measured on the detected anatomy (the
  cardiothoracic ratio), passed in ready-made;
- ``image``: image-level findings (:class:`crrg.findings.ImageFindings`), written without any
  location ("Findings are consistent with pneumonia.", "Findings suggest a pleural effusion."),
  and their absence only below a rule-out probability chosen on validation ("There is no pleural
  effusion."; between the two a finding is ``indeterminate``, named on a report line); one
  the report also states from region-level evidence (a nodule) or from a measurement (heart size:
  the cardiothoracic ratio, with its value) is not written twice.

Wording (the evidence of a sentence never changes with it):

- lung locations grouped as radiologists do (:func:`lung_location`): all zones of both lungs
  "diffuse bilateral", both lower zones "bibasilar", one whole lung "throughout the right lung",
  one zone "in the left upper lung zone"; the location check knows these phrases
  (:data:`crrg.locations.PHRASES`);
- devices name at most :data:`DEVICE_NAMED` main places ("A support device projects over the
  mediastinum and upper abdomen."); the evidence keeps every region;
- decoder sentences that are no chest-radiograph report sentence are dropped by the rule the
  training pool uses (:func:`crrg.data.sentences.pool_rejection`);
- normal statements are chosen by topic (:data:`crrg.report.TOPICS`: lungs, pleural effusion,
  pneumothorax, heart, mediastinum, hila, bones, devices, upper abdomen, diaphragm): each topic
  (per side for the lungs, pleura and hila) is stated at most once, statements covering more
  topics first; a statement that only repeats topics already covered is absorbed by the one that
  covers them, which then cites the union of their regions; a normal statement whose topic has a
  finding in the same report ("The lungs are clear." next to an opacity) is dropped;
- order: by topic (lungs, pleura, heart and mediastinum, hila, bones, devices, upper abdomen),
  findings before normal statements, located findings before image-level ones, then by region;
- the impression (:func:`impression`): the positive findings in order of importance
  (:data:`IMPORTANCE`), each once, with its location ("Diffuse bilateral opacities, consistent
  with pneumonia. Support device in place."); or "No acute cardiopulmonary abnormality." (with
  "among the findings assessed" when a cardiopulmonary topic is not assessed).

Every sentence is then checked against :func:`crrg.locations.unsupported_locations`; one that names
a side, lobe or zone its evidence does not cover is dropped (``dropped`` keeps them, for tests and
the evaluation's count).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from crrg.findings import FINDING_REGIONS, GroundingConfig
from crrg.locations import region_side, unsupported_locations
from crrg.measurements import Measured
from crrg.regions import REGION_INDEX
from crrg.report import SIDED_TOPICS, TOPIC_ORDER, assemble_report, normalize_sentence, topic_keys
from crrg.types import Evidence, Sentence

#: finding -> (present, absent or None); no locations. The absent statement is said only below the
#: finding's rule-out probability (:attr:`crrg.findings.GroundingConfig.rule_out`); between it and
#: the threshold the finding is *indeterminate*. Findings with no absent statement say nothing
#: when below threshold (the normal statements of their topic cover them).
IMAGE_TEMPLATES: dict[str, tuple[str, str | None]] = {
    "pneumonia": ("Findings are consistent with pneumonia.",
                  "There is no radiographic evidence of pneumonia."),
    "pneumothorax": ("Findings suggest a pneumothorax.", None),
    "pleural effusion": ("Findings suggest a pleural effusion.", "There is no pleural effusion."),
    "edema": ("Findings suggest pulmonary edema.", None),
    "consolidation": ("Findings suggest consolidation.", None),
    "infiltration": ("Findings suggest a pulmonary infiltrate.", None),
    "atelectasis": ("Findings suggest atelectasis.", None),
    "cardiomegaly": ("The heart appears enlarged.", None),
    "nodule": ("Findings suggest a pulmonary nodule.", None),
    "mass": ("Findings suggest a lung mass.", None),
}
LUNG_FINDINGS = ("nodule", "opacity")
#: findings reported in their single most probable region (JSRT images hold one nodule each)
SINGLE_REGION = ("nodule",)
#: a decoder sentence that names a device, hardware or surgery states a finding ("The tip is in
#: the right atrium.", "A humerus prosthesis.") even when the label extractor calls it normal
PRESENCE_WORDS = re.compile(
    r"\b(tubes?|lines?|catheters?|tips?|pacemakers?|pacers?|prosthes\w*|wires?|clips?|stents?|ports?"
    r"|devices?|hardware|leads?|picc|drains?|electrodes?|valves?|sternotomy|surgical|postsurgical"
    r"|arthroplast\w*|fixation|plates?|screws?|implants?|markers?)\b", re.IGNORECASE)
#: a decoder sentence kept as a normal statement must read as one: a negation, or a word that
#: says normal ("The trachea is midline."); "There are lower lung volumes." states an observation
#: that no head has evidence for, so it is dropped even though no finding label matches it
NORMAL_WORDS = re.compile(
    r"\b(?:no|not|without|negative|normal|clear|intact|unremarkable|midline|well expanded|expanded"
    r"|well aerated|preserved|maintained|stable|unchanged|appropriate|symmetric)\b", re.IGNORECASE)
#: the topic a finding is about (:data:`crrg.report.TOPICS`); a normal statement on it contradicts it
FINDING_TOPICS: dict[str, str] = {"opacity": "lungs", "nodule": "lungs", "pneumonia": "lungs",
                                  "support device": "devices", "cardiomegaly": "heart",
                                  "pneumothorax": "pneumothorax", "pleural effusion": "pleural effusion",
                                  "edema": "lungs", "consolidation": "lungs", "infiltration": "lungs",
                                  "atelectasis": "lungs", "mass": "lungs"}
#: the impression's order of importance; other findings follow in report order
IMPORTANCE: tuple[str, ...] = ("pneumothorax", "pneumonia", "pleural effusion", "edema", "consolidation",
                               "opacity", "infiltration", "atelectasis", "mass", "nodule", "cardiomegaly",
                               "support device")
NO_ACUTE = "No acute cardiopulmonary abnormality."
#: the impression with nothing found while a cardiopulmonary topic (:data:`CARDIOPULMONARY`) is
#: not assessed: the report cannot rule out what no head looks for (a pneumothorax)
NO_ACUTE_ASSESSED = "No acute cardiopulmonary abnormality among the findings assessed."
CARDIOPULMONARY = ("lungs", "pleural effusion", "pneumothorax", "heart")
#: the report's closing lines: the image-level findings between their rule-out probability and
#: threshold, and the topics no evidence in the image speaks to ("LABEL: a, b.")
INDETERMINATE_LABEL = "Indeterminate (neither stated nor ruled out)"
NOT_ASSESSED_LABEL = "Not assessed by this model"
#: a located finding -> the image-level diagnosis that explains it, said together in the impression
EXPLAINED_BY: dict[str, str] = {"opacity": "pneumonia"}
#: the places a device sentence may name, in the order named, and the regions each stands for
DEVICE_PLACES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("trachea", ("trachea",)), ("mediastinum", ("upper mediastinum", "mediastinum", "svc")),
    ("heart", ("cardiac silhouette",)), ("right hemithorax", ("right lung",)),
    ("left hemithorax", ("left lung",)), ("upper abdomen", ("abdomen",)))
DEVICE_NAMED = 3  # at most this many places in a device sentence's text
_ZONES = ("upper", "mid", "lower")


@dataclass(frozen=True)
class ImageEvidence:
    """What the heads said about one image (region axis = :data:`crrg.regions.REGIONS`)."""

    detected: Sequence[bool]
    abnormal: Sequence[float]  # [29] abnormality probability
    region_findings: Mapping[str, Sequence[float]] = field(default_factory=dict)  # finding -> [29]
    image_findings: Mapping[str, float] = field(default_factory=dict)  # finding -> probability
    generated: Mapping[str, str] = field(default_factory=dict)  # region -> decoder sentence
    measurements: Sequence[Sentence] = ()  # ready-made measurement sentences


@dataclass(frozen=True)
class Composed:
    sentences: tuple[Sentence, ...]
    dropped: tuple[tuple[str, str], ...]  # (text, why) of sentences that broke the contract
    #: the positive findings in order of importance, or :data:`NO_ACUTE` ("" without any sentence)
    impression: str = ""
    #: the topics (:data:`crrg.report.TOPICS`, report order) that no evidence in this image
    #: speaks to (neither :func:`assessed_topics` nor an image-level head): the report says
    #: nothing about them, normal or not
    not_assessed: tuple[str, ...] = ()
    #: image-level findings with an absent statement whose probability lies between their rule-out
    #: probability and their threshold: the report neither states nor rules them out
    indeterminate: tuple[str, ...] = ()

    @property
    def findings_text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    @property
    def report(self) -> str:
        """The findings sentences, then a line "Impression: ...", then the lines "Indeterminate
        ..." (:data:`INDETERMINATE_LABEL`) and "Not assessed by this model: ..."
        (:data:`NOT_ASSESSED_LABEL`) where they have anything to name."""
        if not self.impression:
            return self.findings_text
        lines = [f"{self.findings_text}\nImpression: {self.impression}".lstrip("\n")]
        lines += [f"{label}: {', '.join(items)}." for label, items in
                  ((INDETERMINATE_LABEL, self.indeterminate), (NOT_ASSESSED_LABEL, self.not_assessed)) if items]
        return "\n".join(lines)


def measurement_sentence(measured: Measured) -> Sentence:
    """A measured finding (:class:`crrg.measurements.Measured`, e.g. the heart size from the CTR)
    as a sentence with ``measurement`` evidence for the regions it was measured on."""
    return Sentence(measured.text, measured.regions, measured.finding,
                    Evidence("measurement", value=float(measured.value), measurement=measured.name))


def join_regions(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# ------------------------------------------------------------------------------ wording
def lung_location(regions: Sequence[str]) -> tuple[str, bool]:
    """Lung zones as a radiologist groups them: (phrase, True) for a word before the noun
    ("diffuse bilateral", "bibasilar"), (phrase, False) for a phrase after it ("throughout the
    right lung", "in the left upper lung zone", "in both upper lung zones", "in the right upper
    and mid lung zones and the left lower lung zone")."""
    zones = {side: [z for z in _ZONES if f"{side} {z} lung zone" in regions] for side in ("right", "left")}
    right, left = zones["right"], zones["left"]
    if len(right) == len(left) == 3:
        return "diffuse bilateral", True
    if right == left == ["lower"]:
        return "bibasilar", True
    if right == left:
        return f"in both {join_regions(right)} lung zones", False
    parts = []
    for side, kinds in zones.items():
        if len(kinds) == 3:
            parts.append(f"throughout the {side} lung")
        elif kinds:
            parts.append(f"in the {side} {join_regions(kinds)} lung zone{'s' if len(kinds) > 1 else ''}")
    if len(parts) == 2 and parts[1].startswith("in the "):
        parts[1] = parts[1][len("in "):]
    return " and ".join(parts), False


def lung_finding_text(noun: str, regions: Sequence[str]) -> tuple[str, str]:
    """(sentence, impression item) for a lung finding ``noun`` ("opacity") in ``regions``."""
    phrase, before = lung_location(regions)
    plural = "opacities" if noun == "opacity" else f"{noun}s"
    several = sum(r.endswith("lung zone") for r in regions) > 1
    if before:
        return f"There are {phrase} {plural}.", f"{phrase[0].upper()}{phrase[1:]} {plural}."
    if several:
        return f"There are {plural} {phrase}.", f"{plural.capitalize()} {phrase}."
    article = "an" if noun[0] in "aeiou" else "a"
    return f"There is {article} {noun} {phrase}.", f"{noun.capitalize()} {phrase}."


def device_text(regions: Sequence[str], probs: Mapping[str, float]) -> str:
    """"A support device projects over the mediastinum and upper abdomen.": the
    :data:`DEVICE_NAMED` places of highest probability among ``regions``, in :data:`DEVICE_PLACES`
    order."""
    places = [(max(probs[r] for r in names if r in regions), i, place)
              for i, (place, names) in enumerate(DEVICE_PLACES) if any(r in regions for r in names)]
    chosen = sorted(sorted(places, reverse=True)[:DEVICE_NAMED], key=lambda p: p[1])
    return f"A support device projects over the {join_regions([p[2] for p in chosen])}."


def _region_sentences(ev: ImageEvidence, thresholds: Mapping[str, float],
                      relative: Mapping[str, float]) -> list[tuple[Sentence, str]]:
    """(sentence, impression item) per region-level finding: the regions at or above its
    threshold and at or above ``relative[finding]`` times the highest of them."""
    out = []
    for finding, probs in ev.region_findings.items():
        threshold = thresholds.get(finding, 0.5)
        hits = [REGION_INDEX[r] for r in FINDING_REGIONS[finding]
                if ev.detected[REGION_INDEX[r]] and probs[REGION_INDEX[r]] >= threshold]
        if not hits:
            continue
        top = max(float(probs[i]) for i in hits)
        hits = [i for i in hits if float(probs[i]) >= relative.get(finding, 0.0) * top]
        if finding in SINGLE_REGION:
            hits = [max(hits, key=lambda i: probs[i])]
        names = tuple(r for r in REGION_INDEX if REGION_INDEX[r] in hits)
        if finding in LUNG_FINDINGS:
            text, item = lung_finding_text(finding, names)
        else:
            text = device_text(names, {r: probs[REGION_INDEX[r]] for r in names})
            item = "Support device in place."
        sentence = Sentence(text, names, finding,
                            Evidence("region", probability=max(float(probs[i]) for i in hits)))
        out.append((sentence, item))
    return out


def _image_sentences(ev: ImageEvidence, thresholds: Mapping[str, float], rule_out: Mapping[str, float]
                     ) -> tuple[list[Sentence], list[str]]:
    """Image-level sentences: a finding at or above its threshold, or its absent statement below
    its rule-out probability; and the findings in between (indeterminate, report order)."""
    out, indeterminate = [], []
    measured = {FINDING_TOPICS["cardiomegaly"] for s in ev.measurements  # the heart size, with its value
                if s.evidence.measurement == "cardiothoracic_ratio"}
    for finding, prob in ev.image_findings.items():
        present, absent = IMAGE_TEMPLATES[finding]
        if prob >= thresholds.get(finding, 0.5):
            if FINDING_TOPICS.get(finding) not in measured:
                out.append(Sentence(present, (), finding, Evidence("image", probability=float(prob))))
        elif absent is not None:
            if finding in rule_out and prob < rule_out[finding]:
                out.append(Sentence(absent, (), None, Evidence("image", probability=1.0 - float(prob))))
            else:
                indeterminate.append(finding)
    return out, indeterminate


def _decoder_sentences(ev: ImageEvidence, abnormal_threshold: float, skip_regions: set[str],
                       dropped: list[tuple[str, str]], decoder_findings: bool = False) -> list[Sentence]:
    """Normal statements the decoder wrote for selected, normal-looking regions (and, with
    ``decoder_findings``, its finding sentences for regions the abnormality head flags)."""
    from crrg.data.sentences import analyse_sentence, pool_rejection

    written = []
    for region, text in ev.generated.items():
        if region in skip_regions or not text:
            continue
        why = pool_rejection(text)
        if why:
            dropped.append((normalize_sentence(text), f"pool filter: {why}"))
        else:
            written.append((region, text))
    _, kept = assemble_report(written)
    out = []
    for item in kept:
        regions = tuple(sorted(item.regions, key=REGION_INDEX.__getitem__))
        probs = [float(ev.abnormal[REGION_INDEX[r]]) for r in regions]
        info = analyse_sentence(item.text)
        if not info.abnormal and PRESENCE_WORDS.search(item.text) and not info.negated:
            dropped.append((item.text, "names a device or hardware without region-level evidence"))
            continue
        if info.abnormal:
            if decoder_findings and max(probs) > abnormal_threshold:
                finding = info.findings[0] if info.findings else "abnormality"
                out.append(Sentence(item.text, regions, finding, Evidence("region", probability=max(probs))))
            else:
                dropped.append((item.text, "states a finding without region-level evidence"))
            continue
        if not info.negated and not NORMAL_WORDS.search(item.text):
            dropped.append((item.text, "no normal statement: states an observation without region-level evidence"))
            continue
        if max(probs) > abnormal_threshold:
            dropped.append((item.text, "normal statement for a region the abnormality head calls abnormal"))
            continue
        out.append(Sentence(item.text, regions, None, Evidence("region", probability=1.0 - max(probs))))
    return out


# ------------------------------------------------------------------------------ topics
def assessed_topics(ev: ImageEvidence, abnormality_topics: Collection[str]) -> frozenset[str]:
    """The topics (:data:`crrg.report.TOPICS`) that region-level evidence or a measurement in this
    image speaks to, i.e. what the decoder's normal statements (region evidence) may be about:
    those the region abnormality head's labels cover (``abnormality_topics``,
    :attr:`crrg.findings.GroundingConfig.abnormality_topics`), the topic of every region-level
    finding head (:data:`FINDING_TOPICS`), and the heart when its size was measured. A normal
    statement on any other topic ("No pneumothorax.", "No acute bony abnormality.") has nothing
    behind it. An image-level head states its finding's absence itself (:data:`IMAGE_TEMPLATES`,
    below its rule-out probability), never through a decoder sentence with region evidence."""
    topics = set(abnormality_topics)
    topics |= {FINDING_TOPICS[f] for f in ev.region_findings if f in FINDING_TOPICS}
    if any(s.evidence.kind == "measurement" for s in ev.measurements):
        topics.add("heart")
    return frozenset(topics)


def _assessed(s: Sentence, assessed: frozenset[str], dropped: list[tuple[str, str]]) -> bool:
    """A decoder normal statement is kept only when region-level evidence assesses every topic it
    covers (``assessed``: :func:`assessed_topics`)."""
    topics = {t for t, _ in topic_keys(s.text)}
    missing = sorted(topics - assessed, key=TOPIC_ORDER.__getitem__)
    if not topics or missing:
        what = ", ".join(missing) if missing else "no topic"
        why = f"normal statement on {what}: no region-level evidence for it"
        dropped.append((normalize_sentence(s.text), why))
        return False
    return True


def finding_keys(sentence: Sentence) -> frozenset[tuple[str, str]]:
    """(topic, side) pairs a finding sentence states (:data:`FINDING_TOPICS`; a lung finding on
    the sides of its regions, an image-level one on both)."""
    topic = "heart" if sentence.evidence.kind == "measurement" else FINDING_TOPICS.get(sentence.finding or "")
    if topic is None:
        return topic_keys(sentence.text)
    if topic not in SIDED_TOPICS:
        return frozenset({(topic, "")})
    sides = {region_side(r) for r in sentence.regions} - {None} or {"right", "left"}
    return frozenset((topic, side) for side in sides)


_TOPIC_WORDS = {"lungs": "lung", "pleural effusion": "pleural", "pneumothorax": "pleural", "hila": "hilar"}


def _select_normals(normals: Sequence[Sentence], stated: frozenset[tuple[str, str]],
                    contradicted: frozenset[tuple[str, str]], abnormal: Sequence[float],
                    dropped: list[tuple[str, str]]) -> list[Sentence]:
    """Each topic at most once (see the module doc): statements covering more topics first; a
    repeat is absorbed by the statement covering it (union of regions)."""
    keyed = [(topic_keys(s.text), i, s) for i, s in enumerate(normals)]
    keyed.sort(key=lambda k: (-len(k[0]), k[2].evidence.kind == "image", k[1]))
    kept: list[tuple[frozenset[tuple[str, str]], int, Sentence]] = []
    covered = set(stated)
    for keys, i, s in keyed:
        clash = keys & contradicted
        if clash:
            topic = min(t for t, _ in clash)
            word = _TOPIC_WORDS.get(topic, topic)
            dropped.append((s.text, f"normal {word} statement contradicts a {word} finding"))
            continue
        if keys and keys & covered:
            home = next((j for j, (k, _, t) in enumerate(kept) if keys <= k and t.evidence.kind == "region"), None)
            if home is not None and s.evidence.kind == "region":
                k, j, t = kept[home]
                regions = tuple(sorted(set(t.regions) | set(s.regions), key=REGION_INDEX.__getitem__))
                prob = 1.0 - max(float(abnormal[REGION_INDEX[r]]) for r in regions)
                kept[home] = (k, j, Sentence(t.text, regions, None, Evidence("region", probability=prob)))
            dropped.append((s.text, "repeats a topic already stated"))
            continue
        covered |= keys
        kept.append((keys, i, s))
    return [s for _, _, s in sorted(kept, key=lambda k: k[1])]


def _order(sentence: Sentence) -> tuple[int, bool, bool, int]:
    """Topic (report order), findings before normal statements, located before image-level
    ("There are diffuse bilateral opacities." before "Findings are consistent with pneumonia."),
    then the first region."""
    keys = finding_keys(sentence) if sentence.finding or sentence.evidence.kind == "measurement" else topic_keys(sentence.text)
    rank = min((TOPIC_ORDER[t] for t, _ in keys), default=len(TOPIC_ORDER))
    first = REGION_INDEX[sentence.regions[0]] if sentence.regions else -1
    return rank, sentence.finding is None, sentence.evidence.kind == "image", first


def impression(items: Sequence[tuple[Sentence, str]], not_assessed: Collection[str] = (),
               indeterminate: Collection[str] = ()) -> str:
    """The positive findings in order of importance (:data:`IMPORTANCE`), each once, or
    :data:`NO_ACUTE` (:data:`NO_ACUTE_ASSESSED` when a :data:`CARDIOPULMONARY` topic is in
    ``not_assessed`` or a finding is ``indeterminate``). ``items``: (finding sentence, its
    impression item) in report order.

    A finding that an image-level diagnosis explains (:data:`EXPLAINED_BY`: opacities and
    pneumonia) is said with it, once ("Diffuse bilateral opacities, consistent with pneumonia.")."""
    present = {s.finding for s, _ in items}
    rank = {finding: i for i, finding in enumerate(IMPORTANCE)}
    ranked = sorted((rank.get(s.finding, len(IMPORTANCE)), i, s.finding, item)
                    for i, (s, item) in enumerate(items) if s.finding is not None)
    said: list[str] = []
    for _, _, finding, item in ranked:
        if EXPLAINED_BY.get(finding) in present:
            continue  # said with its diagnosis
        explained = [it for _, _, f, it in ranked if EXPLAINED_BY.get(f) == finding]
        if explained:
            item = f"{explained[0].rstrip('.')}, consistent with {finding}."
        if item not in said:
            said.append(item)
    if said:
        return " ".join(said)
    return NO_ACUTE_ASSESSED if set(CARDIOPULMONARY) & set(not_assessed) or indeterminate else NO_ACUTE


def compose(ev: ImageEvidence, region_thresholds: Mapping[str, float] | None = None,
            image_thresholds: Mapping[str, float] | None = None, abnormal_threshold: float = 0.5,
            decoder_findings: bool = False, region_relative: Mapping[str, float] | None = None,
            abnormality_topics: Collection[str] = GroundingConfig.abnormality_topics,
            rule_out: Mapping[str, float] | None = None
            ) -> Composed:
    """The report's sentences with evidence, report order, and its impression (see the module doc);
    ``region_relative``, ``abnormality_topics`` and ``rule_out``: those of
    :class:`crrg.findings.GroundingConfig`."""
    dropped: list[tuple[str, str]] = []
    found = _region_sentences(ev, region_thresholds or {}, region_relative or {})
    localised = {s.finding for s, _ in found}
    images, indeterminate = _image_sentences(ev, image_thresholds or {}, rule_out or {})
    images = [s for s in images if s.finding not in localised or not s.finding]
    indeterminate = [f for f in indeterminate if f not in localised]
    measured_regions = {r for s in ev.measurements for r in s.regions[:1]}  # e.g. the heart
    decoder = _decoder_sentences(ev, abnormal_threshold, measured_regions, dropped, decoder_findings)
    items = [*found, *((s, s.text) for s in images if s.finding),
             *((s, s.text) for s in [*ev.measurements, *decoder] if s.finding)]
    items = [(s, item) for s, item in items if _supported(s, dropped)]
    fixed = [s for s, _ in items] + [s for s in ev.measurements if not s.finding and _supported(s, dropped)]
    contradicted = frozenset(k for s, _ in items for k in finding_keys(s))
    stated = frozenset(k for s in fixed for k in finding_keys(s))
    assessed = assessed_topics(ev, abnormality_topics)
    normals = [s for s in decoder if s.finding is None and _supported(s, dropped) and _assessed(s, assessed, dropped)]
    normals += [s for s in images if s.finding is None and _supported(s, dropped)]
    chosen = _select_normals(normals, stated, contradicted, ev.abnormal, dropped)
    sentences = sorted((_normalized(s) for s in [*fixed, *chosen]), key=_order)
    spoken = assessed | {FINDING_TOPICS[f] for f in ev.image_findings if f in FINDING_TOPICS}
    not_assessed = tuple(t for t in TOPIC_ORDER if t not in spoken)
    return Composed(tuple(sentences), tuple(dropped),
                    impression(items, not_assessed, indeterminate) if sentences else "",
                    not_assessed, tuple(indeterminate))


def _normalized(s: Sentence) -> Sentence:
    return Sentence(normalize_sentence(s.text), s.regions, s.finding, s.evidence)


def _supported(s: Sentence, dropped: list[tuple[str, str]]) -> bool:
    """The location check (:func:`crrg.locations.unsupported_locations`); a failure is dropped."""
    text = normalize_sentence(s.text)
    bad = unsupported_locations(text, s.regions, s.evidence.kind)
    if bad:
        dropped.append((text, f"names {sorted(bad.sides | bad.zones | bad.phrases)} without evidence there"))
    return not bad
