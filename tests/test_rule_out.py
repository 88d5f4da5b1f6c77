"""train.rule_out: the probability below which a report may state a finding's absence, chosen on
validation lines so that at most a tenth of each source's positives fall below it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train import rule_out


def test_the_threshold_leaves_at_most_the_miss_share_of_positives_below() -> None:
    positives = [0.05 * i for i in range(1, 21)]  # 20 positives: 0.05 ... 1.0
    t = rule_out.rule_out_threshold(positives, miss=0.1)
    assert sum(p < t for p in positives) == 2 and t == pytest.approx(0.15)
    assert rule_out.rule_out_threshold([0.3], miss=0.1) == 0.3
    with pytest.raises(ValueError):
        rule_out.rule_out_threshold([])


def _record(source: str, p: float, **labels: int) -> dict:
    """A report line as train.datasets.report_records returns it (its prepared row's source and labels)."""
    return {"source": source, "labels": labels, "image_findings": {"pneumonia": p, "edema": 0.5}}


def test_the_lowest_per_source_threshold_wins_and_thin_sources_do_not_count() -> None:
    records = []
    for i in range(20):  # source A ranks its positives high, source B low
        for source, base in (("kermany_pneumonia", 0.6), ("nih_cxr14", 0.1)):
            records.append(_record(source, base + 0.01 * i, pneumonia=1))
            records.append(_record(source, 0.01 * i, **{"no finding": 1}))
    records.append(_record("covid_anatomy", 0.0, pneumonia=1))  # one positive: too few for a limit of its own
    records.append({"source": None, "labels": None, "image_findings": {"pneumonia": 0.0}})  # not prepared
    out = rule_out.choose(records, miss=0.1, min_positives=10)
    assert set(out) == {"pneumonia"}  # edema has no absent statement
    pneumonia = out["pneumonia"]
    assert pneumonia["by_source"]["kermany_pneumonia"]["rule_out"] == pytest.approx(0.62)
    assert pneumonia["by_source"]["nih_cxr14"]["rule_out"] == pytest.approx(0.12)
    assert pneumonia["by_source"]["covid_anatomy"]["rule_out"] is None
    assert pneumonia["rule_out"] == pytest.approx(0.12)
    assert pneumonia["by_source"]["nih_cxr14"]["positives_below"] == 2
    assert pneumonia["positives_below"] == 3  # NIH's two and the thin source's one


def test_main_writes_the_chosen_limits(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rows = [{"image": f"nih/{i}.png", "source": "nih_cxr14", "split": "val",
             "labels": {"pleural effusion": int(i < 10), "no finding": int(i >= 10)}} for i in range(20)]
    rows.append({"image": "nih/test.png", "source": "nih_cxr14", "split": "test", "labels": {"pleural effusion": 1}})
    (prepared / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (prepared / "meta.json").write_text(json.dumps({"data_root": str(tmp_path / "data")}))
    from train.datasets import PreparedData

    data = PreparedData(prepared)
    reports = tmp_path / "val.jsonl"
    lines = [{"image": str(data.path(r["image"])), "report": "...",
              "image_findings": {"pleural effusion": 0.5 - 0.02 * i}} for i, r in enumerate(rows)]
    lines += [{"image": "/elsewhere/x.png", "error": "unreadable"},  # a failed image
              {"image": str(data.path("nih/test.png")), "report": "...", "image_findings": {"pleural effusion": 0.0}}]
    reports.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "rule_out.json"
    rule_out.main([str(reports), "--prepared", str(prepared), "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["chosen"] == {"pleural effusion": pytest.approx(0.34)}  # one positive (0.32) below
    assert written["findings"]["pleural effusion"]["negatives_below"] == 10
