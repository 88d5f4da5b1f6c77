"""Hub model-card metadata for a crrg model folder, built from its config and ``metrics.json``.

:func:`card_data` gives the README.md front matter as a ``huggingface_hub.ModelCardData``: library,
licence (``other``: the training data's terms, explained in ``LICENSE.md`` beside the card), tags,
pipeline tag, hub datasets and, from the held-out metrics that ``train.evaluate`` writes, the
``model-index`` (:func:`eval_results`). :func:`update_card` rewrites only the front matter of an
existing README.md and keeps its hand-written body:

    python -m crrg.card FOLDER [--metrics METRICS.json]

``CRRGModel.save_pretrained`` uses the same functions, so every saved folder carries them. The
card's numbers come from ``metrics.json`` only: without metrics there is no ``model-index``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

from huggingface_hub import EvalResult, ModelCard, ModelCardData


class _Named(Protocol):  # a crrg.model.CRRGConfig (the card never imports the model: model -> card)
    variant: str


Config = Union[_Named, Mapping[str, Any], None]

CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"
LICENSE_FILE = "LICENSE.md"

LIBRARY_NAME = "crrg"
PIPELINE_TAG = "image-to-text"
LICENSE = "other"
LICENSE_NAME = "mixed-research-only"
TAGS: tuple[str, ...] = ("chest-x-ray", "radiology-report-generation", "clip", "research-only",
                         "model_hub_mixin")
# Only ids known to exist on the hub. Kermany's 5,856 pediatric radiographs are mirrored by
# Hugging Face's computer-vision org; JSRT/SCR, the COVID-19 image data collection annotations,
# the COVID-19 Radiography Database and the IU X-ray reports have no hub id we can vouch for, so
# they are named in the card body and in LICENSE.md instead.
DATASETS: tuple[str, ...] = ("hf-vision/chest-xray-pneumonia",)
DIGITS = 4  # metric values on the card, rounded

# train.evaluate's source names -> (model-index dataset type, pretty name).
SOURCES: dict[str, tuple[str, str]] = {
    "kermany_pneumonia": ("kermany-pneumonia", "Kermany pediatric pneumonia"),
    "covid_radiography": ("covid19-radiography-database", "COVID-19 Radiography Database"),
    "jsrt_scr": ("jsrt-scr", "JSRT + SCR"),
    "covid_lung_boxes": ("covid-chestxray-lung-boxes", "COVID-19 image data collection, lung boxes"),
    "covid_anatomy": ("covid-chestxray-anatomy", "COVID-19 image data collection, anatomy masks"),
    "nih_cxr14": ("nih-chestxray14", "NIH ChestX-ray14"),
    "tbx11k": ("tbx11k", "TBX11K tuberculosis"),
    "iu_xray": ("iu-xray", "IU X-ray (Open-i)"),
    "mimic_cxr": ("mimic-cxr", "MIMIC-CXR"),
}
OPEN_TEST = ("crrg-open-cxr", "Open chest X-rays (Kermany, COVID-19 Radiography Database, JSRT/SCR, "
             "COVID-19 image data collection, NIH ChestX-ray14, TBX11K), patient-disjoint crrg split")
NIH_TEST = ("nih-chestxray14", "NIH ChestX-ray14 (one hospital, normals and abnormals; JSRT/SCR too for "
            "nodule), patient-disjoint crrg split")
NOTE_PAIRS = ("covid-chestxray-notes", "COVID-19 image data collection: radiograph sentences of each image's "
              "clinical note, patient-disjoint test split")
SILVER_BOXES = ("crrg-silver-boxes", "JSRT/SCR + COVID-19 image data collection, mask-backed region boxes")
NLG_NAMES = {"bleu_1": ("bleu", "BLEU-1"), "bleu_2": ("bleu", "BLEU-2"), "bleu_3": ("bleu", "BLEU-3"),
             "bleu_4": ("bleu", "BLEU-4"), "meteor": ("meteor", "METEOR"), "rouge_l": ("rouge", "ROUGE-L"),
             "cider": ("cider", "CIDEr-D")}

MODEL_CARD = """---
{{ card_data }}
---

# crrg model: {{ variant | default("CRRG-CLIP", true) }}

Region-guided chest X-ray report generation (RGRG design: Faster R-CNN over the 29 Chest ImaGenome
regions, region-selection and abnormality classifiers, GPT-2 with pseudo self-attention) plus a CLIP
model for zero-shot labels, as in CRRG-CLIP (arXiv 2501.01989). Weights written by `crrg`.

