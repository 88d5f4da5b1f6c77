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


def _row(source: str, image: str, **labels: int) -> dict:
    return {"image": image, "source": source, "split": "val", "labels": labels}


def test_the_lowest_per_source_threshold_wins_and_thin_sources_do_not_count() -> None:
    rows, lines = {}, []
    for i in range(20):  # source A ranks its positives high, source B low
        for source, base in (("kermany_pneumonia", 0.6), ("nih_cxr14", 0.1)):
            key = f"/d/{source}/pos{i}.png"
            rows[key] = _row(source, key, pneumonia=1)
            lines.append({"image": key, "image_findings": {"pneumonia": base + 0.01 * i, "edema": 0.5}})
            key = f"/d/{source}/neg{i}.png"
            rows[key] = _row(source, key, **{"no finding": 1})
            lines.append({"image": key, "image_findings": {"pneumonia": 0.01 * i}})
    key = "/d/covid_anatomy/x.png"  # one positive: too few to set a limit of its own
    rows[key] = _row("covid_anatomy", key, pneumonia=1)
    lines.append({"image": key, "image_findings": {"pneumonia": 0.0}})
    lines.append({"image": "/d/elsewhere.png", "error": "unreadable"})
    out = rule_out.choose(lines, rows, miss=0.1, min_positives=10)
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
    (prepared / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (prepared / "meta.json").write_text(json.dumps({"data_root": str(tmp_path / "data")}))
    from train.datasets import PreparedData

    data = PreparedData(prepared)
    reports = tmp_path / "val.jsonl"
    reports.write_text("".join(json.dumps({"image": str(data.path(r["image"])),
                                           "image_findings": {"pleural effusion": 0.5 - 0.02 * i}}) + "\n"
                               for i, r in enumerate(rows)))
    out = tmp_path / "rule_out.json"
    rule_out.main([str(reports), "--prepared", str(prepared), "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["chosen"] == {"pleural effusion": pytest.approx(0.34)}  # one positive (0.32) below
    assert written["findings"]["pleural effusion"]["negatives_below"] == 10
