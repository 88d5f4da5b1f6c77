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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from huggingface_hub import EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from crrg.model import CRRGConfig

Config = Union["CRRGConfig", Mapping[str, Any], None]

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
    "iu_xray": ("iu-xray", "IU X-ray (Open-i)"),
    "mimic_cxr": ("mimic-cxr", "MIMIC-CXR"),
}
OPEN_TEST = ("crrg-open-cxr", "Open chest X-rays (Kermany, COVID-19 Radiography Database, JSRT/SCR, "
             "COVID-19 image data collection), patient-disjoint crrg split")
NOTE_PAIRS = ("covid-chestxray-notes", "COVID-19 image data collection: radiograph sentences of each image's "
              "clinical note, patient-disjoint test split")
SILVER_BOXES = ("crrg-silver-boxes", "JSRT/SCR + COVID-19 image data collection, mask-backed region boxes")
NLG_NAMES = {"bleu_1": ("bleu", "BLEU-1"), "bleu_2": ("bleu", "BLEU-2"), "bleu_3": ("bleu", "BLEU-3"),
             "bleu_4": ("bleu", "BLEU-4"), "meteor": ("meteor", "METEOR"), "rouge_l": ("rouge", "ROUGE-L"),
             "cider": ("cider", "CIDEr-D")}

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
| ImageNet EfficientNet-Lite0 weights; GPT-2 BPE vocabulary (OpenAI) | initialisation, tokenizers | their own licences |

**Not a medical device.** The weights and their outputs are not a diagnosis and must not be used
for clinical decisions. They come without warranty of any kind.
"""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return round(float(value), DIGITS)


def _dig(metrics: Mapping[str, Any], *keys: str) -> Any:
    value: Any = metrics
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _group(task: tuple[str, str], dataset: tuple[str, str], config: str, split: str,
           values: Sequence[tuple[str, str, Any]], args: Sequence[dict[str, Any] | None] | None = None
           ) -> list[EvalResult]:
    """One model-index result: a task on one dataset config, several metrics (missing ones skipped).
    Task and dataset names are the group's, so the model-index round trip gives them back."""
    out = []
    for i, (metric_type, metric_name, raw) in enumerate(values):
        value = _number(raw)
        if value is None:
            continue
        out.append(EvalResult(task_type=task[0], task_name=task[1], dataset_type=dataset[0],
                              dataset_name=dataset[1], dataset_config=config, dataset_split=split,
                              metric_type=metric_type, metric_name=metric_name, metric_value=value,
                              metric_args=args[i] if args else None))
    return out