{{ description | default("Randomly initialised or user-trained weights: see the training log that produced them.", true) }}

**Research use only. Not a medical device; outputs are not a diagnosis.**

Held-out results (from `metrics.json`, when the folder has one) are in the front matter's `model-index`.

## Licence

`{{ license_name }}`: see [LICENSE.md](LICENSE.md). The training data's terms are mixed and several
are research-only or non-commercial, so the weights are for non-commercial research use only.

- Code: {{ repo_url | default("crrg", true) }}
- Paper: {{ paper_url | default("https://arxiv.org/abs/2501.01989", true) }}
"""


LICENSE_TEXT = """\
# Licence of these weights: research use only, mixed training-data terms

`license: other` (`mixed-research-only`). The crrg **code** is Apache-2.0. These **weights** were
trained on openly published chest X-ray data whose terms differ, and several of them are
research-only or non-commercial, so the weights are released **for non-commercial research use
only**. Using them means complying with the terms of every data set below (cite them as their
authors ask); where terms differ, the most restrictive applies.

| data set | used for | terms |
|---|---|---|
| JSRT database (Shiraishi et al. 2000) + SCR masks (van Ginneken et al. 2006) | detector (silver boxes), CLIP, heads | research use; cite both; the images may not be redistributed |
| COVID-19 image data collection (Cohen et al. 2020) with the GeneralBlockchain lung bounding boxes and anatomy segmentations | detector, CLIP (incl. clinical-note pairs), heads, decoder sentences | annotations CC BY 4.0; each image under its own licence (some non-commercial) |
| Kermany et al. 2018, *Cell* (pediatric pneumonia; hub mirror `hf-vision/chest-xray-pneumonia`) | CLIP, heads | CC BY 4.0 |
| COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021) | CLIP, heads | cite; each sub-source keeps its own terms |
| IU X-ray / Open-i reports (Demner-Fushman et al. 2016), R2Gen split (Chen et al. 2020) | language model, CLIP, decoder sentences | CC BY-NC-ND 4.0 (non-commercial; generated reports reuse report sentences) |
| NIH ChestX-ray14 (Wang et al., CVPR 2017; NIH Clinical Center) | heads (image-level findings), input check | no restriction; cite the paper and credit the NIH Clinical Center |
| TBX11K (Liu et al., CVPR 2020) | heads (TB areas as region-level opacity), input check | research use; cite it |
| ImageNet EfficientNet-Lite0 weights; GPT-2 BPE vocabulary (OpenAI) | initialisation, tokenizers | their own licences |

**Not a medical device.** The weights and their outputs are not a diagnosis and must not be used
for clinical decisions. They come without warranty of any kind.
"""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return round(float(value), DIGITS)


class MissingMetric(ValueError):
    """A metric the card shows is missing from metrics.json (a null value is fine: undefined)."""


def _need(metrics: Mapping[str, Any], *keys: str) -> Any:
    """``metrics[k1][k2]...``; a missing key is a :class:`MissingMetric` naming its path."""
    value: Any = metrics
    for depth, key in enumerate(keys):
        if not isinstance(value, Mapping) or key not in value:
            raise MissingMetric(f"metrics.json has no {'.'.join(keys[:depth + 1])}: re-run train.evaluate "
                                "(and train.merge_metrics) to write the card's figures")
        value = value[key]
    return value


@dataclass(frozen=True)
class Figure:
    """One metric on the card; ``value`` None = undefined (written as null), left off the card."""

    metric_type: str
    metric_name: str
    value: float | None
    args: dict[str, Any] | None = None


@dataclass(frozen=True)
class FigureGroup:
    """A task on one dataset config: one model-index result per defined figure."""

    task: tuple[str, str]  # (task type, task name)
    dataset: tuple[str, str]  # (dataset type, dataset name)
    config: str
    figures: tuple[Figure, ...]


@dataclass(frozen=True)
class MetricsSummary:
    """The held-out figures the card shows, read from a ``train.evaluate`` metrics dict.

    Sections ``detector``, ``abnormality``, ``zero_shot`` and ``reports`` are required; ``nlg``,
    ``grounding``, ``measurements``, ``image_findings`` and ``input_check`` are shown when present (a model without
    the part has none). Inside a section every figure must be there (:class:`MissingMetric`)."""

    split: str
    groups: tuple[FigureGroup, ...]

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> MetricsSummary:
        split = str(metrics.get("split") or _need(metrics, "options", "split"))
        groups = [_detector(metrics), _abnormality(metrics), *_zero_shot(metrics), *_reports(metrics)]
        for key, section in (("nlg", _nlg), ("grounding", _grounding), ("measurements", _measurements),
                             ("image_findings", _image_findings), ("input_check", _input_check)):
            if key in metrics:
                groups += section(metrics)
        return cls(split, tuple(groups))

    def eval_results(self) -> list[EvalResult]:
        """Hub eval results, values rounded to ``DIGITS``; undefined figures left out. Task and
        dataset names are the group's, so the model-index round trip gives them back."""
        return [EvalResult(task_type=g.task[0], task_name=g.task[1], dataset_type=g.dataset[0],
                           dataset_name=g.dataset[1], dataset_config=g.config, dataset_split=self.split,
                           metric_type=f.metric_type, metric_name=f.metric_name, metric_value=value,
                           metric_args=f.args)
                for g in self.groups for f in g.figures if (value := _number(f.value)) is not None]


