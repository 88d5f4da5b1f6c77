"""How the reports read (issue #17): repeats, non-chest sentences, contradictions, length, and an
NLG style check against IU X-ray's normal reports.

Input: the JSON lines of ``python -m crrg report ... --out FILE.jsonl`` (or ``--json`` printed to
a file): one ``ReportResult.to_json()`` per image; error lines (no ``"report"``) are skipped, and
lines written before reports had an impression (no ``"impression"``) count as having none.

The "after" figures (the lead, once the retrained model is in ``assets/crrg-default``; the same
196 test images as the "before" run, ``/work/runs/h17/test_images.txt``, paths relative to
``$CRRG_DATA``)::

    export CRRG_DATA=/work/shared/data HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
    sed "s#^#$CRRG_DATA/#" /work/runs/h17/test_images.txt > /tmp/h17_images.txt
    python -m crrg report $(cat /tmp/h17_images.txt) --force --workers 0 \
        --weights assets/crrg-default --out /work/runs/h17/after.jsonl
    python -m train.report_quality /work/runs/h17/after.jsonl --prepared /work/runs/r2/prepared \
        --out /work/runs/h17/after_quality.json
    # the "before" figures, from the reports of the old code:
    python -m train.report_quality /work/runs/h17/before.jsonl --prepared /work/runs/r2/prepared \
        --out /work/runs/h17b/before_quality.json

(``--force``: every image gets a report, as in the before run; ``--no-nlg`` skips the Java METEOR
step.)

Per report (targets 0 for the first five, on every image of every source; ``totals`` and
``reports_with`` (reports with at least one) overall and per source):

- ``topics_twice``: topics (:data:`crrg.report.TOPICS`: lungs, pleural effusion, pneumothorax,
  heart, mediastinum, hila, bones, devices, upper abdomen, diaphragm) stated by two or more normal
  or measurement sentences, on the same side for the lungs, pleura and hila ("No pleural
  effusion." after "No focal consolidation, pneumothorax or large pleural effusion.");
- ``non_chest``: sentences :func:`crrg.data.sentences.pool_rejection` calls "not about the chest"
  or "image count or examination"; ``malformed``: those it calls "malformed";
- ``contradictions``: normal statements on the topic (and side) of a finding of the same report
  ("The lungs are clear." next to an opacity; :func:`crrg.grounding.finding_keys`);
- ``long_sentences``: sentences over :data:`LONG_WORDS` words;
- and ``distinct_sentences`` (over all reports; ``distinct_without_numbers`` with every number as
  "#", so the cardiothoracic ratios do not count), ``mean_sentences`` and ``mean_words`` per report
  (the findings sentences, ``sentences`` of the JSON), ``mean_impression_words``,
  ``no_acute_impressions`` (reports whose impression is "No acute cardiopulmonary abnormality.",
  with or without "among the findings assessed").

``image_statements``: per source, on its "No Finding" and its other labelled films, how many
reports state each image-level finding (:func:`image_statements`); ``absent_statements``: per
source, how many positive and negative films are told an image-level finding is absent, or left
indeterminate (:func:`absent_statements`).

NLG, a style check and not a measure of accuracy: for the images whose report states no finding
(no sentence with a ``finding``: the model calls them normal), the findings text (the sentences
joined; not the impression, since the references are findings sections) is scored with
pycocoevalcap (:func:`crrg.metrics.nlg.compute_nlg`: corpus BLEU-1..4, METEOR, ROUGE-L) against
every normal report of the IU X-ray test split as references (the findings of an IU report with no
abnormal sentence, ``sentences.jsonl`` of ``train.prepare``). These images are not IU images and
have no report of their own, so this says how close the wording is to what radiologists write on
normal films, not whether the report is right. The baseline is the most common normal findings
text of the IU train split, given for every such image. Two protocols:

- ``multi_reference``: the issue's; each text against all references at once (pycocoevalcap
  takes the best-matching one). IU reports are templated: the baseline text is itself one of the
  test references (``baseline_in_references`` times), so it scores 1.0 there by construction;
- ``pairwise``: each text against each reference as its own pair, corpus-level: how close the
  wording is to a typical normal report, where the baseline is no longer a copy of its reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from crrg.data.sentences import pool_rejection
from crrg.grounding import NO_ACUTE, NO_ACUTE_ASSESSED, finding_keys
from crrg.report import topic_keys
from train.datasets import report_records
from crrg.types import Evidence, Sentence

logger = logging.getLogger(__name__)

LONG_WORDS = 30
NON_CHEST = ("not about the chest", "image count or examination")
COUNTS = ("topics_twice", "non_chest", "malformed", "contradictions", "long_sentences")


def _sentence(data: dict[str, Any]) -> Sentence:
    """A ``sentences`` item of a JSON line as a :class:`~crrg.types.Sentence` (a measurement
    written before evidence named its measurement was the cardiothoracic ratio)."""
    ev = data.get("evidence") or {}
    kind = ev.get("kind", "region")
    measurement = ev.get("measurement") or ("cardiothoracic_ratio" if kind == "measurement" else None)
    return Sentence(data["text"], tuple(data.get("regions") or ()), data.get("finding"),
                    Evidence(kind, ev.get("probability"), ev.get("value"), measurement))


def report_counts(sentences: Sequence[Sentence]) -> dict[str, int]:
    """The per-report counts of the module doc for one report's sentences."""
    findings = [s for s in sentences if s.finding is not None]
    statements = [s for s in sentences if s.finding is None]
    contradicted = {k for s in findings for k in finding_keys(s)}
    said: Counter[tuple[str, str]] = Counter()
    contradictions = 0
    for s in statements:
        keys = finding_keys(s) if s.evidence.kind == "measurement" else topic_keys(s.text)
        said.update(keys)
        contradictions += s.evidence.kind != "measurement" and bool(keys & contradicted)
    for s in findings:  # a measured finding (the heart) also states its topic
        if s.evidence.kind == "measurement":
            said.update(finding_keys(s))
    reasons = [pool_rejection(s.text) for s in sentences]
    return {"topics_twice": len({t for (t, _), n in said.items() if n > 1}),
            "non_chest": sum(r in NON_CHEST for r in reasons),
            "malformed": sum(r == "malformed" for r in reasons),
            "contradictions": int(contradictions),
            "long_sentences": sum(len(s.text.split()) > LONG_WORDS for s in sentences)}