def eval_results(metrics: Mapping[str, Any]) -> list[EvalResult]:
    """The headline held-out results of a ``train.evaluate`` metrics dict as hub eval results:
    detector mean IoU (mask-backed boxes), abnormality AUC (regions and images), zero-shot AUC and
    accuracy per task, report clinical efficacy (micro P/R/F1; strict micro F1) and, when computed,
    NLG. Values rounded to ``DIGITS``; undefined (null) values are left out."""
    split = str(metrics.get("split") or _dig(metrics, "options", "split") or "test")
    results: list[EvalResult] = []
    box = _dig(metrics, "detector", "mask_backed") or {}
    results += _group(("object-detection", "Anatomical region detection (29 Chest ImaGenome regions)"),
                      SILVER_BOXES, "mask-backed", split,
                      [("mean_iou", "Mean IoU (mask-backed boxes)", box.get("mean_iou")),
                       ("iou_50", "Boxes with IoU >= 0.5", box.get("iou_50")),
                       ("detection_rate", "Detection rate", box.get("detection_rate"))])
    results += _group(("image-classification", "Abnormality classification"), OPEN_TEST, "abnormality", split,
                      [("roc_auc", "Region abnormality AUC (detected regions)",
                        _dig(metrics, "abnormality", "pooled_detected", "auc")),
                       ("roc_auc", "Image abnormality AUC (max over regions)",
                        _dig(metrics, "abnormality", "image_level", "auc"))])
    for task, entry in (metrics.get("zero_shot") or {}).items():
        if not isinstance(entry, Mapping):
            continue
        source = str(entry.get("source", task))
        kind, pretty = SOURCES.get(source, (source.replace("_", "-"), source))
        results += _group(("zero-shot-image-classification", "Zero-shot classification (label vs 'no label' prompts)"),
                          (kind, f"{pretty}: {task.replace('_', ' ')}"), task, split,
                          [("roc_auc", "AUC", entry.get("auc")), ("accuracy", "Accuracy", entry.get("accuracy"))])
    reports = metrics.get("reports") or {}
    ce_task = ("image-to-text", "Report generation: clinical efficacy vs image labels")
    results += _group(ce_task, OPEN_TEST, "ce-assessed-labels", split,
                      [("precision", "CE micro precision (CheXpert 14, assessed labels)", reports.get("micro_precision")),
                       ("recall", "CE micro recall (CheXpert 14, assessed labels)", reports.get("micro_recall")),
                       ("f1", "CE micro F1 (CheXpert 14, assessed labels)", reports.get("micro_f1"))])
    results += _group(ce_task, OPEN_TEST, "ce-all-findings", split,
                      [("f1", "CE micro F1 (16 findings, strict)", _dig(reports, "all_findings", "micro_f1"))])
    nlg = metrics.get("nlg") or {}
    if not nlg.get("skipped"):
        names = [SOURCES.get(s, (s, s)) for s in sorted(nlg.get("by_source") or {})] or [("reports", "reference reports")]
        dataset = ("+".join(t for t, _ in names), " + ".join(n for n, _ in names) + " reports")
        keys = [k for k in NLG_NAMES if k in nlg]
        results += _group(("image-to-text", "Report generation: NLG vs reference reports"), dataset, "nlg", split,
                          [(*NLG_NAMES[k], nlg[k]) for k in keys],
                          [{"max_order": int(k[-1])} if k.startswith("bleu_") else None for k in keys])
    notes = nlg.get("model")
    if isinstance(notes, Mapping):
        keys = [k for k in NLG_NAMES if k in notes]
        results += _group(("image-to-text", "Report generation: NLG vs the image's own clinical-note sentences"),
                          NOTE_PAIRS, "note-pairs", split, [(*NLG_NAMES[k], notes[k]) for k in keys],
                          [{"max_order": int(k[-1])} if k.startswith("bleu_") else None for k in keys])
    grounding = metrics.get("grounding") or {}
    results += _group(("image-to-text", "Report grounding: sentences true to their evidence"), OPEN_TEST,
                      "grounding", split,
                      [("f1", "Finding macro F1 (stated vs region-level truth)", grounding.get("macro_f1")),
                       ("unsupported_share", "Share of sentences naming a location without evidence",
                        grounding.get("unsupported_share")),
                       ("sensitivity", "Nodule sentence for nodules of subtlety >= 3",
                        _dig(grounding, "nodules", "sensitivity_by_subtlety", "3+", "sensitivity")),
                       ("side_accuracy", "Nodule sentence on the correct side",
                        _dig(grounding, "nodules", "side_accuracy"))])
    ctr = _dig(metrics, "measurements", "cardiothoracic_ratio") or {}
    results += _group(("image-to-text", "Measured findings"), SILVER_BOXES, "cardiothoracic-ratio", split,
                      [("mae", "CTR mean absolute error vs masks", ctr.get("mae"))])
    check = _dig(metrics, "input_check", "test") or {}
    results += _group(("image-classification", "Input check: frontal chest radiograph or not"), OPEN_TEST,
                      "input-check", split,
                      [("recall", "Non-radiograph inputs flagged", check.get("negatives_flagged")),
                       ("false_positive_rate", "Real radiographs flagged", check.get("radiographs_flagged"))])
    return results


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
