"""Compute time of the 700 / 300 llm-check runs, read from their run folders.

Each run's ``run_info.json`` keeps the timings of every invocation that computed part of it
(``timing_history``). Runs started before that record existed keep only their later invocations:
the table marks them ("partial") by comparing the prompts run over the recorded invocations with
the run's prompt count.

    .venv/bin/python scripts/llm_700_times.py [--runs-dir runs] [RUN ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_check.realdata.report import timing_totals  # noqa: E402

DEFAULT = ["trec-700", "tweet_eval_irony-700", "cr-700", "rotten_tomatoes-700", "sst2_kim-700", "subj-700",
           "tweet_eval_hate-700", "tweet_eval_offensive-700", "mnli-700", "ag_news-700"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", default=DEFAULT)
    ap.add_argument("--runs-dir", default="runs")
    a = ap.parse_args()
    print("| run | prompts | mean prompt tokens | ICL forward s | texts-alone s | total s | invocations | recorded |")
    print("|---|---|---|---|---|---|---|---|")
    tot = 0.0
    for name in a.runs:
        d = Path(a.runs_dir) / name
        if not (d / "results.json").is_file():
            print(f"| {name} | not finished | | | | | | |")
            continue
        info = json.loads((d / "run_info.json").read_text())
        n = json.loads((d / "results.json").read_text())["n_items"]
        s = timing_totals(info)
        complete = s["points_run_now"] >= n
        tot += s["total_s"] if complete else 0.0
        print(f"| {name} | {n} | {info['mean_prompt_tokens']:.0f} | {s['forward_s']:.0f} | {s['singles_s']:.0f} | "
              f"{s['total_s']:.0f} | {s['invocations']} | {'complete' if complete else 'partial: ' + str(int(s['points_run_now'])) + ' prompts recorded'} |")
    print(f"\nsum of the complete records: {tot:.0f} s ({tot / 3600:.2f} h)")


if __name__ == "__main__":
    main()