def findings_text(record: dict[str, Any]) -> str:
    """The findings of a report line as prose: its sentences joined (no impression)."""
    return " ".join(s["text"] for s in record.get("sentences") or [])


def quality(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals, reports with any count > 0, distinct sentences, means (see the module doc)."""
    records = list(records)
    totals = dict.fromkeys(COUNTS, 0)
    with_any = dict.fromkeys(COUNTS, 0)
    texts: set[str] = set()
    n_sentences = n_words = n_impression = no_acute = 0
    for record in records:
        sentences = [_sentence(s) for s in record.get("sentences") or []]
        for key, value in report_counts(sentences).items():
            totals[key] += value
            with_any[key] += value > 0
        texts |= {s.text for s in sentences}
        n_sentences += len(sentences)
        n_words += sum(len(s.text.split()) for s in sentences)
        impression = record.get("impression") or ""
        n_impression += len(impression.split())
        no_acute += impression in (NO_ACUTE, NO_ACUTE_ASSESSED)
    n = max(len(records), 1)
    return {"reports": len(records), "totals": totals, "reports_with": with_any,
            "distinct_sentences": len(texts),
            "distinct_without_numbers": len({re.sub(r"\d+(?:\.\d+)?", "#", t) for t in texts}),
            "mean_sentences": round(n_sentences / n, 3),
            "mean_words": round(n_words / n, 3), "mean_impression_words": round(n_impression / n, 3),
            "no_acute_impressions": no_acute}


def image_statements(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per source, on its "No Finding" films (``normal``) and its other labelled films
    (``abnormal``): reports, reports with any image-level finding statement, and per finding how
    many state it. Shows where image-level heads fire on films of sources that never label the
    finding (NIH's findings on another hospital's pneumonia films), which no AUC can score."""
    out: dict[str, Any] = {}
    for record in records:
        labels = record.get("labels")
        if not labels:
            continue
        group = "normal" if labels.get("no finding") == 1 else "abnormal"
        said = sorted({s["finding"] for s in record.get("sentences") or []
                       if s.get("finding") and s["evidence"]["kind"] == "image"})
        entry = out.setdefault(record.get("source") or "unknown", {}).setdefault(
            group, {"reports": 0, "any": 0, "by_finding": Counter()})
        entry["reports"] += 1
        entry["any"] += bool(said)
        entry["by_finding"].update(said)
    for groups in out.values():
        for entry in groups.values():
            entry["by_finding"] = dict(sorted(entry["by_finding"].items()))
    return dict(sorted(out.items()))


def absent_statements(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per image-level finding with an absent statement (:data:`crrg.grounding.IMAGE_TEMPLATES`:
    pneumonia, pleural effusion) and per source that assesses it
    (:func:`train.heads_data.image_finding_target`): how many of its positive and negative films
    the report tells the finding is absent (a normal sentence naming it, e.g. "There is no pleural
    effusion." or, before rule-out probabilities, the decoder's "No pleural effusion."), and how
    many reports leave it indeterminate. A statement of absence on a positive film is the error
    that matters most: a reader takes it as ruled out."""
    from crrg.grounding import IMAGE_TEMPLATES
    from train.heads_data import image_finding_target

    findings = [f for f, (_, absent) in IMAGE_TEMPLATES.items() if absent]
    out: dict[str, Any] = {}
    for record in records:
        if not record.get("labels") or not record.get("source"):
            continue
        normals = [s["text"].lower() for s in record.get("sentences") or []
                   if s.get("finding") is None and s["evidence"]["kind"] != "measurement"]
        for finding in findings:
            y = image_finding_target({"labels": record["labels"], "source": record["source"]}, finding)
            if y is None:
                continue
            entry = out.setdefault(finding, {}).setdefault(record["source"], Counter())
            group = "positives" if y == 1 else "negatives"
            entry[group] += 1
            entry[f"{group}_told_absent"] += any(finding.split()[-1] in text for text in normals)
            entry[f"{group}_indeterminate"] += finding in (record.get("indeterminate") or [])
    return {f: {s: dict(sorted(c.items())) for s, c in sorted(by.items())} for f, by in sorted(out.items())}


def iu_normal_reports(prepared: Path) -> dict[str, list[str]]:
    """{split: [report text]} of IU X-ray reports with no abnormal sentence (sentences in order)."""
    reports: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    with (prepared / "sentences.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("source") == "iu_xray":
                reports[(row["split"], row["report"])].append(row)
    out: dict[str, list[str]] = defaultdict(list)
    for (split, _), rows in reports.items():
        if not any(r.get("abnormal") for r in rows):
            out[split].append(" ".join(r["text"] for r in sorted(rows, key=lambda r: r.get("index", 0))))
    return dict(out)


def nlg_style(records: Sequence[dict[str, Any]], prepared: Path) -> dict[str, Any]:
    """NLG of the reports stating no finding vs IU test normal reports; baseline: the most
    common IU train normal report (see the module doc for both protocols)."""
    from crrg.metrics.nlg import compute_nlg

    normal = iu_normal_reports(prepared)
    references = normal.get("test", [])
    if not normal.get("train"):
        raise ValueError(f"no IU X-ray train reports in {prepared / 'sentences.jsonl'}: the baseline needs them")
    baseline_text, baseline_count = Counter(normal["train"]).most_common(1)[0]
    hypotheses = [findings_text(r) for r in records
                  if r.get("sentences") and not any(s.get("finding") for s in r["sentences"])]
    out: dict[str, Any] = {"images": len(hypotheses), "references": len(references),
                           "baseline_text": baseline_text, "baseline_train_count": baseline_count,
                           "baseline_in_references": references.count(baseline_text)}
    if not hypotheses or not references:
        return out
    metrics = ("bleu", "meteor", "rouge")
    for name, texts in (("model", hypotheses), ("baseline", [baseline_text])):
        out[name] = {
            "multi_reference": compute_nlg([references] * len(texts), texts, metrics=metrics),
            "pairwise": compute_nlg([ref for _ in texts for ref in references],
                                    [text for text in texts for _ in references], metrics=metrics),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, help="JSON lines of `python -m crrg report --out`")
    parser.add_argument("--prepared", type=Path, required=True, help="train.prepare output folder")
    parser.add_argument("--out", type=Path, required=True, help="figures JSON to write")
    parser.add_argument("--no-nlg", action="store_true", help="skip the NLG style check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    records = report_records(args.reports, args.prepared)
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_source[record.get("source") or "unknown"].append(record)
    figures: dict[str, Any] = {"reports_file": str(args.reports), "all": quality(records),
                               "by_source": {s: quality(r) for s, r in sorted(by_source.items())},
                               "splits": dict(Counter(r.get("split") for r in records)),
                               "image_statements": image_statements(records),
                               "absent_statements": absent_statements(records)}
    if not args.no_nlg:
        figures["nlg_normal_vs_iu_test_normal"] = nlg_style(records, args.prepared)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    logger.info("wrote %s: %s", args.out, json.dumps(figures["all"]))


if __name__ == "__main__":
    main()
