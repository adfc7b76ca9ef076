#!/usr/bin/env bash
# The llm-check runs behind the position-aware results of docs/llm_check.md (issue 12, items 1-5).
# SmolLM2-135M-Instruct, CPU. Each run resumes from its intact chunks if interrupted.
set -euo pipefail
K=".venv/bin/icl-kernel llm-check --quiet"
# 1-2. full SST-2 validation (872 items: head chosen on 610, held out 262), with the per-text passes
$K --task sst2 --n 8 --name sst2-n8
# 3-4. decoupling and phenomena on the 262 items the full run held out (--start 610): disjoint from
#      the items that chose the head L?H? of sst2-n8, so a fixed-head score there is not leaked
for spec in "random:--selection random" "reversed:--order reversed" "shuffled:--order shuffled" \
            "retrieved:--selection retrieved" "retrieved-shuffled:--selection retrieved --order shuffled"; do
  name="sst2-held-${spec%%:*}"
  $K --task sst2 --n 8 --start 610 --limit 262 --no-singles ${spec#*:} --name "$name"
done
# 5. the paper's 700 / 300 protocol where it fits on CPU: Rotten Tomatoes (1066 validation items)
$K --task rotten_tomatoes --n 8 --limit 1000 --probe-items 0 --name rotten_tomatoes-700-300
