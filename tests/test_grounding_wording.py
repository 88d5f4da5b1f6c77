"""Report wording (issue #17): topic de-duplication of normal statements, no normal statement
against a finding, the pool filter at report time, grouped lung locations against the location
check, device places, image-level wording and the impression. Composed as for a model that
assesses every topic (:data:`grounding_fixture.ALL_TOPICS`), so that normal statements on any
topic take part; the open-data default's topic rule is tested in test_not_assessed.py."""

from __future__ import annotations

import functools
import itertools
import random

import pytest
from grounding_fixture import ALL_TOPICS
from grounding_fixture import evidence as _evidence
from grounding_fixture import probs as _probs

from crrg.findings import DEVICE_REGIONS, LUNG_ZONES
from crrg import grounding
from crrg.grounding import DEVICE_NAMED, NO_ACUTE, finding_keys, lung_finding_text, lung_location, measurement_sentence
from crrg.locations import is_supported, unsupported_locations
from crrg.measurements import heart_size
from crrg.report import topic_keys

compose = functools.partial(grounding.compose, abnormality_topics=ALL_TOPICS)
THRESHOLDS = {"nodule": 0.5, "opacity": 0.5, "support device": 0.5}


def _findings(**hot: dict[str, float]) -> dict[str, list[float]]:
    return {f: _probs(hot.get(f.replace(" ", "_"), {})) for f in THRESHOLDS}


def _texts(out) -> list[str]:
    return [s.text for s in out.sentences]


# ------------------------------------------------------------------------------ topics
def test_a_combined_statement_covers_both_topics_and_cites_the_union_of_regions() -> None:
    out = compose(_evidence(generated={
        "right costophrenic angle": "No pleural effusion.",
        "left costophrenic angle": "No pleural effusion or pneumothorax.",
        "left lung": "No pneumothorax.",
        "spine": "No acute bony abnormality.",
    }))
    assert _texts(out) == ["No pleural effusion or pneumothorax.", "No acute bony abnormality."]
    [pleura] = [s for s in out.sentences if "pleural" in s.text]
    assert set(pleura.regions) == {"right costophrenic angle", "left costophrenic angle", "left lung"}
    assert pleura.finding is None and pleura.evidence.kind == "region"
    repeats = [text for text, why in out.dropped if why == "repeats a topic already stated"]
    assert sorted(repeats) == ["No pleural effusion.", "No pneumothorax."]


def test_each_side_of_a_sided_topic_is_its_own_statement() -> None:
    out = compose(_evidence(generated={"right lung": "The right lung is clear.", "left lung": "The left lung is clear."}))
    assert _texts(out) == ["The right lung is clear.", "The left lung is clear."]


def test_the_measured_heart_size_is_the_one_heart_statement() -> None:
    measured = measurement_sentence(heart_size(0.45, None))
    out = compose(_evidence(measurements=[measured], generated={
        "cardiac silhouette": "The heart is normal in size.",
        "mediastinum": "The cardiomediastinal silhouette is normal.",
        "right hilar structures": "The hila are normal.",
    }))
    assert _texts(out) == ["Heart size is within normal limits (cardiothoracic ratio 0.45; view unknown).",
                           "The hila are normal."]


NORMALS = [  # (region, decoder sentence) as the shipped decoder writes them
    ("right lung", "The lungs are clear."), ("left lung", "The left lung is clear."),
    ("right upper lung zone", "There is no evidence of apical disease."),
    ("right lung", "No focal consolidation, pneumothorax or large pleural effusion."),
    ("right costophrenic angle", "No pleural effusion."), ("left costophrenic angle", "No pleural effusion or pneumothorax."),
    ("left lung", "No pneumothorax."), ("right hilar structures", "The hilar and mediastinal contours are normal."),
    ("mediastinum", "The heart and mediastinum are normal."), ("cardiac silhouette", "The heart is normal in size."),
    ("spine", "No acute bony abnormality."), ("right clavicle", "Bony structures are intact."),
    ("abdomen", "The visualized osseous structures and upper abdomen are unremarkable."),
    ("trachea", "The trachea is midline."), ("left hemidiaphragm", "The diaphragm is normal."),
]


