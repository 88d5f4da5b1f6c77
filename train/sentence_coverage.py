"""Coverage of the sentence rules on real reports: share of sentences mapped to >= 1 region.

    python -m train.sentence_coverage [--data DIR] [--mimic-reports DIR] [--show-unmapped N]

IU X-ray: reads ``iu_xray/NLMCXR_reports.tgz`` (``ecgen-radiology/<n>.xml``) at run time. A report
is identified by its XML ``uId`` ("CXR<n>", the same as the file name ``<n>.xml``; an R2Gen study id
such as "CXR2384_IM-0942" belongs to report ``id.split("_")[0]``). Its sentences are
``split_sentences(FINDINGS) + split_sentences(IMPRESSION)`` (a missing section gives none): this
is the sentence index used by ``tests/fixtures/iu_sentence_labels.csv``.
MIMIC-CXR (optional): every ``*.txt`` report below ``--mimic-reports``, FINDINGS + IMPRESSION.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from crrg.data.sentences import analyse_sentence, split_sentences

log = logging.getLogger(__name__)
IU_ARCHIVE = Path("iu_xray") / "NLMCXR_reports.tgz"


def read_iu_sections(data_dir: str | Path) -> dict[str, tuple[str | None, str | None]]:
    """{"CXR<n>": (findings, impression)} for every IU report; raises FileNotFoundError."""
    path = Path(data_dir) / IU_ARCHIVE
    if not path.is_file():
        raise FileNotFoundError(f"IU X-ray reports not found at {path} (expected {IU_ARCHIVE} in the data folder)")
    reports: dict[str, tuple[str | None, str | None]] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if not member.name.endswith(".xml"):
                continue
            root = ET.parse(archive.extractfile(member)).getroot()
            sections = {node.get("Label"): node.text for node in root.iter("AbstractText")}
            reports[root.find("uId").get("id")] = (sections.get("FINDINGS"), sections.get("IMPRESSION"))
    return reports


def report_sentences(findings: str | None, impression: str | None) -> list[str]:
    """A report's sentences, FINDINGS first: the indexing of the hand-labelled fixture."""
    return split_sentences(findings) + split_sentences(impression)


def iu_sentences(data_dir: str | Path) -> dict[str, list[str]]:
    """{"CXR<n>": sentences} for every IU report."""
    return {rid: report_sentences(*sections) for rid, sections in read_iu_sections(data_dir).items()}


def read_mimic_sentences(folder: str | Path) -> dict[str, list[str]]:
    """{report stem: sentences of FINDINGS + IMPRESSION} for MIMIC-CXR ``*.txt`` reports."""
    out = {}
    for path in sorted(Path(folder).rglob("*.txt")):
        text = path.read_text(errors="replace")
        parts = re.split(r"\n\s*(FINDINGS|IMPRESSION)\s*:", text)
        body = " ".join(parts[i + 1] for i in range(1, len(parts) - 1, 2)) if len(parts) > 1 else text
        out[path.stem] = split_sentences(body)
    return out


def coverage(reports: dict[str, list[str]]) -> dict[str, float]:
    """Sentence counts, share with >= 1 region, share abnormal, per-region sentence counts."""
    sentences = [s for ss in reports.values() for s in ss]
    analyses = [analyse_sentence(s) for s in sentences]
    mapped = sum(bool(a.regions) for a in analyses)
    return {
        "reports": len(reports),
        "sentences": len(sentences),
        "coverage": mapped / max(len(sentences), 1),
        "abnormal_share": sum(a.abnormal for a in analyses) / max(len(sentences), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CRRG_DATA", "../shared/data"))
    parser.add_argument("--mimic-reports", default=None, help="folder of MIMIC-CXR *.txt reports")
    parser.add_argument("--show-unmapped", type=int, default=0, help="print the N commonest unmapped sentences")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sets = {"iu_xray": iu_sentences(args.data)}
    if args.mimic_reports:
        sets["mimic_cxr"] = read_mimic_sentences(args.mimic_reports)
    for name, reports in sets.items():
        stats = coverage(reports)
        log.info("%s: %d reports, %d sentences, region coverage %.1f %%, abnormal %.1f %%", name,
                 stats["reports"], stats["sentences"], 100 * stats["coverage"], 100 * stats["abnormal_share"])
        if args.show_unmapped:
            unmapped = Counter(s for ss in reports.values() for s in ss if not analyse_sentence(s).regions)
            for sentence, count in unmapped.most_common(args.show_unmapped):
                log.info("%6d  %s", count, sentence)


if __name__ == "__main__":
    main()
