"""`icl-kernel transformer-check`: a pretrained GPT-J on a sweep's prompts — Bayes, Oracle, kernels, attention."""
from __future__ import annotations

import argparse

from icl_kernel import argtypes as at
from simulate.commands.sweep import add_run_arguments, kernel_list


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Run a model trained by `icl-kernel pretrain` on the prompts of a sweep run folder: its label "
        "distribution against exact Bayes and the Oracle at every n, beside each kernel's estimate (Bayes, the "
        "Oracle, the kernels and their weights from the simulator's evaluator in float64, every predictor scored by "
        "the same metrics), and every "
        "head's attention to the demonstrations against each kernel's weights K(x_test, x_i), with heads "
        "selected on half of the prompts and reported on the other half; baselines: uniform weights, shuffled "
        "kernel weights, a random head. A GINC sweep (--preset ginc, prompt law ginc-id or ginc-ood) is scored as "
        "the sweep scores it: the model's next-symbol distribution over all symbols, exact Bayes under p_pre where "
        "the prompt has positive probability (the zero-probability fraction beside it), GINC's Oracle under the "
        "prompt law, and accuracy against the prompt's label; grid points whose prompts exceed the model's "
        "context are skipped with a note. Writes runs/NAME/.")
    p.add_argument("model_run", help="run folder of `icl-kernel pretrain`")
    p.add_argument("sweep_run", help="run folder of `icl-kernel sweep` (its prompts, HMM, labels and grid; matched or GINC prompt law)")
    p.add_argument("--kernels", type=kernel_list, default=None, metavar="'K1 K2 ...'",
                   help="kernels to compare (default: the sweep's)")
    p.add_argument("--seeds", type=at.seed_list, default=None, help="sweep seeds to use (default: all with prompts)")
    p.add_argument("--chunk", type=at.positive_int, default=128, help="prompts per forward batch")
    p.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of the shuffles and the random head")
    g = p.add_argument_group("run")
    add_run_arguments(g, "transformer-check")


def run(args) -> int:
    from pathlib import Path

    from simulate.runtime import setup

    setup(args.devices, enable_x64=False)
    from llm_check.synthetic.transformer_check import CheckConfig, format_table, run_transformer_check

    cfg = CheckConfig(model_run=args.model_run, sweep_run=args.sweep_run,
                      kernels=tuple(args.kernels) if args.kernels else None,
                      seeds=tuple(args.seeds) if args.seeds else None, chunk=args.chunk, seed=args.seed)
    out = Path(args.runs_dir) / args.name
    summary = run_transformer_check(cfg, out, overwrite=args.overwrite, quiet=args.quiet)
    print(format_table(summary))
    print(f"run folder: {out}")
    return 0
