#!/usr/bin/env bash
# The embedded default model of 2026-12-05 (issues #16, #17, #18, #19): one retrain on top of the
# towers of train/recipes/default_cpu.sh (detector, CLIP and fusion stay frozen; BASE is the
# previous default model), about 1.5 hours on a 2-core CPU:
#   0. BASE with CLIP region embeddings RoI-pooled from the tower's feature map (#18 §1)
#   1. cache the frozen towers' outputs for every prepared image, NIH ChestX-ray14 and TBX11K
#      included (train.cache_features)                                        } in parallel
#   2. stage 3 on the filtered sentence pool (#17: chest-radiograph sentences only)
#   3. the evidence heads on the cache (train.train_heads): TB boxes as region-level opacity, the
#      image-level head over pneumonia-like + NIH's findings, NIH in leave-one-source-out (#16)
#   4. the input checker (train.train_input_check, refuse / warn / accept, #18 §3)
#   5. assemble, evaluate through the pipeline (train.evaluate, #19), merge the figures
# Every step resumes or is skipped when its output exists.
#   bash train/recipes/findings_cpu.sh PREPARED RUNS BASE
set -euo pipefail
P=${1:-runs/prepared}; R=${2:-runs/findings}; BASE=${3:-assets/crrg-default}; PY=${PYTHON:-.venv/bin/python}
mkdir -p "$R"
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }

[ -f "$R/base/config.json" ] || $PY -m train.assemble --base "$BASE" --out "$R/base" \
  --set 'clip.region_source="feature_map"'
$PY -m train.cache_features --prepared "$P" --weights "$R/base" --out "$R/features" --threads 1 \
  > "$R/features.log" 2>&1 &
F=$!
[ -f "$R/s3/model/config.json" ] || $PY -m train.train_decoder --prepared "$P" --init "$R/base" --out "$R/s3" \
  --threads 1 $(resume "$R/s3") --set total_steps=500 --set lr=0.0003 --set warmup_steps=30 \
  --set checkpoint_every=50 --set eval_every=100000 --set cache_features=true \
  --set 'augment={"enabled": false}' > "$R/s3.log" 2>&1
wait $F
[ -f "$R/heads/heads.pt" ] || $PY -m train.train_heads --prepared "$P" --features "$R/features" --out "$R/heads" \
  --weights "$R/base" --threads 2 > "$R/heads.log" 2>&1
[ -f "$R/input_check/config.json" ] || $PY -m train.train_input_check --prepared "$P" --weights "$R/base" \
  --out "$R/input_check" > "$R/input_check.log" 2>&1
$PY -m train.assemble --base "$R/base" --decoder-from "$R/s3/model" --heads "$R/heads" \
  --input-check "$R/input_check" --out "$R/final" --variant default
[ -f "$R/measurements/metrics.json" ] || $PY -m train.validate_measurements --weights "$R/final" --split all \
  --out "$R/measurements/metrics.json"
$PY -m train.evaluate --weights "$R/final" --prepared "$P" --out "$R/eval" --report-limit 600 > "$R/eval.log" 2>&1
$PY -m train.merge_metrics "$R/eval/metrics.json" --heads "$R/heads/metrics.json" \
  --input-check "$R/input_check/metrics.json" --measurements "$R/measurements/metrics.json"