@pytest.mark.parametrize("seed", range(40))
def test_no_topic_twice_and_no_normal_statement_against_a_finding(seed: int) -> None:
    rng = random.Random(seed)
    generated = dict(rng.sample(NORMALS, rng.randint(2, len(NORMALS))))
    zones = rng.sample(LUNG_ZONES, rng.randint(0, 3))
    devices = rng.sample(DEVICE_REGIONS, rng.randint(0, 2))
    measured = [measurement_sentence(heart_size(rng.choice([0.44, 0.58]), rng.choice(["PA", None])))]
    out = compose(_evidence(generated=generated, measurements=measured,
                            region_findings=_findings(opacity={z: 0.9 for z in zones},
                                                      support_device={d: 0.9 for d in devices}),
                            image_findings={"pneumonia": rng.choice([0.1, 0.9])}),
                  THRESHOLDS, {"pneumonia": 0.5})
    found = {k for s in out.sentences if s.finding for k in finding_keys(s)}
    said: list[tuple[str, str]] = []
    for s in out.sentences:
        if s.finding is None:
            keys = finding_keys(s) if s.evidence.kind == "measurement" else topic_keys(s.text)
            assert not keys & found, f"{s.text!r} contradicts a finding of {_texts(out)}"
            said += keys
        assert is_supported(s.text, s.regions, s.evidence.kind)
    assert len(said) == len(set(said)), _texts(out)


def test_a_normal_statement_never_contradicts_a_finding_of_the_same_report() -> None:
    out = compose(_evidence(region_findings=_findings(opacity={"right lower lung zone": 0.9}), generated={
        "right lung": "The lungs are clear.", "left lung": "The left lung is clear.",
        "right costophrenic angle": "No pleural effusion."}), THRESHOLDS)
    assert _texts(out) == ["There is an opacity in the right lower lung zone.", "The left lung is clear.",
                           "No pleural effusion."]
    assert ("The lungs are clear.", "normal lung statement contradicts a lung finding") in out.dropped


def test_the_pool_filter_drops_non_chest_and_malformed_sentences_at_report_time() -> None:
    out = compose(_evidence(generated={
        "abdomen": "There is no visible free intraperitoneal air under the diaphragm.",
        "right clavicle": "The humeral head is seen within the glenoid, without evidence for dislocation.",
        "right apical zone": "There is no evidence for mass lung apices.",
        "left mid lung zone": "These appear to be located in the lingula.",
        "spine": "No acute bony abnormality.",
    }))
    assert _texts(out) == ["No acute bony abnormality."]
    assert sorted(why for _, why in out.dropped) == ["pool filter: malformed", "pool filter: malformed",
                                                     "pool filter: not about the chest",
                                                     "pool filter: not about the chest"]


def test_a_decoder_sentence_is_kept_only_as_a_normal_statement() -> None:
    out = compose(_evidence(generated={
        "right lung": "There are lower lung volumes.",  # an observation, no finding label, no evidence
        "trachea": "The trachea is midline.",
        "spine": "No acute bony abnormality.",
    }))
    assert sorted(_texts(out)) == ["No acute bony abnormality.", "The trachea is midline."]
    assert ("There are lower lung volumes.",
            "no normal statement: states an observation without region-level evidence") in out.dropped


# ------------------------------------------------------------------------------ locations
@pytest.mark.parametrize(("zones", "sentence"), [
    (LUNG_ZONES, "There are diffuse bilateral opacities."),
    (("right lower lung zone", "left lower lung zone"), "There are bibasilar opacities."),
    (("right upper lung zone", "right mid lung zone", "right lower lung zone"),
     "There are opacities throughout the right lung."),
    (("left upper lung zone",), "There is an opacity in the left upper lung zone."),
    (("right upper lung zone", "left upper lung zone"), "There are opacities in both upper lung zones."),
    (("right mid lung zone", "right lower lung zone", "left mid lung zone", "left lower lung zone"),
     "There are opacities in both mid and lower lung zones."),
    (("right mid lung zone", "right lower lung zone", "left upper lung zone", "left mid lung zone",
      "left lower lung zone"), "There are opacities in the right mid and lower lung zones and throughout the left lung."),
    (("right upper lung zone", "left lower lung zone"),
     "There are opacities in the right upper lung zone and the left lower lung zone."),
])
def test_grouped_lung_locations_read_as_a_radiologist_writes_them(zones: tuple[str, ...], sentence: str) -> None:
    assert lung_finding_text("opacity", zones)[0] == sentence
    assert is_supported(sentence, zones, "region")


def _subsets() -> list[tuple[str, ...]]:
    return [combo for n in range(1, len(LUNG_ZONES) + 1) for combo in itertools.combinations(LUNG_ZONES, n)]


def _side(zone: str) -> list[str]:
    return [z for z in LUNG_ZONES if z.split()[0] == zone.split()[0]]


