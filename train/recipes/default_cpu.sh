#!/usr/bin/env bash
# The embedded default model on a 2-core CPU, in about 1.5 hours of wall time: two tracks of one
# thread each (track A: detector -> region heads -> conditioned decoder; track B: LM -> CLIP),
# then the parts are assembled into one hub-style folder. Every step resumes from its checkpoint.
# (The shipped assets/crrg-default ran stage 1 and CLIP in two chunks, 700 + 600 and 220 + 220
# steps, the second chunk resuming with the longer schedule: see its model card.)
#   bash train/recipes/default_cpu.sh PREPARED RUNS
set -euo pipefail
P=${1:-runs/prepared}; R=${2:-runs/default}; PY=${PYTHON:-.venv/bin/python}
mkdir -p "$R"
resume() { [ -f "$1/checkpoint.pt" ] && echo --resume || true; }
done_() {  # a stage is done when its last run reached its total_steps
  [ -f "$1/timing.json" ] && $PY -c 'import json,sys; t=json.load(open(sys.argv[1])); sys.exit(t["step"] < t["total_steps"])' "$1/timing.json"
}

track_a() {
  done_ "$R/s1" || $PY -m train.train_detector --stage 1 --prepared "$P" --out "$R/s1" --threads 1 $(resume "$R/s1") \
    --set total_steps=1300 --set batch_size=4 --set warmup_steps=50 --set checkpoint_every=100 --set eval_every=100000
  done_ "$R/s2" || $PY -m train.train_detector --stage 2 --prepared "$P" --init "$R/s1/checkpoint.pt" --out "$R/s2" \
    --threads 1 $(resume "$R/s2") --set total_steps=300 --set train_detector=false --set lr=0.001 \
    --set checkpoint_every=100 --set eval_every=100000
  while ! done_ "$R/lm"; do sleep 20; done
  done_ "$R/s3" || $PY -m train.train_decoder --prepared "$P" --init "$R/s2/model" --decoder-from "$R/lm/model" \
    --out "$R/s3" --threads 1 $(resume "$R/s3") --set total_steps=500 --set lr=0.0005 --set checkpoint_every=100 \
    --set eval_every=100000
}

track_b() {
  done_ "$R/lm" || $PY -m train.pretrain_lm --prepared "$P" --out "$R/lm" --threads 1 $(resume "$R/lm") \
    --set total_steps=600 --set checkpoint_every=200 --set eval_every=100000
  done_ "$R/clip" || $PY -m train.train_clip --prepared "$P" --out "$R/clip" --threads 1 $(resume "$R/clip") \
    --set total_steps=440 --set checkpoint_every=50 --set eval_every=100000
}

track_a > "$R/track_a.log" 2>&1 &
A=$!
track_b > "$R/track_b.log" 2>&1 &
B=$!
wait $A $B
$PY -m train.assemble --base "$R/s3/model" --clip "$R/clip/model" --out "$R/final" --variant default