def _detector(m: Mapping[str, Any]) -> FigureGroup:
    return FigureGroup(("object-detection", "Anatomical region detection (29 Chest ImaGenome regions)"),
                       SILVER_BOXES, "mask-backed",
                       (Figure("mean_iou", "Mean IoU (mask-backed boxes)", _need(m, "detector", "mask_backed", "mean_iou")),
                        Figure("iou_50", "Boxes with IoU >= 0.5", _need(m, "detector", "mask_backed", "iou_50")),
                        Figure("detection_rate", "Detection rate", _need(m, "detector", "mask_backed", "detection_rate"))))


def _abnormality(m: Mapping[str, Any]) -> FigureGroup:
    return FigureGroup(("image-classification", "Abnormality classification"), OPEN_TEST, "abnormality",
                       (Figure("roc_auc", "Region abnormality AUC (detected regions)",
                               _need(m, "abnormality", "pooled_detected", "auc")),
                        Figure("roc_auc", "Image abnormality AUC (max over regions)",
                               _need(m, "abnormality", "image_level", "auc"))))


def _zero_shot(m: Mapping[str, Any]) -> list[FigureGroup]:
    groups = []
    for task in _need(m, "zero_shot"):
        source = str(_need(m, "zero_shot", task, "source"))
        kind, pretty = SOURCES.get(source, (source.replace("_", "-"), source))
        groups.append(FigureGroup(
            ("zero-shot-image-classification", "Zero-shot classification (label vs 'no label' prompts)"),
            (kind, f"{pretty}: {task.replace('_', ' ')}"), task,
            (Figure("roc_auc", "AUC", _need(m, "zero_shot", task, "auc")),
             Figure("accuracy", "Accuracy", _need(m, "zero_shot", task, "accuracy")))))
    return groups


CE_TASK = ("image-to-text", "Report generation: clinical efficacy vs image labels")


def _reports(m: Mapping[str, Any]) -> list[FigureGroup]:
    return [FigureGroup(CE_TASK, OPEN_TEST, "ce-assessed-labels", (
                Figure("precision", "CE micro precision (CheXpert 14, assessed labels)", _need(m, "reports", "micro_precision")),
                Figure("recall", "CE micro recall (CheXpert 14, assessed labels)", _need(m, "reports", "micro_recall")),
                Figure("f1", "CE micro F1 (CheXpert 14, assessed labels)", _need(m, "reports", "micro_f1")))),
            FigureGroup(CE_TASK, OPEN_TEST, "ce-all-findings", (
                Figure("f1", "CE micro F1 (16 findings, strict)", _need(m, "reports", "all_findings", "micro_f1")),))]


def _nlg_figures(values: Mapping[str, Any]) -> tuple[Figure, ...]:
    return tuple(Figure(*NLG_NAMES[k], values[k], {"max_order": int(k[-1])} if k.startswith("bleu_") else None)
                 for k in NLG_NAMES if k in values)


