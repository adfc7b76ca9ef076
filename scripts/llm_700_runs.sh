#!/usr/bin/env bash
# Issue 12 items 4-5: the paper's 700 / 300 protocol on every built-in task of its Table 2 list, and
# the label-word and typo phenomena on items disjoint from sst2-n8's head selection.
# SmolLM2-135M-Instruct, CPU, n = 8 random demonstrations, seed 0. Each run resumes from its intact
# chunks if interrupted, so the script can be rerun until every run is complete.
# Tasks are ordered by total prompt tokens (cheapest first): about 3.5 CPU-hours in all on 2 cores.
set -euo pipefail
K=".venv/bin/icl-kernel llm-check --quiet"
# item 4: the phenomena conditions on the 64 items sst2-n8 held out (--start 610), scored at its head
$K --task sst2 --n 8 --start 610 --limit 64 --no-singles --label-words Table,River --name sst2-held-unrelated
$K --task sst2 --n 8 --start 610 --limit 64 --no-singles --typos 0.3 --name sst2-held-typos
# item 5: 700 / 300 (the first 1000 items of the seeded evaluation order; fewer where the split has
# fewer: irony 955, TREC 500). SST-2: GLUE's validation has 872 items (the sst2-n8 run, 610 / 262),
# so the 700 / 300 run uses Kim's labelled SST-2 test set (sst2_kim, 1821 items) as its evaluation
# split. Multi-token label words: first token.
for task in trec tweet_eval_irony cr rotten_tomatoes sst2_kim subj tweet_eval_hate tweet_eval_offensive mnli ag_news; do
  $K --task "$task" --n 8 --limit 1000 --n-select 700 --n-heldout 300 --name "$task-700"
done
