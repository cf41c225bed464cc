#!/usr/bin/env bash
# Retrain vitrine:kagl-base and every head from its configs, protocol twins first, and install the shipped ones.
# Each step is skipped when its output exists (delete runs/<out> to redo it). About 90 minutes on 2 CPU cores.
# Usage: bash scripts/retrain-kagl-base.sh [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/vitrine
W=src/vitrine/models/weights
DATA=../shared/data/kagl
install=1
[ "${1:-}" = "--no-install" ] && install=0

step() {  # step NAME DONE_PATH COMMAND...: run COMMAND unless DONE_PATH exists, and time it
  local name=$1 done=$2; shift 2
  if [ -e "$done" ]; then echo "== $name: done already ($done)"; return; fi
  echo "== $name: $*"; local t0=$SECONDS
  "$@"
  echo "== $name: $((SECONDS - t0)) s"
}
install_model() {  # install_model RUN_MODEL_DIR NAME: copy a trained model into the package under NAME
  [ "$install" = 1 ] || return 0
  mkdir -p "$W/$2"
  cp "$1"/model.safetensors "$1"/training.json "$W/$2/"
  .venv/bin/python - "$1/config.json" "$W/$2/config.json" "$2" <<'PY'
import json, sys
config = json.load(open(sys.argv[1])); config["name"] = sys.argv[3]
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY
}
install_combiner() {  # install_combiner RUN_COMBINER_DIR NAME
  [ "$install" = 1 ] || return 0
  cp "$1"/combiner.json "$1"/combiner.safetensors "$1"/text_projection.safetensors "$W/$2/"
}

# The image-text model: the protocol run first (its calib types tune the margin the shipped run inherits).
step "clip protocol" runs/kagl-base-protocol/model/training.json $V train clip --config configs/kagl-base-protocol.json
step "clip shipped" runs/kagl-base/model/training.json $V train clip --config configs/kagl-base.json
install_model runs/kagl-base/model kagl-base

# Composed-retrieval triplets for both splits.
for split in train val; do
  step "triplets protocol $split" runs/cir/kagl-protocol-$split.jsonl $V data make-triplets --data $DATA --split $split \
    --split-config configs/kagl-base-protocol.json --out runs/cir/kagl-protocol-$split.jsonl
  step "triplets shipped $split" runs/cir/kagl-$split.jsonl $V data make-triplets --data $DATA --split $split \
    --split-config configs/kagl-base.json --out runs/cir/kagl-$split.jsonl
done

# Region-aware tagging model and its calibrated vocabulary.
step "regions shipped" runs/regions-base/model/training.json $V train regions --config configs/regions-kagl-base.json
install_model runs/regions-base/model kagl-base-regions
step "vocabulary shipped" runs/regions-base/vocabulary.json $V eval attributes --data $DATA \
  --model vitrine:runs/regions-base/model --split-config configs/kagl-base.json --split val --calibrate-split val \
  --attributes src/vitrine/tagging/vocabularies/kagl.json --regions foreground --pooling blend \
  --save-vocabulary runs/regions-base/vocabulary.json
[ "$install" = 1 ] && cp runs/regions-base/vocabulary.json "$W/kagl-base-regions/vocabulary.json"

# CLIP4Cir stage 1 and 2, then the AGCN from the installed Combiner.
step "cir shipped stage 1" runs/cir-base-stage1/combiner/combiner.json $V train cir --config configs/cir-kagl-base-stage1.json
step "cir shipped stage 2" runs/cir-base-stage2/combiner/combiner.json $V train cir --config configs/cir-kagl-base-stage2.json
install_combiner runs/cir-base-stage2/combiner kagl-base-combiner
step "cir shipped agcn" runs/cir-base-agcn/combiner/combiner.json $V train cir --config configs/cir-kagl-base-agcn.json
install_combiner runs/cir-base-agcn/combiner kagl-base-agcn

# The protocol twins of the heads, for the model card's generalisation figures.
step "regions protocol" runs/regions-base-protocol/model/training.json $V train regions --config configs/regions-kagl-base-protocol.json
step "cir protocol stage 1" runs/cir-base-stage1-protocol/combiner/combiner.json $V train cir --config configs/cir-kagl-base-protocol-stage1.json
step "cir protocol stage 2" runs/cir-base-stage2-protocol/combiner/combiner.json $V train cir --config configs/cir-kagl-base-protocol-stage2.json
echo "== all done"
