#!/usr/bin/env bash
# The rule-out probabilities of the embedded default model (2026-12-06, night; the weights are
# unchanged): report every validation image through the pipeline, choose on those lines the
# probability below which each image-level finding with an absent statement may be stated absent
# (train.rule_out: at most a tenth of each source's validation positives below it), and write it
# into the model's config (train.assemble --set). About 3 minutes on a 2-core CPU.
# The shipped folder took only the new config.json: assemble re-serialises model.safetensors
# (same tensors, other bytes), and every copy of the weights stays in git history.
#   bash train/recipes/rule_out_cpu.sh PREPARED RUNS WEIGHTS
set -euo pipefail
P=${1:-runs/prepared}; R=${2:-runs/rule_out}; W=${3:-assets/crrg-default}; PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
mkdir -p "$R"
$PY -c 'import sys; from train.datasets import PreparedData
p = PreparedData(sys.argv[1]); print("\n".join(str(p.path(r["image"])) for r in p.images("val") if r.get("image")))' \
  "$P" > "$R/val_images.txt"
[ -f "$R/val.done" ] || { $PY -m crrg report $(cat "$R/val_images.txt") --weights "$W" --out "$R/val.jsonl" --force \
  --batch-size 8 > "$R/val.log" 2>&1 && touch "$R/val.done"; }
$PY -m train.rule_out "$R/val.jsonl" --prepared "$P" --out "$R/rule_out.json"
$PY -m train.assemble --base "$W" --out "$R/final" \
  --set "grounding.rule_out=$($PY -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["chosen"]))' "$R/rule_out.json")"
