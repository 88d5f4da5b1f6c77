#!/usr/bin/env bash
# The embedded default model of 2026-12-06 (issue #16), on top of the model of findings_cpu.sh
# (BASE). The towers, the heads' weights and the decoder stay as they are; about 40 minutes on a
# 2-core CPU:
#   1. BASE on validation (NIH, JSRT, TBX11K) through the pipeline; image-level findings that fail
#      the within-source gate are cut from the image head (train.gate_findings, train.report_gate)
#   2. CLIP's text tower fine-tuned on the pipeline's frozen image embeddings, step kept on NIH
#      validation zero-shot AUC, zero-shot temperature refitted (train.train_text_tower)
#   3. the opacity relative share (GroundingConfig.region_relative): validation evaluations over a
#      grid, chosen by train.tune_grounding
#   4. assemble, evaluate on the test split through the pipeline (once), merge the figures
# Every step is skipped when its output exists.
#   bash train/recipes/zero_shot_gate_cpu.sh PREPARED RUNS BASE
set -euo pipefail
P=${1:-runs/prepared}; R=${2:-runs/zs}; BASE=${3:-assets/crrg-default}; PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
mkdir -p "$R"
val() {  # val WEIGHTS OUT SOURCES...: a validation evaluation through the pipeline
  local w=$1 o=$2; shift 2
  [ -f "$o/metrics.json" ] || $PY -m train.evaluate --weights "$w" --prepared "$P" --out "$o" --split val \
    --sources "$@" --report-limit 400 --nlg-metrics bleu > "$o.log" 2>&1
}

val "$BASE" "$R/val_base" nih_cxr14 jsrt_scr tbx11k
[ -f "$R/gated/config.json" ] || $PY -m train.gate_findings --weights "$BASE" \
  --val-metrics "$R/val_base/metrics.json" --out "$R/gated"
[ -f "$R/text/model/config.json" ] || $PY -m train.train_text_tower --prepared "$P" --weights "$R/gated" \
  --out "$R/text" > "$R/text.log" 2>&1

runs=()
for s in 0 0.5 0.6 0.7 0.8 0.9; do
  [ -f "$R/share_$s/config.json" ] || $PY -m train.assemble --base "$R/text/model" --out "$R/share_$s" \
    --set "grounding.region_relative={\"opacity\": $s}"
  val "$R/share_$s" "$R/share_${s}_val" tbx11k covid_anatomy
  runs+=("$s=$R/share_${s}_val/metrics.json")
done
$PY -m train.tune_grounding --runs "${runs[@]}" --out "$R/grounding_tuning.json"
S=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen'])" "$R/grounding_tuning.json")

# the demo's default prompts gain the image-level findings the text tower learned (NIH's infiltration, mass)
PROMPTS='["enlarged cardiomediastinum", "cardiomegaly", "lung opacity", "lung lesion", "edema",
  "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural effusion", "pleural other",
  "fracture", "support devices", "nodule", "covid-19", "infiltration", "mass"]'
[ -f "$R/final/config.json" ] || $PY -m train.assemble --base "$R/text/model" --out "$R/final" \
  --set "grounding.region_relative={\"opacity\": $S}" --set "prompts=$PROMPTS"
[ -f "$R/eval/metrics.json" ] || { $PY -m train.evaluate --weights "$R/final" --prepared "$P" --out "$R/eval" \
  --report-limit 600 > "$R/eval.log" 2>&1 && $PY -m train.merge_metrics "$R/eval/metrics.json" \
  --carry "$BASE/metrics.json" --source-gate "$R/gated/source_gate.json" --text-tower "$R/text/metrics.json" \
  --grounding-tuning "$R/grounding_tuning.json"; }
