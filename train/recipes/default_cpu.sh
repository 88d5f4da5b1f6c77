#!/usr/bin/env bash
# The embedded default model (assets/crrg-default) on a 2-core CPU, about 2 hours of wall time:
# two tracks of one thread each, then the chain that needs both.
#   track A: detector (stage 1): 700 steps of a 1,300-step schedule, then 2,000 more steps from
#            those weights with a fresh schedule (how the shipped detector was trained)
#   track B: LM pretraining (IU report sentences + clinical-note imaging sentences) -> CLIP
#   then:    detector + CLIP with a fresh CLIP -> region-feature fusion (train.assemble --clip-fusion on)
#            -> region heads + fusion (stage 2, detector and CLIP frozen) -> decoder (stage 3).
# Every step resumes from its checkpoint when the recipe is run again.
#   bash train/recipes/default_cpu.sh PREPARED RUNS
set -euo pipefail
P=${1:-runs/prepared}; R=${2:-runs/default}; PY=${PYTHON:-.venv/bin/python}
mkdir -p "$R"
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }
done_() {  # a stage is done when its last run reached its total_steps
  [ -f "$1/timing.json" ] && $PY -c 'import json,sys; t=json.load(open(sys.argv[1])); sys.exit(t["step"] < t["total_steps"])' "$1/timing.json"
}
saved() { [ -f "$1/model/config.json" ]; }

track_a() {
  saved "$R/s1a" || $PY -m train.train_detector --stage 1 --prepared "$P" --out "$R/s1a" --threads 1 $(resume "$R/s1a") \
    --set total_steps=1300 --max-steps 700 --set batch_size=4 --set warmup_steps=50 --set checkpoint_every=100 \
    --set eval_every=100000
  done_ "$R/s1" || $PY -m train.train_detector --stage 1 --prepared "$P" --init "$R/s1a/model" --out "$R/s1" --threads 1 \
    $(resume "$R/s1") --set total_steps=2000 --set batch_size=4 --set warmup_steps=50 --set checkpoint_every=100 \
    --set eval_every=100000
}

track_b() {
  done_ "$R/lm" || $PY -m train.pretrain_lm --prepared "$P" --out "$R/lm" --threads 1 $(resume "$R/lm") \
    --set total_steps=800 --set checkpoint_every=200 --set eval_every=100000
  done_ "$R/clip" || $PY -m train.train_clip --prepared "$P" --out "$R/clip" --threads 1 $(resume "$R/clip") \
    --set total_steps=440 --set checkpoint_every=50 --set eval_every=100000
}

track_a > "$R/track_a.log" 2>&1 &
A=$!
track_b > "$R/track_b.log" 2>&1 &
B=$!
wait $A $B
[ -d "$R/start" ] || $PY -m train.assemble --base "$R/s1/model" --clip "$R/clip/model" --out "$R/start" --clip-fusion on
done_ "$R/s2" || $PY -m train.train_detector --stage 2 --prepared "$P" --init "$R/start" --out "$R/s2" \
  --threads 2 $(resume "$R/s2") --set total_steps=400 --set train_detector=false --set lr=0.001 \
  --set checkpoint_every=100 --set eval_every=100000
done_ "$R/s3" || $PY -m train.train_decoder --prepared "$P" --init "$R/s2/model" --decoder-from "$R/lm/model" \
  --out "$R/s3" --threads 2 $(resume "$R/s3") --set total_steps=600 --set lr=0.0005 --set checkpoint_every=100 \
  --set eval_every=100000
$PY -m train.assemble --base "$R/s3/model" --out "$R/final" --variant default --set detector.box_vote_iou=0.5  # chosen on val
