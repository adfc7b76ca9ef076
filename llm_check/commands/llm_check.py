"""`icl-kernel llm-check`: attention as kernel weights on a real LM and real ICL data (Han et al. §5).

Example::

    icl-kernel llm-check --task sst2 --n 8 --name sst2-n8
    icl-kernel llm-check --task custom --train-file my.csv --eval-file dev.jsonl --label-words Bad,Good
    icl-kernel llm-check --name sst2-n8 --analyze-only      # rebuild figures and report from the run folder

The options of the run itself come from :class:`llm_check.realdata.config.LLMCheckConfig` (one source);
this module only parses, calls :func:`llm_check.realdata.pipeline.run_llm_check` and reports.
"""
from __future__ import annotations

import argparse
import os
import sys

from icl_kernel.errors import UsageError
from llm_check.realdata.config import add_config_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    g = p.add_argument_group("run folder")
    g.add_argument("--name", help="run folder name under --runs-dir (default <task>-n<n>)")
    g.add_argument("--runs-dir", default="runs")
    g.add_argument("--overwrite", action="store_true",
                   help="discard an existing run folder of this name made with another config (only after the "
                        "new config has been validated; only folders made by icl-kernel)")
    g.add_argument("--analyze-only", action="store_true", help="rebuild numbers, figures and report from the folder")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("cross-run summary")
    g.add_argument("--summarize", help="comma-separated run names: write a cross-run table and bar figure "
                                       "(with --summary-dir, default the runs dir) instead of running")
    g.add_argument("--summary-dir", help="where --summarize writes <prefix>-summary.md/png")
    g.add_argument("--summary-prefix", default="llm")
    g.add_argument("--summary-title", help="title of the --summarize bar figure")
    g.add_argument("--fixed-head", help="with --summarize: also score every run at this head, 'LAYER,HEAD' (0-based)")


def _fixed_head(text: str | None):
    if text is None:
        return None
    parts = text.split(",")
    try:
        fixed = tuple(int(v) for v in parts)
    except ValueError:
        fixed = ()
    if len(fixed) != 2 or min(fixed) < 0:
        raise UsageError(f"--fixed-head {text!r}; expected 'LAYER,HEAD' with two integers >= 0")
    return fixed


def run(args) -> int:
    from icl_kernel.runfolder import safe_name
    from llm_check.realdata.config import config_from_args

    if args.summarize:
        from llm_check.realdata import report

        fixed = _fixed_head(args.fixed_head)
        names = [safe_name(n.strip(), "--summarize run") for n in args.summarize.split(",")]
        if len(set(names)) != len(names):
            raise UsageError(f"--summarize {args.summarize!r} names a run twice; expected distinct runs")
        dirs = [os.path.join(args.runs_dir, n) for n in names]
        print(report.summarize(dirs, args.summary_dir or args.runs_dir, fixed, args.summary_prefix,
                                **({"title": args.summary_title} if args.summary_title else {})))
        return 0
    if args.fixed_head is not None:
        raise UsageError("--fixed-head is only used with --summarize")
    cfg = config_from_args(args).validate()
    name = safe_name(args.name if args.name is not None else f"{cfg.task}-n{cfg.n}")
    run_dir = os.path.join(args.runs_dir, name)
    from llm_check.realdata import pipeline  # JAX and the models load only after the options are checked
    if args.analyze_only:
        res = pipeline.analyze_run(run_dir)
    else:
        log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
        res = pipeline.run_llm_check(cfg, run_dir, overwrite=args.overwrite, quiet=args.quiet, log=log)
    print(summary_line(res, run_dir))
    return 0


def summary_line(res: dict, run_dir: str) -> str:
    ch = res["chosen_head"]
    hv = res["head_vs_position"]
    s = (f"{res['task']}: ICL acc {res['icl_accuracy_all']:.3f} (all {res['n_items']}), held-out {res['icl_accuracy_heldout']:.3f}; "
         f"head L{ch['layer']} H{ch['head']}: agreement {res['reconstruction_agreement_heldout']:.3f} "
         f"(position-only vote {res['position_vote_agreement_heldout']:.3f}, McNemar p {hv['mcnemar_p']:.3g}; "
         f"last label {res['last_label_agreement_heldout']:.3f}), "
         f"reconstructed acc {res['reconstructed_accuracy_heldout']:.3f}")
    if "kr_minilm_accuracy" in res:
        s += f"; KR MiniLM {res['kr_minilm_accuracy']:.3f}, KR LM-hidden {res['kr_lm_hidden_accuracy']:.3f}"
    return s + f"\nreport: {os.path.join(run_dir, 'report.md')}"