def _nlg(m: Mapping[str, Any]) -> list[FigureGroup]:
    """NLG vs reference reports (when computed: ``skipped`` otherwise) and vs the clinical-note
    sentences of the COVID note pairs (when evaluated: ``nlg.model``)."""
    nlg, groups = m["nlg"], []
    if not nlg.get("skipped"):
        names = [SOURCES.get(s, (s, s)) for s in sorted(_need(m, "nlg", "by_source"))] or [("reports", "reference reports")]
        dataset = ("+".join(t for t, _ in names), " + ".join(n for n, _ in names) + " reports")
        groups.append(FigureGroup(("image-to-text", "Report generation: NLG vs reference reports"), dataset, "nlg",
                                  _nlg_figures(nlg)))
    if isinstance(nlg.get("model"), Mapping):
        groups.append(FigureGroup(("image-to-text", "Report generation: NLG vs the image's own clinical-note sentences"),
                                  NOTE_PAIRS, "note-pairs", _nlg_figures(nlg["model"])))
    return groups


def _grounding(m: Mapping[str, Any]) -> list[FigureGroup]:
    return [FigureGroup(("image-to-text", "Report grounding: sentences true to their evidence"), OPEN_TEST, "grounding", (
        Figure("f1", "Finding macro F1 (stated vs region-level truth)", _need(m, "grounding", "macro_f1")),
        Figure("unsupported_share", "Share of sentences naming a location without evidence",
               _need(m, "grounding", "unsupported_share")),
        Figure("sensitivity", "Nodule sentence for nodules of subtlety >= 3",
               _need(m, "grounding", "nodules", "sensitivity_by_subtlety", "3+", "sensitivity")),
        Figure("side_accuracy", "Nodule sentence on the correct side", _need(m, "grounding", "nodules", "side_accuracy"))))]


def _measurements(m: Mapping[str, Any]) -> list[FigureGroup]:
    return [FigureGroup(("image-to-text", "Measured findings"), SILVER_BOXES, "cardiothoracic-ratio",
                        (Figure("mae", "CTR mean absolute error vs masks",
                                _need(m, "measurements", "cardiothoracic_ratio", "mae")),))]


def _image_findings(m: Mapping[str, Any]) -> list[FigureGroup]:
    """Image-level findings of the head beyond pneumonia-like (NIH's labels; frozen towers)."""
    found = _need(m, "image_findings")
    return [FigureGroup(("image-classification", "Image-level findings (NIH labels)"),
                        (NIH_TEST[0], f"{NIH_TEST[1]}: {name}"), f"image-{name.replace(' ', '-')}",
                        (Figure("roc_auc", "AUC", _need(m, "image_findings", name, "auc")),
                         Figure("sensitivity", "Sensitivity at the model's threshold",
                                _need(m, "image_findings", name, "sensitivity")),
                         Figure("specificity", "Specificity at the model's threshold",
                                _need(m, "image_findings", name, "specificity"))))
            for name in sorted(found) if name != "pneumonia"]


def _input_check(m: Mapping[str, Any]) -> list[FigureGroup]:
    return [FigureGroup(("image-classification", "Input check: frontal chest radiograph or not"), OPEN_TEST,
                        "input-check",
                        (Figure("recall", "Non-radiograph inputs flagged", _need(m, "input_check", "test", "negatives_flagged")),
                         Figure("false_positive_rate", "Real radiographs flagged", _need(m, "input_check", "test", "radiographs_flagged"))))
            ] + _input_check_goal(m)


def _input_check_goal(m: Mapping[str, Any]) -> list[FigureGroup]:
    """The #18 figures (``input_check.goal``, when the check's metrics have them): real test
    radiographs refused and warned, inverted and rotated test films refused, and the least-refused
    negative kind when that kind is left out of training."""
    if "goal" not in m["input_check"]:
        return []
    figures = (("false_positive_rate", "Real radiographs refused", "test_real_radiographs_refused"),
               ("warned_rate", "Real radiographs warned (reported with a note)", "test_real_radiographs_warned"),
               ("recall", "Inverted films refused", "test_inverted_refused"),
               ("recall", "Rotated films refused", "test_rotated_refused"),
               ("recall", "Least-refused kind when left out of training", "held_out_kind_refused_min"))
    return [FigureGroup(("image-classification", "Input check: refuse, warn or accept"), OPEN_TEST,
                        "input-check-states",
                        tuple(Figure(t, name, _need(m, "input_check", "goal", key)) for t, name, key in figures))]