def _grouped(zones: tuple[str, ...], zone: str) -> bool:
    """Whether ``zone`` is named by a group of the sentence for ``zones``: all zones of both lungs,
    the same zones on both sides ("bibasilar", "both upper lung zones"), a whole lung, or the
    zones of the one side named. (A list that names different zones on the two sides, "in the
    right upper and mid lung zones and the left upper lung zone", is judged word by word, side
    words and zone words apart, as the location check always has: those are not grouped.)"""
    right = {z.split()[1] for z in zones if z.startswith("right")}
    left = {z.split()[1] for z in zones if z.startswith("left")}
    mine = [z for z in zones if z in _side(zone)]
    return right == left or not right or not left or len(mine) in (1, 3)


def _phrase(zones: tuple[str, ...], zone: str) -> bool:
    """Whether ``zone`` is named by a grouped phrase (:data:`crrg.locations.PHRASES`): "diffuse
    bilateral", "bibasilar", "both ... lung zones", "throughout the ... lung", or the one zone of
    its side."""
    right = {z.split()[1] for z in zones if z.startswith("right")}
    left = {z.split()[1] for z in zones if z.startswith("left")}
    return right == left or len([z for z in zones if z in _side(zone)]) in (1, 3)


@pytest.mark.parametrize("zones", _subsets(), ids=lambda z: "+".join(r.replace(" lung zone", "") for r in z))
def test_every_location_phrase_is_accepted_exactly_when_the_evidence_covers_it(zones: tuple[str, ...]) -> None:
    for noun in ("opacity", "nodule"):
        sentence, item = lung_finding_text(noun, zones)
        assert is_supported(sentence, zones, "region") and is_supported(item, zones, "region"), sentence
        assert is_supported(sentence, (*zones, "right lung", "left lung", "spine"), "region")  # more evidence
        assert unsupported_locations(sentence, zones, "image")  # an image-level sentence names no place
        for missing in (z for z in zones if _grouped(zones, z)):  # evidence that misses one zone of a group
            rest = tuple(z for z in zones if z != missing)
            assert not is_supported(sentence, rest, "region"), (sentence, rest)
            assert not is_supported(item, rest, "region"), (item, rest)
            mirrored = missing.replace("right", "LEFT").replace("left", "right").replace("LEFT", "left")
            if mirrored not in zones and _phrase(zones, missing):  # the other side's zone instead
                assert not is_supported(sentence, (*rest, mirrored), "region"), (sentence, mirrored)


@pytest.mark.parametrize(("sentence", "covered", "short"), [
    ("There are diffuse bilateral opacities.", LUNG_ZONES, LUNG_ZONES[:5]),
    ("There are diffuse bilateral opacities.", ("right lung", "left lung"), ("right lung",)),
    ("There are bibasilar opacities.", ("right costophrenic angle", "left costophrenic angle"),
     ("right costophrenic angle", "left upper lung zone")),
    ("Biapical pleural thickening.", ("right apical zone", "left apical zone"), ("right apical zone",)),
    ("There are opacities throughout the left lung.", ("left lung",), ("left upper lung zone", "left mid lung zone")),
    ("There are opacities in both upper and mid lung zones.", LUNG_ZONES[:2] + LUNG_ZONES[3:5],
     LUNG_ZONES[:2] + LUNG_ZONES[3:4]),
])
def test_location_phrases_against_other_evidence(sentence: str, covered: tuple[str, ...], short: tuple[str, ...]) -> None:
    assert is_supported(sentence, covered, "region")
    assert not is_supported(sentence, short, "region")


def test_lung_location_groups() -> None:
    assert lung_location(LUNG_ZONES) == ("diffuse bilateral", True)
    assert lung_location(("right lower lung zone", "left lower lung zone")) == ("bibasilar", True)
    assert lung_location(LUNG_ZONES[3:]) == ("throughout the left lung", False)
    assert lung_location(("left upper lung zone",)) == ("in the left upper lung zone", False)


# ------------------------------------------------------------------------------ devices, image level
def test_a_device_sentence_names_at_most_three_places_and_keeps_every_region() -> None:
    hot = {r: 0.6 + 0.01 * i for i, r in enumerate(DEVICE_REGIONS)}
    out = compose(_evidence(region_findings=_findings(support_device=hot)), THRESHOLDS)
    [device] = [s for s in out.sentences if s.finding == "support device"]
    assert device.text.startswith("A support device projects over the ")
    named = device.text.removeprefix("A support device projects over the ").rstrip(".")
    assert len(named.replace(" and ", ", ").split(", ")) == DEVICE_NAMED
    assert set(device.regions) == set(DEVICE_REGIONS)
    assert is_supported(device.text, device.regions, "region")
    one = compose(_evidence(region_findings=_findings(support_device={"mediastinum": 0.9, "abdomen": 0.8})), THRESHOLDS)
    assert "A support device projects over the mediastinum and upper abdomen." in _texts(one)


