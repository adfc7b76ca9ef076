#!/usr/bin/env bash
# The llm-check runs behind the position-aware results of docs/llm_check.md (issue 12, items 1-5).
# SmolLM2-135M-Instruct, CPU. Each run resumes from its intact chunks if interrupted.
set -euo pipefail
K=".venv/bin/icl-kernel llm-check --quiet"
# 1-2. full SST-2 validation (872 items: head chosen on 610, held out 262), with the per-text passes
$K --task sst2 --n 8 --name sst2-n8
# 3-4. decoupling on items the full run held out (--start 610): disjoint from the 610 items that
#      chose sst2-n8's head, so a fixed-head score there is not leaked. 64 items each: what fitted the
#      CPU time of the session (about 4.5 s per prompt on the shared, loaded 2-core machine).
for spec in "random:--selection random" "reversed:--order reversed" "shuffled:--order shuffled" \
            "retrieved:--selection retrieved" "retrieved-shuffled:--selection retrieved --order shuffled"; do
  name="sst2-held-${spec%%:*}"
  $K --task sst2 --n 8 --start 610 --limit 64 --no-singles ${spec#*:} --name "$name"
done
# tables and figures of docs/llm_check.md and the README (head fixed at the one sst2-n8 chose: L21 H1)
$K --summarize sst2-n8 --summary-dir figures --summary-prefix llm-sst2-position \
   --summary-title "SST-2, SmolLM2-135M (610 / 262): reconstruction beside the position-aware baselines"
$K --summarize sst2-held-random,sst2-held-reversed,sst2-held-shuffled,sst2-held-retrieved,sst2-held-retrieved-shuffled \
   --fixed-head 21,1 --summary-dir figures --summary-prefix llm-decoupling \
   --summary-title "SST-2 decoupling, 64 items held out by sst2-n8's head selection, head L21 H1"
cp runs/sst2-n8/fig_position_removed.png figures/llm-sst2-position_removed.png