def eval_results(metrics: Mapping[str, Any]) -> list[EvalResult]:
    """The headline held-out results of a ``train.evaluate`` metrics dict as hub eval results
    (:class:`MetricsSummary`): detector mean IoU (mask-backed boxes), abnormality AUC (regions and
    images), zero-shot AUC and accuracy per task, report clinical efficacy (micro P/R/F1; strict
    micro F1), NLG, grounding, CTR error and the input check when measured. A missing figure is a
    :class:`MissingMetric`; undefined (null) values are left out."""
    return MetricsSummary.from_metrics(metrics).eval_results()


def _variant(config: Config) -> str | None:
    return config.get("variant") if isinstance(config, Mapping) else getattr(config, "variant", None)


def card_data(config: Config = None, metrics: Mapping[str, Any] | None = None,
              model_name: str | None = None) -> ModelCardData:
    """Front matter of a crrg model card. ``config``: a ``CRRGConfig`` or its dict (its variant
    names the model in the model-index, ``crrg-<variant>``); ``metrics``: a ``train.evaluate`` dict
    or None. Licence and datasets are those of crrg's open-data training recipe."""
    results = eval_results(metrics) if metrics else []
    name = model_name or f"crrg-{_variant(config) or 'custom'}"
    return ModelCardData(library_name=LIBRARY_NAME, license=LICENSE, license_name=LICENSE_NAME,
                         license_link=LICENSE_FILE, pipeline_tag=PIPELINE_TAG, tags=list(TAGS),
                         datasets=list(DATASETS), model_name=name if results else None,
                         eval_results=results or None)


def load_metrics(metrics: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A metrics dict from a dict, a metrics.json path, or a folder holding one (None: None)."""
    if metrics is None or isinstance(metrics, Mapping):
        return None if metrics is None else dict(metrics)
    path = Path(metrics)
    path = path / METRICS_NAME if path.is_dir() else path
    return json.loads(path.read_text())


def write_folder_files(folder: str | Path, metrics: str | Path | Mapping[str, Any] | None = None
                       ) -> dict[str, Any] | None:
    """Give ``folder`` its LICENSE.md (when absent) and, when ``metrics`` is given, its
    metrics.json; returns the folder's metrics (given, else an existing metrics.json, else None)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / LICENSE_FILE).exists():
        (folder / LICENSE_FILE).write_text(LICENSE_TEXT, encoding="utf-8")
    target = folder / METRICS_NAME
    given = load_metrics(metrics)
    if given is None:
        return load_metrics(target) if target.is_file() else None
    source = None if isinstance(metrics, Mapping) else Path(metrics)  # type: ignore[arg-type]
    source = source / METRICS_NAME if source is not None and source.is_dir() else source
    if source is None or not target.exists() or source.resolve() != target.resolve():
        target.write_text(json.dumps(given, indent=2) + "\n", encoding="utf-8")
    return given


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def merge(existing: ModelCardData, new: ModelCardData) -> ModelCardData:
    """``new``'s fields over ``existing``'s; tags and datasets united; other keys kept. The
    model-index is always ``new``'s (none when ``new`` has no results)."""
    old, fresh = existing.to_dict(), new.to_dict()
    merged = {**old, **fresh}
    for key in ("tags", "datasets"):
        values = [v for d in (old, fresh) for v in _as_list(d.get(key))]
        merged[key] = list(dict.fromkeys(values)) or None
    if "model-index" not in fresh:
        merged.pop("model-index", None)
    return ModelCardData(**merged)


def update_card(folder: str | Path, metrics: str | Path | Mapping[str, Any] | None = None,
                config: Config = None) -> ModelCard:
    """Rewrite the front matter of ``folder/README.md`` from its config.json (or ``config``) and
    metrics (``metrics``, else ``folder/metrics.json``); the body is kept byte for byte."""
    folder = Path(folder)
    path = folder / CARD_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write the model with save_pretrained first")
    if config is None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
    return rewrite_front_matter(path, card_data(config, write_folder_files(folder, metrics)))


def rewrite_front_matter(path: str | Path, data: ModelCardData) -> ModelCard:
    """Merge ``data`` into the front matter of the card at ``path`` (:func:`merge`), body kept."""
    card = ModelCard.load(path)
    card.data = merge(card.data, data)
    card.save(path)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="crrg model folder with README.md and config.json")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="train.evaluate metrics.json (copied into the folder); default FOLDER/metrics.json")
    args = parser.parse_args(argv)
    card = update_card(args.folder, args.metrics)
    results = card.data.eval_results or []
    print(f"updated {args.folder / CARD_NAME}: {len(results)} eval results, licence {card.data.license_name}")


if __name__ == "__main__":
    main()
