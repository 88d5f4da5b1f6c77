#!/usr/bin/env bash
# The embedded default model with grounded reports and an input check (issues #10, #11), on a
# 2-core CPU in about 1 hour, on top of the towers of train/recipes/default_cpu.sh (detector,
# CLIP and fusion stay frozen; BASE is that recipe's final model):
#   1. cache the frozen towers' outputs for every prepared image (train.cache_features)
#   2. stage 3 again with the new targets (no borrowed sides; the COVID images' own note sentences
#      as paired text), fine-tuned from BASE's decoder                        } in parallel
#   3. the evidence heads, thresholds and calibration on the cache (train.train_heads)
#   4. the input checker on generated negatives + real radiographs (train.train_input_check)
#   5. assemble, then evaluate (train.evaluate, with the note-pair NLG of train.note_nlg;
#      train.validate_measurements) and merge every figure into the eval's metrics.json
# Every step resumes or is skipped when its output exists.
#   bash train/recipes/grounded_cpu.sh PREPARED RUNS BASE
set -euo pipefail
P=${1:-runs/prepared}; R=${2:-runs/grounded}; BASE=${3:-assets/crrg-default}; PY=${PYTHON:-.venv/bin/python}
mkdir -p "$R"
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }

$PY -m train.cache_features --prepared "$P" --weights "$BASE" --out "$R/features" --threads 1 \
  > "$R/features.log" 2>&1 &
F=$!
$PY -m train.cache_features --prepared "$P" --weights "$BASE" --out "$R/features_aug" --augment --threads 1 \
  > "$R/features_aug.log" 2>&1 &  # only measured (train.train_heads --augmented), see the model card
A=$!
[ -f "$R/s3/model/config.json" ] || $PY -m train.train_decoder --prepared "$P" --init "$BASE" --out "$R/s3" \
  --threads 1 $(resume "$R/s3") --set total_steps=500 --set lr=0.0003 --set warmup_steps=30 \
  --set checkpoint_every=100 --set eval_every=100000 --set cache_features=true \
  --set 'augment={"enabled": false}' > "$R/s3.log" 2>&1
wait $F $A
[ -f "$R/heads/heads.pt" ] || $PY -m train.train_heads --prepared "$P" --features "$R/features" --out "$R/heads" \
  --threads 2 > "$R/heads.log" 2>&1
[ -f "$R/heads_aug/metrics.json" ] || $PY -m train.train_heads --prepared "$P" --features "$R/features" \
  --augmented "$R/features_aug" --out "$R/heads_aug" --threads 2 > "$R/heads_aug.log" 2>&1
[ -f "$R/input_check/config.json" ] || $PY -m train.train_input_check --prepared "$P" --weights "$BASE" \
  --out "$R/input_check" > "$R/input_check.log" 2>&1
$PY -m train.assemble --base "$BASE" --decoder-from "$R/s3/model" --heads "$R/heads" \
  --input-check "$R/input_check" --out "$R/final" --variant default
$PY -m train.validate_measurements --weights "$R/final" --split all --out "$R/measurements/metrics.json"
$PY -m train.evaluate --weights "$R/final" --prepared "$P" --out "$R/eval" --report-limit 500 > "$R/eval.log" 2>&1
$PY -m train.merge_metrics "$R/eval/metrics.json" --heads "$R/heads/metrics.json" --heads-augmented \
  "$R/heads_aug/metrics.json" --input-check "$R/input_check/metrics.json" --measurements "$R/measurements/metrics.json"
