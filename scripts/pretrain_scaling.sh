#!/usr/bin/env bash
# Issue 11: the L1-to-Bayes target against depth and tokens, after the training-speed fix.
# Setting han4 (docs/pretrain.md); prompts from runs/sw-han4-l3 (make it first with the sweep
# command in docs/pretrain.md). Each pretrain run is one configuration that trains in <= 15 minutes
# on the 2 CPU cores; each is followed by its transformer-check and the target lines.
set -euo pipefail
H="-P num_tasks=4 -P num_states=8 -P num_tokens=10 -P emit_conc=1 -P delim_rate=0.2"
COMMON="--context 128 --batch-size 64 --warmup 100 --lr 3e-3 --eval-every 200 --checkpoint-every 200"
run() {
  local name=$1; shift
  .venv/bin/icl-kernel pretrain $H "$@" $COMMON --name "$name"
  .venv/bin/icl-kernel transformer-check "runs/$name" runs/sw-han4-l3 --name "tc-${name#pt-}"
  # exit 1 = some target missed (reported in its lines); go on to the next configuration
  .venv/bin/python scripts/check_pretrain_targets.py "runs/$name" "runs/tc-${name#pt-}" || [ $? -eq 1 ]
}
run pt-han4-tiny-x4 --size tiny --steps 2400                 # 2 layers, 19.7 M tokens
run pt-han4-w64l4   --size tiny --n-layer 4 --steps 1200     # 4 layers,  9.8 M tokens
run pt-han4-w64l6   --size tiny --n-layer 6 --steps 1000     # 6 layers,  8.2 M tokens