def test_image_level_findings_read_naturally_and_name_no_location() -> None:
    yes = compose(_evidence(image_findings={"pneumonia": 0.9}), image_thresholds={"pneumonia": 0.5})
    no = compose(_evidence(image_findings={"pneumonia": 0.2}), image_thresholds={"pneumonia": 0.5},
                 rule_out={"pneumonia": 0.3})
    assert _texts(yes) == ["Findings are consistent with pneumonia."]
    assert _texts(no) == ["There is no radiographic evidence of pneumonia."]
    assert yes.indeterminate == no.indeterminate == ()
    assert yes.sentences[0].regions == () and not unsupported_locations(yes.sentences[0].text, (), "image")


# ------------------------------------------------------------------------------ impression
def test_no_finding_gives_no_acute_cardiopulmonary_abnormality() -> None:
    out = compose(_evidence(generated={"right lung": "The lungs are clear.", "spine": "No acute bony abnormality."},
                            measurements=[measurement_sentence(heart_size(0.45, "PA"))],
                            image_findings={"pneumonia": 0.1}), THRESHOLDS, {"pneumonia": 0.5},
                  rule_out={"pneumonia": 0.2})
    assert out.impression == NO_ACUTE == "No acute cardiopulmonary abnormality."
    assert out.report == out.findings_text + "\nImpression: No acute cardiopulmonary abnormality."
    assert compose(_evidence()).impression == "" and compose(_evidence()).report == ""


def test_the_impression_lists_the_findings_by_importance_each_once_with_its_location() -> None:
    out = compose(_evidence(
        region_findings=_findings(opacity={"right lower lung zone": 0.9, "left lower lung zone": 0.8},
                                  nodule={"left upper lung zone": 0.7}, support_device={"trachea": 0.9}),
        image_findings={"pneumonia": 0.9}, measurements=[measurement_sentence(heart_size(0.6, "PA"))],
        generated={"spine": "No acute bony abnormality."}), THRESHOLDS, {"pneumonia": 0.5})
    assert out.impression == ("Bibasilar opacities, consistent with pneumonia. Nodule in the left upper lung zone. "
                              "The heart is enlarged (cardiothoracic ratio 0.60). Support device in place.")
    assert _texts(out) == ["There are bibasilar opacities.", "There is a nodule in the left upper lung zone.",
                           "Findings are consistent with pneumonia.",
                           "The heart is enlarged (cardiothoracic ratio 0.60).", "No acute bony abnormality.",
                           "A support device projects over the trachea."]
    assert out.report.endswith("\nImpression: " + out.impression)


@pytest.mark.parametrize(("findings", "image", "impression"), [
    ({"nodule": {"right mid lung zone": 0.9}}, 0.1, "Nodule in the right mid lung zone."),
    ({"opacity": dict.fromkeys(LUNG_ZONES, 0.9)}, 0.1, "Diffuse bilateral opacities."),
    ({}, 0.9, "Findings are consistent with pneumonia."),
    ({"opacity": {"left upper lung zone": 0.9}}, 0.9, "Opacity in the left upper lung zone, consistent with pneumonia."),
    ({"support_device": {"mediastinum": 0.9}}, 0.1, "Support device in place."),
])
def test_the_impression_for_known_evidence(findings: dict, image: float, impression: str) -> None:
    out = compose(_evidence(region_findings=_findings(**findings), image_findings={"pneumonia": image}),
                  THRESHOLDS, {"pneumonia": 0.5})
    assert out.impression == impression


def test_the_result_json_carries_the_impression_next_to_the_report() -> None:
    import json

    from crrg.types import ReportResult

    out = compose(_evidence(region_findings=_findings(nodule={"right mid lung zone": 0.9})), THRESHOLDS)
    result = ReportResult(image="a.png", width=10, height=10, regions=(), report=out.report, labels={},
                          label_regions={}, sentences=out.sentences, impression=out.impression)
    line = json.loads(json.dumps(result.to_json()))
    assert line["impression"] == "Nodule in the right mid lung zone."
    assert line["report"] == "There is a nodule in the right mid lung zone.\nImpression: Nodule in the right mid lung zone."
    assert [s["text"] for s in line["sentences"]] == ["There is a nodule in the right mid lung zone."]
    assert list(line)[list(line).index("report") + 1] == "impression"
